//! Every dependency-type attribute, with call-site keys.
#[path = "../support.rs"]
mod support;

use support::{is_send, AppError};

#[resilience::database_call(dependency = "ui_user_db", operation = "get_user", timeout = "500ms")]
async fn get_user(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

#[resilience::api_call(dependency = "ui_payments", max_concurrent = 5, circuit_breaker(failure_threshold = 2))]
async fn charge(cents: u64) -> Result<u64, AppError> {
    Ok(cents)
}

#[resilience::cache_call(dependency = "ui_sessions", retry(enabled = false))]
async fn session(token: &str) -> Result<usize, AppError> {
    Ok(token.len())
}

#[resilience::message_queue_call(dependency = "ui_orders", rate_limit(rate = 100, burst = 10))]
async fn publish(order: Vec<u8>) -> Result<usize, AppError> {
    Ok(order.len())
}

#[resilience::file_system_call(dependency = "ui_reports", kind = thread_pool, queue_capacity = 10)]
fn write_report(lines: &[String]) -> Result<usize, AppError> {
    Ok(lines.len())
}

fn main() {
    let _ = is_send(get_user(1));
    let _ = is_send(charge(1));
    let _ = is_send(session("t"));
    let _ = is_send(publish(vec![1]));
    assert_eq!(write_report(&[String::from("a")]), Ok(1));
}
