#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::database_call(dependency = "user_db", strategy = Database)]
async fn get_user() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
