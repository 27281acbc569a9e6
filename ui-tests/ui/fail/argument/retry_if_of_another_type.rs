use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

fn transient(_: &std::io::Error) -> bool {
    true
}

#[resilience::resilient(retry_if = transient)]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
