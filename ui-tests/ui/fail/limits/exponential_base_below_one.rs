#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(retry(exponential_base = 0.5))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
