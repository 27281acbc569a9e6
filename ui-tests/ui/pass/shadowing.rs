//! Expansions use absolute paths: local items named like std's do not break them,
//! and a one-argument `Result` alias is a `Result`.
#![allow(dead_code)]

mod core {}
mod std {}
struct Option;
struct Some;
struct Duration;
struct Box;
fn drop() {}

#[derive(Debug)]
pub struct AppError;

impl ::std::convert::From<resilience::ResilienceError> for AppError {
    fn from(_: resilience::ResilienceError) -> Self {
        AppError
    }
}

type Result<T> = ::std::result::Result<T, AppError>;

#[resilience::resilient(name = "ui_shadowed", strategy = External, timeout = "2s")]
fn fetch(id: u32) -> Result<u32> {
    Ok(id)
}

#[resilience::cache_call(dependency = "ui_shadowed_cache", fallback = cached)]
async fn lookup(key: ::std::string::String) -> Result<usize> {
    Ok(key.len())
}

fn cached(key: ::std::string::String, _error: AppError) -> Result<usize> {
    Ok(key.len())
}

fn main() {
    assert!(matches!(fetch(4), Ok(4)));
    let _ = lookup(::std::string::String::new());
}
