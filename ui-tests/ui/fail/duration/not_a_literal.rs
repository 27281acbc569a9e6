#[path = "../../support.rs"]
mod support;

use support::AppError;

const TIMEOUT: &str = "5s";

#[resilience::resilient(timeout = TIMEOUT)]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
