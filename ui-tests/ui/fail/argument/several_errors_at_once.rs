#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::cache_call(dependency = "sessions", timeout = "2 secs", max_concurrent = 0, colour = blue)]
async fn session(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

fn main() {}
