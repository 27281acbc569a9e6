fn main() {
    resilience::register_database_dependency!(user_db, max_concurrent = 10);
}
