//! Time as the policies see it.
//!
//! Every reading comes from [`tokio::time::Instant`], so a paused tokio clock
//! (`#[tokio::test(start_paused = true)]`) drives breakers, rate limiters and retries
//! exactly. Outside a runtime the same call reads the monotonic system clock.

use std::time::Duration;
use tokio::time::Instant;

/// A fixed origin against which instants are stored as nanoseconds in atomics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    /// An epoch at the current instant.
    pub(crate) fn now() -> Self {
        Self(Instant::now())
    }

    /// An epoch `earlier` before now (or now, when the clock cannot go back that far), so
    /// that instants up to `earlier` in the past can be stored.
    pub(crate) fn before(earlier: Duration) -> Self {
        let now = Instant::now();
        Self(now.checked_sub(earlier).unwrap_or(now))
    }

    /// Nanoseconds from the epoch to now; zero if the clock reads earlier than the epoch
    /// (possible when a breaker outlives the paused runtime that created it).
    #[inline]
    pub(crate) fn nanos(self) -> u64 {
        self.nanos_at(Instant::now())
    }

    /// Nanoseconds from the epoch to `at`, saturating at zero.
    #[inline]
    pub(crate) fn nanos_at(self, at: Instant) -> u64 {
        duration_nanos(at.saturating_duration_since(self.0))
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
}
