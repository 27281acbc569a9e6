fn main() {
    resilience::register_cache_dependency!("sessions", max_concurrent = 0);
}
