#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(retry(max_attempts = -1))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
