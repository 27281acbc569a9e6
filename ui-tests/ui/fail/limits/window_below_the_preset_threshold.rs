#[path = "../../support.rs"]
mod support;

use support::AppError;

// The Cache strategy opens its breaker after 20 failures: a window of 10 never would.
#[resilience::resilient(strategy = Cache, circuit_breaker(window_size = 10))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
