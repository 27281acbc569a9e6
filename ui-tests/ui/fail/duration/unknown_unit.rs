#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(timeout = "5 sec")]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
