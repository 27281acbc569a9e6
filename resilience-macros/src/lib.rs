//! Procedural macros of the `resilience` framework.
//!
//! This crate is laid out as part of the workspace; the attribute and registration
//! macros (`#[resilient]`, `#[database_call]`, `register_database_dependency!`, …) are
//! built on top of the named-dependency registry and are not part of this release yet.
//! Depend on the `resilience` facade, which will re-export them.
