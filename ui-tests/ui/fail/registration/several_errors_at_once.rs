fn main() {
    resilience::register_api_dependency!("payments", timeout = "soon", max_concurrent = 0, colour = red);
}
