#[resilience::resilient(strategy = Internal)]
async fn fetch() -> u32 {
    1
}

fn main() {}
