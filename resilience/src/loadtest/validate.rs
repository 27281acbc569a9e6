//! The checks of a run.

use super::probe::{open_before, opened_during, Recovery};
use super::results::{Drift, LoadTestResults, TimelinePoint, Validation};
use super::{LoadTestScenario, LoadTestType};

fn check(name: &str, passed: bool, detail: String) -> Validation {
    Validation { name: name.to_owned(), passed, detail }
}

/// Every check that applies to `results` of `s`.
pub(crate) fn all(s: &LoadTestScenario, r: &LoadTestResults, recovery: Option<&Recovery>) -> Vec<Validation> {
    let mut checks = vec![check(
        "requests",
        r.total_requests > 0,
        format!("{} requests ended, {} of them answered with 2xx/3xx", r.total_requests, r.successful_requests),
    )];
    match (&r.knee, s.test_type) {
        (Some(knee), LoadTestType::Stress) => {
            let detail = match (&knee.last_good_load, &knee.breaking_load, &knee.reason) {
                (Some(good), Some(broke), Some(why)) => format!(
                    "held at a load of {good:.0} ({:.0} requests/s); at {broke:.0}: {why}",
                    knee.last_good_throughput.unwrap_or(0.0)
                ),
                (Some(good), _, _) => format!("every step held, up to a load of {good:.0}"),
                (None, _, why) => format!("even the first step passed the limits: {}", why.as_deref().unwrap_or("?")),
            };
            checks.push(check("stress_knee", knee.last_good_load.is_some(), detail));
        }
        _ => {
            let rate = r.error_rate();
            checks.push(check(
                "error_rate",
                r.total_requests > 0 && rate <= s.max_error_rate,
                format!("{:.2} % failed (at most {:.1} %)", rate * 100.0, s.max_error_rate * 100.0),
            ));
            checks.push(check(
                "p95_latency",
                r.total_requests > 0 && r.latency.p95 <= s.max_p95,
                format!("p95 {:?} (at most {:?})", r.latency.p95, s.max_p95),
            ));
        }
    }
    if let Some(d) = &r.drift {
        let slack = std::time::Duration::from_millis(1);
        let latency_ok = d.last_p99 <= d.first_p99 * 2 + slack;
        let errors_ok = d.last_error_rate <= d.first_error_rate + 0.05;
        checks.push(check(
            "endurance_drift",
            latency_ok && errors_ok,
            format!(
                "p99 {:?} in the first tenth, {:?} in the last; errors {:.2} % then {:.2} % (the last tenth may have at most twice the p99 and 5 points more errors)",
                d.first_p99,
                d.last_p99,
                d.first_error_rate * 100.0,
                d.last_error_rate * 100.0
            ),
        ));
    }
    if s.validate_circuit_breakers {
        checks.extend(breakers(r, recovery));
    }
    if s.validate_connection_pools {
        checks.extend(pools(s, r));
    }
    checks
}

/// Whether breakers opened under failure, and closed after recovery.
fn breakers(r: &LoadTestResults, recovery: Option<&Recovery>) -> Vec<Validation> {
    let opened = opened_during(&r.breaker_timeline, r.duration.as_secs_f64());
    let before = open_before(&r.breaker_timeline);
    let already = match before.is_empty() {
        true => String::new(),
        false => format!(" (open before the run, not judged: {})", before.join(", ")),
    };
    let failing = r.timeline.iter().filter(|p| p.requests >= 5 && p.failed * 2 >= p.requests).count();
    let open_check = if !opened.is_empty() {
        let list: Vec<String> = opened.iter().map(|(n, at)| format!("{n} at {at:.1} s")).collect();
        check("circuit_breakers_opened", true, format!("opened: {}{already}", list.join(", ")))
    } else if failing > 0 {
        check(
            "circuit_breakers_opened",
            false,
            format!("{failing} seconds had half or more of their requests fail, and no breaker opened{already}"),
        )
    } else {
        check(
            "circuit_breakers_opened",
            true,
            format!("no breaker opened, and no second failed enough to need one{already}"),
        )
    };
    let close_check = match recovery {
        None => check("circuit_breakers_closed", false, String::from("the recovery phase did not run")),
        Some(Recovery { closed_after: Some(_), .. }) if opened.is_empty() => {
            check("circuit_breakers_closed", true, String::from("no breaker opened during the run"))
        }
        Some(Recovery { closed_after: Some(after), .. }) => {
            let list: Vec<&str> = opened.iter().map(|(n, _)| n.as_str()).collect();
            let detail = format!("{} closed again {:.1} s after the run", list.join(", "), after.as_secs_f64());
            check("circuit_breakers_closed", true, detail)
        }
        Some(Recovery { still_open, error: Some(e), .. }) if still_open.is_empty() => {
            check("circuit_breakers_closed", false, format!("could not read the breakers: {e}"))
        }
        Some(Recovery { still_open, .. }) => {
            check("circuit_breakers_closed", false, format!("still not closed: {}", still_open.join(", ")))
        }
    };
    vec![open_check, close_check]
}

/// Whether pools stayed within their limits, and requests were refused rather than hung.
fn pools(s: &LoadTestScenario, r: &LoadTestResults) -> Vec<Validation> {
    let mut highest: Vec<(String, u64, u64)> = Vec::new();
    let mut over = Vec::new();
    for sample in &r.breaker_timeline {
        for (name, used, max) in &sample.pools {
            if used > max {
                over.push(format!("{name}: {used} of {max} at {:.1} s", sample.at));
            }
            match highest.iter_mut().find(|(n, _, _)| n == name) {
                Some(entry) => entry.1 = entry.1.max(*used),
                None => highest.push((name.clone(), *used, *max)),
            }
        }
    }
    let within = if highest.is_empty() {
        check("pools_within_limits", false, String::from("the target's /resilience reports no pools"))
    } else {
        let seen: Vec<String> = highest.iter().map(|(n, u, m)| format!("{n} at most {u} of {m}")).collect();
        match over.is_empty() {
            true => check("pools_within_limits", true, seen.join(", ")),
            false => check("pools_within_limits", false, format!("over the limit: {}", over.join(", "))),
        }
    };
    let hung = r.errors.get("timeout").copied().unwrap_or(0);
    let rejected = check(
        "requests_rejected_not_hung",
        hung == 0,
        format!("{hung} requests had no answer within the client's {:?}", s.request_timeout),
    );
    vec![within, rejected]
}

/// The first tenth of a run against its last, from the per-second figures (means
/// weighted by each second's requests).
pub(crate) fn drift(timeline: &[TimelinePoint]) -> Option<Drift> {
    let n = timeline.len();
    if n < 2 {
        return None;
    }
    let tenth = (n / 10).max(1);
    let summary = |points: &[TimelinePoint]| {
        let requests: u64 = points.iter().map(|p| p.requests).sum();
        let failed: u64 = points.iter().map(|p| p.failed).sum();
        let weighted = |f: fn(&TimelinePoint) -> std::time::Duration| {
            if requests == 0 {
                return std::time::Duration::ZERO;
            }
            let sum: f64 = points.iter().map(|p| f(p).as_secs_f64() * p.requests as f64).sum();
            std::time::Duration::from_secs_f64(sum / requests as f64)
        };
        let rate = if requests == 0 { 0.0 } else { failed as f64 / requests as f64 };
        (weighted(|p| p.p50), weighted(|p| p.p99), rate)
    };
    let (first_p50, first_p99, first_error_rate) = summary(&timeline[..tenth]);
    let (last_p50, last_p99, last_error_rate) = summary(&timeline[n - tenth..]);
    Some(Drift { first_p50, last_p50, first_p99, last_p99, first_error_rate, last_error_rate })
}
