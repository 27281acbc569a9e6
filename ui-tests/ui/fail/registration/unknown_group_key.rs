fn main() {
    resilience::register_api_dependency!("payments", circuit_breaker(failure_treshold = 3));
}
