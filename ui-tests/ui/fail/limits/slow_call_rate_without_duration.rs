#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(circuit_breaker(slow_call_rate = 50))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
