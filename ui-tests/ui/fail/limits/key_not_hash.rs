#[path = "../../support.rs"]
mod support;

use support::AppError;

#[derive(Clone)]
struct Client(f64);

#[resilience::resilient(rate_limit(rate = 5, key = client))]
async fn fetch(client: Client) -> Result<f64, AppError> {
    Ok(client.0)
}

fn main() {}
