//! A slot holding a `&'static T` that can be replaced atomically.
//!
//! Readers get a plain `&'static T` from one atomic load: no lock, no reference count.
//! Every value ever stored is leaked (never freed), because a reader may still use it;
//! this is meant for values replaced rarely (a reconfiguration, a registry swapped in a
//! test), never per request.

use std::sync::atomic::{AtomicPtr, Ordering};

pub(crate) struct LeakedCell<T: 'static> {
    current: AtomicPtr<T>,
}

impl<T: 'static> LeakedCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self { current: AtomicPtr::new(Box::leak(Box::new(value))) }
    }

    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn get(&self) -> &'static T {
        // SAFETY: `current` only ever holds pointers obtained from `Box::leak`, which are
        // valid, aligned and never freed, so they can be shared for `'static`.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    /// Publishes `value`; the previous value stays valid (leaked) for its readers.
    pub(crate) fn set(&self, value: T) -> &'static T {
        let leaked: &'static mut T = Box::leak(Box::new(value));
        self.current.store(leaked, Ordering::Release);
        leaked
    }
}
