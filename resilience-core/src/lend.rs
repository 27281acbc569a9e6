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
