//! Metrics counted per thread, for exporters whose handles write memory that every thread
//! shares.
//!
//! A recorder's counter is typically one shared atomic (metrics-exporter-prometheus's is
//! two: the value and a generation), and its histogram a shared queue of samples. Two
//! threads recording into one handle then pass its cache line back and forth, and on a
//! hot path that costs more than the rest of the recording. The handles here wrap the
//! `metrics` ones and, once an exporter has switched aggregation on ([`enable`]), count
//! into the current thread's own stripe instead, with no shared write; [`flush`] hands
//! what was counted since the previous flush to the `metrics` handles. Without [`enable`]
//! they record straight into the `metrics` handles, as if they were not there.
//!
//! - [`Counters`]: a few counters side by side. A flush adds each one's new count.
//! - [`DurationHistogram`]: per bucket, the count and the sum of the durations. A flush
//!   records each bucket's new durations with one `record_many`, at their mean. That
//!   mean lies within the bucket, so the exporter's bucket counts and `_count` come out
//!   exact when its buckets are the ones given to [`enable`]. Its `_sum` is right to
//!   within a nanosecond per duration of the last flush (each mean is a whole number of
//!   nanoseconds, and what rounding left out is carried into the next flush).
//!
//! What is not exact is time: a count reaches the exporter at the next flush, not when it
//! is made. `resilience::prometheus` flushes every second and before `/metrics` renders.
//!
//! Memory, per handle made after [`enable`]: one stripe per CPU, rounded up to a power of
//! two, at most 32. A stripe is 64 bytes for a [`Counters`] (up to 8 counters) and
//! 256 bytes for a [`DurationHistogram`] with Prometheus's 14 buckets and the overflow:
//! 128 and 512 bytes on 2 CPUs, 1 KiB and 4 KiB on 16. A handle whose last clone is
//! dropped is flushed once more and freed.

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::clock::duration_nanos;
use crate::stripe::{stripe, Stripe};
// The cells are loom's under `--cfg resilience_loom`; the lists and what was flushed are
// behind a plain mutex.
use crate::sync::{AtomicU64, Ordering};

/// The most duration buckets [`enable`] accepts (besides the overflow bucket).
pub const MAX_BUCKETS: usize = 64;

/// Why [`enable`] refused a list of bucket bounds.
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

/// The bucket bounds of the installed exporter, once [`enable`] is called: aggregation
/// is on.
static BOUNDS: OnceLock<Bounds> = OnceLock::new();

/// Every handle that counts per thread, for [`flush`].
static LIVE: Mutex<Vec<Arc<dyn Flush>>> = Mutex::new(Vec::new());

/// What [`flush`] calls on each handle.
trait Flush: Send + Sync {
    /// Hands what was counted since the previous call to the `metrics` handles.
    fn flush(&self);
}

/// Stripes per handle: one per CPU, rounded up to a power of two, at most 32 (threads
/// beyond that share stripes; their adds stay exact).
static STRIPES_USED: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, usize::from).next_power_of_two().min(32));

/// Switches aggregation on: every [`Counters`] and [`DurationHistogram`] made from now on
/// counts per thread until [`flush`] hands the counts to its `metrics` handles; durations
/// into buckets with these upper bounds (in seconds, inclusive, as Prometheus's `le`).
///
/// Call it only when something flushes regularly, and only when the installed recorder's
/// duration histograms have exactly these buckets: the means [`flush`] records are exact
/// for them, not for other bounds. `resilience::prometheus::install()` calls it, and
/// flushes every second. Calling it again with the same bounds does nothing.
///
/// # Errors
/// The bounds are empty, longer than [`MAX_BUCKETS`], not positive and finite, or not
/// strictly increasing; or aggregation is already on with other bounds.
pub fn enable(duration_buckets: &[f64]) -> Result<(), BucketsError> {
    let wanted = Bounds::new(duration_buckets)?;
    let set = BOUNDS.get_or_init(|| wanted.clone());
    if set.seconds == wanted.seconds {
        Ok(())
    } else {
        Err(BucketsError::AlreadySet(set.seconds.clone()))
    }
}

/// Hands what every handle counted since the previous flush to its `metrics` handles
/// (see the [module docs](self)). An exporter calls it before it renders; without
/// [`enable`] there is nothing to flush.
pub fn flush() {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|counts| {
        // Its last handle gone (the fence pairs with the handle's release of its count),
        // nothing records into it any more: flushed once more, it is freed.
        let orphan = Arc::strong_count(counts) == 1;
        if orphan {
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        }
        counts.flush();
        !orphan
    });
}

/// Registers a new handle's counts for [`flush`].
fn live<T: Flush + 'static>(counts: T) -> Arc<T> {
    let counts = Arc::new(counts);
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&counts) as Arc<dyn Flush>);
    counts
}

/// Zeroed cells: `stripes` stripes of `per_stripe` cache lines each.
fn lines<const N: usize>(per_stripe: usize, stripes: usize) -> Box<[Stripe<N>]> {
    (0..stripes * per_stripe).map(|_| Stripe::new()).collect()
}

/// Up to eight counters of one policy, side by side (see the [module docs](self)).
pub struct Counters<const N: usize>(CountersKind<N>);

enum CountersKind<const N: usize> {
    /// Each count goes to its counter as it comes.
    Direct([Counter; N]),
    /// Counted per thread, handed over by [`flush`].
    Counted(Arc<CounterCells<N>>),
}

impl<const N: usize> fmt::Debug for Counters<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            CountersKind::Direct(_) => "direct",
            CountersKind::Counted(_) => "counted",
        };
        f.debug_tuple("Counters").field(&kind).finish()
    }
}

impl<const N: usize> Counters<N> {
    const FIT_A_LINE: () = assert!(N >= 1 && N <= 8, "one to eight counters share a line");

    /// Counts into `counters`: per thread if aggregation is on ([`enable`]), else
    /// directly.
    pub fn new(counters: [Counter; N]) -> Self {
        let () = Self::FIT_A_LINE;
        match BOUNDS.get() {
            Some(_) => Self(CountersKind::Counted(live(CounterCells::new(counters, *STRIPES_USED)))),
            None => Self(CountersKind::Direct(counters)),
        }
    }

    /// Adds `n` to counter `i` (of the array given to [`new`](Self::new)).
    ///
    /// # Panics
    /// If `i` is not below `N`.
    #[inline]
    pub fn increment(&self, i: usize, n: u64) {
        match &self.0 {
            CountersKind::Direct(counters) => counters[i].increment(n),
            CountersKind::Counted(cells) => cells.add(i, n),
        }
    }
}

/// Counters counted per thread: a line per stripe.
struct CounterCells<const N: usize> {
    counters: [Counter; N],
    /// A line of `N` counters per stripe.
    lines: Box<[Stripe<N>]>,
    /// Stripes minus one (their count is a power of two).
    mask: usize,
    /// What earlier flushes handed over.
    flushed: Mutex<[u64; N]>,
}

impl<const N: usize> CounterCells<N> {
    fn new(counters: [Counter; N], stripes: usize) -> Self {
        debug_assert!(stripes.is_power_of_two());
        Self { counters, lines: lines(1, stripes), mask: stripes - 1, flushed: Mutex::new([0; N]) }
    }

    #[inline]
    fn add(&self, i: usize, n: u64) {
        assert!(i < N, "counter {i} of {N}");
        self.lines[stripe() & self.mask].0[i].fetch_add(n, Ordering::Relaxed);
    }
}

impl<const N: usize> Flush for CounterCells<N> {
    fn flush(&self) {
        let mut flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (counter, out)) in self.counters.iter().zip(flushed.iter_mut()).enumerate() {
            let total = self.lines.iter().fold(0u64, |sum, line| sum.wrapping_add(line.0[i].load(Ordering::Relaxed)));
            let new = total.wrapping_sub(*out);
            if new != 0 {
                counter.increment(new);
                *out = total;
            }
        }
    }
}

/// A histogram of durations (see the [module docs](self)).
pub struct DurationHistogram(Kind);

enum Kind {
    /// Each duration goes to the histogram as it comes.
    Direct(Histogram),
    /// Counted per thread, handed over by [`flush`].
    Counted(Arc<HistogramCells>),
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
    /// Records into `histogram` (in seconds): counted per thread if aggregation is on
    /// ([`enable`]), else directly.
    pub fn new(histogram: Histogram) -> Self {
        match BOUNDS.get() {
            Some(bounds) => Self(Kind::Counted(live(HistogramCells::new(histogram, bounds.clone())))),
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

/// A counted histogram: per stripe, each bucket's count and sum of nanoseconds.
struct HistogramCells {
    histogram: Histogram,
    bounds: Bounds,
    /// Stripe after stripe, each `per_stripe` lines of four buckets' `(count, sum)` pairs.
    lines: Box<[Stripe<8>]>,
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

impl HistogramCells {
    fn new(histogram: Histogram, bounds: Bounds) -> Self {
        Self::with_stripes(histogram, bounds, *STRIPES_USED)
    }

    fn with_stripes(histogram: Histogram, bounds: Bounds, stripes: usize) -> Self {
        debug_assert!(stripes.is_power_of_two());
        let buckets = bounds.most.len();
        let per_stripe = buckets.div_ceil(4);
        let flushed = Flushed { count: vec![0; buckets].into(), sum: vec![0; buckets].into() };
        Self {
            histogram,
            bounds,
            lines: lines(per_stripe, stripes),
            per_stripe,
            mask: stripes - 1,
            flushed: Mutex::new(flushed),
        }
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
}

impl Flush for HistogramCells {
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

/// Handles that keep what they were given, for the tests.
#[cfg(test)]
mod given {
    use std::sync::Mutex;

    /// What a `metrics` histogram was handed: `(seconds, count)` per call.
    #[derive(Default)]
    pub(super) struct Taken(pub(super) Mutex<Vec<(f64, usize)>>);

    impl metrics::HistogramFn for Taken {
        fn record(&self, value: f64) {
            self.record_many(value, 1);
        }
        fn record_many(&self, value: f64, count: usize) {
            self.0.lock().unwrap().push((value, count));
        }
    }

    /// What a `metrics` counter was given.
    #[derive(Default)]
    pub(super) struct Added(pub(super) std::sync::atomic::AtomicU64);

    impl metrics::CounterFn for Added {
        fn increment(&self, n: u64) {
            self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        fn absolute(&self, n: u64) {
            self.0.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::given::{Added, Taken};
    use super::*;
    use proptest::prelude::*;

    const PROMETHEUS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

    fn counted(bounds: &[f64], stripes: usize) -> (HistogramCells, Arc<Taken>) {
        let taken = Arc::new(Taken::default());
        let histogram = Histogram::from_arc(Arc::clone(&taken));
        (HistogramCells::with_stripes(histogram, Bounds::new(bounds).unwrap(), stripes), taken)
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
    fn once_enabled_handles_are_counted_flushed_and_freed_after_their_last_clone() {
        let direct = DurationHistogram::new(Histogram::noop());
        enable(&PROMETHEUS).unwrap();
        enable(&PROMETHEUS).expect("the same bounds again");
        assert_eq!(enable(&[1.0]).unwrap_err(), BucketsError::AlreadySet(PROMETHEUS.to_vec()));
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
        let added = Arc::new(Added::default());
        let counters = Counters::new([Counter::noop(), Counter::from_arc(Arc::clone(&added))]);
        assert_eq!(format!("{counters:?}"), "Counters(\"counted\")");
        counters.increment(1, 5);
        assert_eq!(added.0.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing is added before a flush");
        flush();
        assert_eq!(added.0.load(std::sync::atomic::Ordering::Relaxed), 5);
        counters.increment(1, 2);
        drop(counters);
        flush();
        assert_eq!(added.0.load(std::sync::atomic::Ordering::Relaxed), 7, "flushed once more after its last handle");
    }

    #[test]
    fn counters_counted_while_another_thread_flushes_lose_nothing_and_add_nothing() {
        let added: [Arc<Added>; 3] = std::array::from_fn(|_| Arc::default());
        let cells = Arc::new(CounterCells::new(added.clone().map(Counter::from_arc), 2));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let cells = Arc::clone(&cells);
                s.spawn(move || (0..50_000u64).for_each(|i| cells.add(((i + t) % 3) as usize, 1 + i % 2)));
            }
            s.spawn(|| (0..300).for_each(|_| cells.flush()));
        });
        cells.flush();
        cells.flush();
        // Per thread and counter: each `i` with `(i + t) % 3` gives 1 or 2.
        let mut want = [0u64; 3];
        for t in 0..4u64 {
            for i in 0..50_000u64 {
                want[((i + t) % 3) as usize] += 1 + i % 2;
            }
        }
        assert_eq!(added.map(|a| a.0.load(std::sync::atomic::Ordering::Relaxed)), want);
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

#[cfg(all(test, resilience_loom))]
mod loom_tests {
    use super::given::{Added, Taken};
    use super::*;

    /// Two threads count durations on each side of a bucket edge while a third flushes:
    /// under every interleaving, every duration is handed over once and in its bucket
    /// (a flush that reads a count before its sum, or a sum before its count, still
    /// hands over a mean within the bucket).
    #[test]
    fn loom_a_flush_during_counting_hands_each_duration_over_once_in_its_bucket() {
        loom::model(|| {
            let taken = Arc::new(Taken::default());
            let cells = Arc::new(HistogramCells::with_stripes(
                Histogram::from_arc(Arc::clone(&taken)),
                Bounds::new(&[1.0]).unwrap(),
                2,
            ));
            let counting: Vec<_> = [[1_000_000_000u64, 999_999_999], [1_000_000_001, 1_000_000_000]]
                .into_iter()
                .map(|nanos| {
                    let cells = Arc::clone(&cells);
                    loom::thread::spawn(move || nanos.into_iter().for_each(|n| cells.add(n, 1)))
                })
                .collect();
            let flusher = {
                let cells = Arc::clone(&cells);
                loom::thread::spawn(move || cells.flush())
            };
            counting.into_iter().for_each(|t| t.join().unwrap());
            flusher.join().unwrap();
            cells.flush();
            let mut buckets = [0usize; 2];
            for &(value, n) in taken.0.lock().unwrap().iter() {
                buckets[usize::from(value > 1.0)] += n;
            }
            assert_eq!(buckets, [3, 1]);
        });
    }

    /// Counters: one thread adds while another flushes; the total handed over is exact.
    #[test]
    fn loom_a_flush_during_counting_adds_each_count_once() {
        loom::model(|| {
            let added = Arc::new(Added::default());
            let cells = Arc::new(CounterCells::new([Counter::from_arc(Arc::clone(&added))], 2));
            let adding = {
                let cells = Arc::clone(&cells);
                loom::thread::spawn(move || (0..2).for_each(|_| cells.add(0, 3)))
            };
            let flusher = {
                let cells = Arc::clone(&cells);
                loom::thread::spawn(move || cells.flush())
            };
            cells.add(0, 1);
            adding.join().unwrap();
            flusher.join().unwrap();
            cells.flush();
            assert_eq!(added.0.load(std::sync::atomic::Ordering::Relaxed), 7);
        });
    }
}
