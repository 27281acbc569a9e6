//! What a run found.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::LoadTestType;

/// Latency percentiles of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// The mean.
    pub mean: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 95th percentile.
    pub p95: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The 99.9th percentile.
    pub p999: Duration,
    /// The longest.
    pub max: Duration,
}

/// One second of a run, by when its requests ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePoint {
    /// Seconds from the start of the run.
    pub second: u32,
    /// Requests that ended in this second.
    pub requests: u64,
    /// Of them, failed (no answer, or a 4xx/5xx one).
    pub failed: u64,
    /// Their median latency.
    pub p50: Duration,
    /// Their 90th percentile.
    pub p90: Duration,
    /// Their 99th percentile.
    pub p99: Duration,
    /// Their longest.
    pub max: Duration,
    /// The load asked for: virtual users (closed model) or requests per second (open).
    pub load: f64,
    /// Bytes of answer bodies received.
    pub bytes_received: u64,
}

/// A check of the run: passed or not, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// What was checked, e.g. `error_rate`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// A stress test's knee: the last step within the limits, and the one past them.
#[derive(Debug, Clone, PartialEq)]
pub struct Knee {
    /// The highest load (users or requests per second) whose step stayed within the
    /// limits; `None` when even the first step passed them.
    pub last_good_load: Option<f64>,
    /// The throughput of that step, completed requests per second.
    pub last_good_throughput: Option<f64>,
    /// The load of the first step past the limits; `None` when every step held.
    pub breaking_load: Option<f64>,
    /// What that step passed: its error rate or p95.
    pub reason: Option<String>,
}

/// An endurance test's drift between the first tenth of the run and the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// The mean of the per-second medians in the first tenth.
    pub first_p50: Duration,
    /// The same in the last tenth.
    pub last_p50: Duration,
    /// The mean of the per-second 99th percentiles in the first tenth.
    pub first_p99: Duration,
    /// The same in the last tenth.
    pub last_p99: Duration,
    /// The error rate of the first tenth.
    pub first_error_rate: f64,
    /// The error rate of the last tenth.
    pub last_error_rate: f64,
}

/// What the target's `/resilience` said at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSample {
    /// Seconds from the start of the run (the first sample, 0, is taken just before it).
    pub at: f64,
    /// Each dependency with a breaker, and its state (`closed`, `open`, `half_open`, …).
    pub breakers: Vec<(String, String)>,
    /// Each pool: connections in use, and its most.
    pub pools: Vec<(String, u64, u64)>,
}

/// The results of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadTestResults {
    /// The scenario's name.
    pub scenario: String,
    /// Its traffic shape.
    pub test_type: LoadTestType,
    /// `closed` or `open`.
    pub model: &'static str,
    /// How long the run took.
    pub duration: Duration,
    /// Requests that ended (answered or failed).
    pub total_requests: u64,
    /// Answered with 2xx or 3xx.
    pub successful_requests: u64,
    /// Failed: no answer, or a 4xx/5xx one.
    pub failed_requests: u64,
    /// Requests ended per second.
    pub throughput: f64,
    /// Latency over every request (open model: from when each was due to start).
    pub latency: LatencySummary,
    /// Answers by status code.
    pub status_codes: BTreeMap<u16, u64>,
    /// Requests without an answer, by kind: `connect`, `timeout`, `reset`, `other`.
    pub errors: BTreeMap<String, u64>,
    /// Bytes of request bodies sent.
    pub bytes_sent: u64,
    /// Bytes of answer bodies received.
    pub bytes_received: u64,
    /// Each second of the run.
    pub timeline: Vec<TimelinePoint>,
    /// The checks of the run.
    pub validations: Vec<Validation>,
    /// Stress tests: where the target gave way.
    pub knee: Option<Knee>,
    /// Endurance tests: how the first tenth compares to the last.
    pub drift: Option<Drift>,
    /// The target's breakers and pools over time, when a validation read them.
    pub breaker_timeline: Vec<BreakerSample>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl LoadTestResults {
    /// Whether every validation passed.
    pub fn passed(&self) -> bool {
        self.validations.iter().all(|v| v.passed)
    }

    /// The headline figures, labelled, as the CLI's summary and the report's table show
    /// them: requests, succeeded, failed, throughput, then the latency percentiles.
    pub fn summary_rows(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let l = &self.latency;
        vec![
            ("requests", self.total_requests.to_string()),
            ("succeeded", self.successful_requests.to_string()),
            ("failed", self.failed_requests.to_string()),
            ("throughput", format!("{:.1}/s", self.throughput)),
            ("mean", ms(l.mean)),
            ("p50", ms(l.p50)),
            ("p90", ms(l.p90)),
            ("p95", ms(l.p95)),
            ("p99", ms(l.p99)),
            ("p99.9", ms(l.p999)),
            ("max", ms(l.max)),
        ]
    }

    /// Failed requests over all of them (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.total_requests == 0 {
            0.0
        } else {
            self.failed_requests as f64 / self.total_requests as f64
        }
    }

    /// The results as a JSON value: durations in milliseconds (`*_ms`).
    pub fn to_json_value(&self) -> Value {
        let l = &self.latency;
        json!({
            "scenario": self.scenario,
            "test_type": self.test_type.as_str(),
            "model": self.model,
            "duration_ms": ms(self.duration),
            "total_requests": self.total_requests,
            "successful_requests": self.successful_requests,
            "failed_requests": self.failed_requests,
            "error_rate": self.error_rate(),
            "throughput": self.throughput,
            "latency_ms": {
                "mean": ms(l.mean), "p50": ms(l.p50), "p90": ms(l.p90), "p95": ms(l.p95),
                "p99": ms(l.p99), "p999": ms(l.p999), "max": ms(l.max),
            },
            "status_codes": self.status_codes.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "errors": self.errors,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "timeline": self.timeline.iter().map(|p| json!({
                "second": p.second, "requests": p.requests, "failed": p.failed,
                "p50_ms": ms(p.p50), "p90_ms": ms(p.p90), "p99_ms": ms(p.p99), "max_ms": ms(p.max),
                "load": p.load, "bytes_received": p.bytes_received,
            })).collect::<Vec<_>>(),
            "validations": self.validations.iter().map(|v| json!({
                "name": v.name, "passed": v.passed, "detail": v.detail,
            })).collect::<Vec<_>>(),
            "knee": self.knee.as_ref().map(|k| json!({
                "last_good_load": k.last_good_load, "last_good_throughput": k.last_good_throughput,
                "breaking_load": k.breaking_load, "reason": k.reason,
            })),
            "drift": self.drift.as_ref().map(|d| json!({
                "first_p50_ms": ms(d.first_p50), "last_p50_ms": ms(d.last_p50),
                "first_p99_ms": ms(d.first_p99), "last_p99_ms": ms(d.last_p99),
                "first_error_rate": d.first_error_rate, "last_error_rate": d.last_error_rate,
            })),
            "breaker_timeline": self.breaker_timeline.iter().map(|s| json!({
                "at_s": s.at,
                "breakers": s.breakers.iter().map(|(n, st)| json!({"name": n, "state": st})).collect::<Vec<_>>(),
                "pools": s.pools.iter().map(|(n, used, max)| json!({"name": n, "in_use": used, "max": max})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "passed": self.passed(),
        })
    }

    /// The results as pretty-printed JSON (see [`to_json_value`](Self::to_json_value)).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_json_value()).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Writes the HTML report of these results: one self-contained page with SVG charts.
    pub fn write_html(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, super::report::html(std::slice::from_ref(self)))
    }
}
