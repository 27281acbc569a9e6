#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::api_call(dependency = "")]
async fn charge() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
