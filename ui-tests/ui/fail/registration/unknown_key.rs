fn main() {
    resilience::register_api_dependency!("payments", max_concurent = 5);
}
