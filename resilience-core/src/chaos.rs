//! Fault and latency injection: exercising a resilience setup on purpose.
//!
//! `chaos(latency, latency_rate, error_rate, every, max_active, seed)` sits innermost in
//! the pipeline, inside the timeout: an attempt chosen for latency first waits
//! `latency` (so a delay longer than the timeout ends in [`ResilienceError::Timeout`](crate::ResilienceError::Timeout)
//! on time), and one chosen for an error fails with [`ResilienceError::Injected`](crate::ResilienceError::Injected)
//! without running its body (after the delay, if it got both). Each attempt is chosen
//! independently with `latency_rate` and `error_rate`; with `every = N`, every N-th
//! attempt gets each configured fault instead. At most `max_active` injections are in
//! progress at once. The choice of attempt `n` is a hash of `seed` and `n`, so a seeded
//! run injects into the same attempts every time.
//!
//! Nothing is injected unless both the `chaos` cargo feature is on and the applied
//! settings say `resilience: { chaos: { enabled: true } }` (or `set_enabled` was
//! called); otherwise the keys are accepted and inert. Every injection is a tracing
//! event (target `resilience::chaos`) and a count in
//! `resilience_chaos_injected_total{name, kind = latency | error}`.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::error::ConfigError;

/// A dependency's fault injection (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChaosConfig {
    /// The delay added to an attempt chosen for latency. Default none.
    pub latency: Option<Duration>,
    /// The share of attempts delayed, in [0, 1]. Default 0.
    pub latency_rate: f64,
    /// The share of attempts failed with `ResilienceError::Injected`, in [0, 1].
    /// Default 0.
    pub error_rate: f64,
    /// Every N-th attempt gets each configured fault, instead of the rates.
    pub every: Option<NonZeroU32>,
    /// Injections in progress at once, at most. Default no limit.
    pub max_active: Option<NonZeroUsize>,
    /// Makes the choices repeatable. Default: a seed from the process's start.
    pub seed: Option<u64>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self { latency: None, latency_rate: 0.0, error_rate: 0.0, every: None, max_active: None, seed: None }
    }
}

impl ChaosConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check("chaos.latency_rate", resilience_rules::fraction(self.latency_rate))?;
        ConfigError::check("chaos.error_rate", resilience_rules::fraction(self.error_rate))
    }
}

#[cfg(feature = "chaos")]
pub(crate) use imp::{run_blocking, Chaotic};

#[cfg(feature = "chaos")]
pub use imp::{set_enabled, Chaos, Injection};

/// Whether injections may happen (the `chaos` feature is off: never).
#[cfg(not(feature = "chaos"))]
pub fn enabled() -> bool {
    false
}

#[cfg(feature = "chaos")]
pub use imp::enabled;

#[cfg(feature = "chaos")]
mod imp {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::task::{ready, Context, Poll};

    use metrics::{counter, Counter};
    use pin_project_lite::pin_project;
    use tokio::time::Sleep;

    use super::ChaosConfig;
    use crate::error::ResilienceError;

    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// Switches injection on or off for the whole process (the settings' `resilience:
    /// { chaos: { enabled } }` does the same when applied).
    pub fn set_enabled(on: bool) {
        ENABLED.store(on, Relaxed);
    }

    /// Whether injections may happen now.
    pub fn enabled() -> bool {
        ENABLED.load(Relaxed)
    }

    /// An injector: what a pipeline uses for its dependency, and what an integration
    /// (the axum layer) uses for its own requests. Cloning gives another handle to the
    /// same one.
    #[derive(Clone)]
    pub struct Chaos {
        inner: Arc<Inner>,
    }

    struct Inner {
        name: Arc<str>,
        config: ChaosConfig,
        seed: u64,
        attempts: AtomicU64,
        active: AtomicUsize,
        latency: Counter,
        error: Counter,
    }

    impl std::fmt::Debug for Chaos {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Chaos").field("config", &self.inner.config).finish_non_exhaustive()
        }
    }

    /// What an attempt gets; counted against `max_active` until dropped.
    #[derive(Debug)]
    pub struct Injection {
        /// The delay to add first.
        pub latency: Option<std::time::Duration>,
        /// Whether to fail (after the delay).
        pub error: bool,
        active: Option<Active>,
    }

    /// One injection in progress, counted against `max_active` until dropped.
    struct Active(Arc<Inner>);

    impl std::fmt::Debug for Active {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Active")
        }
    }

    impl Drop for Active {
        fn drop(&mut self) {
            self.0.active.fetch_sub(1, Relaxed);
        }
    }

    /// splitmix64: a well-mixed 64-bit hash.
    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn unit(x: u64) -> f64 {
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    impl Chaos {
        /// An injector for `name` (the name its events and metrics carry).
        pub fn new(name: &Arc<str>, config: ChaosConfig) -> Self {
            let seed = config
                .seed
                .unwrap_or_else(|| mix(std::process::id().into()) ^ mix(Arc::as_ptr(name) as *const u8 as u64));
            let kind = |kind: &'static str| counter!("resilience_chaos_injected_total", "name" => name.to_string(), "kind" => kind);
            Self {
                inner: Arc::new(Inner {
                    name: Arc::clone(name),
                    config,
                    seed,
                    attempts: AtomicU64::new(0),
                    active: AtomicUsize::new(0),
                    latency: kind("latency"),
                    error: kind("error"),
                }),
            }
        }

        /// The configuration.
        pub fn config(&self) -> &ChaosConfig {
            &self.inner.config
        }

        /// What the next attempt gets; `None` for nothing (the usual case, and always
        /// while injection is switched off).
        #[inline]
        pub fn choose(&self) -> Option<Injection> {
            if !enabled() {
                return None;
            }
            self.choose_slow()
        }

        /// An injection asked for by name (a request's override header): only kinds this
        /// injector is configured for (a `latency` with a rate or `every`, an error rate
        /// above zero), a delay no longer than the configured `latency`, within
        /// `max_active`, and only while injection is switched on.
        pub fn force(&self, latency: Option<std::time::Duration>, error: bool) -> Option<Injection> {
            if !enabled() {
                return None;
            }
            let c = &self.inner.config;
            let latency = latency
                .zip(c.latency)
                .filter(|_| c.latency_rate > 0.0 || c.every.is_some())
                .map(|(asked, most)| asked.min(most));
            let error = error && c.error_rate > 0.0;
            let n = self.inner.attempts.fetch_add(1, Relaxed);
            self.inject(latency.is_some(), error, latency, n)
        }

        #[cold]
        fn choose_slow(&self) -> Option<Injection> {
            let c = &self.inner.config;
            let n = self.inner.attempts.fetch_add(1, Relaxed);
            let (latency, error) = match c.every {
                Some(every) => {
                    let due = (n + 1).is_multiple_of(u64::from(every.get()));
                    (due && c.latency.is_some(), due && c.error_rate > 0.0)
                }
                None => {
                    let draw = mix(self.inner.seed ^ mix(n));
                    let latency_draw = unit(draw);
                    let error_draw = unit(mix(draw));
                    (c.latency.is_some() && latency_draw < c.latency_rate, error_draw < c.error_rate)
                }
            };
            self.inject(latency, error, c.latency, n)
        }

        /// Starts an injection of the chosen kinds: within `max_active`, with its events
        /// and counts.
        fn inject(&self, latency: bool, error: bool, delay: Option<std::time::Duration>, n: u64) -> Option<Injection> {
            let c = &self.inner.config;
            if !latency && !error {
                return None;
            }
            if let Some(max) = c.max_active {
                if self.inner.active.fetch_add(1, Relaxed) >= max.get() {
                    self.inner.active.fetch_sub(1, Relaxed);
                    return None;
                }
            } else {
                self.inner.active.fetch_add(1, Relaxed);
            }
            let name = &*self.inner.name;
            if latency {
                self.inner.latency.increment(1);
                let ms = delay.map_or(0, |d| d.as_millis() as u64);
                tracing::info!(target: "resilience::chaos", name, kind = "latency", latency_ms = ms, attempt = n, "injected latency");
            }
            if error {
                self.inner.error.increment(1);
                tracing::info!(target: "resilience::chaos", name, kind = "error", attempt = n, "injected an error");
            }
            Some(Injection {
                latency: if latency { delay } else { None },
                error,
                active: Some(Active(Arc::clone(&self.inner))),
            })
        }

        /// The injected error.
        pub fn error(&self) -> ResilienceError {
            ResilienceError::injected(&self.inner.name)
        }

        /// What the next blocking attempt gets, with its error made only if it fails.
        pub(crate) fn choose_blocking(&self) -> Option<(Injection, Option<ResilienceError>)> {
            let injection = self.choose()?;
            let error = injection.error.then(|| self.error());
            Some((injection, error))
        }
    }

    /// Runs a blocking attempt `f` under what [`Chaos::choose_blocking`] chose: the delay
    /// on this thread, then the injected error or `f`.
    pub(crate) fn run_blocking<T, E>(
        chosen: Option<(Injection, Option<ResilienceError>)>,
        from: fn(ResilienceError) -> E,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let Some((injection, error)) = chosen else { return f() };
        if let Some(delay) = injection.latency {
            std::thread::sleep(delay);
        }
        // The injection stays counted against `max_active` until the attempt ends.
        let result = match error {
            Some(error) => Err(from(error)),
            None => f(),
        };
        drop(injection);
        result
    }

    pin_project! {
        /// An attempt's body under injection: the delay first, then the injected error
        /// or the body.
        pub(crate) struct Chaotic<Fut, E> {
            #[pin]
            inner: Fut,
            delay: Option<Pin<Box<Sleep>>>,
            fail: Option<(ResilienceError, fn(ResilienceError) -> E)>,
            active: Option<Active>,
        }
    }

    impl<Fut, E> Chaotic<Fut, E> {
        /// `inner`, with what `chaos` chooses for it.
        #[inline]
        pub(crate) fn new(inner: Fut, chaos: Option<&Chaos>, from: fn(ResilienceError) -> E) -> Self {
            match chaos.and_then(Chaos::choose) {
                None => Self { inner, delay: None, fail: None, active: None },
                Some(injection) => Self::injected(inner, chaos, injection, from),
            }
        }

        #[cold]
        fn injected(inner: Fut, chaos: Option<&Chaos>, injection: Injection, from: fn(ResilienceError) -> E) -> Self {
            Self {
                inner,
                delay: injection.latency.map(|d| Box::pin(tokio::time::sleep(d))),
                fail: chaos.filter(|_| injection.error).map(|c| (c.error(), from)),
                active: injection.active,
            }
        }
    }

    impl<T, E, Fut: Future<Output = Result<T, E>>> Future for Chaotic<Fut, E> {
        type Output = Result<T, E>;

        #[inline]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            if let Some(delay) = this.delay.as_mut() {
                ready!(delay.as_mut().poll(cx));
                *this.delay = None;
            }
            if let Some((error, from)) = this.fail.take() {
                *this.active = None;
                return Poll::Ready(Err(from(error)));
            }
            let out = ready!(this.inner.poll(cx));
            *this.active = None;
            Poll::Ready(out)
        }
    }
}

#[cfg(all(test, not(feature = "chaos"), not(resilience_loom)))]
mod tests {
    use std::time::Duration;

    use crate::{ChaosConfig, Pipeline, Registry, ResilienceError, Settings};

    /// Built without the `chaos` feature (`cargo test -p resilience-core --lib`): the keys
    /// and the switch are accepted, and nothing is injected.
    #[test]
    fn without_the_feature_nothing_is_injected() {
        let settings = "resilience:\n  chaos: { enabled: true }\nexternal_dependencies:\n  c: { type: cache, chaos: { error_rate: 1 } }\n";
        let registry = Registry::new();
        Settings::from_yaml_str(settings).unwrap().apply_to(&registry).unwrap();
        assert!(registry.get("c").unwrap().config().chaos.is_some(), "accepted");
        assert!(!super::enabled());
        let config = ChaosConfig {
            error_rate: 1.0,
            latency: Some(Duration::from_secs(1)),
            latency_rate: 1.0,
            ..Default::default()
        };
        let pipeline = Pipeline::builder("inert").chaos(config).build().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            for _ in 0..100 {
                let begun = tokio::time::Instant::now();
                pipeline.call(|| async { Ok::<_, ResilienceError>(()) }).await.unwrap();
                assert_eq!(begun.elapsed(), Duration::ZERO);
            }
        });
        assert!(pipeline.call_blocking(|| Ok::<_, ResilienceError>(())).is_ok());
    }
}
