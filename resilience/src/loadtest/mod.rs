//! Load testing (feature `loadtest`): drive a service with one of six traffic shapes,
//! in the closed model (virtual users) or the open one (an arrival rate, with latency
//! measured from each request's intended start), and check that its resilience holds.
//!
//! ```no_run
//! use std::time::Duration;
//! use resilience::{LoadTestScenario, LoadTestType, LoadTester};
//!
//! # async fn run() -> Result<(), resilience::LoadTestError> {
//! let results = LoadTester::new(LoadTestScenario {
//!     name: "api_stress_test".into(),
//!     test_type: LoadTestType::Stress,
//!     max_users: 200,
//!     duration: Duration::from_secs(60),
//!     target_url: "http://127.0.0.1:8000".into(),
//!     request_paths: vec!["/api/users".into(), "/api/products".into()],
//!     validate_circuit_breakers: true,
//!     ..Default::default()
//! })
//! .run()
//! .await?;
//! println!("p99 {:?}, {:.0} requests/s, passed: {}", results.latency.p99, results.throughput, results.passed());
//! results.write_html("report.html").expect("report written");
//! # Ok(()) }
//! ```
//!
//! The `resilience-load` binary is the same from the command line.

mod client;
mod probe;
mod record;
mod report;
mod results;
mod run;
mod scenario;
mod suite;
mod validate;
mod wire;

use std::fmt;

pub use report::write_html_report;
pub use results::{BreakerSample, Drift, Knee, LatencySummary, LoadTestResults, TimelinePoint, Validation};
pub use run::{LoadTester, Progress};
pub use scenario::{LoadTestScenario, LoadTestType, UnknownLoadTestType};
pub use suite::{create_resilience_test_scenarios, LoadTestSuite};

/// Why a load test could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadTestError {
    /// A field of the scenario holds a value no run can use.
    InvalidScenario {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Nothing answers at the target (or at its `/resilience`, when a validation needs it).
    Unreachable {
        /// What was tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Display for LoadTestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidScenario { field, message } => write!(f, "invalid load test scenario: `{field}` {message}"),
            Self::Unreachable { url, reason } => write!(f, "cannot reach {url}: {reason}"),
        }
    }
}

impl std::error::Error for LoadTestError {}
