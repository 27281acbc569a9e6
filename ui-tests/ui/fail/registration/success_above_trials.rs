fn main() {
    resilience::register_database_dependency!(
        "user_db",
        circuit_breaker(success_threshold = 3, half_open_max_calls = 2)
    );
}
