//! Delays between attempts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::RetryConfig;

/// How a delay is randomised, to keep many clients from retrying in lock-step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Jitter {
    /// The exponential delay as computed.
    #[default]
    None,
    /// Uniform in `[0, delay]`.
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]`.
    Equal,
    /// Uniform in `[base_delay, previous × exponential_base]`, capped by `max_delay`
    /// (the "decorrelated" jitter of the AWS architecture blog).
    Decorrelated,
}

impl Jitter {
    /// The lower-case name used in configuration (`none`, `full`, `equal`, `decorrelated`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Full => "full",
            Self::Equal => "equal",
            Self::Decorrelated => "decorrelated",
        }
    }
}

/// The sequence of delays of one call: `base_delay × exponential_base^(n-1)` after the
/// n-th attempt, capped by `max_delay`, then jittered.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: f64,
    factor: f64,
    cap: f64,
    jitter: Jitter,
    previous: f64,
    rng: u64,
}

impl Backoff {
    /// The delays for `config`, with a random seed.
    pub fn new(config: &RetryConfig) -> Self {
        let seed = RandomState::new().build_hasher().finish();
        Self::with_seed(config, seed)
    }

    /// The delays for `config`, with a fixed seed (reproducible jitter).
    pub fn with_seed(config: &RetryConfig, seed: u64) -> Self {
        let base = config.base_delay.as_secs_f64();
        Self {
            base,
            factor: config.exponential_base,
            cap: config.max_delay.as_secs_f64(),
            jitter: config.jitter,
            previous: base,
            rng: seed | 1,
        }
    }

    /// The delay after attempt number `attempt` (1 for the first call) failed.
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        // A zero base never waits (0 × ∞ would be NaN); a growth past every float is the cap.
        let exponential = if self.base == 0.0 {
            0.0
        } else {
            let grown = self.base * self.factor.powi(exponent);
            if grown.is_nan() {
                self.cap
            } else {
                grown.min(self.cap)
            }
        };
        let secs = match self.jitter {
            Jitter::None => exponential,
            Jitter::Full => exponential * self.unit(),
            Jitter::Equal => exponential / 2.0 + exponential / 2.0 * self.unit(),
            Jitter::Decorrelated => {
                let high = (self.previous * self.factor).max(self.base);
                let next = (self.base + (high - self.base) * self.unit()).min(self.cap);
                self.previous = next;
                next
            }
        };
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// Uniform in [0, 1], from xorshift64*.
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: Jitter) -> RetryConfig {
        RetryConfig {
            base_delay: Duration::from_millis(100),
            exponential_base: 2.0,
            max_delay: Duration::from_millis(700),
            jitter,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn exponential_delays_are_capped() {
        let mut b = Backoff::new(&config(Jitter::None));
        let ms: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 700, 700]);
    }

    #[test]
    fn jittered_delays_stay_in_their_ranges() {
        for seed in 0..200 {
            let mut full = Backoff::with_seed(&config(Jitter::Full), seed);
            let mut equal = Backoff::with_seed(&config(Jitter::Equal), seed);
            let mut dec = Backoff::with_seed(&config(Jitter::Decorrelated), seed);
            for n in 1..6 {
                let cap = Duration::from_millis(100 * 2u64.pow(n - 1)).min(Duration::from_millis(700));
                assert!(full.delay(n) <= cap);
                let e = equal.delay(n);
                assert!(e >= cap / 2 && e <= cap);
                let d = dec.delay(n);
                assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(700));
            }
        }
    }

    #[test]
    fn a_zero_base_never_waits_however_many_attempts() {
        // Polly's `Exponential_Ok` data reaches attempt 1,025, where 2^1024 overflows.
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let mut b = Backoff::with_seed(&RetryConfig { base_delay: Duration::ZERO, ..config(jitter) }, 3);
            for n in [1, 2, 400, 1_025, 5_000, u32::MAX] {
                assert_eq!(b.delay(n), Duration::ZERO, "{jitter:?}, attempt {n}");
            }
        }
        let mut b = Backoff::new(&config(Jitter::None));
        assert_eq!(b.delay(2_000), Duration::from_millis(700), "an overflowing growth is capped");
    }

    #[test]
    fn full_jitter_spreads() {
        let mut b = Backoff::with_seed(&config(Jitter::Full), 7);
        let delays: Vec<Duration> = (0..50).map(|_| b.delay(3)).collect();
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*max - *min > Duration::from_millis(200), "{min:?}..{max:?}");
    }
}
