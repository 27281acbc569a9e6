#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(circuit_breaker(window_duration = "0.5ms", failure_threshold = 3))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
