#[path = "../../support.rs"]
mod support;

use support::AppError;

// A shared limit is the dependency's, for every instance; `key` limits are per call site.
#[resilience::resilient(rate_limit(rate = 10, key = tenant, shared = true))]
async fn fetch(tenant: u32) -> Result<u32, AppError> {
    Ok(tenant)
}

#[resilience::resilient(circuit_breaker(shared = "yes"))]
async fn fetch_more() -> Result<u32, AppError> {
    Ok(1)
}

fn main() {}
