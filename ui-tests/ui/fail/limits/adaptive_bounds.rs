#[path = "../../support.rs"]
mod support;

use support::AppError;

// The starting limit (20 unless given) must lie within the bounds.
#[resilience::resilient(bulkhead(kind = adaptive, min_limit = 30))]
async fn fetch() -> Result<u32, AppError> {
    Ok(1)
}

#[resilience::resilient(bulkhead(kind = adaptive, max_concurrent = 10, min_limit = 20, max_limit = 5))]
async fn fetch_more() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
