fn main() {
    resilience::register_database_dependency!("  ");
}
