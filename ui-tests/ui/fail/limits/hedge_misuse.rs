#[path = "../../support.rs"]
mod support;

use support::AppError;

// Hedging needs an async fn that lends nothing mutably, and sensible values.
#[resilience::resilient(idempotent = true)]
fn blocking() -> Result<u32, AppError> {
    Ok(1)
}

struct Client;

impl Client {
    #[resilience::resilient(idempotent = true)]
    async fn fetch(&mut self) -> Result<u32, AppError> {
        Ok(1)
    }
}

#[resilience::resilient(idempotent = true, hedge(max_attempts = 20, delay = "p100"))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

#[resilience::resilient(hedge(delay = "soon"))]
async fn fetch_again() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
