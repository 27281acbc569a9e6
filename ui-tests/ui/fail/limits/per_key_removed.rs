#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(rate_limit(rate = 5, per_key = true))]
async fn fetch(client: u32) -> Result<u32, AppError> {
    Ok(client)
}

fn main() {}
