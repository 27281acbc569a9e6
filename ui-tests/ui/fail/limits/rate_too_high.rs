#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(rate_limit(rate = 2000000000))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
