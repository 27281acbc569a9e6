//! Plain fns taking everything by value run on a thread pool when their types are
//! `Send + 'static`, and in place otherwise: both compile.
#[path = "../support.rs"]
mod support;

use std::rc::Rc;

use support::AppError;

#[resilience::file_system_call(dependency = "reports_fs")]
fn sendable(path: String, size: u64) -> Result<u64, AppError> {
    Ok(path.len() as u64 + size)
}

#[resilience::file_system_call(dependency = "reports_fs")]
fn not_send(shared: Rc<u64>) -> Result<u64, AppError> {
    Ok(*shared)
}

#[resilience::file_system_call(dependency = "reports_fs")]
fn generic<T: Clone + std::fmt::Debug>(value: T) -> Result<String, AppError> {
    Ok(format!("{value:?}"))
}

#[resilience::file_system_call(dependency = "reports_fs")]
fn returns_rc(n: u64) -> Result<Rc<u64>, AppError> {
    Ok(Rc::new(n))
}

fn main() {
    let _ = sendable("a".into(), 1);
    let _ = not_send(Rc::new(1));
    let _ = generic(3u8);
    let _ = returns_rc(2);
}
