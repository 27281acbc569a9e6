#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(circuit_breaker(recovery_timeout = "1 minute"))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
