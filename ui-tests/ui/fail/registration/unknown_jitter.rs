fn main() {
    resilience::register_api_dependency!("payments", retry(jitter = fulll));
}
