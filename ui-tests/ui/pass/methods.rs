//! Methods taking `&self` and `&mut self`, sync and async, with pattern arguments.
#[path = "../support.rs"]
mod support;

use support::{is_send, AppError};

pub struct Counter {
    count: u32,
}

impl Counter {
    #[resilience::resilient(name = "ui_methods_read")]
    pub async fn read(&self, scale: u32) -> Result<u32, AppError> {
        Ok(self.count * scale)
    }

    #[resilience::resilient(name = "ui_methods_write")]
    pub async fn add(&mut self, mut amount: u32, label: &str) -> Result<u32, AppError> {
        amount += label.len() as u32;
        self.count += amount;
        Ok(self.count)
    }

    #[resilience::resilient(name = "ui_methods_sync")]
    pub fn add_pair(&mut self, (a, b): (u32, u32), &c: &u32, _: String) -> Result<u32, AppError> {
        self.count += a + b + c;
        Ok(self.count)
    }

    #[resilience::resilient(name = "ui_methods_borrowed_result")]
    pub async fn label<'a>(&'a self, prefix: &'a str) -> Result<&'a str, AppError> {
        Ok(if self.count > 0 { prefix } else { "" })
    }

    #[resilience::resilient(name = "ui_methods_elided")]
    pub fn this(&self) -> Result<&Self, AppError> {
        Ok(self)
    }

    #[resilience::resilient(name = "ui_methods_typed_receiver")]
    pub fn get(self: &Self) -> Result<u32, AppError> {
        Ok(self.count)
    }
}

#[resilience::resilient(name = "ui_methods_elided_free")]
fn first(text: &str) -> Result<&str, AppError> {
    Ok(&text[..1])
}

fn main() {
    let mut counter = Counter { count: 1 };
    assert_eq!(counter.add_pair((1, 2), &3, String::new()), Ok(7));
    assert_eq!(counter.get(), Ok(7));
    let _ = is_send(counter.read(2));
    let _ = is_send(counter.add(1, "x"));
    let _ = is_send(counter.label("p"));
    assert_eq!(counter.this().map(|c| c.count), Ok(7));
    assert_eq!(first("abc"), Ok("a"));
}
