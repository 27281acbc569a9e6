use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

#[resilience::resilient(failure_threshold = 3)]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
