//! Plain functions run through the blocking pipeline, with no runtime.
#[path = "../support.rs"]
mod support;

use support::AppError;

#[resilience::resilient(name = "ui_sync", strategy = Database, timeout = "1s", retry(max_attempts = 2, base_delay = "1ms"))]
fn checksum(bytes: Vec<u8>) -> Result<u32, AppError> {
    Ok(bytes.into_iter().map(u32::from).sum())
}

#[resilience::file_system_call(dependency = "ui_reports_fs")]
fn report_name(id: u32) -> Result<String, AppError> {
    if id == 0 {
        return Err(AppError::Down);
    }
    Ok(format!("report-{id}.csv"))
}

fn main() {
    assert_eq!(checksum(vec![1, 2, 3]), Ok(6));
    assert_eq!(report_name(7).as_deref(), Ok("report-7.csv"));
}
