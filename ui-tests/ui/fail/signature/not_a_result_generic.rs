#[resilience::resilient(strategy = Internal)]
async fn fetch() -> Option<Vec<u32>> {
    None
}

fn main() {}
