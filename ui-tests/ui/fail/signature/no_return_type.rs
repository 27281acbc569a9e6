#[resilience::resilient(strategy = Internal)]
fn notify() {}

fn main() {}
