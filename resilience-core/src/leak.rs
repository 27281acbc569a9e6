//! A slot holding a `&'static T` that can be replaced atomically (the global registry,
//! which tests swap; replaced pipelines go through `reclaim` instead).
//!
//! Readers get a plain `&'static T` from one atomic load: no lock, no reference count.
//! Every value ever stored is leaked (never freed), because a reader may still use it;
//! this is meant for values replaced rarely (a reconfiguration, a registry swapped in a
//! test), never per request.

use std::sync::atomic::{AtomicPtr, Ordering};

pub(crate) struct LeakedCell<T: 'static> {
    current: AtomicPtr<T>,
}

impl<T: std::fmt::Debug + 'static> std::fmt::Debug for LeakedCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeakedCell").field(&self.try_get()).finish()
    }
}

impl<T: 'static> LeakedCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self { current: AtomicPtr::new(Box::leak(Box::new(value))) }
    }

    #[inline]
    pub(crate) fn get(&self) -> &'static T {
        match self.try_get() {
            Some(value) => value,
            None => unreachable!("a LeakedCell made with `new` always holds a value"),
        }
    }

    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn try_get(&self) -> Option<&'static T> {
        // SAFETY: `current` only ever holds null or pointers obtained from `Box::leak`,
        // which are valid, aligned and never freed, so they can be shared for `'static`.
        unsafe { self.current.load(Ordering::Acquire).as_ref() }
    }

    /// Publishes `value`; the previous value stays valid (leaked) for its readers.
    pub(crate) fn set(&self, value: T) -> &'static T {
        let leaked: &'static mut T = Box::leak(Box::new(value));
        self.current.store(leaked, Ordering::Release);
        leaked
    }
}
