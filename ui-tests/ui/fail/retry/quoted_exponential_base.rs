#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(retry(exponential_base = "2"))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
