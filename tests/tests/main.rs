//! Behaviour tests of `resilience`, through the facade only. One binary for the crate.

mod pipeline;
