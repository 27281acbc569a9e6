use resilience::ResilienceError;

#[derive(Debug)]
pub struct AppError;

impl From<ResilienceError> for AppError {
    fn from(_: ResilienceError) -> Self {
        AppError
    }
}

pub struct Connection;

#[resilience::database_call(dependency = "user_db")]
async fn query(conn: Connection) -> Result<u32, AppError> {
    drop(conn);
    Ok(1)
}

fn main() {}
