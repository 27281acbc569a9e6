//! A crate that only depends on the facade can use every registration macro.
#![deny(clippy::all)]

fn main() {
    resilience::register_database_dependency!("ui_user_db", max_concurrent = 10);
    resilience::register_api_dependency!("ui_payments", max_concurrent = 5, timeout = "5s");
    resilience::register_cache_dependency!("ui_sessions", max_concurrent = 50);
    resilience::register_message_queue_dependency!("ui_orders");
    let fs = resilience::register_file_system_dependency!(
        "ui_reports",
        max_concurrent = 4,
        circuit_breaker(failure_threshold = 3, recovery_timeout = "1m"),
        retry(max_attempts = 2, base_delay = "250ms", jitter = decorrelated),
    );
    assert_eq!(fs.name(), "ui_reports");
}
