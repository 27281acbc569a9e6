//! A value shared by long-lived handles and lent to work in flight without a shared
//! reference count.
//!
//! Giving each request an `Arc` clone of its service's state costs two atomic
//! read-modify-writes on one cache line that the requests of every core share: under
//! load the line moves between cores on every request, and reads of whatever shares the
//! line with the count wait for it too. A [`Loan`] costs two thread-local counter bumps
//! instead: it is a read section of the scheme that frees replaced pipelines (sleepable
//! RCU, see the `reclaim` module). The value lives apart from its handles' count, and is
//! freed once the last [`Lender`] is gone *and* every loan made before that has ended.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::reclaim::{self, Guard, RcuCell};

/// A shared value: its clones are handles to it (an `Arc` clone each), and it lends the
/// value to work in flight with [`loan`](Self::loan).
///
/// When the last handle is dropped the value is not freed at once: it is handed to the
/// process's reclamation thread, which drops it (on that thread) once every loan made
/// before is gone.
pub struct Lender<T: Send + Sync + 'static> {
    /// Never replaced: dropped with the last handle, which retires the value.
    cell: Arc<RcuCell<T>>,
}

impl<T: Send + Sync + 'static> Lender<T> {
    /// A first handle to `value`.
    pub fn new(value: T) -> Self {
        Self { cell: Arc::new(RcuCell::new(value)) }
    }

    /// The value, lent for as long as the loan is held, on any thread, even after every
    /// handle is dropped.
    ///
    /// Hold a loan for the length of one piece of work (a request, a call): while any
    /// loan is held, nothing retired since it was made (this crate's replaced pipelines
    /// included) can be freed.
    #[inline]
    pub fn loan(&self) -> Loan<T> {
        let guard = reclaim::enter();
        let value = NonNull::from(self.cell.get(&guard));
        Loan { value, _guard: guard }
    }
}

impl<T: Send + Sync + 'static> Deref for Lender<T> {
    type Target = T;

    #[inline]
    #[allow(unsafe_code)]
    fn deref(&self) -> &T {
        // SAFETY: the cell was made with a value and is never replaced, so it holds that
        // value until it is dropped with the last handle, and `self` is one.
        unsafe { &*self.cell.current_ptr() }
    }
}

impl<T: Send + Sync + 'static> Clone for Lender<T> {
    fn clone(&self) -> Self {
        Self { cell: Arc::clone(&self.cell) }
    }
}

impl<T: Send + Sync + fmt::Debug + 'static> fmt::Debug for Lender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lender").field(&**self).finish()
    }
}

/// A [`Lender`]'s value, lent: valid while this is held, wherever it is moved or dropped.
#[must_use = "a loan keeps its value only while it is held"]
pub struct Loan<T: Send + Sync + 'static> {
    value: NonNull<T>,
    _guard: Guard,
}

// SAFETY: a loan hands out `&T` only, on whatever thread holds it: it may be sent and
// shared when `&T` may be (`T: Sync`, which `Lender` asks anyway); its guard may be
// dropped on any thread.
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync + 'static> Send for Loan<T> {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync + 'static> Sync for Loan<T> {}

impl<T: Send + Sync + 'static> Deref for Loan<T> {
    type Target = T;

    #[inline]
    #[allow(unsafe_code)]
    fn deref(&self) -> &T {
        // SAFETY: the value was loaded under this loan's read section; it is retired only
        // when its cell is dropped with the last handle, and freed only after every read
        // section open at that point (this one) has closed.
        unsafe { self.value.as_ref() }
    }
}

impl<T: Send + Sync + fmt::Debug + 'static> fmt::Debug for Loan<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Loan").field(&**self).finish()
    }
}

/// Handles to a value that many threads clone at once (a tower service that its router
/// clones for every request, as axum's does), without a count that every thread's
/// clones write.
///
/// The first handle ([`new`](Self::new)) is the origin. A clone of the origin made on a
/// thread is a handle to that thread's *replica*: a clone of the value, made the first
/// time a clone is made on the thread (threads take the process's stripes in turn, and
/// past 32 threads they share), with a count of its own on a cache line of its own. So
/// the clone of each request writes only its own thread's count, where an `Arc` clone
/// would move one cache line between the cores on every request. A clone of a replica
/// is a handle to the same replica.
///
/// Each replica is a [`Lender`]: [`loan`](Self::loan) lends the handle's value (the
/// origin's or the replica's) to work in flight. The value's clones must be
/// interchangeable (an `Arc` of shared state, and caches each replica may fill apart):
/// what one handle changes through interior mutability, a handle to another replica
/// does not see. The origin keeps the replicas made so far (at most 32, each a clone
/// of the value and about 128 bytes more); a replica is freed with the origin and its
/// own last handle.
pub struct Replicated<T: Clone + Send + Sync + 'static> {
    handle: Handle<T>,
}

enum Handle<T: Clone + Send + Sync + 'static> {
    Origin(Arc<Origin<T>>),
    Replica(Arc<Replica<T>>),
}

struct Origin<T: Clone + Send + Sync + 'static> {
    lender: Lender<T>,
    replicas: [std::sync::OnceLock<Arc<Replica<T>>>; crate::stripe::STRIPES],
}

/// One thread's replica: its count (the `Arc`'s, just before it) alone on its line.
#[repr(align(64))]
struct Replica<T: Send + Sync + 'static> {
    lender: Lender<T>,
}

impl<T: Clone + Send + Sync + 'static> Replicated<T> {
    /// The origin handle of `value`.
    pub fn new(value: T) -> Self {
        let origin = Origin { lender: Lender::new(value), replicas: std::array::from_fn(|_| Default::default()) };
        Self { handle: Handle::Origin(Arc::new(origin)) }
    }

    fn lender(&self) -> &Lender<T> {
        match &self.handle {
            Handle::Origin(origin) => &origin.lender,
            Handle::Replica(replica) => &replica.lender,
        }
    }

    /// This handle's value (the origin's or its replica's), lent for as long as the
    /// loan is held: see [`Lender::loan`].
    #[inline]
    pub fn loan(&self) -> Loan<T> {
        self.lender().loan()
    }
}

impl<T: Clone + Send + Sync + 'static> Deref for Replicated<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.lender()
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for Replicated<T> {
    #[inline]
    fn clone(&self) -> Self {
        let replica = match &self.handle {
            Handle::Origin(origin) => origin.replicas[crate::stripe::stripe()]
                .get_or_init(|| Arc::new(Replica { lender: Lender::new(T::clone(&origin.lender)) })),
            Handle::Replica(replica) => replica,
        };
        Self { handle: Handle::Replica(Arc::clone(replica)) }
    }
}

impl<T: Clone + Send + Sync + fmt::Debug + 'static> fmt::Debug for Replicated<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Replicated").field(&**self).finish()
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    struct Tracked(Arc<AtomicUsize>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn dropped_within(drops: &AtomicUsize, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if drops.load(SeqCst) == 1 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn a_loan_keeps_the_value_after_the_last_handle_until_it_ends() {
        let drops = Arc::new(AtomicUsize::new(0));
        let lender = Lender::new(Tracked(Arc::clone(&drops)));
        let other = lender.clone();
        let loan = lender.loan();
        drop(lender);
        drop(other);
        // The loan goes to another thread, is read there and ends there.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let alive = loan.0.load(SeqCst);
            drop(loan);
            alive
        });
        assert_eq!(reader.join().expect("reader"), 0, "the value was dropped under a loan");
        assert!(dropped_within(&drops, Duration::from_secs(5)), "the value was never freed");
    }

    /// A value that counts its clones and drops.
    struct Counted {
        clones: Arc<AtomicUsize>,
        drops: Arc<AtomicUsize>,
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, SeqCst);
            Self { clones: Arc::clone(&self.clones), drops: Arc::clone(&self.drops) }
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.drops.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn clones_on_a_thread_share_its_replica_and_every_copy_is_freed() {
        let (clones, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let origin = Replicated::new(Counted { clones: Arc::clone(&clones), drops: Arc::clone(&drops) });
        let here: Vec<_> = (0..100).map(|_| origin.clone()).collect();
        assert_eq!(clones.load(SeqCst), 1, "100 clones on one thread made one replica");
        let again = here[0].clone();
        assert_eq!(clones.load(SeqCst), 1, "a clone of a replica is a handle to it");
        let loan = again.loan();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| drop((0..10).map(|_| origin.clone()).collect::<Vec<_>>()));
            }
        });
        // At most one each (threads past the stripes' number share a replica, and the
        // test harness's other threads took stripes too).
        let made = clones.load(SeqCst);
        assert!((1..=4).contains(&made), "{made} replicas for four threads");
        drop((origin, here, again));
        // The loaned replica is kept until its loan ends; every copy is freed after.
        assert!(drops.load(SeqCst) < made + 1, "a copy under a loan was freed");
        drop(loan);
        let start = Instant::now();
        while drops.load(SeqCst) < made + 1 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(drops.load(SeqCst), made + 1, "the value and its replicas are each freed once");
    }

    #[test]
    fn a_value_without_loans_is_freed_after_its_last_handle() {
        let drops = Arc::new(AtomicUsize::new(0));
        let lender = Lender::new(Tracked(Arc::clone(&drops)));
        drop(lender.loan());
        assert_eq!(drops.load(SeqCst), 0);
        drop(lender);
        assert!(dropped_within(&drops, Duration::from_secs(5)), "the value was never freed");
    }
}
