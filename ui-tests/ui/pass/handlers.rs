//! `fallback` (plain or async, free or associated), `retry_if` and `record_if`.
#[path = "../support.rs"]
mod support;

use support::{is_send, AppError};

fn transient(error: &AppError) -> bool {
    *error == AppError::Down
}

fn zero(_id: u32, _error: AppError) -> Result<u32, AppError> {
    Ok(0)
}

async fn zero_later(_id: u32, _error: AppError) -> Result<u32, AppError> {
    Ok(0)
}

#[resilience::resilient(name = "ui_handlers_sync", fallback = zero, retry_if = transient, record_if = transient)]
fn sync_with_fallback(id: u32) -> Result<u32, AppError> {
    if id == 0 { Err(AppError::Down) } else { Ok(id) }
}

#[resilience::resilient(name = "ui_handlers_async", fallback = zero, retry_if = transient)]
async fn async_with_sync_fallback(id: u32) -> Result<u32, AppError> {
    Ok(id)
}

#[resilience::resilient(name = "ui_handlers_async2", fallback = zero_later, record_if = transient)]
async fn async_with_async_fallback(id: u32) -> Result<u32, AppError> {
    Ok(id)
}

pub struct Client;

impl Client {
    fn offline(&self, _id: u32, _error: AppError) -> Result<u32, AppError> {
        Ok(u32::MAX)
    }

    #[resilience::api_call(dependency = "ui_handlers_method", fallback = Self::offline, retry(enabled = false))]
    pub fn get(&self, id: u32) -> Result<u32, AppError> {
        if id == 0 { Err(AppError::Down) } else { Ok(id) }
    }
}

fn main() {
    assert_eq!(sync_with_fallback(0), Ok(0));
    assert_eq!(Client.get(0), Ok(u32::MAX));
    let _ = is_send(async_with_sync_fallback(1));
    let _ = is_send(async_with_async_fallback(1));
}
