fn main() {
    resilience::register_database_dependency!(
        "user_db",
        circuit_breaker(failure_threshold = 20, window_size = 10)
    );
}
