#[path = "../../support.rs"]
mod support;

use support::AppError;

// A budget's ratio is a fraction, and its keys are its own.
#[resilience::resilient(retry(budget(ratio = 1.5, window = "10ms")))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

#[resilience::resilient(retry(budget(ratoi = 0.2)))]
async fn fetch_more() -> Result<u32, AppError> {
    Ok(1)
}

#[resilience::resilient(retry(budget = 0.2))]
async fn fetch_again() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
