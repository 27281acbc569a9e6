use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

const TIMEOUT: &str = "5s";

#[resilience::resilient(timeout = TIMEOUT)]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
