//! A crate that denies warnings and clippy's lints, and forbids unsafe code, compiles
//! the expansions cleanly; it depends on the facade only.
#![deny(warnings, clippy::all, unused_qualifications, missing_docs)]
#![forbid(unsafe_code)]

use resilience::{api_call, resilient, ResilienceError};

/// The error.
#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

/// A store.
pub struct Store {
    hits: u32,
}

impl Store {
    /// Reads.
    #[resilient(name = "ui_lint_read", strategy = Cache, retry(max_attempts = 3, base_delay = "1ms"))]
    pub fn read(&mut self, mut key: String) -> Result<usize, AppError> {
        key.push('!');
        self.hits += 1;
        Ok(key.len())
    }
}

/// Charges.
#[api_call(dependency = "ui_lint_payments", operation = "charge", fallback = declined)]
pub async fn charge(amount: u64) -> Result<u64, AppError> {
    Ok(amount)
}

/// The fallback of [`charge`].
pub async fn declined(_amount: u64, error: AppError) -> Result<u64, AppError> {
    Err(error)
}

/// Reads a file: everything by value, so it may run on a thread pool.
#[resilience::file_system_call(dependency = "ui_lint_fs", rate_limit(rate = 5, key = path))]
pub fn read_file(path: String, mut offset: u64) -> Result<u64, AppError> {
    offset += 1;
    Ok(path.len() as u64 + offset)
}

/// Reads shared data: not `Send`, so it runs in place.
#[resilience::file_system_call(dependency = "ui_lint_fs")]
pub fn read_shared(data: std::rc::Rc<String>) -> Result<usize, AppError> {
    Ok(data.len())
}

fn main() {
    let _ = read_file(String::from("p"), 0);
    let _ = read_shared(std::rc::Rc::new(String::new()));
    let mut store = Store { hits: 0 };
    assert!(store.read(String::from("k")).is_ok());
    let _ = charge(3);
}
