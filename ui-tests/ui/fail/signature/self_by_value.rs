#[path = "../../support.rs"]
mod support;

use support::AppError;

pub struct Client;

impl Client {
    #[resilience::resilient(strategy = External)]
    pub async fn send(self) -> Result<u32, AppError> {
        Ok(1)
    }
}

fn main() {}
