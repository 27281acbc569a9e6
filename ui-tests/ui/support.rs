//! What the pass cases share: an error type that converts from `ResilienceError`, and
//! a check that a future is `Send`. Included with `#[path = "../support.rs"] mod support;`.
#![allow(dead_code)]

use resilience::ResilienceError;

#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    Down,
    Resilience(ResilienceError),
}

impl From<ResilienceError> for AppError {
    fn from(e: ResilienceError) -> Self {
        AppError::Resilience(e)
    }
}

pub fn is_send<T: Send>(value: T) -> T {
    value
}
