#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(circuit_breaker(window_size = 300000, failure_threshold = 1))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
