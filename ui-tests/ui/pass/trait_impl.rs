//! Methods of trait impls, async and sync.
#[path = "../support.rs"]
mod support;

use support::{is_send, AppError};

pub trait Repository {
    fn find(&self, id: u64) -> impl std::future::Future<Output = Result<u64, AppError>> + Send;
    fn count(&self) -> Result<usize, AppError>;
}

pub struct Users;

impl Repository for Users {
    #[resilience::database_call(dependency = "ui_users", operation = "find")]
    async fn find(&self, id: u64) -> Result<u64, AppError> {
        Ok(id)
    }

    #[resilience::database_call(dependency = "ui_users", operation = "count")]
    fn count(&self) -> Result<usize, AppError> {
        Ok(3)
    }
}

fn main() {
    assert_eq!(Users.count(), Ok(3));
    let _ = is_send(Users.find(1));
}
