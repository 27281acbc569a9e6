#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(retry(max_attempts = 5000))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
