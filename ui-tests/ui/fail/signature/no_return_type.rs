use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

#[resilience::resilient(strategy = Internal)]
fn notify() {}

fn main() {}
