//! `rate_limit(key = …)`: one limit per value of an argument, of any `Hash` type, on
//! every form of function.
#[path = "../support.rs"]
mod support;

use support::AppError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TenantId(u64);

#[resilience::resilient(rate_limit(rate = 10, burst = 5, max_keys = 1000, key = tenant))]
async fn by_tenant(tenant: TenantId, body: String) -> Result<usize, AppError> {
    Ok(body.len() + tenant.0 as usize)
}

#[resilience::api_call(dependency = "payments", rate_limit(rate = 0.5, key = user))]
fn blocking(user: &str) -> Result<usize, AppError> {
    Ok(user.len())
}

fn fallback(_user: u64, _error: AppError) -> Result<u64, AppError> {
    Ok(0)
}

#[resilience::resilience_pattern(rate_limit(rate = 2, key = user), fallback = fallback)]
async fn with_fallback(user: u64) -> Result<u64, AppError> {
    Ok(user)
}

struct Counter(u64);

impl Counter {
    #[resilience::resilient(rate_limit(rate = 100, key = client))]
    async fn bump(&mut self, client: u32) -> Result<u64, AppError> {
        self.0 += u64::from(client);
        Ok(self.0)
    }
}

fn main() {
    let _ = support::is_send(by_tenant(TenantId(1), String::new()));
    let _ = blocking("u");
    let _ = with_fallback(1);
    let mut counter = Counter(0);
    let _ = support::is_send(counter.bump(1));
}
