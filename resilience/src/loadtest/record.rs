//! Recording answers: HDR histograms overall, per second and per stress step, counts by
//! status and error kind. Each worker batches its samples and hands them over under one
//! lock every few hundred answers or every 50 ms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ErrorKind {
    /// The connection could not be made.
    Connect,
    /// No answer within the request timeout.
    Timeout,
    /// The connection was reset or closed before the answer ended.
    Reset,
    /// Any other transport or protocol error.
    Other,
}

impl ErrorKind {
    /// The kind of an I/O error of a connection.
    pub(crate) fn of_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        match e.kind() {
            Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof => Self::Reset,
            Io::ConnectionRefused | Io::NotConnected | Io::AddrNotAvailable => Self::Connect,
            Io::TimedOut => Self::Timeout,
            _ => Self::Other,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Other => "other",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Status(u16),
    Error(ErrorKind),
}

impl Outcome {
    /// 2xx and 3xx answers succeed; everything else fails.
    pub(crate) fn succeeded(self) -> bool {
        matches!(self, Self::Status(s) if (200..400).contains(&s))
    }
}

/// One request's record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// When it ended, from the start of the run.
    pub(crate) ended: Duration,
    pub(crate) latency: Duration,
    pub(crate) outcome: Outcome,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    /// The stress step it was sent in (0 for other shapes).
    pub(crate) step: usize,
}

/// The longest latency told apart (longer ones count as this).
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// Seconds kept with their histograms until later samples show they are over.
const LIVE_SECONDS: usize = 3;
const BATCH: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_millis(50);

fn histogram(significant_figures: u8) -> Histogram<u64> {
    // Bounds that are always valid: 1 µs to an hour, 2 or 3 significant figures.
    Histogram::new_with_bounds(1, HIGHEST_MICROS, significant_figures)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid")))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, HIGHEST_MICROS)
}

/// Latency percentiles of a histogram in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Percentiles {
    pub(crate) mean: Duration,
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p95: Duration,
    pub(crate) p99: Duration,
    pub(crate) p999: Duration,
    pub(crate) max: Duration,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let at = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        Self {
            mean: Duration::from_secs_f64(h.mean() / 1e6),
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(h.max()),
        }
    }
}

/// One second of the run, by when its requests ended.
#[derive(Debug, Default)]
pub(crate) struct Second {
    live: Option<Histogram<u64>>,
    pub(crate) requests: u64,
    pub(crate) failed: u64,
    pub(crate) bytes_received: u64,
    pub(crate) latency: Percentiles,
    /// The load the runner asked for in this second: users, or requests per second.
    pub(crate) level: f64,
}

impl Second {
    fn finish(&mut self) {
        if let Some(h) = self.live.take() {
            self.latency = Percentiles::of(&h);
        }
    }
}

/// One step of a stress test.
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) failed: u64,
}

/// Everything recorded so far.
#[derive(Debug)]
pub(crate) struct Totals {
    pub(crate) all: Histogram<u64>,
    pub(crate) successful: u64,
    pub(crate) failed: u64,
    pub(crate) status_codes: BTreeMap<u16, u64>,
    pub(crate) errors: BTreeMap<ErrorKind, u64>,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) seconds: Vec<Second>,
    pub(crate) steps: Vec<Step>,
}

impl Totals {
    fn new() -> Self {
        Self {
            all: histogram(3),
            successful: 0,
            failed: 0,
            status_codes: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            seconds: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn add(&mut self, s: &Sample) {
        let us = micros(s.latency);
        self.all.saturating_record(us);
        let ok = s.outcome.succeeded();
        if ok {
            self.successful += 1;
        } else {
            self.failed += 1;
        }
        match s.outcome {
            Outcome::Status(code) => *self.status_codes.entry(code).or_default() += 1,
            Outcome::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
        self.bytes_sent += s.bytes_sent;
        self.bytes_received += s.bytes_received;
        let second = self.second_mut(s.ended.as_secs() as usize);
        second.requests += 1;
        second.failed += u64::from(!ok);
        second.bytes_received += s.bytes_received;
        if let Some(h) = &mut second.live {
            h.saturating_record(us);
        }
        while self.steps.len() <= s.step {
            self.steps.push(Step { histogram: histogram(2), requests: 0, failed: 0 });
        }
        let step = &mut self.steps[s.step];
        step.histogram.saturating_record(us);
        step.requests += 1;
        step.failed += u64::from(!ok);
    }

    /// Second `i`, made (with the ones before it) if new; seconds more than a few
    /// behind it are finished (their histograms summed up and dropped).
    fn second_mut(&mut self, i: usize) -> &mut Second {
        while self.seconds.len() <= i {
            let level = self.seconds.last().map_or(0.0, |s| s.level);
            self.seconds.push(Second { live: Some(histogram(2)), level, ..Default::default() });
            let n = self.seconds.len();
            if n > LIVE_SECONDS {
                self.seconds[n - 1 - LIVE_SECONDS].finish();
            }
        }
        &mut self.seconds[i]
    }

    /// The latency percentiles of every request so far.
    pub(crate) fn latency(&self) -> Percentiles {
        Percentiles::of(&self.all)
    }

    /// Requests and p99 of second `i`, while it is recorded or after.
    pub(crate) fn second_summary(&self, i: usize) -> (u64, Duration) {
        match self.seconds.get(i) {
            None => (0, Duration::ZERO),
            Some(s) => {
                let p99 = match &s.live {
                    Some(h) if !h.is_empty() => Duration::from_micros(h.value_at_quantile(0.99)),
                    Some(_) => Duration::ZERO,
                    None => s.latency.p99,
                };
                (s.requests, p99)
            }
        }
    }

    /// The percentiles of a stress step.
    pub(crate) fn step_latency(&self, step: usize) -> Percentiles {
        self.steps.get(step).map(|s| Percentiles::of(&s.histogram)).unwrap_or_default()
    }

    fn finish(&mut self) {
        for s in &mut self.seconds {
            s.finish();
        }
    }
}

/// The shared recorder of a run.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) started: Instant,
    totals: Mutex<Totals>,
}

impl Recorder {
    pub(crate) fn new(started: Instant) -> Arc<Self> {
        Arc::new(Self { started, totals: Mutex::new(Totals::new()) })
    }

    /// A batching handle for one worker.
    pub(crate) fn local(self: &Arc<Self>) -> Local {
        Local { recorder: Arc::clone(self), batch: Vec::with_capacity(BATCH), last_flush: Instant::now() }
    }

    /// Reads the totals.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Totals) -> R) -> R {
        f(&self.totals.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Notes the load asked for in second `second`.
    pub(crate) fn set_level(&self, second: usize, level: f64) {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.second_mut(second).level = level;
    }

    /// Finishes every second and hands the totals over.
    pub(crate) fn take_totals(&self) -> Totals {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.finish();
        std::mem::replace(&mut *totals, Totals::new())
    }
}

/// One worker's batch of samples.
#[derive(Debug)]
pub(crate) struct Local {
    recorder: Arc<Recorder>,
    batch: Vec<Sample>,
    last_flush: Instant,
}

impl Local {
    /// Records a request that ended `now`, `latency` after it started (or was due to).
    pub(crate) fn record(&mut self, now: Instant, latency: Duration, outcome: Outcome, bytes: (u64, u64), step: usize) {
        let ended = now.saturating_duration_since(self.recorder.started);
        self.batch.push(Sample { ended, latency, outcome, bytes_sent: bytes.0, bytes_received: bytes.1, step });
        if self.batch.len() >= BATCH || now.saturating_duration_since(self.last_flush) >= FLUSH_EVERY {
            self.flush_at(now);
        }
    }

    fn flush_at(&mut self, now: Instant) {
        self.last_flush = now;
        if self.batch.is_empty() {
            return;
        }
        let mut totals = self.recorder.totals.lock().unwrap_or_else(|p| p.into_inner());
        for s in self.batch.drain(..) {
            totals.add(&s);
        }
    }

    /// Hands over what is batched.
    pub(crate) fn flush(&mut self) {
        self.flush_at(Instant::now());
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn samples_land_in_their_second_and_step_with_their_outcome() {
        let recorder = Recorder::new(Instant::now());
        let mut local = recorder.local();
        local.record(Instant::now(), Duration::from_millis(2), Outcome::Status(200), (10, 100), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        local.record(Instant::now(), Duration::from_millis(40), Outcome::Status(503), (10, 20), 1);
        local.record(Instant::now(), Duration::from_secs(2), Outcome::Error(ErrorKind::Timeout), (10, 0), 1);
        drop(local);
        let totals = recorder.take_totals();
        assert_eq!((totals.successful, totals.failed), (1, 2));
        assert_eq!(totals.status_codes.get(&503), Some(&1));
        assert_eq!(totals.errors.get(&ErrorKind::Timeout), Some(&1));
        assert_eq!((totals.bytes_sent, totals.bytes_received), (30, 120));
        assert_eq!(totals.seconds.len(), 2);
        assert_eq!((totals.seconds[0].requests, totals.seconds[1].requests, totals.seconds[1].failed), (1, 2, 2));
        let p = totals.seconds[1].latency;
        assert!(p.max >= Duration::from_millis(1990) && p.p50 >= Duration::from_millis(39), "{p:?}");
        assert_eq!(totals.steps[1].requests, 2);
        assert!(totals.latency().max >= Duration::from_millis(1990));
    }
}
