#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(retry(jitter = random))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
