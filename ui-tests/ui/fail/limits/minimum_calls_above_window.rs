#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(circuit_breaker(window_size = 10, failure_rate = 50, minimum_calls = 20))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
