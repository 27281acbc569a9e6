#[path = "../../support.rs"]
mod support;

use support::AppError;

fn transient(_: &std::io::Error) -> bool {
    true
}

#[resilience::resilient(retry_if = transient)]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
