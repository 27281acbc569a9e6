//! Generic functions: type parameters, where clauses, lifetimes, `impl Trait`.
#[path = "../support.rs"]
mod support;

use support::{is_send, AppError};
use resilience::ResilienceError;

#[resilience::resilient(name = "ui_generic", strategy = Internal)]
async fn render<T: std::fmt::Display + Clone + Send>(value: T) -> Result<String, AppError> {
    Ok(value.to_string())
}

#[resilience::resilient(name = "ui_generic_where")]
fn longest<'a, S>(left: &'a S, right: &'a S) -> Result<&'a S, AppError>
where
    S: AsRef<str> + ?Sized,
{
    Ok(if left.as_ref().len() >= right.as_ref().len() { left } else { right })
}

#[resilience::resilient(name = "ui_generic_error")]
fn parse<E: From<ResilienceError>>(text: &str) -> Result<u32, E> {
    Ok(text.len() as u32)
}

#[resilience::resilient(name = "ui_impl_trait")]
async fn describe(value: impl std::fmt::Debug + Clone + Send) -> Result<impl std::fmt::Display, AppError> {
    Ok(format!("{value:?}"))
}

fn main() {
    let _ = is_send(render(5));
    let _ = is_send(describe(5));
    assert_eq!(longest("ab", "abc"), Ok("abc"));
    assert_eq!(parse::<AppError>("four"), Ok(4));
}
