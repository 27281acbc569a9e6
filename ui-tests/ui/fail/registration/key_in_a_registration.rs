fn main() {
    resilience::register_api_dependency!("payments", rate_limit(rate = 5, key = client));
}
