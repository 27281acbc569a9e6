//! Every misuse of the macros is a spanned compile error; every supported use compiles.
//! `TRYBUILD=overwrite cargo test -p resilience-ui-tests` regenerates the `.stderr` files,
//! which are reviewed like code.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*/*.rs");
    t.pass("ui/pass/*.rs");
}
