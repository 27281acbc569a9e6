#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(bulkhead(kind = thread_pool, max_concurrent = 10000))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
