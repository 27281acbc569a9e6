#[path = "../../support.rs"]
mod support;

use support::AppError;

pub struct Connection;

#[resilience::database_call(dependency = "user_db")]
async fn query(conn: Connection) -> Result<u32, AppError> {
    drop(conn);
    Ok(1)
}

fn main() {}
