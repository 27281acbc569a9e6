use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

pub struct Client;

impl Client {
    #[resilience::resilient(strategy = External)]
    pub async fn send(self) -> Result<u32, AppError> {
        Ok(1)
    }
}

fn main() {}
