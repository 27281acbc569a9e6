//! Running a scenario: the closed and open models, the shape's clock, the probes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::{Pooled, RequestTemplate, Target};
use super::record::{ErrorKind, Outcome};
use super::record::{Recorder, Totals};
use super::results::{BreakerSample, Knee, LatencySummary, LoadTestResults, TimelinePoint};
use super::scenario::{stress_step, VOLUME_BODY_BYTES};
use super::wire::WireConnection;
use super::{probe, validate, LoadTestError, LoadTestScenario, LoadTestType};

/// How a run is going, for a progress display.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Time since the start.
    pub elapsed: Duration,
    /// The planned duration.
    pub planned: Duration,
    /// Requests ended so far.
    pub requests: u64,
    /// Of them, failed.
    pub failed: u64,
    /// Requests ended in the last whole second.
    pub rate: f64,
    /// The 99th percentile latency of the last whole second.
    pub p99: Duration,
    /// The load asked for now: users (closed model) or requests per second (open).
    pub load: f64,
}

type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Runs one [`LoadTestScenario`].
///
/// Every run stops by itself, at its `duration` or after `max_requests`, whichever comes
/// first (a stress test may stop earlier, at its knee). Requests still in flight at the
/// end are cancelled and not counted, as `wrk` and `oha` do.
#[derive(Clone)]
pub struct LoadTester {
    scenario: LoadTestScenario,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for LoadTester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadTester").field("scenario", &self.scenario).finish_non_exhaustive()
    }
}

/// What the workers and the clock share.
struct Control {
    stop: watch::Sender<bool>,
    stopped: AtomicBool,
    /// Requests started (for `max_requests`).
    issued: AtomicU64,
    /// Closed model: users that may send now.
    active_users: AtomicUsize,
    /// Open model: requests per second now, as `f64` bits.
    rate_bits: AtomicU64,
    /// The stress step now.
    step: AtomicUsize,
}

impl Control {
    fn stop(&self) {
        self.stopped.store(true, Relaxed);
        let _ = self.stop.send(true);
    }

    /// Takes a request of the cap; `false` (and stops) once the cap is reached.
    fn take_request(&self, cap: Option<u64>) -> bool {
        let n = self.issued.fetch_add(1, Relaxed);
        match cap {
            Some(cap) if n >= cap => {
                self.stop();
                false
            }
            _ => true,
        }
    }
}

impl LoadTester {
    /// A tester for `scenario`.
    pub fn new(scenario: LoadTestScenario) -> Self {
        Self { scenario, progress: None }
    }

    /// Calls `f` four times a second while the run goes.
    pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The scenario it runs.
    pub fn scenario(&self) -> &LoadTestScenario {
        &self.scenario
    }

    fn check(&self) -> Result<(), LoadTestError> {
        let s = &self.scenario;
        let bad = |field, message: &str| Err(LoadTestError::InvalidScenario { field, message: message.to_owned() });
        match s.arrival_rate {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                return bad("arrival_rate", "must be a positive number of requests per second")
            }
            Some(r) if r > 10_000_000.0 => {
                return bad("arrival_rate", "must be at most 10,000,000 requests per second")
            }
            None if s.max_users == 0 => return bad("max_users", "must be at least 1"),
            _ => {}
        }
        if s.max_users > 100_000 {
            return bad("max_users", "must be at most 100,000");
        }
        if s.duration.is_zero() {
            return bad("duration", "must be greater than zero");
        }
        if s.max_requests == Some(0) {
            return bad("max_requests", "must be at least 1");
        }
        if s.request_timeout.is_zero() {
            return bad("request_timeout", "must be greater than zero");
        }
        if s.steps == 0 {
            return bad("steps", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&s.max_error_rate) {
            return bad("max_error_rate", "must be between 0 and 1");
        }
        Ok(())
    }

    /// The load at `progress` of the run.
    fn load_at(&self, progress: f64) -> f64 {
        let s = &self.scenario;
        let level = s.test_type.level(progress, s.steps);
        match s.arrival_rate {
            // The open model never asks for less than a hundredth of the peak (a ramp
            // starts there), so that the schedule always moves on.
            Some(rate) => (level * rate).max(rate / 100.0),
            None => (level * s.max_users as f64).ceil().max(1.0),
        }
    }

    /// Runs the scenario to its end.
    pub async fn run(&self) -> Result<LoadTestResults, LoadTestError> {
        self.check()?;
        let s = &self.scenario;
        let target = Target::resolve(&s.target_url).await?;
        target.check_reachable(&s.target_url, s.request_timeout.min(Duration::from_secs(5))).await?;
        let (method, body) = match (s.test_type, &s.body) {
            (_, Some(body)) => (s.method.clone(), Bytes::from(body.clone())),
            (LoadTestType::Volume, None) => {
                let method = if s.method == http::Method::GET { http::Method::POST } else { s.method.clone() };
                (method, Bytes::from(volume_body()))
            }
            (_, None) => (s.method.clone(), Bytes::new()),
        };
        let template = Arc::new(RequestTemplate::new(&target, method, &s.request_paths, &s.headers, body)?);
        let probing = s.validate_circuit_breakers || s.validate_connection_pools;
        let probes = Pooled::new();
        let samples: Arc<Mutex<Vec<BreakerSample>>> = Arc::default();
        let started = Instant::now();
        if probing {
            let first = probe::sample(&probes, &target.origin, 0.0).await;
            samples.lock().unwrap_or_else(|p| p.into_inner()).push(
                first.map_err(|e| LoadTestError::Unreachable {
                    url: format!("{}/resilience", target.origin),
                    reason: e,
                })?,
            );
        }

        let recorder = Recorder::new(started);
        let (stop, stop_rx) = watch::channel(false);
        let control = Arc::new(Control {
            stop,
            stopped: AtomicBool::new(false),
            issued: AtomicU64::new(0),
            active_users: AtomicUsize::new(self.load_at(0.0) as usize),
            rate_bits: AtomicU64::new(self.load_at(0.0).to_bits()),
            step: AtomicUsize::new(0),
        });
        let mut users = tokio::task::JoinSet::new();
        let mut workers = tokio::task::JoinSet::new();
        match s.arrival_rate {
            None => {
                for user in 0..s.max_users {
                    let worker = ClosedUser {
                        id: user,
                        target: target.clone(),
                        template: Arc::clone(&template),
                        control: Arc::clone(&control),
                        recorder: Arc::clone(&recorder),
                        scenario: s.clone(),
                    };
                    users.spawn(worker.run());
                }
            }
            Some(_) => {
                let dispatcher = OpenDispatcher {
                    started,
                    template: Arc::clone(&template),
                    control: Arc::clone(&control),
                    recorder: Arc::clone(&recorder),
                    scenario: s.clone(),
                    stop: stop_rx.clone(),
                };
                workers.spawn(dispatcher.run());
            }
        }
        if probing {
            let (probes, origin, samples, mut stop) =
                (probes.clone(), target.origin.clone(), Arc::clone(&samples), stop_rx.clone());
            workers.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        _ = tick.tick() => {}
                    }
                    let at = started.elapsed().as_secs_f64();
                    if let Ok(sample) = probe::sample(&probes, &origin, at).await {
                        samples.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                    }
                }
            });
        }
        let knee = self.clock(started, &control, &recorder).await;
        control.stop();
        let ended = started.elapsed();
        // Requests in flight are cancelled; each user hands its records over as it is
        // dropped. The dispatcher and the probe see the stop and end by themselves.
        users.abort_all();
        while users.join_next().await.is_some() {}
        let _ =
            tokio::time::timeout(Duration::from_secs(2), async { while workers.join_next().await.is_some() {} }).await;
        workers.abort_all();
        let totals = recorder.take_totals();

        let mut breaker_timeline = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
        let recovery = if s.validate_circuit_breakers {
            let watched: Vec<String> =
                probe::opened_during(&breaker_timeline, ended.as_secs_f64()).into_iter().map(|(n, _)| n).collect();
            let wait = (s.recovery_wait, watched.as_slice());
            Some(probe::recover(&probes, &target, &template, wait, started, &mut breaker_timeline).await)
        } else {
            None
        };
        let mut results = self.results(totals, ended, knee);
        results.breaker_timeline = breaker_timeline;
        results.validations = validate::all(s, &results, recovery.as_ref());
        Ok(results)
    }

    /// Keeps the shape's load, reports progress, and ends the run at its duration (or a
    /// stress test at its knee). Returns the knee of a stress test.
    async fn clock(&self, started: Instant, control: &Control, recorder: &Recorder) -> Option<Knee> {
        let s = &self.scenario;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_report = Instant::now() - Duration::from_secs(1);
        let mut step = 0usize;
        let mut stopped = control.stop.subscribe();
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                _ = tick.tick() => {}
            }
            let elapsed = started.elapsed();
            let progress = elapsed.as_secs_f64() / s.duration.as_secs_f64();
            if progress >= 1.0 {
                break;
            }
            let load = self.load_at(progress);
            control.active_users.store(load as usize, Relaxed);
            control.rate_bits.store(load.to_bits(), Relaxed);
            recorder.set_level(elapsed.as_secs() as usize, load);
            if s.test_type == LoadTestType::Stress {
                let now = stress_step(progress, s.steps);
                if now != step {
                    control.step.store(now, Relaxed);
                    if let Some(reason) = recorder.with(|t| self.step_broke(t, step)) {
                        return Some(self.knee(recorder, step, Some(reason)));
                    }
                    step = now;
                }
            }
            if let Some(report) = &self.progress {
                if last_report.elapsed() >= Duration::from_millis(250) {
                    last_report = Instant::now();
                    let second = elapsed.as_secs() as usize;
                    let (requests, failed, (rate, p99)) = recorder
                        .with(|t| (t.successful + t.failed, t.failed, t.second_summary(second.saturating_sub(1))));
                    report(&Progress { elapsed, planned: s.duration, requests, failed, rate: rate as f64, p99, load });
                }
            }
        }
        if s.test_type != LoadTestType::Stress {
            return None;
        }
        let reason = recorder.with(|t| self.step_broke(t, step));
        Some(self.knee(recorder, if reason.is_some() { step } else { step + 1 }, reason))
    }

    /// Why stress step `step` passed the limits, if it did.
    fn step_broke(&self, totals: &Totals, step: usize) -> Option<String> {
        let s = &self.scenario;
        let stats = totals.steps.get(step)?;
        if stats.requests == 0 {
            return Some(String::from("no request ended"));
        }
        let error_rate = stats.failed as f64 / stats.requests as f64;
        let p95 = totals.step_latency(step).p95;
        if error_rate > s.max_error_rate {
            Some(format!("error rate {:.1} % > {:.1} %", error_rate * 100.0, s.max_error_rate * 100.0))
        } else if p95 > s.max_p95 {
            Some(format!("p95 {p95:?} > {:?}", s.max_p95))
        } else {
            None
        }
    }

    /// The knee when step `breaking` passed the limits (or every step before it held).
    fn knee(&self, recorder: &Recorder, breaking: usize, reason: Option<String>) -> Knee {
        let s = &self.scenario;
        let step_load = |k: usize| self.load_at((k as f64 + 0.5) / s.steps as f64);
        let step_seconds = s.duration.as_secs_f64() / s.steps as f64;
        let good = breaking.checked_sub(1);
        Knee {
            last_good_load: good.map(step_load),
            last_good_throughput: good
                .map(|k| recorder.with(|t| t.steps.get(k).map_or(0, |st| st.requests)) as f64 / step_seconds),
            breaking_load: reason.as_ref().map(|_| step_load(breaking)),
            reason,
        }
    }

    fn results(&self, totals: Totals, ended: Duration, knee: Option<Knee>) -> LoadTestResults {
        let s = &self.scenario;
        let l = totals.latency();
        let total = totals.successful + totals.failed;
        let timeline: Vec<TimelinePoint> = totals
            .seconds
            .iter()
            .enumerate()
            .map(|(i, sec)| TimelinePoint {
                second: i as u32,
                requests: sec.requests,
                failed: sec.failed,
                p50: sec.latency.p50,
                p90: sec.latency.p90,
                p99: sec.latency.p99,
                max: sec.latency.max,
                load: sec.level,
                bytes_received: sec.bytes_received,
            })
            .collect();
        let drift = (s.test_type == LoadTestType::Endurance).then(|| validate::drift(&timeline)).flatten();
        LoadTestResults {
            scenario: s.name.clone(),
            test_type: s.test_type,
            model: if s.arrival_rate.is_some() { "open" } else { "closed" },
            duration: ended,
            total_requests: total,
            successful_requests: totals.successful,
            failed_requests: totals.failed,
            throughput: if ended.is_zero() { 0.0 } else { total as f64 / ended.as_secs_f64() },
            latency: LatencySummary {
                mean: l.mean,
                p50: l.p50,
                p90: l.p90,
                p95: l.p95,
                p99: l.p99,
                p999: l.p999,
                max: l.max,
            },
            status_codes: totals.status_codes.clone(),
            errors: totals.errors.iter().map(|(k, v)| (k.as_str().to_owned(), *v)).collect(),
            bytes_sent: totals.bytes_sent,
            bytes_received: totals.bytes_received,
            timeline,
            validations: Vec::new(),
            knee,
            drift,
            breaker_timeline: Vec::new(),
        }
    }
}

fn volume_body() -> Vec<u8> {
    // Printable and not all one byte, so that compression along the way does not hide
    // the volume.
    (0..VOLUME_BODY_BYTES).map(|i| b'a' + ((i * 7 + i / 251) % 26) as u8).collect()
}

/// A virtual user of the closed model, on its own connection.
struct ClosedUser {
    id: usize,
    target: Target,
    template: Arc<RequestTemplate>,
    control: Arc<Control>,
    recorder: Arc<Recorder>,
    scenario: LoadTestScenario,
}

impl ClosedUser {
    async fn run(self) {
        // Aborted at the end of the run: dropping `local` hands its records over.
        let mut local = self.recorder.local();
        let mut connection = WireConnection::default();
        let body_len = self.template.body_len();
        let s = &self.scenario;
        let mut path = self.id;
        // One timer per user, moved on at each request: moving a deadline later is
        // cheap for tokio's timer, registering a new one per request is not.
        let deadline = tokio::time::sleep(s.request_timeout);
        tokio::pin!(deadline);
        while !self.control.stopped.load(Relaxed) {
            if self.id >= self.control.active_users.load(Relaxed) {
                // Not yet (or no longer) part of the load: look again shortly.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if s.max_requests.is_some() && !self.control.take_request(s.max_requests) {
                break;
            }
            path = path.wrapping_add(1);
            let step = self.control.step.load(Relaxed);
            let start = Instant::now();
            deadline.as_mut().reset(start + s.request_timeout);
            let exchanged = tokio::select! {
                biased;
                r = connection.exchange(self.target.address, self.template.wire(path)) => r,
                _ = &mut deadline => {
                    connection.close();
                    Err(ErrorKind::Timeout)
                }
            };
            let (outcome, received) = match exchanged {
                Ok((status, bytes)) => (Outcome::Status(status), bytes),
                Err(kind) => (Outcome::Error(kind), 0),
            };
            let now = Instant::now();
            local.record(now, now - start, outcome, (body_len, received), step);
            if !s.think_time.is_zero() {
                tokio::time::sleep(s.think_time).await;
            }
        }
    }
}

/// The open model: starts requests on schedule, whatever the earlier ones are doing.
struct OpenDispatcher {
    started: Instant,
    template: Arc<RequestTemplate>,
    control: Arc<Control>,
    recorder: Arc<Recorder>,
    scenario: LoadTestScenario,
    stop: watch::Receiver<bool>,
}

/// Requests of the open model in flight at most (beyond, new ones wait, and their wait
/// counts in their latency).
const MAX_IN_FLIGHT: usize = 10_000;

impl OpenDispatcher {
    async fn run(mut self) {
        let client = Pooled::new();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let local = Arc::new(Mutex::new(self.recorder.local()));
        let body_len = self.template.body_len();
        let s = &self.scenario;
        let end = self.started + s.duration;
        let mut due = self.started;
        let mut path = 0usize;
        let mut requests = tokio::task::JoinSet::new();
        loop {
            if due >= end || self.control.stopped.load(Relaxed) {
                break;
            }
            tokio::select! {
                biased;
                _ = self.stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(due) => {}
            }
            if s.max_requests.is_some() && !self.control.take_request(s.max_requests) {
                break;
            }
            let permit = tokio::select! {
                _ = self.stop.wait_for(|s| *s) => break,
                p = Arc::clone(&in_flight).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let i = path;
            path = path.wrapping_add(1);
            let step = self.control.step.load(Relaxed);
            let (client, template, local, timeout) =
                (client.clone(), Arc::clone(&self.template), Arc::clone(&local), s.request_timeout);
            let intended = due;
            requests.spawn(async move {
                let (outcome, received) = client.send(&template, i, timeout).await;
                let now = Instant::now();
                local.lock().unwrap_or_else(|p| p.into_inner()).record(
                    now,
                    now - intended,
                    outcome,
                    (body_len, received),
                    step,
                );
                drop(permit);
            });
            while requests.try_join_next().is_some() {}
            let rate = f64::from_bits(self.control.rate_bits.load(Relaxed));
            due += Duration::from_secs_f64(1.0 / rate);
        }
        // Requests due before the end may still answer until the clock stops the run.
        let _ = self.stop.wait_for(|s| *s).await;
        requests.abort_all();
        while requests.join_next().await.is_some() {}
        local.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
}
