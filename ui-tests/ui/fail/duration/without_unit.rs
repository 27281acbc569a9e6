#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(timeout = 30)]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
