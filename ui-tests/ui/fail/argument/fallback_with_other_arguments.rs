#[path = "../../support.rs"]
mod support;

use support::AppError;

fn fallback(_error: AppError) -> Result<u32, AppError> {
    Ok(0)
}

#[resilience::resilient(fallback = fallback)]
fn fetch(id: u32) -> Result<u32, AppError> {
    Ok(id)
}

fn main() {}
