//! Every metric of the crate in Prometheus text format (feature `prometheus`).
//!
//! ```no_run
//! let handle = resilience::prometheus::install().expect("no other recorder");
//! println!("{}", handle.render());
//! ```

use std::sync::OnceLock;
use std::time::Duration;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Buckets of every `*_seconds` histogram: 1 ms to 60 s.
const SECONDS_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// How often the counts made per thread are handed to the recorder and its upkeep runs.
/// Until the upkeep runs (or `/metrics` renders), every duration handed over is kept as a
/// sample of its own (16 bytes each): without it, a service nobody scrapes would grow by
/// 16 bytes a request without end.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The name of the thread that runs the upkeep.
pub const UPKEEP_THREAD: &str = "metrics-upkeep";

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
///
/// It switches on the crate's aggregation ([`aggregate::enable`](crate::aggregate::enable)):
/// the hot counters and the duration histograms of policies, pools and the web layer made
/// from then on count per thread, in the recorder's buckets, and write no memory another
/// thread writes. (The recorder's own counters are shared atomics, and its histograms a
/// shared sample queue per value.)
///
/// It also starts a thread, [`UPKEEP_THREAD`], that every second hands those counts to
/// the recorder ([`aggregate::flush`](crate::aggregate::flush)) and runs the recorder's
/// upkeep, which folds the durations into their buckets. So the recorder's memory stays
/// bounded whether or not anything scrapes `/metrics`. `/metrics` flushes before it
/// renders; a service that renders the handle itself and wants counts to the moment, not
/// to the last second, calls `aggregate::flush()` first.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix(String::from("_seconds")), &SECONDS_BUCKETS)
                .map_err(|e| InstallError(e.to_string()))?;
            let handle = builder.install_recorder().map_err(|e| InstallError(e.to_string()))?;
            resilience_core::aggregate::enable(&SECONDS_BUCKETS).map_err(|e| InstallError(e.to_string()))?;
            start_upkeep(handle.clone())?;
            Ok(handle)
        })
        .clone()
}

/// Hands the counts made per thread over and runs `handle`'s upkeep every [`UPKEEP_EVERY`],
/// on a thread of its own, for the life of the process (the recorder is the process's,
/// and lives as long).
fn start_upkeep(handle: PrometheusHandle) -> Result<(), InstallError> {
    std::thread::Builder::new()
        .name(UPKEEP_THREAD.to_owned())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            resilience_core::aggregate::flush();
            handle.run_upkeep();
        })
        .map(drop)
        .map_err(|e| InstallError(format!("the thread of its upkeep did not start: {e}")))
}
