//! Reading the target's `/resilience` (the JSON of `resilience::web::routes()`), and
//! the recovery phase after a run that validates circuit breakers.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::client::{Pooled, RequestTemplate, Target};
use super::results::BreakerSample;

/// States in which a breaker lets calls through as usual.
pub(crate) fn closed(state: &str) -> bool {
    matches!(state, "closed" | "disabled")
}

/// What `/resilience` says now, `at` seconds into the run.
pub(crate) async fn sample(probes: &Pooled, origin: &str, at: f64) -> Result<BreakerSample, String> {
    let url = format!("{origin}/resilience");
    let (status, body) = probes.get_text(&url, Duration::from_secs(2)).await?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    parse(&body, at).ok_or_else(|| format!("{url} did not answer the JSON of resilience::web::routes()"))
}

/// The breakers and pools of a `/resilience` answer.
pub(crate) fn parse(body: &str, at: f64) -> Option<BreakerSample> {
    let report: Value = serde_json::from_str(body).ok()?;
    let breakers = report
        .get("dependencies")?
        .as_array()?
        .iter()
        .filter_map(|d| {
            Some((d.get("name")?.as_str()?.to_owned(), d.get("circuit_state")?.as_str()?.to_ascii_lowercase()))
        })
        .collect();
    let pools = report
        .get("pools")
        .and_then(Value::as_array)
        .map(|pools| {
            pools
                .iter()
                .filter_map(|p| {
                    Some((p.get("name")?.as_str()?.to_owned(), p.get("in_use")?.as_u64()?, p.get("max")?.as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(BreakerSample { at, breakers, pools })
}

/// The breakers that opened during the run, with when they were first seen open: those
/// closed (or not there yet) in the first sample and open in a later one up to `end`
/// seconds. Breakers open already before the run are not the run's doing.
pub(crate) fn opened_during(timeline: &[BreakerSample], end: f64) -> Vec<(String, f64)> {
    let Some(first) = timeline.first() else { return Vec::new() };
    let open_before = |name: &str| first.breakers.iter().any(|(n, st)| n == name && !closed(st));
    let mut opened: Vec<(String, f64)> = Vec::new();
    for sample in timeline.iter().skip(1).filter(|s| s.at <= end) {
        for (name, state) in &sample.breakers {
            if !closed(state) && !open_before(name) && !opened.iter().any(|(n, _)| n == name) {
                opened.push((name.clone(), sample.at));
            }
        }
    }
    opened
}

/// Breakers open in the first sample (before the run).
pub(crate) fn open_before(timeline: &[BreakerSample]) -> Vec<String> {
    timeline.first().map_or_else(Vec::new, |first| {
        first.breakers.iter().filter(|(_, st)| !closed(st)).map(|(n, _)| n.clone()).collect()
    })
}

/// How the target's breakers came back after the run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recovery {
    /// How long after the run every breaker was closed, if it was within the wait.
    pub(crate) closed_after: Option<Duration>,
    /// Breakers still not closed at the end of the wait.
    pub(crate) still_open: Vec<String>,
    /// Why `/resilience` could not be read, if it could not.
    pub(crate) error: Option<String>,
}

/// Waits up to `wait` for each breaker of `watched` to close, sending two requests of
/// the scenario every 200 ms meanwhile (a half-open breaker closes only on trial calls).
/// Samples go to `timeline`.
pub(crate) async fn recover(
    probes: &Pooled,
    target: &Target,
    template: &RequestTemplate,
    (wait, watched): (Duration, &[String]),
    started: Instant,
    timeline: &mut Vec<BreakerSample>,
) -> Recovery {
    let began = Instant::now();
    let mut i = 0;
    loop {
        let (still_open, error) = match sample(probes, &target.origin, started.elapsed().as_secs_f64()).await {
            Ok(s) => {
                let open: Vec<String> = s
                    .breakers
                    .iter()
                    .filter(|(n, st)| !closed(st) && watched.contains(n))
                    .map(|(n, _)| n.clone())
                    .collect();
                timeline.push(s);
                if open.is_empty() {
                    return Recovery { closed_after: Some(began.elapsed()), still_open: open, error: None };
                }
                (open, None)
            }
            Err(e) => (Vec::new(), Some(e)),
        };
        if began.elapsed() >= wait {
            return Recovery { closed_after: None, still_open, error };
        }
        for _ in 0..2 {
            let _ = probes.send(template, i, Duration::from_secs(2)).await;
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_s_breakers_and_pools_are_read() {
        let body = r#"{"status":"DEGRADED","dependencies":[
            {"name":"inventory","circuit_state":"open","error_rate":80.0},
            {"name":"no_breaker","circuit_state":null}],
            "pools":[{"name":"http_default","kind":"http","in_use":3,"max":30}],"alerts":[]}"#;
        let s = parse(body, 1.5).expect("parses");
        assert_eq!(s.breakers, vec![("inventory".to_owned(), "open".to_owned())]);
        assert_eq!(s.pools, vec![("http_default".to_owned(), 3, 30)]);
        assert!(parse("<html>not json</html>", 0.0).is_none());
        assert!(parse(r#"{"something":"else"}"#, 0.0).is_none());
    }
}
