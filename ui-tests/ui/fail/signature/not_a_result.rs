use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

#[resilience::resilient(strategy = Internal)]
async fn fetch() -> u32 {
    1
}

fn main() {}
