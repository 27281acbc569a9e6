//! Duration histograms counted per thread, for exporters whose histograms cost a shared
//! write per sample.
//!
//! A [`DurationHistogram`] wraps a `metrics` histogram. By default it hands each duration
//! to that histogram as it comes. Once an exporter has said which buckets its histograms
//! have ([`aggregate_into`]), every `DurationHistogram` made afterwards counts each
//! duration instead into the current thread's own stripe: the bucket's count and the sum
//! of its durations, two uncontended adds on one cache line, no shared write. [`flush`]
//! then folds what was counted since the previous flush into the `metrics` histogram: one
//! `record_many` per bucket, at the mean of that bucket's new durations.
//!
//! That mean lies within its bucket, so the exporter's bucket counts and `_count` come out
//! exact. Its `_sum` is right to within a nanosecond per duration of the last flush (each
//! mean is a whole number of nanoseconds, and what rounding left out is carried into the
//! next flush). What is not exact is time: a duration reaches the exporter at the next
//! flush, not when it is recorded. `resilience::prometheus` flushes every second and
//! before `/metrics` renders.
//!
//! Memory: a counted histogram takes 256 bytes per stripe (14 buckets and the overflow),
//! one stripe per CPU rounded up to a power of two, at most 32: 512 bytes on 2 CPUs,
//! 4 KiB on 16. A histogram whose last handle is dropped is flushed once more and freed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use metrics::Histogram;

use crate::clock::duration_nanos;
use crate::stripe::stripe;

/// The most buckets [`aggregate_into`] accepts (besides the overflow bucket).
pub const MAX_BUCKETS: usize = 64;

/// Why [`aggregate_into`] refused a list of bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub enum BucketsError {
    /// No bounds, or more than [`MAX_BUCKETS`].
    Count(usize),
    /// A bound that is not a finite number of seconds above zero.
    NotPositive(f64),
    /// Bounds not strictly increasing: the first that is not above the one before it.
    NotIncreasing(f64),
    /// Aggregation is already on, with other bounds.
    AlreadySet(Vec<f64>),
}

impl fmt::Display for BucketsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "duration buckets: {n} bounds given, 1 to {MAX_BUCKETS} expected"),
            Self::NotPositive(b) => write!(f, "duration buckets: {b} is not a finite number of seconds above zero"),
            Self::NotIncreasing(b) => write!(f, "duration buckets: {b} is not above the bound before it"),
            Self::AlreadySet(b) => write!(f, "duration buckets: already aggregating into other buckets, {b:?}"),
        }
    }
}

impl std::error::Error for BucketsError {}

/// The bucket bounds of the installed exporter, once [`aggregate_into`] is called.
static BOUNDS: OnceLock<Bounds> = OnceLock::new();

/// Every counted histogram, for [`flush`].
static LIVE: Mutex<Vec<Arc<Counts>>> = Mutex::new(Vec::new());

/// Stripes per counted histogram: one per CPU, rounded up to a power of two, at most 32
/// (threads beyond that share stripes; their adds stay exact).
static STRIPES_USED: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, usize::from).next_power_of_two().min(32));

/// From now on, counts every [`DurationHistogram`] made afterwards per thread, into
/// buckets with these upper bounds (in seconds, inclusive, as Prometheus's `le`), until
/// [`flush`] hands them to their `metrics` histograms.
///
/// Call it only when the installed recorder's duration histograms have exactly these
/// buckets: the means [`flush`] records are exact for them, not for other bounds.
/// `resilience::prometheus::install()` calls it. Calling it again with the same bounds
/// does nothing.
///
/// # Errors
/// The bounds are empty, longer than [`MAX_BUCKETS`], not positive and finite, or not
/// strictly increasing; or aggregation is already on with other bounds.
pub fn aggregate_into(bounds: &[f64]) -> Result<(), BucketsError> {
    let wanted = Bounds::new(bounds)?;
    let set = BOUNDS.get_or_init(|| wanted.clone());
    if set.seconds == wanted.seconds {
        Ok(())
    } else {
        Err(BucketsError::AlreadySet(set.seconds.clone()))
    }
}

/// Hands every counted histogram's durations since the previous flush to its `metrics`
/// histogram (see the [module docs](self)). An exporter calls it before it renders;
/// without [`aggregate_into`] there is nothing to flush.
pub fn flush() {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|counts| {
        // Its last handle gone (the fence pairs with the handle's release of its count),
        // nothing records into it any more: flushed once more, it is freed.
        let orphan = Arc::strong_count(counts) == 1;
        if orphan {
            std::sync::atomic::fence(Ordering::Acquire);
        }
        counts.flush();
        !orphan
    });
}

/// A histogram of durations (see the [module docs](self)).
pub struct DurationHistogram(Kind);

enum Kind {
    /// Each duration goes to the histogram as it comes.
    Direct(Histogram),
    /// Counted per thread, handed over by [`flush`].
    Counted(Arc<Counts>),
}

impl fmt::Debug for DurationHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Kind::Direct(_) => "direct",
            Kind::Counted(_) => "counted",
        };
        f.debug_tuple("DurationHistogram").field(&kind).finish()
    }
}

impl DurationHistogram {
    /// Records into `histogram` (in seconds): counted per thread if [`aggregate_into`]
    /// was called before, else directly.
    pub fn new(histogram: Histogram) -> Self {
        match BOUNDS.get() {
            Some(bounds) => {
                let counts = Arc::new(Counts::new(histogram, bounds.clone()));
                LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&counts));
                Self(Kind::Counted(counts))
            }
            None => Self(Kind::Direct(histogram)),
        }
    }

    /// Records `duration`.
    #[inline]
    pub fn record(&self, duration: Duration) {
        self.record_nanos(duration_nanos(duration), 1);
    }

    /// Records the duration `elapsed` returns, calling it only if the duration is taken:
    /// recording directly into the handle of no recorder, it is not (so a clock is not
    /// read for nothing).
    #[inline]
    pub fn record_with(&self, elapsed: impl FnOnce() -> Duration) {
        match &self.0 {
            Kind::Direct(h) => h.record(Lazy(elapsed)),
            Kind::Counted(c) => c.add(duration_nanos(elapsed()), 1),
        }
    }

    /// Records a duration of `nanos` nanoseconds `weight` times.
    #[inline]
    pub(crate) fn record_nanos(&self, nanos: u64, weight: u32) {
        match &self.0 {
            Kind::Direct(h) => h.record_many(nanos as f64 / 1e9, weight as usize),
            Kind::Counted(c) => c.add(nanos, u64::from(weight)),
        }
    }
}

/// A duration, in seconds, computed when a histogram takes it.
struct Lazy<F>(F);

impl<F: FnOnce() -> Duration> metrics::IntoF64 for Lazy<F> {
    #[inline]
    fn into_f64(self) -> f64 {
        (self.0)().as_secs_f64()
    }
}

/// Bucket bounds, in seconds and in nanoseconds.
#[derive(Debug, Clone)]
struct Bounds {
    seconds: Vec<f64>,
    /// `most[i]`: the most nanoseconds `n` for which `seconds_of(n) <= seconds[i]`; the
    /// overflow bucket's is `u64::MAX`.
    most: Box<[u64]>,
}

/// Nanoseconds as seconds, computed as the means handed to the exporter are.
fn seconds_of(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

impl Bounds {
    fn new(seconds: &[f64]) -> Result<Self, BucketsError> {
        if seconds.is_empty() || seconds.len() > MAX_BUCKETS {
            return Err(BucketsError::Count(seconds.len()));
        }
        let mut most = Vec::with_capacity(seconds.len() + 1);
        for (i, &b) in seconds.iter().enumerate() {
            if !(b.is_finite() && b > 0.0) {
                return Err(BucketsError::NotPositive(b));
            }
            if i > 0 && b <= seconds[i - 1] {
                return Err(BucketsError::NotIncreasing(b));
            }
            most.push(most_nanos(b));
        }
        most.push(u64::MAX);
        Ok(Self { seconds: seconds.to_vec(), most: most.into_boxed_slice() })
    }

    /// The bucket of a duration of `nanos` nanoseconds.
    #[inline]
    fn bucket_of(&self, nanos: u64) -> usize {
        // Durations mostly fall in the first buckets: a scan finds them soonest.
        self.most.iter().position(|&most| nanos <= most).unwrap_or(self.most.len() - 1)
    }

    /// The fewest and most nanoseconds of bucket `i`.
    fn range(&self, i: usize) -> (u64, u64) {
        let least = if i == 0 { 0 } else { self.most[i - 1].saturating_add(1) };
        (least, self.most[i])
    }
}

/// The most nanoseconds `n` with `seconds_of(n) <= bound` (`bound` positive and finite).
fn most_nanos(bound: f64) -> u64 {
    // A guess within a few nanoseconds (saturating), then moved to the exact edge.
    let mut n = (bound * 1e9) as u64;
    while n > 0 && seconds_of(n) > bound {
        n -= 1;
    }
    while let Some(next) = n.checked_add(1).filter(|&next| seconds_of(next) <= bound) {
        n = next;
    }
    n
}

/// Four buckets' counts and sums, `(count, sum)` pairs, on a cache line of their own.
#[repr(align(64))]
struct Line([AtomicU64; 8]);

/// A counted histogram: per stripe, each bucket's count and sum of nanoseconds.
struct Counts {
    histogram: Histogram,
    bounds: Bounds,
    /// Stripe after stripe, each `per_stripe` lines.
    lines: Box<[Line]>,
    per_stripe: usize,
    /// Stripes minus one (their count is a power of two).
    mask: usize,
    /// What earlier flushes handed over.
    flushed: Mutex<Flushed>,
}

/// By bucket: the count handed over, and the sum of nanoseconds handed over.
struct Flushed {
    count: Box<[u64]>,
    sum: Box<[u64]>,
}

impl Counts {
    fn new(histogram: Histogram, bounds: Bounds) -> Self {
        Self::with_stripes(histogram, bounds, *STRIPES_USED)
    }

    fn with_stripes(histogram: Histogram, bounds: Bounds, stripes: usize) -> Self {
        debug_assert!(stripes.is_power_of_two());
        let buckets = bounds.most.len();
        let per_stripe = buckets.div_ceil(4);
        let lines = (0..stripes * per_stripe).map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0)))).collect();
        let flushed = Flushed { count: vec![0; buckets].into(), sum: vec![0; buckets].into() };
        Self { histogram, bounds, lines, per_stripe, mask: stripes - 1, flushed: Mutex::new(flushed) }
    }

    /// The count and the sum cells of `bucket` in `stripe`.
    #[inline]
    fn cells(&self, stripe: usize, bucket: usize) -> (&AtomicU64, &AtomicU64) {
        let line = &self.lines[stripe * self.per_stripe + bucket / 4];
        let pair = (bucket % 4) * 2;
        (&line.0[pair], &line.0[pair + 1])
    }

    /// Counts `weight` durations of `nanos` each.
    #[inline]
    fn add(&self, nanos: u64, weight: u64) {
        let (count, sum) = self.cells(stripe() & self.mask, self.bounds.bucket_of(nanos));
        // The sum before the count: a flush that reads a count reads at least its sum.
        sum.fetch_add(nanos.wrapping_mul(weight), Ordering::Relaxed);
        count.fetch_add(weight, Ordering::Release);
    }

    /// Hands the durations counted since the previous flush to the histogram.
    fn flush(&self) {
        let mut flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        let Flushed { count: counts_out, sum: sums_out } = &mut *flushed;
        let stripes = self.mask + 1;
        for bucket in 0..self.bounds.most.len() {
            let (mut count, mut sum) = (0u64, 0u64);
            for stripe in 0..stripes {
                count = count.wrapping_add(self.cells(stripe, bucket).0.load(Ordering::Acquire));
            }
            for stripe in 0..stripes {
                sum = sum.wrapping_add(self.cells(stripe, bucket).1.load(Ordering::Relaxed));
            }
            let new = count.wrapping_sub(counts_out[bucket]);
            if new == 0 {
                continue;
            }
            // The sum may run ahead of the count (durations being counted as this reads)
            // or behind it (a previous mean clamped upwards): the mean is clamped into
            // the bucket, and what it leaves out is handed over by a later flush.
            let unflushed = sum.wrapping_sub(sums_out[bucket]) as i64;
            let (least, most) = self.bounds.range(bucket);
            let mean =
                (u128::from(unflushed.max(0) as u64) / u128::from(new)).clamp(u128::from(least), u128::from(most));
            counts_out[bucket] = count;
            sums_out[bucket] = sums_out[bucket].wrapping_add((mean * u128::from(new)) as u64);
            self.histogram.record_many(seconds_of(mean as u64), new as usize);
        }
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a `metrics` histogram was handed: `(seconds, count)` per call.
    #[derive(Default)]
    struct Taken(Mutex<Vec<(f64, usize)>>);

    impl metrics::HistogramFn for Taken {
        fn record(&self, value: f64) {
            self.record_many(value, 1);
        }
        fn record_many(&self, value: f64, count: usize) {
            self.0.lock().unwrap().push((value, count));
        }
    }

    const PROMETHEUS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

    fn counted(bounds: &[f64], stripes: usize) -> (Counts, Arc<Taken>) {
        let taken = Arc::new(Taken::default());
        let histogram = Histogram::from_arc(Arc::clone(&taken));
        (Counts::with_stripes(histogram, Bounds::new(bounds).unwrap(), stripes), taken)
    }

    /// An exporter's view of what it was handed: count per bucket (by `le`, inclusive, as
    /// Prometheus counts), total count and sum of seconds.
    fn exported(bounds: &[f64], taken: &Taken) -> (Vec<u64>, u64, f64) {
        let mut buckets = vec![0u64; bounds.len() + 1];
        let (mut count, mut sum) = (0, 0.0);
        for &(value, n) in taken.0.lock().unwrap().iter() {
            let b = bounds.iter().position(|&b| value <= b).unwrap_or(bounds.len());
            buckets[b] += n as u64;
            count += n as u64;
            sum += value * n as f64;
        }
        (buckets, count, sum)
    }

    /// The same for durations handed over one by one.
    fn expected(bounds: &[f64], nanos: &[u64]) -> (Vec<u64>, u64, f64) {
        let mut buckets = vec![0u64; bounds.len() + 1];
        for &n in nanos {
            buckets[bounds.iter().position(|&b| seconds_of(n) <= b).unwrap_or(bounds.len())] += 1;
        }
        (buckets, nanos.len() as u64, nanos.iter().map(|&n| n as f64 / 1e9).sum())
    }

    #[test]
    fn bucket_edges_are_where_the_exporter_puts_them() {
        let bounds = Bounds::new(&PROMETHEUS).unwrap();
        for (i, &b) in PROMETHEUS.iter().enumerate() {
            let most = bounds.most[i];
            assert!(seconds_of(most) <= b && seconds_of(most + 1) > b, "{b}: {most}");
            assert_eq!(bounds.bucket_of(most), i);
            assert_eq!(bounds.bucket_of(most + 1), i + 1);
        }
        assert_eq!(bounds.bucket_of(u64::MAX), PROMETHEUS.len());
        assert_eq!(bounds.bucket_of(0), 0);
    }

    #[test]
    fn bad_bounds_are_refused_by_name() {
        assert_eq!(Bounds::new(&[]).unwrap_err(), BucketsError::Count(0));
        assert_eq!(Bounds::new(&[0.1, 0.0]).unwrap_err(), BucketsError::NotPositive(0.0));
        assert!(matches!(Bounds::new(&[f64::NAN]).unwrap_err(), BucketsError::NotPositive(b) if b.is_nan()));
        assert_eq!(Bounds::new(&[0.5, 0.5]).unwrap_err(), BucketsError::NotIncreasing(0.5));
        assert_eq!(Bounds::new(&[1.0; 65]).unwrap_err(), BucketsError::Count(65));
        assert!(BucketsError::NotIncreasing(0.5).to_string().contains("0.5 is not above"));
    }

    #[test]
    fn nothing_is_handed_over_twice_or_without_durations() {
        let (counts, taken) = counted(&PROMETHEUS, 2);
        counts.flush();
        assert!(taken.0.lock().unwrap().is_empty());
        counts.add(2_000_000, 3);
        counts.flush();
        counts.flush();
        assert_eq!(*taken.0.lock().unwrap(), vec![(0.002, 3)]);
    }

    #[test]
    fn threads_counting_while_another_flushes_lose_nothing() {
        let (counts, taken) = counted(&PROMETHEUS, 2);
        let counts = Arc::new(counts);
        let per_thread: Vec<Vec<u64>> =
            (0..4u64).map(|t| (0..20_000u64).map(|i| (i * 7_919 + t * 104_729) % 3_000_000_000).collect()).collect();
        std::thread::scope(|s| {
            for nanos in &per_thread {
                let counts = Arc::clone(&counts);
                s.spawn(move || nanos.iter().for_each(|&n| counts.add(n, 1)));
            }
            s.spawn(|| (0..200).for_each(|_| counts.flush()));
        });
        counts.flush();
        let all: Vec<u64> = per_thread.concat();
        let (buckets, count, sum) = exported(&PROMETHEUS, &taken);
        let (want_buckets, want_count, want_sum) = expected(&PROMETHEUS, &all);
        assert_eq!((buckets, count), (want_buckets, want_count));
        // Every mean is whole nanoseconds: the sum is off by under 1 ns per duration.
        assert!((sum - want_sum).abs() <= count as f64 * 1e-9, "{sum} against {want_sum}");
    }

    proptest! {
        /// Against a model that hands each duration over as it comes: the same buckets
        /// and count after every flush, and a sum off by under 1 ns per duration.
        #[test]
        fn flushed_counts_match_durations_handed_over_one_by_one(
            steps in proptest::collection::vec(
                prop_oneof![
                    // Around the bucket edges and anywhere.
                    (0usize..14, -3i64..=3).prop_map(|(i, d)| Some((PROMETHEUS[i] * 1e9) as i64 + d)),
                    (0i64..100_000_000_000).prop_map(Some),
                    Just(None),
                ],
                1..200,
            ),
            stripes in prop_oneof![Just(1usize), Just(2), Just(8)],
        ) {
            let (counts, taken) = counted(&PROMETHEUS, stripes);
            let mut recorded = Vec::new();
            for step in steps {
                match step {
                    Some(n) => {
                        let n = n.max(0) as u64;
                        counts.add(n, 1);
                        recorded.push(n);
                    }
                    None => {
                        counts.flush();
                        let (buckets, count, sum) = exported(&PROMETHEUS, &taken);
                        let (want_buckets, want_count, want_sum) = expected(&PROMETHEUS, &recorded);
                        prop_assert_eq!((buckets, count), (want_buckets, want_count));
                        prop_assert!((sum - want_sum).abs() <= count as f64 * 1e-9 + 1e-12);
                    }
                }
            }
        }
    }

    #[test]
    fn once_aggregating_histograms_are_counted_flushed_and_freed_after_their_last_handle() {
        let direct = DurationHistogram::new(Histogram::noop());
        aggregate_into(&PROMETHEUS).unwrap();
        aggregate_into(&PROMETHEUS).expect("the same bounds again");
        assert_eq!(aggregate_into(&[1.0]).unwrap_err(), BucketsError::AlreadySet(PROMETHEUS.to_vec()));
        assert_eq!(format!("{direct:?}"), "DurationHistogram(\"direct\")", "made before: stays direct");
        let taken = Arc::new(Taken::default());
        let histogram = DurationHistogram::new(Histogram::from_arc(Arc::clone(&taken)));
        let Kind::Counted(counts) = &histogram.0 else { panic!("{histogram:?}") };
        let counts = Arc::downgrade(counts);
        histogram.record(Duration::from_millis(3));
        histogram.record_with(|| Duration::from_millis(5));
        assert!(taken.0.lock().unwrap().is_empty(), "nothing is handed over before a flush");
        flush();
        assert_eq!(exported(&PROMETHEUS, &taken).0[..4], [0, 0, 2, 0]);
        histogram.record(Duration::from_secs(61));
        drop(histogram);
        flush();
        assert_eq!(exported(&PROMETHEUS, &taken).0[14], 1, "flushed once more after its last handle");
        assert!(counts.upgrade().is_none(), "and freed");
    }

    #[test]
    fn weighted_durations_count_as_many() {
        let (counts, taken) = counted(&[1.0, 2.0], 1);
        counts.add(1_500_000_000, 16);
        counts.add(u64::MAX, 1);
        counts.flush();
        let (buckets, count, _) = exported(&[1.0, 2.0], &taken);
        assert_eq!((buckets, count), (vec![0, 16, 1], 17));
    }
}
