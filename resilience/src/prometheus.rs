//! Every metric of the crate in Prometheus text format (feature `prometheus`).
//!
//! ```no_run
//! let handle = resilience::prometheus::install().expect("no other recorder");
//! println!("{}", handle.render());
//! ```

use std::sync::OnceLock;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Buckets of every `*_seconds` histogram: 1 ms to 60 s.
const SECONDS_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

static HANDLE: OnceLock<Result<PrometheusHandle, InstallError>> = OnceLock::new();

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallError(String);

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the Prometheus recorder could not be installed: {}", self.0)
    }
}

impl std::error::Error for InstallError {}

/// Installs a Prometheus recorder as the process's `metrics` recorder, once; later calls
/// return the same handle (or the same error: another recorder was installed first).
/// Durations (`*_seconds`) are histograms with buckets from 1 ms to 60 s.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix(String::from("_seconds")), &SECONDS_BUCKETS)
                .map_err(|e| InstallError(e.to_string()))?;
            builder.install_recorder().map_err(|e| InstallError(e.to_string()))
        })
        .clone()
}
