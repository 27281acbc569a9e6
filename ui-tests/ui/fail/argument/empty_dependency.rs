use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

#[resilience::api_call(dependency = "")]
async fn charge() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
