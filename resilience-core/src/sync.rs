//! Synchronisation primitives, swapped for loom's under `--cfg resilience_loom` so the
//! lock-free parts can be model-checked.

#[cfg(resilience_loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Condvar, Mutex, MutexGuard,
};

#[cfg(not(resilience_loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Condvar, Mutex, MutexGuard,
};

/// Locks `mutex`, recovering the guard if another thread panicked while holding it.
///
/// Every structure guarded here stays consistent across a panic (updates are single
/// assignments), so poisoning carries no information worth propagating.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
