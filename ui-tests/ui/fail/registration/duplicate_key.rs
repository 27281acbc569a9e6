fn main() {
    resilience::register_api_dependency!("payments", timeout = "1s", timeout = "2s");
}
