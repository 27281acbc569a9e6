#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::database_call(operation = "get_user")]
async fn get_user() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
