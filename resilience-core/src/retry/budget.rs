//! Retry budgets: retries as a share of calls, per dependency.
//!
//! Finagle's arithmetic: every original call deposits one token, every retry withdraws
//! `1 / ratio` of them, and `min_per_second` retries per second are allowed whatever the
//! calls, all counted over a sliding `window`. So over any window, retries stay within
//! `ratio × calls + min_per_second × window`: with the defaults (0.2, 10/s, 10 s) a
//! dependency that fails every call sees at most 1.2x its calls, plus ten a second.
//!
//! The arithmetic is done in `f64`, so fractional ratios are kept as given, and the
//! window really slides: deposits are counted as a running total, read at points in
//! time (every 256th deposit and every withdrawal attempt), and the total at the
//! window's start is interpolated between the two points around it; withdrawals are
//! kept with their times (those within 1/1000 of the window of the first of a run are
//! merged into it, and the run expires with its latest). A deposit is a load and a
//! store on the calling thread's stripe of the count; the rest happens when a retry is
//! asked for.
//!
//! (tower's budget keeps ten slots and moves to the next one on any call after a slot's
//! end, skipping slots, so that its effective window is about 0.6x the configured one;
//! and it truncates the ratio to an integer number of tokens (tower#857).)

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, Counter, Gauge};

use crate::clock::{duration_nanos, Epoch};
use crate::error::ConfigError;
use crate::stripe::Striped;
use crate::sync::{lock, Mutex};

/// Deposits (of one stripe) between two readings of the running total.
const SNAPSHOT_EVERY: u64 = 256;

/// A retry budget's settings (`retry(budget(ratio, min_per_second, window))`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per original call, in (0, 1]. Default 0.2.
    pub ratio: f64,
    /// Retries allowed per second whatever the calls. Default 10.
    pub min_per_second: u32,
    /// The window the budget counts over. Default 10 s.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: resilience_rules::DEFAULT_BUDGET_RATIO,
            min_per_second: resilience_rules::DEFAULT_BUDGET_MIN_PER_SECOND,
            window: resilience_rules::DEFAULT_BUDGET_WINDOW,
        }
    }
}

impl RetryBudgetConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check("retry.budget.ratio", resilience_rules::budget_ratio(self.ratio))?;
        ConfigError::check("retry.budget.window", resilience_rules::budget_window(self.window))
    }
}

/// A retry budget shared by every call of one dependency. Cloning gives another handle
/// to the same budget.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    config: RetryBudgetConfig,
    window: u64,
    epoch: Epoch,
    deposits: Striped<1>,
    ledger: Mutex<Ledger>,
    remaining: Gauge,
    exhausted: Counter,
}

#[derive(Default)]
struct Ledger {
    /// `(time, deposits so far)`, oldest first; the first is at or before the window.
    readings: VecDeque<(u64, u64)>,
    /// `(first time, latest time, count)` of runs of withdrawals, oldest first.
    withdrawals: VecDeque<(u64, u64, u64)>,
    withdrawn: u64,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget").field("config", &self.inner.config).field("remaining", &self.remaining()).finish()
    }
}

impl RetryBudget {
    /// A budget with nothing deposited (its reserve of `min_per_second × window` is
    /// there from the start).
    pub fn new(name: &str, config: RetryBudgetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut ledger = Ledger::default();
        ledger.readings.push_back((0, 0));
        let inner = Inner {
            config,
            window: duration_nanos(config.window).max(1),
            epoch: Epoch::now(),
            deposits: Striped::new(),
            ledger: Mutex::new(ledger),
            remaining: gauge!("resilience_retry_budget_remaining", "name" => name.to_owned()),
            exhausted: counter!("resilience_retry_budget_exhausted_total", "name" => name.to_owned()),
        };
        let budget = Self { inner: Arc::new(inner) };
        budget.inner.remaining.set(budget.remaining() as f64);
        Ok(budget)
    }

    /// The configuration.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.inner.config
    }

    /// Counts an original call.
    ///
    /// A plain load and store on this thread's stripe, not an atomic add: the call's path
    /// pays no locked instruction. Two threads sharing a stripe (more than 32 threads
    /// depositing) can rarely overwrite each other's count, which leaves the budget a
    /// deposit smaller, never larger.
    #[inline]
    pub fn deposit(&self) {
        let n = self.inner.deposits.add(0, 1);
        if n.is_multiple_of(SNAPSHOT_EVERY) {
            self.read_total();
        }
    }

    /// Deposits so far, over all stripes.
    fn total(&self) -> u64 {
        self.inner.deposits.sum(0)
    }

    #[cold]
    fn read_total(&self) {
        let now = self.inner.epoch.nanos();
        let mut ledger = lock(&self.inner.ledger);
        self.prune(&mut ledger, now);
    }

    /// Takes one retry from the budget if it allows one now.
    pub fn try_withdraw(&self) -> bool {
        let now = self.inner.epoch.nanos();
        let mut ledger = lock(&self.inner.ledger);
        let balance = self.balance(&mut ledger, now);
        let allowed = balance >= 1.0;
        if allowed {
            let merge = (self.inner.window / 1000).max(1);
            match ledger.withdrawals.back_mut() {
                Some((first, latest, n)) if now.saturating_sub(*first) < merge => {
                    *latest = now;
                    *n += 1;
                }
                _ => ledger.withdrawals.push_back((now, now, 1)),
            }
            ledger.withdrawn += 1;
        } else {
            self.inner.exhausted.increment(1);
        }
        self.inner.remaining.set((balance - f64::from(u8::from(allowed))).max(0.0).floor());
        allowed
    }

    /// Sets the remaining-retries gauge to the current balance.
    pub(crate) fn refresh_gauges(&self) {
        self.inner.remaining.set(self.remaining() as f64);
    }

    /// Retries the budget allows now.
    pub fn remaining(&self) -> u64 {
        let now = self.inner.epoch.nanos();
        let mut ledger = lock(&self.inner.ledger);
        self.balance(&mut ledger, now).max(0.0).floor() as u64
    }

    /// `ratio × deposits in the window + reserve − withdrawals in the window`.
    fn balance(&self, ledger: &mut Ledger, now: u64) -> f64 {
        let total = self.prune(ledger, now);
        // Before a whole window has passed, everything since the start counts.
        let before = match now.checked_sub(self.inner.window) {
            Some(start) => deposits_at(&ledger.readings, start, now, total),
            None => 0.0,
        };
        let deposited = total as f64 - before;
        let c = &self.inner.config;
        let reserve = f64::from(c.min_per_second) * c.window.as_secs_f64();
        c.ratio * deposited + reserve - ledger.withdrawn as f64
    }

    /// Records a reading of the total, drops what the window has left behind (keeping one
    /// reading at or before its start), and returns the total.
    fn prune(&self, ledger: &mut Ledger, now: u64) -> u64 {
        let total = self.total();
        let spacing = (self.inner.window / 512).max(1);
        if ledger.readings.back().is_none_or(|(at, _)| now.saturating_sub(*at) >= spacing) {
            ledger.readings.push_back((now, total));
        }
        let Some(start) = now.checked_sub(self.inner.window) else { return total };
        while ledger.readings.len() > 1 && ledger.readings[1].0 <= start {
            ledger.readings.pop_front();
        }
        while let Some(&(_, latest, n)) = ledger.withdrawals.front() {
            if latest > start {
                break;
            }
            ledger.withdrawals.pop_front();
            ledger.withdrawn -= n;
        }
        total
    }
}

/// The running total at `at`, interpolated between the readings around it (the last
/// stretch ends at `now` with `total`).
fn deposits_at(readings: &VecDeque<(u64, u64)>, at: u64, now: u64, total: u64) -> f64 {
    let mut before = match readings.front() {
        Some(&first) if first.0 < at => first,
        Some(&(_, n)) => return n as f64,
        None => return 0.0,
    };
    for &(t, n) in readings.iter().skip(1).chain(std::iter::once(&(now, total))) {
        if t >= at {
            let span = (t - before.0).max(1) as f64;
            let share = (at - before.0) as f64 / span;
            return before.1 as f64 + share * (n as f64 - before.1 as f64);
        }
        before = (t, n);
    }
    total as f64
}

thread_local! {
    /// Set when a budget refused a retry, until the next attempt of an enclosing call
    /// on this thread starts: that call then does not retry the same failure.
    static REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An attempt of a retrying call is about to run (or be polled): whatever refusal an
/// earlier, unrelated call left behind is forgotten.
#[inline]
pub(crate) fn attempt_starts() {
    REFUSED.with(|r| r.set(false));
}

/// Whether a budget inside the attempt that just failed refused its retry.
#[inline]
pub(crate) fn refused_inside() -> bool {
    REFUSED.with(std::cell::Cell::get)
}

/// A budget refused a retry, or a budgeted call's attempts ran out: enclosing calls on
/// this thread do not retry the failure.
pub(crate) fn mark_refused() {
    REFUSED.with(|r| r.set(true));
}
