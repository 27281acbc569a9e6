//! Counters striped by thread: a thread adds to its own cache line with a load and a
//! store (no locked instruction), and readers sum the stripes.

use crate::sync::{AtomicU64, Ordering::Relaxed};

/// Stripes of a count: one per thread, assigned in turn.
#[cfg(not(resilience_loom))]
pub(crate) const STRIPES: usize = 32;
/// Under loom, as many as a model has threads (a main thread and two more; loom
/// tracks every atomic).
#[cfg(resilience_loom)]
pub(crate) const STRIPES: usize = 3;

/// One stripe's counters, on a cache line of their own.
#[repr(align(64))]
pub(crate) struct Stripe<const N: usize>(pub(crate) [AtomicU64; N]);

impl<const N: usize> Stripe<N> {
    /// All counters at zero.
    pub(crate) fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// `N` counters striped by thread.
pub(crate) struct Striped<const N: usize>([Stripe<N>; STRIPES]);

impl<const N: usize> Striped<N> {
    /// All counters at zero.
    pub(crate) fn new() -> Self {
        Self(std::array::from_fn(|_| Stripe::new()))
    }

    /// This thread's stripe.
    #[inline]
    pub(crate) fn mine(&self) -> &Stripe<N> {
        &self.0[stripe()]
    }

    /// Adds `n` to counter `i` of this thread's stripe; returns the stripe's new value.
    ///
    /// A load and a store: exact while one thread uses a stripe, and a lost update at
    /// worst when more than [`STRIPES`] threads share them.
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) -> u64 {
        let cell = &self.mine().0[i];
        let next = cell.load(Relaxed).wrapping_add(n);
        cell.store(next, Relaxed);
        next
    }

    /// Adds `n[i]` to each counter `i` of this thread's stripe (one stripe lookup).
    #[inline]
    pub(crate) fn add_each(&self, n: [u64; N]) {
        let stripe = self.mine();
        for (cell, n) in stripe.0.iter().zip(n) {
            if n != 0 {
                cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
            }
        }
    }

    /// The sum of counter `i` over every stripe.
    pub(crate) fn sum(&self, i: usize) -> u64 {
        self.0.iter().fold(0u64, |s, stripe| s.wrapping_add(stripe.0[i].load(Relaxed)))
    }
}

#[cfg(not(resilience_loom))]
thread_local! {
    static STRIPE: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

// Under loom, model threads may share an OS thread: each needs its own stripe index.
#[cfg(resilience_loom)]
loom::thread_local! {
    static STRIPE: std::cell::Cell<usize> = std::cell::Cell::new(usize::MAX);
}

/// The next stripe to hand out.
#[cfg(not(resilience_loom))]
fn next() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Under loom, counted within each execution of a model, so that its threads have
/// stripes of their own whatever ran before (a shared count would let two threads of one
/// model share a stripe, whose load-and-store adds may then lose one).
#[cfg(resilience_loom)]
fn next() -> usize {
    loom::lazy_static! {
        static ref NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    }
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// This thread's stripe (threads take them in turn; past [`STRIPES`] threads share).
#[inline]
pub(crate) fn stripe() -> usize {
    STRIPE.with(|s| {
        let i = s.get();
        if i != usize::MAX {
            return i;
        }
        let i = next() % STRIPES;
        s.set(i);
        i
    })
}
