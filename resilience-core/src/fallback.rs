//! The outermost policy: an answer of last resort when everything else failed.

use std::fmt;
use std::future::Future;

/// Turns a failed call's error into a substitute result.
///
/// A fallback wraps a whole protected call, retries included, so it sees the error the
/// caller would have seen (the last attempt's error, or a rejection).
///
/// ```
/// # use resilience_core::Fallback;
/// let cached = Fallback::new(|_e: std::io::Error| Ok::<_, std::io::Error>("cached price"));
/// let price = cached.call_blocking(|| Err(std::io::Error::other("pricing is down")));
/// assert_eq!(price.unwrap(), "cached price");
/// ```
#[derive(Clone, Copy)]
pub struct Fallback<F> {
    f: F,
}

impl<F> fmt::Debug for Fallback<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback").finish_non_exhaustive()
    }
}

impl<F> Fallback<F> {
    /// A fallback that calls `f` with the error.
    pub fn new(f: F) -> Self {
        Self { f }
    }

    /// Awaits `fut`; on error, awaits the fallback with the error instead.
    pub async fn call<T, E, Fut, FbFut>(&self, fut: Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        F: Fn(E) -> FbFut,
        FbFut: Future<Output = Result<T, E>>,
    {
        match fut.await {
            Ok(v) => Ok(v),
            Err(e) => (self.f)(e).await,
        }
    }

    /// Runs `body`; on error, returns the fallback's result for the error instead.
    pub fn call_blocking<T, E>(&self, body: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        F: Fn(E) -> Result<T, E>,
    {
        body().or_else(&self.f)
    }
}
