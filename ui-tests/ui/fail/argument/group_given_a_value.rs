#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(strategy = Internal, retry = 3)]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
