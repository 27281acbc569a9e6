use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

#[resilience::database_call(dependency = "user_db", strategy = Database)]
async fn get_user() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
