#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(circuit_breaker(timeout = "1s"))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
