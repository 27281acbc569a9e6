#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(retry(base_delay = "2s", max_delay = "1s"))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
