//! The adaptive bulkhead: a concurrency limit learned from latency.
//!
//! A gradient controller in the manner of Envoy's adaptive concurrency filter, run once
//! per window of samples, never per call:
//!
//! - **Baseline.** The dependency's unloaded round trip, measured with the live limit
//!   pinned low (at most [`PROBE_LIMIT`], at least `min_limit`) so that no queue can form
//!   in front of it: the mean of the first [`PROBE_SAMPLES`] calls that *started* after
//!   the pin (calls admitted before it, which may have queued, are left out; and the
//!   probe's own calls and those of the window after it, which met less of a queue than
//!   the restored limit makes, are left out of the next window). The first
//!   probe runs when the bulkhead is made; later ones every [`PROBE_EVERY`], jittered by
//!   a fifth either way so that many instances do not probe in step. A window whose mean
//!   is below the baseline lowers it (the dependency got faster).
//! - **Window.** At least [`WINDOW_SAMPLES`] finished calls and at least
//!   `max(`[`MIN_WINDOW`]`, 2 × baseline)`. Then, if any call of the window timed out,
//!   the limit is multiplied by [`DECREASE`] (once for the window); otherwise
//!   `gradient = clamp(baseline × (1 + `[`BUFFER`]`) / mean, 0.5, 1)` and
//!   `limit = limit × gradient + √limit`. The limit does not grow in a window whose peak
//!   of calls in flight stayed under half of it (the limit is not what holds calls
//!   back), and always stays within `min_limit..=max_limit`.
//!
//! Samples are the attempts' round trips from the moment the body first waited to its
//! end, taken where the bulkhead sits (inside the retry, so backoff is never latency);
//! when a window sees more than [`SAMPLES_PER_WINDOW`] calls, one waiting call in so
//! many (per thread) is timed, so that a busy dependency pays for few clock reads.
//! Rejected calls and dropped (cancelled) calls give no sample; nor do attempts that
//! finish on their first poll, which hold their slot for no time at all.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use metrics::{gauge, Gauge};
use tokio::time::Instant;

use super::semaphore::{SemaphoreBulkhead, SemaphoreBulkheadConfig};
use crate::clock::{duration_nanos, Epoch};
use crate::error::ConfigError;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering::Relaxed};

/// The highest live limit of a baseline probe.
pub const PROBE_LIMIT: usize = 3;
/// Samples a baseline probe averages.
pub const PROBE_SAMPLES: u64 = 10;
/// A probe that has not gathered its samples in this long ends with those it has.
pub const PROBE_MAX: Duration = Duration::from_secs(5);
/// How often the baseline is measured again (jittered by a fifth either way).
pub const PROBE_EVERY: Duration = Duration::from_secs(30);
/// Samples a window aims at: beyond that, calls are timed one in so many.
pub const SAMPLES_PER_WINDOW: u64 = 64;
/// Finished calls a window needs before the limit is updated.
pub const WINDOW_SAMPLES: u64 = 10;
/// The shortest window.
pub const MIN_WINDOW: Duration = Duration::from_millis(100);
/// How much slower than the baseline a window may be before the limit shrinks.
pub const BUFFER: f64 = 0.1;
/// The factor applied to the limit after a window with timeouts.
pub const DECREASE: f64 = 0.9;

/// Limits of an [`AdaptiveBulkhead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdaptiveBulkheadConfig {
    /// The limit it starts from (`max_concurrent` in configuration). Default 20.
    pub initial_limit: NonZeroUsize,
    /// The lowest limit it may learn. Default 1.
    pub min_limit: NonZeroUsize,
    /// The highest limit it may learn. Default 200.
    pub max_limit: NonZeroUsize,
    /// How long a call may wait for a free slot; zero (the default) fails fast.
    pub max_wait: Duration,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl Default for AdaptiveBulkheadConfig {
    fn default() -> Self {
        Self {
            initial_limit: nz(resilience_rules::DEFAULT_ADAPTIVE_LIMIT),
            min_limit: nz(resilience_rules::DEFAULT_MIN_LIMIT),
            max_limit: nz(resilience_rules::DEFAULT_MAX_LIMIT),
            max_wait: Duration::ZERO,
        }
    }
}

impl AdaptiveBulkheadConfig {
    /// Checks the configuration: `min_limit <= initial_limit <= max_limit`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        resilience_rules::adaptive_limits(self.min_limit.get(), self.initial_limit.get(), self.max_limit.get())
            .map_err(|(key, reason)| ConfigError::invalid(&format!("bulkhead.{key}"), reason))
    }
}

/// A semaphore bulkhead whose limit follows the dependency's latency (see the module
/// documentation for the controller). Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct AdaptiveBulkhead {
    semaphore: SemaphoreBulkhead,
    control: Arc<Control>,
}

/// What the controller learned, for snapshots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveState {
    /// The learned limit (also while a probe pins the live limit lower).
    pub limit: usize,
    /// The limit calls are admitted under right now.
    pub live_limit: usize,
    /// Calls holding a slot now.
    pub in_flight: usize,
    /// The estimated unloaded round trip, once measured.
    pub baseline: Option<Duration>,
    /// Whether a baseline probe is running.
    pub probing: bool,
}

struct Control {
    epoch: Epoch,
    config: AdaptiveBulkheadConfig,
    // The open window's samples, added lock-free by finishing calls.
    samples: AtomicU64,
    rtt_sum: AtomicU64,
    drops: AtomicU64,
    peak: AtomicUsize,
    /// Epoch nanoseconds from which a finishing call may close the window.
    window_end: AtomicU64,
    /// Calls that started before this (epoch nanoseconds) give no sample: those
    /// admitted before the running probe pinned the limit, and after a probe, those
    /// admitted under its pin.
    counting_from: AtomicU64,
    learned: AtomicUsize,
    baseline: AtomicU64,
    probing: AtomicBool,
    /// One waiting call in this many (per thread) is timed: about [`SAMPLES_PER_WINDOW`]
    /// samples a window, so a busy dependency pays for few clock reads.
    sample_every: AtomicU64,
    state: Mutex<State>,
    limit_gauge: Gauge,
    baseline_gauge: Gauge,
    in_flight_gauge: Gauge,
}

struct State {
    limit: f64,
    baseline: Option<u64>,
    /// `Some(start)` while a probe runs.
    probe: Option<u64>,
    next_probe: u64,
    rng: u64,
    /// When the open window (or probe) began, for the rate of calls.
    window_start: u64,
}

impl fmt::Debug for AdaptiveBulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveBulkhead")
            .field("name", &self.semaphore.name())
            .field("state", &self.state())
            .field("config", &self.control.config)
            .finish()
    }
}

impl AdaptiveBulkhead {
    /// Builds an adaptive bulkhead; its first baseline probe starts at once.
    pub fn new(name: impl Into<Arc<str>>, config: AdaptiveBulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let name: Arc<str> = name.into();
        let pin = probe_limit(&config, config.initial_limit.get() as f64);
        let semaphore = SemaphoreBulkhead::new(
            Arc::clone(&name),
            SemaphoreBulkheadConfig { max_concurrent: nz(pin), max_wait: config.max_wait },
        )?;
        let seed = (Arc::as_ptr(&name) as *const u8 as u64) ^ 0x9E37_79B9_7F4A_7C15;
        let control = Control {
            epoch: Epoch::now(),
            config,
            samples: AtomicU64::new(0),
            rtt_sum: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            window_end: AtomicU64::new(0),
            counting_from: AtomicU64::new(0),
            learned: AtomicUsize::new(config.initial_limit.get()),
            baseline: AtomicU64::new(0),
            probing: AtomicBool::new(true),
            sample_every: AtomicU64::new(1),
            state: Mutex::new(State {
                limit: config.initial_limit.get() as f64,
                baseline: None,
                probe: Some(0),
                next_probe: 0,
                rng: seed | 1,
                window_start: 0,
            }),
            limit_gauge: gauge!("resilience_adaptive_limit", "name" => name.to_string()),
            baseline_gauge: gauge!("resilience_adaptive_baseline_seconds", "name" => name.to_string()),
            in_flight_gauge: gauge!("resilience_adaptive_in_flight", "name" => name.to_string()),
        };
        control.limit_gauge.set(config.initial_limit.get() as f64);
        Ok(Self { semaphore, control: Arc::new(control) })
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        self.semaphore.name()
    }

    /// The configuration.
    pub fn config(&self) -> &AdaptiveBulkheadConfig {
        &self.control.config
    }

    /// The learned limit (what snapshots report as `bulkhead_max_concurrent`).
    pub fn limit(&self) -> usize {
        self.control.learned.load(Relaxed)
    }

    /// Free slots under the live limit right now.
    pub fn available(&self) -> usize {
        self.semaphore.available()
    }

    /// The controller's state.
    pub fn state(&self) -> AdaptiveState {
        let live = self.semaphore.max_concurrent();
        let baseline = self.control.baseline.load(Relaxed);
        AdaptiveState {
            limit: self.limit(),
            live_limit: live,
            in_flight: self.semaphore.permits().in_use(),
            baseline: (baseline != 0).then(|| Duration::from_nanos(baseline)),
            probing: self.control.probing.load(Relaxed),
        }
    }

    /// Sets the gauges that follow a value continuously (free slots, calls in flight).
    pub(crate) fn refresh_gauges(&self) {
        self.semaphore.refresh_gauges();
        self.control.in_flight_gauge.set(self.semaphore.permits().in_use() as f64);
    }

    /// The semaphore that admits calls.
    pub(crate) fn semaphore(&self) -> &SemaphoreBulkhead {
        &self.semaphore
    }

    /// Changes how long later calls wait for a slot.
    pub(crate) fn set_max_wait(&self, max_wait: Duration) {
        self.semaphore.set_max_wait(max_wait);
    }

    /// Whether the attempt that just started to wait is timed (see `sample_every`).
    #[inline]
    pub(crate) fn sampled(&self) -> bool {
        let every = self.control.sample_every.load(Relaxed);
        every == 1
            || TICK.with(|t| {
                let n = t.get().wrapping_add(1);
                t.set(n);
                n % every == 0
            })
    }

    /// Records an attempt that held a slot from `started` until now: a round trip, or
    /// with `timed_out` a drop. Closes the window when it is due.
    pub(crate) fn record(&self, started: Instant, timed_out: bool) {
        let c = &*self.control;
        let now = c.epoch.nanos();
        let start = c.epoch.nanos_at(started);
        if start < c.counting_from.load(Relaxed) {
            return;
        }
        if timed_out {
            c.drops.fetch_add(1, Relaxed);
        } else {
            c.rtt_sum.fetch_add(now.saturating_sub(start), Relaxed);
            c.samples.fetch_add(1, Relaxed);
        }
        // This call's own slot is still held, so it counts itself.
        c.peak.fetch_max(self.semaphore.permits().in_use(), Relaxed);
        if now >= c.window_end.load(Relaxed) {
            self.close(now);
        }
    }

    #[cold]
    fn close(&self, now: u64) {
        let c = &*self.control;
        let Ok(mut s) = c.state.try_lock() else { return };
        if now < c.window_end.load(Relaxed) {
            return;
        }
        let (samples, drops) = (c.samples.load(Relaxed), c.drops.load(Relaxed));
        if let Some(since) = s.probe {
            let long = now.saturating_sub(since) >= duration_nanos(PROBE_MAX);
            if samples < PROBE_SAMPLES && !(long && samples + drops > 0) {
                return;
            }
            let (samples, sum, drops, _) = take(c);
            self.set_sampling(&mut s, samples + drops, now);
            if let Some(mean) = sum.checked_div(samples) {
                s.baseline = Some(mean.max(1));
            } else if drops > 0 {
                s.limit = (s.limit * DECREASE).max(c.config.min_limit.get() as f64);
            }
            s.probe = None;
            // The calls admitted under the pin, and those admitted while the restored
            // limit fills up again, met less of a queue than the limit makes: the
            // first window after the probe counts only calls admitted a window later.
            c.counting_from.store(now.saturating_add(window_length(s.baseline)), Relaxed);
            let every = duration_nanos(PROBE_EVERY) as f64;
            let jitter = 0.8 + 0.4 * unit(&mut s.rng);
            s.next_probe = now.saturating_add((every * jitter) as u64);
            self.publish(&s, now);
            return;
        }
        if samples + drops < WINDOW_SAMPLES {
            return;
        }
        let (samples, sum, drops, peak) = take(c);
        self.set_sampling(&mut s, samples + drops, now);
        let (min, max) = (c.config.min_limit.get() as f64, c.config.max_limit.get() as f64);
        let limit = s.limit;
        let next = if drops > 0 {
            limit * DECREASE
        } else {
            let mean = (sum / samples.max(1)).max(1);
            let baseline = s.baseline.map_or(mean, |b| b.min(mean));
            s.baseline = Some(baseline);
            let gradient = (baseline as f64 * (1.0 + BUFFER) / mean as f64).clamp(0.5, 1.0);
            let next = limit * gradient + limit.sqrt();
            if next > limit && (peak as f64) < limit / 2.0 {
                limit
            } else {
                next
            }
        };
        s.limit = next.clamp(min, max);
        if now >= s.next_probe {
            s.probe = Some(now);
            s.window_start = now;
            c.counting_from.store(now, Relaxed);
            // A probe admits few calls: time all of them.
            c.sample_every.store(1, Relaxed);
        }
        self.publish(&s, now);
    }

    /// Times one waiting call in so many that a window gets about
    /// [`SAMPLES_PER_WINDOW`] samples, from the rate of the `timed` calls since the
    /// window began; starts the next window's clock.
    fn set_sampling(&self, s: &mut State, timed: u64, now: u64) {
        let c = &*self.control;
        let elapsed = now.saturating_sub(s.window_start).max(1) as u128;
        let calls = u128::from(timed) * u128::from(c.sample_every.load(Relaxed));
        let per_window = calls * u128::from(window_length(s.baseline)) / elapsed;
        let every = (per_window / u128::from(SAMPLES_PER_WINDOW)).clamp(1, 1024) as u64;
        c.sample_every.store(every, Relaxed);
        s.window_start = now;
    }

    /// Makes the state's limit, baseline and next window visible.
    fn publish(&self, s: &State, now: u64) {
        let c = &*self.control;
        let learned = (s.limit.floor() as usize).max(1);
        c.probing.store(s.probe.is_some(), Relaxed);
        c.learned.store(learned, Relaxed);
        c.limit_gauge.set(learned as f64);
        if let Some(b) = s.baseline {
            c.baseline.store(b, Relaxed);
            c.baseline_gauge.set(b as f64 / 1e9);
        }
        let live = match s.probe {
            Some(_) => probe_limit(&c.config, s.limit),
            None => learned,
        };
        if live != self.semaphore.max_concurrent() {
            self.semaphore.set_max_concurrent(nz(live));
        }
        let window = match s.probe {
            // A probe ends on the first finishing call after its samples are in.
            Some(_) => 0,
            None => window_length(s.baseline),
        };
        c.window_end.store(now.saturating_add(window), Relaxed);
    }
}

/// How long a window lasts at least: `max(MIN_WINDOW, 2 × baseline)`.
fn window_length(baseline: Option<u64>) -> u64 {
    duration_nanos(MIN_WINDOW).max(baseline.unwrap_or(0).saturating_mul(2))
}

/// The live limit during a probe: low enough that no queue forms, within the bounds.
fn probe_limit(config: &AdaptiveBulkheadConfig, limit: f64) -> usize {
    let limit = (limit.floor() as usize).max(1);
    PROBE_LIMIT.min(limit).max(config.min_limit.get())
}

/// Takes the open window's samples: (samples, sum of round trips, drops, peak in flight).
fn take(c: &Control) -> (u64, u64, u64, usize) {
    (c.samples.swap(0, Relaxed), c.rtt_sum.swap(0, Relaxed), c.drops.swap(0, Relaxed), c.peak.swap(0, Relaxed))
}

thread_local! {
    static TICK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Uniform in [0, 1), from xorshift64*.
fn unit(rng: &mut u64) -> f64 {
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One step: time passes, `held` slots are taken, then `finished` attempts end
    /// (each after the case's base round trip plus `slower` percent), then the held slots
    /// are given back.
    #[derive(Debug, Clone)]
    struct Step {
        advance_ms: u64,
        held: u32,
        finished: u32,
        slower: u64,
        timed_out: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        let slower = prop_oneof![Just(0u64), 0u64..200];
        (0u64..400, 0u32..250, 0u32..30, slower, proptest::bool::weighted(0.05)).prop_map(
            |(advance_ms, held, finished, slower, timed_out)| Step { advance_ms, held, finished, slower, timed_out },
        )
    }

    /// The controller's rules, checked after every step of a random history: the learned
    /// limit stays within its bounds; the live limit is the learned one, or the probe's
    /// pin while a probe runs; the limit moves at most once per window (never twice
    /// within `MIN_WINDOW`), and grows by at most `√limit` at a time.
    fn check(min: usize, start: usize, max: usize, base_ms: u64, steps: Vec<Step>) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let config = AdaptiveBulkheadConfig {
                initial_limit: nz(start),
                min_limit: nz(min),
                max_limit: nz(max),
                max_wait: Duration::ZERO,
            };
            let b = AdaptiveBulkhead::new("model", config).unwrap();
            let mut last = (b.limit(), Instant::now());
            for (i, step) in steps.iter().enumerate() {
                tokio::time::advance(Duration::from_millis(step.advance_ms)).await;
                let permits = b.semaphore().permits();
                let held = (0..step.held).filter(|_| permits.try_acquire()).count();
                for _ in 0..step.finished {
                    let rtt = Duration::from_millis(base_ms + base_ms * step.slower / 100);
                    let started = Instant::now().checked_sub(rtt).unwrap_or_else(Instant::now);
                    if permits.try_acquire() {
                        if b.sampled() {
                            b.record(started, step.timed_out);
                        }
                        permits.release();
                    }
                }
                for _ in 0..held {
                    permits.release();
                }
                let state = b.state();
                prop_assert!(
                    (min..=max).contains(&state.limit),
                    "step {i}: limit {} outside {min}..={max}",
                    state.limit
                );
                let pin = probe_limit(&config, state.limit as f64);
                if state.probing {
                    prop_assert!(state.live_limit == pin || state.live_limit == state.limit, "step {i}: {state:?}");
                } else {
                    prop_assert_eq!(state.live_limit, state.limit, "step {}: {:?}", i, state);
                }
                if state.limit != last.0 {
                    let grown = state.limit as f64 - last.0 as f64;
                    prop_assert!(grown <= (last.0 as f64).sqrt() + 1.0, "step {i}: {} to {}", last.0, state.limit);
                    let now = Instant::now();
                    prop_assert!(now - last.1 >= MIN_WINDOW || i == 0, "step {i}: two updates within {MIN_WINDOW:?}");
                    last = (state.limit, now);
                }
            }
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn the_controller_keeps_its_rules(
            (min, start, max) in (1usize..20).prop_flat_map(|min| (Just(min), min..60)).prop_flat_map(|(min, start)| (Just(min), Just(start), start..200)),
            base_ms in 1u64..200,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            check(min, start, max, base_ms, steps)?;
        }
    }

    #[test]
    fn a_busy_bulkhead_times_few_calls() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let limit = nz(1000);
            let b = AdaptiveBulkhead::new(
                "busy",
                AdaptiveBulkheadConfig {
                    initial_limit: limit,
                    min_limit: limit,
                    max_limit: limit,
                    max_wait: Duration::ZERO,
                },
            )
            .unwrap();
            let started = std::time::Instant::now();
            let mut timed = 0u64;
            while started.elapsed() < Duration::from_millis(500) {
                if b.sampled() {
                    timed += 1;
                    b.record(Instant::now(), false);
                }
            }
            let every = b.control.sample_every.load(Relaxed);
            assert!(every > 100, "{every}");
            assert!(timed < 200_000, "{timed} calls timed: the rate sets the sampling from the first probe on");
        });
    }
}
