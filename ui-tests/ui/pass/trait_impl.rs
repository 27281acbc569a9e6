//! Methods of trait impls, async and sync.
#[path = "../support.rs"]
mod support;

use support::{is_send, AppError};

pub trait Repository {
    fn find(&self, id: u64) -> impl std::future::Future<Output = Result<u64, AppError>> + Send;
    fn count(&self) -> Result<usize, AppError>;

    /// A provided method carries the attribute too.
    #[resilience::database_call(dependency = "ui_users", operation = "exists")]
    fn exists(&self, id: u64) -> Result<bool, AppError> {
        Ok(id > 0)
    }
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
    assert_eq!(Users.exists(1), Ok(true));
    let _ = is_send(Users.find(1));
}
