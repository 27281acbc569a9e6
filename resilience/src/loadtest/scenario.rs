//! What a load test does: its traffic shape, model, target and limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The traffic shape of a load test. `level` below is the share of the peak
/// (`max_users` in the closed model, `arrival_rate` in the open one) in force at a moment
/// of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadTestType {
    /// A base load of a fifth of the peak, a sudden jump to the peak for the middle
    /// fifth of the run (from 40 % to 60 % of the duration), then the base load again.
    Spike,
    /// From nothing to the peak in a straight line over the whole run.
    RampUp,
    /// The peak from start to end.
    #[default]
    Sustained,
    /// `steps` equal steps up to the peak (a `steps`-th of it more at each); the run
    /// stops after the first step whose error rate or p95 passes the scenario's limits,
    /// and the results report that knee.
    Stress,
    /// The peak, sustained, with large bodies: the scenario's `body`, or 256 KiB when it
    /// has none (sent with `POST` when the method is `GET`).
    Volume,
    /// The peak for a long run; the results compare the first tenth of the run with
    /// the last (latency and error drift).
    Endurance,
}

impl LoadTestType {
    /// Every type, in the order of the docs.
    pub const ALL: [LoadTestType; 6] =
        [Self::Spike, Self::RampUp, Self::Sustained, Self::Stress, Self::Volume, Self::Endurance];

    /// The type's name in the CLI and the results: `spike`, `ramp-up`, `sustained`,
    /// `stress`, `volume`, `endurance`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spike => "spike",
            Self::RampUp => "ramp-up",
            Self::Sustained => "sustained",
            Self::Stress => "stress",
            Self::Volume => "volume",
            Self::Endurance => "endurance",
        }
    }

    /// The share of the peak at `progress` (0 at the start, 1 at the end of the planned
    /// duration); for `Stress`, of `steps` steps.
    pub(crate) fn level(self, progress: f64, steps: usize) -> f64 {
        let p = progress.clamp(0.0, 1.0);
        match self {
            Self::Spike if (0.4..0.6).contains(&p) => 1.0,
            Self::Spike => 0.2,
            Self::RampUp => p,
            Self::Sustained | Self::Volume | Self::Endurance => 1.0,
            Self::Stress => {
                let steps = steps.max(1);
                (stress_step(p, steps) + 1) as f64 / steps as f64
            }
        }
    }
}

/// The step (from 0) of `steps` that `progress` falls in.
pub(crate) fn stress_step(progress: f64, steps: usize) -> usize {
    ((progress.clamp(0.0, 1.0) * steps as f64) as usize).min(steps.saturating_sub(1))
}

impl fmt::Display for LoadTestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`LoadTestType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLoadTestType(pub String);

impl fmt::Display for UnknownLoadTestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = LoadTestType::ALL.iter().map(|t| t.as_str()).collect();
        write!(f, "unknown scenario `{}` (expected one of: {})", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownLoadTestType {}

impl FromStr for LoadTestType {
    type Err = UnknownLoadTestType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        let wanted = if wanted == "rampup" { "ramp-up".to_owned() } else { wanted };
        Self::ALL.into_iter().find(|t| t.as_str() == wanted).ok_or_else(|| UnknownLoadTestType(s.to_owned()))
    }
}

/// One load test: see [`LoadTester`](super::LoadTester).
///
/// The closed model (`arrival_rate: None`) runs `max_users` virtual users at the peak,
/// each on its own connection, sending a request, waiting for the answer, then
/// `think_time`. The open model (`arrival_rate: Some(r)`) starts requests on a schedule
/// of `r` per second at the peak whether or not earlier ones have answered, and measures
/// each request's latency from the moment it was due to start, so a stalled target shows
/// in the percentiles (no coordinated omission).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadTestScenario {
    /// The name the results carry.
    pub name: String,
    /// The traffic shape.
    pub test_type: LoadTestType,
    /// Closed model: virtual users at the peak (default 10).
    pub max_users: usize,
    /// Open model: requests per second at the peak; `None` (the default) is the closed
    /// model.
    pub arrival_rate: Option<f64>,
    /// How long the run lasts (default 10 s).
    pub duration: Duration,
    /// Stop after this many requests, if sooner than `duration`.
    pub max_requests: Option<u64>,
    /// The target: `http://host:port`, optionally with a path prefix (default
    /// `http://127.0.0.1:8080`). Only plain `http` is supported.
    pub target_url: String,
    /// Paths requested in turn, each joined to `target_url` (default `["/"]`).
    pub request_paths: Vec<String>,
    /// The method (default `GET`).
    pub method: http::Method,
    /// Headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// A body sent with every request.
    pub body: Option<Vec<u8>>,
    /// Closed model: what each user waits after an answer (default zero).
    pub think_time: Duration,
    /// A request without an answer after this long fails as `timeout` (default 30 s).
    pub request_timeout: Duration,
    /// Read the target's `/resilience` before, during and after the run, and validate
    /// that its circuit breakers opened under failure and closed after recovery.
    pub validate_circuit_breakers: bool,
    /// Read the target's `/resilience` during the run, and validate that its connection
    /// pools stayed within their limits and that requests were rejected rather than
    /// left hanging.
    pub validate_connection_pools: bool,
    /// Stress: the number of load steps (default 5).
    pub steps: usize,
    /// The highest error rate (failed / all requests) the run passes with: the seed's
    /// alert threshold, 10 % (default 0.1). Also the limit of each stress step.
    pub max_error_rate: f64,
    /// The highest p95 latency the run passes with: the seed's alert threshold, 5 s.
    /// Also the limit of each stress step.
    pub max_p95: Duration,
    /// With `validate_circuit_breakers`: how long after the run the target's breakers
    /// may take to close, with a light probe load meanwhile (default 30 s).
    pub recovery_wait: Duration,
}

impl Default for LoadTestScenario {
    fn default() -> Self {
        Self {
            name: String::from("load test"),
            test_type: LoadTestType::Sustained,
            max_users: 10,
            arrival_rate: None,
            duration: Duration::from_secs(10),
            max_requests: None,
            target_url: String::from("http://127.0.0.1:8080"),
            request_paths: vec![String::from("/")],
            method: http::Method::GET,
            headers: Vec::new(),
            body: None,
            think_time: Duration::ZERO,
            request_timeout: Duration::from_secs(30),
            validate_circuit_breakers: false,
            validate_connection_pools: false,
            steps: 5,
            max_error_rate: 0.1,
            max_p95: Duration::from_secs(5),
            recovery_wait: Duration::from_secs(30),
        }
    }
}

/// The body of a volume test whose scenario gives none.
pub(crate) const VOLUME_BODY_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_their_documented_levels() {
        let level = |t: LoadTestType, p| t.level(p, 5);
        assert_eq!(level(LoadTestType::Spike, 0.1), 0.2);
        assert_eq!(level(LoadTestType::Spike, 0.5), 1.0);
        assert_eq!(level(LoadTestType::Spike, 0.7), 0.2);
        assert_eq!(level(LoadTestType::RampUp, 0.25), 0.25);
        assert_eq!(level(LoadTestType::Sustained, 0.0), 1.0);
        assert_eq!(level(LoadTestType::Stress, 0.0), 0.2);
        assert_eq!(level(LoadTestType::Stress, 0.45), 0.6);
        assert_eq!(level(LoadTestType::Stress, 1.0), 1.0);
    }

    #[test]
    fn types_parse_from_their_names() {
        for t in LoadTestType::ALL {
            assert_eq!(t.as_str().parse::<LoadTestType>(), Ok(t));
        }
        assert_eq!("RampUp".parse::<LoadTestType>(), Ok(LoadTestType::RampUp));
        let err = "soak".parse::<LoadTestType>().unwrap_err();
        assert!(err.to_string().contains("`soak`") && err.to_string().contains("ramp-up"), "{err}");
    }
}
