//! Sampled call durations. Timing every call would cost two clock reads on the hot path,
//! so only calls whose body did not finish on its first poll are candidates (a call that
//! is ready at once takes well under a microsecond and is not timed), and of those one
//! in [`SAMPLE_EVERY`] per thread is timed from that first poll to its end. A sample is
//! recorded into `resilience_call_duration_seconds` with a weight of `SAMPLE_EVERY`, so
//! counts and sums of waiting calls come out right on average, and into a small log-scale
//! histogram from which the health report reads a p95 (of waiting calls: an upper bound
//! of the p95 of all calls).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use metrics::histogram;

use super::aggregate::DurationHistogram;

use crate::clock::Epoch;

/// One call in this many (per thread) is timed.
pub(crate) const SAMPLE_EVERY: u32 = 16;

/// Two buckets per power of two of microseconds: 1 µs to about 19 hours (2^36 µs), then
/// one overflow bucket, whose upper bound is unknown.
pub(crate) const BUCKETS: usize = 73;

thread_local! {
    static TICK: Cell<u32> = const { Cell::new(0) };
}

static EPOCH: LazyLock<Epoch> = LazyLock::new(Epoch::now);

/// The start stamp of a call if this call is sampled (nanoseconds since the process
/// epoch, plus one), else 0. `started` is when the call started, if the caller already
/// knows (it then costs no clock read).
#[inline]
pub(crate) fn start_stamp(started: Option<tokio::time::Instant>) -> u64 {
    let sampled = TICK.with(|t| {
        let n = t.get().wrapping_add(1);
        t.set(n);
        n % SAMPLE_EVERY == 0
    });
    if sampled {
        stamp(started)
    } else {
        0
    }
}

#[cold]
fn stamp(started: Option<tokio::time::Instant>) -> u64 {
    match started {
        Some(at) => EPOCH.nanos_at(at) + 1,
        None => EPOCH.nanos() + 1,
    }
}

pub(crate) struct LatencyStats {
    histogram: DurationHistogram,
    buckets: [AtomicU64; BUCKETS],
    reported: Mutex<[u64; BUCKETS]>,
}

impl std::fmt::Debug for LatencyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyStats").finish_non_exhaustive()
    }
}

pub(crate) fn bucket_of(nanos: u64) -> usize {
    let micros = nanos.div_ceil(1_000).max(1);
    let octave = 63 - micros.leading_zeros() as usize;
    let upper_half = octave > 0 && micros >= (1u64 << octave) + (1u64 << (octave - 1));
    (2 * octave + usize::from(upper_half)).min(BUCKETS - 1)
}

/// The upper bound of a bucket (`Duration::MAX` for the overflow bucket, so that a p95
/// read from it is still an upper bound).
pub(crate) fn bucket_limit(index: usize) -> Duration {
    if index == BUCKETS - 1 {
        return Duration::MAX;
    }
    let octave = index / 2;
    let micros = if index.is_multiple_of(2) { (1u64 << octave) * 3 / 2 } else { 1u64 << (octave + 1) };
    Duration::from_micros(micros)
}

impl LatencyStats {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            histogram: DurationHistogram::new(
                histogram!("resilience_call_duration_seconds", "name" => name.to_owned()),
            ),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            reported: Mutex::new([0; BUCKETS]),
        }
    }

    /// Records a sampled call that started at `start` (a [`start_stamp`]).
    #[cold]
    pub(crate) fn finish(&self, start: u64) {
        let nanos = EPOCH.nanos().saturating_sub(start - 1);
        self.histogram.record_nanos(nanos, SAMPLE_EVERY);
        self.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
    }

    /// The 95th percentile of the samples recorded since the previous call (an upper
    /// bound, at the resolution of half an octave), or `None` without samples.
    pub(crate) fn p95_since_last_report(&self) -> Option<Duration> {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let mut delta = [0u64; BUCKETS];
        for (i, b) in self.buckets.iter().enumerate() {
            let now = b.load(Relaxed);
            delta[i] = now.saturating_sub(reported[i]);
            reported[i] = now;
        }
        let total: u64 = delta.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = total - total / 20;
        let mut seen = 0;
        delta.iter().enumerate().find_map(|(i, n)| {
            seen += n;
            (seen >= wanted).then(|| bucket_limit(i))
        })
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_values() {
        let mut last = 0;
        for nanos in [
            500,
            1_000,
            1_400,
            1_600,
            3_000,
            1_000_000,
            2_500_000_000,
            5_000_000_000,
            60_000_000_000,
            3_600_000_000_000u64,
        ] {
            let b = bucket_of(nanos);
            assert!(b >= last, "{nanos}");
            assert!(bucket_limit(b) >= Duration::from_nanos(nanos).max(Duration::from_micros(1)), "{nanos}");
            last = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_limit(BUCKETS - 1), Duration::MAX, "the overflow bound is unknown");
    }
}
