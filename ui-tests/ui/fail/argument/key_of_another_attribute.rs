#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(dependency = "user_db")]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
