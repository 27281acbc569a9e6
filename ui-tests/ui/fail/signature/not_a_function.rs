#[resilience::resilient(strategy = Internal)]
struct Payments;

fn main() {}
