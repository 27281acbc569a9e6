//! Shared test helpers.

use resilience::ResilienceError;

/// A call site's own error type, as users write it.
#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    /// The dependency failed.
    Down,
    /// An error the breaker should ignore.
    NotFound,
    /// A policy rejected or timed out the call.
    Resilience(ResilienceError),
}

impl From<ResilienceError> for AppError {
    fn from(e: ResilienceError) -> Self {
        Self::Resilience(e)
    }
}

impl AppError {
    /// Rejected by an open breaker.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::Resilience(ResilienceError::CircuitOpen { .. }))
    }

    /// Timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Resilience(ResilienceError::Timeout { .. }))
    }

    /// Rejected by a full bulkhead.
    pub fn is_bulkhead_full(&self) -> bool {
        matches!(self, Self::Resilience(ResilienceError::BulkheadFull { .. }))
    }
}

/// A `NonZeroU32` from a literal.
pub fn nz(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("non-zero")
}

/// A `NonZeroUsize` from a literal.
pub fn nzu(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("non-zero")
}
