//! Sliding windows of call outcomes, recorded without locks.
//!
//! Both windows are exact when calls are recorded one after another. Under concurrency
//! they are approximate in the way resilience4j's are not (it locks): a record racing a
//! wrap-around of the same slot, or a bucket being recycled, may be lost. The breaker's
//! decisions only need the counts to be close, and the closed path then takes no lock.

use crate::sync::{AtomicU64, Ordering::Relaxed};

/// Counts over the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// The last `size` calls, one failure bit and one slow bit per call, with running counts
/// of both, so recording and reading cost the same whatever the window's size.
pub(crate) struct CountWindow {
    size: u64,
    /// Calls recorded since the last reset; the next call goes to slot `head % size`.
    head: AtomicU64,
    failures: Box<[AtomicU64]>,
    /// Empty when slowness is not tracked.
    slow: Box<[AtomicU64]>,
    /// Set bits of both bitmaps: failures in the low 32 bits, slow calls in the high 32
    /// (a window holds at most 2^18 calls). Kept up to date bit flip by bit flip, so the
    /// hot path can tell that the window is all fast successes from one load.
    marked: AtomicU64,
}

const SLOW_ONE: u64 = 1 << 32;

fn bitmap(bits: u64) -> Box<[AtomicU64]> {
    (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

/// Sets or clears one bit; returns +1, -1 or 0 for the change in set bits.
fn assign(words: &[AtomicU64], slot: u64, on: bool) -> i64 {
    let word = &words[(slot / 64) as usize];
    let bit = 1u64 << (slot % 64);
    if on {
        i64::from(word.fetch_or(bit, Relaxed) & bit == 0)
    } else if word.load(Relaxed) & bit != 0 {
        -i64::from(word.fetch_and(!bit, Relaxed) & bit != 0)
    } else {
        0
    }
}

impl CountWindow {
    pub(crate) fn new(size: u32, track_slow: bool) -> Self {
        let size = u64::from(size);
        Self {
            size,
            head: AtomicU64::new(0),
            failures: bitmap(size),
            slow: if track_slow { bitmap(size) } else { bitmap(0) },
            marked: AtomicU64::new(0),
        }
    }

    /// True when recording a fast success would change nothing: the window is full and
    /// holds only fast successes. Positions of identical entries do not matter, so the
    /// hot path of a healthy dependency only reads shared cache lines.
    #[inline]
    pub(crate) fn is_quiet(&self) -> bool {
        self.marked.load(Relaxed) == 0 && self.head.load(Relaxed) >= self.size
    }

    /// Records one call and returns the counts after it, or `None` if nothing changed.
    pub(crate) fn record(&self, failed: bool, slow: bool) -> Option<Stats> {
        if !failed && !slow && self.is_quiet() {
            return None;
        }
        let n = self.head.fetch_add(1, Relaxed);
        let slot = n % self.size;
        // Each field only ever moves by bits that really flipped, so it never goes below
        // zero and a decrement never borrows from the other field.
        let mut change = assign(&self.failures, slot, failed) as u64;
        if !self.slow.is_empty() {
            change = change.wrapping_add((assign(&self.slow, slot, slow) as u64).wrapping_mul(SLOW_ONE));
        }
        let marked = if change != 0 {
            self.marked.fetch_add(change, Relaxed).wrapping_add(change)
        } else {
            self.marked.load(Relaxed)
        };
        Some(Self::unpack(marked, (n + 1).min(self.size)))
    }

    fn unpack(marked: u64, calls: u64) -> Stats {
        Stats { calls, failures: marked & (SLOW_ONE - 1), slow: marked >> 32 }
    }

    pub(crate) fn stats(&self) -> Stats {
        Self::unpack(self.marked.load(Relaxed), self.head.load(Relaxed).min(self.size))
    }

    pub(crate) fn reset(&self) {
        for w in self.failures.iter().chain(self.slow.iter()) {
            w.store(0, Relaxed);
        }
        self.marked.store(0, Relaxed);
        self.head.store(0, Relaxed);
    }
}

/// Number of buckets a time-based window is divided into.
pub(crate) const BUCKETS: u64 = 16;

struct Bucket {
    /// Bucket number + 1 of the period this bucket currently counts; 0 when unused.
    id: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// Calls that ended within the last `duration`, kept as [`BUCKETS`] buckets.
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
}

impl TimeWindow {
    pub(crate) fn new(duration_nanos: u64) -> Self {
        Self {
            bucket_nanos: (duration_nanos / BUCKETS).max(1),
            buckets: (0..BUCKETS)
                .map(|_| Bucket {
                    id: AtomicU64::new(0),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    slow: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    fn id_at(&self, now_nanos: u64) -> u64 {
        now_nanos / self.bucket_nanos + 1
    }

    /// Records a call that ended at `now_nanos` and returns the counts after it.
    pub(crate) fn record(&self, now_nanos: u64, failed: bool, slow: bool) -> Stats {
        let id = self.id_at(now_nanos);
        let bucket = &self.buckets[(id % BUCKETS) as usize];
        let current = bucket.id.load(Relaxed);
        if current < id && bucket.id.compare_exchange(current, id, Relaxed, Relaxed).is_ok() {
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
        // A bucket already recycled for a later period means this record is too old to count.
        if bucket.id.load(Relaxed) == id {
            bucket.calls.fetch_add(1, Relaxed);
            if failed {
                bucket.failures.fetch_add(1, Relaxed);
            }
            if slow {
                bucket.slow.fetch_add(1, Relaxed);
            }
        }
        self.stats(now_nanos)
    }

    pub(crate) fn stats(&self, now_nanos: u64) -> Stats {
        let newest = self.id_at(now_nanos);
        let oldest = newest.saturating_sub(BUCKETS - 1).max(1);
        let mut stats = Stats::default();
        for bucket in self.buckets.iter() {
            let id = bucket.id.load(Relaxed);
            if (oldest..=newest).contains(&id) {
                stats.calls += bucket.calls.load(Relaxed);
                stats.failures += bucket.failures.load(Relaxed);
                stats.slow += bucket.slow.load(Relaxed);
            }
        }
        stats
    }

    pub(crate) fn reset(&self) {
        for bucket in self.buckets.iter() {
            bucket.id.store(0, Relaxed);
            bucket.calls.store(0, Relaxed);
            bucket.failures.store(0, Relaxed);
            bucket.slow.store(0, Relaxed);
        }
    }

    #[cfg(all(test, not(resilience_loom)))]
    pub(crate) fn bucket_nanos(&self) -> u64 {
        self.bucket_nanos
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;

    #[test]
    fn count_window_slides() {
        let w = CountWindow::new(3, true);
        assert_eq!(w.record(true, false), Some(Stats { calls: 1, failures: 1, slow: 0 }));
        assert_eq!(w.record(false, true), Some(Stats { calls: 2, failures: 1, slow: 1 }));
        assert_eq!(w.record(false, false), Some(Stats { calls: 3, failures: 1, slow: 1 }));
        // The failure falls out of the window.
        assert_eq!(w.record(false, false), Some(Stats { calls: 3, failures: 0, slow: 1 }));
        assert_eq!(w.record(false, false), Some(Stats { calls: 3, failures: 0, slow: 0 }));
        assert!(w.is_quiet());
        assert_eq!(w.record(false, false), None);
        assert_eq!(w.record(true, false), Some(Stats { calls: 3, failures: 1, slow: 0 }));
        w.reset();
        assert_eq!(w.stats(), Stats::default());
    }

    #[test]
    fn count_window_spans_several_words() {
        let w = CountWindow::new(130, false);
        for i in 0..130 {
            w.record(i % 2 == 0, false);
        }
        assert_eq!(w.stats(), Stats { calls: 130, failures: 65, slow: 0 });
    }

    /// The running counts agree with the bitmaps, call after call, in the largest window.
    #[test]
    fn running_counts_match_the_bitmaps() {
        let count_ones =
            |words: &[AtomicU64]| -> u64 { words.iter().map(|w| u64::from(w.load(Relaxed).count_ones())).sum() };
        let w = CountWindow::new(crate::circuit_breaker::config::MAX_WINDOW_SIZE, true);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..600_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (failed, slow) = (x.is_multiple_of(7), x.is_multiple_of(5));
            if let Some(stats) = w.record(failed, slow) {
                if i % 9_973 == 0 {
                    assert_eq!(stats.failures, count_ones(&w.failures), "failures after {i} calls");
                    assert_eq!(stats.slow, count_ones(&w.slow), "slow calls after {i} calls");
                }
            }
        }
        let stats = w.stats();
        assert_eq!((stats.failures, stats.slow), (count_ones(&w.failures), count_ones(&w.slow)));
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = TimeWindow::new(1_600);
        assert_eq!(w.bucket_nanos(), 100);
        w.record(0, true, false);
        w.record(50, false, false);
        assert_eq!(w.stats(1_599), Stats { calls: 2, failures: 1, slow: 0 });
        // At 1_600 the first bucket is a whole window old.
        assert_eq!(w.stats(1_600), Stats::default());
        let s = w.record(1_650, true, true);
        assert_eq!(s, Stats { calls: 1, failures: 1, slow: 1 });
    }
}
