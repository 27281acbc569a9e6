#[path = "../../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(strategy = External)]
fn fetch() -> impl std::future::Future<Output = Result<u32, AppError>> {
    async { Ok(1) }
}

fn main() {}
