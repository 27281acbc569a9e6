fn main() {
    resilience::register_api_dependency!("payments", timeout = "5 seconds");
}
