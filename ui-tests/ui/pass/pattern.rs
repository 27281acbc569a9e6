//! `#[resilience_pattern]` with every group, and with the name left to default.
#[path = "../support.rs"]
mod support;

use support::{is_send, AppError};

#[resilience::resilience_pattern(
    timeout = "30s",
    retry(max_attempts = 3, base_delay = "200ms", max_delay = "2s", jitter = full, exponential_base = 1.5),
    circuit_breaker(failure_threshold = 5, recovery_timeout = "60s", window_duration = "1m", failure_rate = 50, minimum_calls = 10),
    bulkhead(max_concurrent = 10, max_wait = "50ms"),
    rate_limit(rate = 2.5, burst = 5)
)]
async fn everything(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

#[resilience::resilience_pattern(timeout = "1s")]
fn only_a_timeout() -> Result<(), AppError> {
    Ok(())
}

fn main() {
    let _ = is_send(everything(1));
    assert_eq!(only_a_timeout(), Ok(()));
}
