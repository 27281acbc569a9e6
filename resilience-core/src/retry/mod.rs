//! Retries with exponential backoff and jitter.

mod backoff;
pub(crate) mod budget;

pub use backoff::{Backoff, Jitter};
pub use budget::{RetryBudget, RetryBudgetConfig};

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

/// How a [`Retry`] repeats a failed call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// When false, every call is made once.
    pub enabled: bool,
    /// Attempts in all, counting the first call. Default 3.
    pub max_attempts: NonZeroU32,
    /// Delay after the first attempt. Default 1 s.
    pub base_delay: Duration,
    /// Factor by which each delay grows. Default 2.0.
    pub exponential_base: f64,
    /// Cap on any one delay. Default 30 s.
    pub max_delay: Duration,
    /// Randomisation of delays. Default none.
    pub jitter: Jitter,
    /// No attempt starts after this much time since the first one began. Default: no limit.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            base_delay: Duration::from_secs(1),
            exponential_base: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: Jitter::None,
            max_elapsed: None,
        }
    }
}

impl RetryConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use resilience_rules as rules;
        ConfigError::check("retry.exponential_base", rules::exponential_base(self.exponential_base))?;
        ConfigError::check("retry.base_delay", rules::delays(self.base_delay, self.max_delay))?;
        ConfigError::check("retry.max_attempts", rules::max_attempts(self.max_attempts.get()))?;
        Ok(())
    }

    /// Attempts in force: `max_attempts`, or 1 when disabled.
    pub(crate) fn attempts(&self) -> u32 {
        if self.enabled {
            self.max_attempts.get()
        } else {
            1
        }
    }
}

/// When a call's first attempt starts, if its retries need to know (`max_elapsed`
/// counts from there); reads the clock only then.
#[inline]
pub(crate) fn call_start(config: &RetryConfig) -> Option<Instant> {
    config.max_elapsed.map(|_| Instant::now())
}

/// The retry bookkeeping of one call.
pub(crate) struct RetryState<'a> {
    config: &'a RetryConfig,
    attempt: u32,
    started: Option<Instant>,
    backoff: Option<Backoff>,
}

impl<'a> RetryState<'a> {
    /// The bookkeeping of a call whose first attempt starts now.
    pub(crate) fn new(config: &'a RetryConfig) -> Self {
        Self::started(config, call_start(config))
    }

    /// The bookkeeping of a call whose first attempt started at `started` (read with
    /// [`call_start`]); made when the first attempt has failed.
    pub(crate) fn started(config: &'a RetryConfig, started: Option<Instant>) -> Self {
        Self { config, attempt: 1, started, backoff: None }
    }

    /// The configuration followed.
    pub(crate) fn config(&self) -> &'a RetryConfig {
        self.config
    }

    /// Whether an attempt after the running one is allowed by the count (the elapsed
    /// time limit may still end the call sooner).
    pub(crate) fn attempts_left(&self) -> bool {
        self.attempt < self.config.attempts()
    }

    /// Attempts made so far, including the one running.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Takes back the attempt [`next_delay`](Self::next_delay) counted, when a budget
    /// refuses it.
    pub(crate) fn refused(&mut self) {
        self.attempt -= 1;
    }

    /// The delay before the next attempt, or `None` when no attempt is left.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self.attempt >= self.config.attempts() {
            return None;
        }
        let config = self.config;
        let delay = self.backoff.get_or_insert_with(|| Backoff::new(config)).delay(self.attempt);
        if let (Some(limit), Some(started)) = (config.max_elapsed, self.started) {
            if started.elapsed().saturating_add(delay) > limit {
                return None;
            }
        }
        self.attempt += 1;
        Some(delay)
    }
}

/// Re-runs a failed call after growing delays.
///
/// On its own a `Retry` retries every error that `retry_if` accepts; inside a
/// [`Pipeline`](crate::Pipeline) it also knows not to retry rejections (open breaker,
/// full bulkhead, rate limit). When attempts run out the caller gets the last error
/// as it was. Async delays sleep on the tokio clock; blocking ones sleep the thread.
#[derive(Debug, Clone)]
pub struct Retry {
    name: Arc<str>,
    config: RetryConfig,
}

impl Retry {
    /// Builds a retry policy.
    pub fn new(name: impl Into<Arc<str>>, config: RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { name: name.into(), config })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Calls `f` until it succeeds or attempts run out.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(|_: &E| true, f).await
    }

    /// Calls `f` until it succeeds, attempts run out, or it fails with an error that
    /// `retry_if` rejects.
    pub async fn call_with<T, E, F, Fut>(&self, retry_if: impl Fn(&E) -> bool, mut f: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut state = RetryState::new(&self.config);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => match retry_if(&e).then(|| state.next_delay()).flatten() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return Err(e),
                },
            }
        }
    }

    /// The blocking form of [`call`](Self::call).
    pub fn call_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
    {
        self.call_blocking_with(|_: &E| true, f)
    }

    /// The blocking form of [`call_with`](Self::call_with).
    pub fn call_blocking_with<T, E, F>(&self, retry_if: impl Fn(&E) -> bool, mut f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
    {
        let mut state = RetryState::new(&self.config);
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) => match retry_if(&e).then(|| state.next_delay()).flatten() {
                    Some(delay) => std::thread::sleep(delay),
                    None => return Err(e),
                },
            }
        }
    }
}
