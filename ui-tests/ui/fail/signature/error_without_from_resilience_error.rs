#[resilience::resilient(strategy = Internal)]
async fn fetch() -> Result<u32, String> {
    Ok(1)
}

fn main() {}
