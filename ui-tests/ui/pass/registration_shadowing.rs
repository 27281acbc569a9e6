//! Expansions use absolute paths: local items named like std's do not break them.
#![allow(dead_code)]

type Result = ();
mod core {}
struct Option;
struct Duration;

fn main() {
    resilience::register_api_dependency!("ui_shadowed", timeout = "2s", circuit_breaker(failure_threshold = 2));
}
