//! Observability: metric handles for every policy (names listed in the crate docs).
//!
//! Handles are resolved once, when a policy is built, through the `metrics` facade, so
//! recording on the hot path hashes no label and allocates nothing; with no recorder
//! installed every handle is a no-op. Install the recorder (an exporter) before building
//! policies: a policy built earlier keeps no-op handles.
//!
//! Counters are recorded as calls happen. Gauges that follow a value continuously (free
//! bulkhead slots, a breaker's failure rate) are set when the value changes on the slow
//! path and refreshed for every dependency by [`Registry::refresh_gauges`](crate::Registry::refresh_gauges),
//! which an exporter calls before it renders.

pub mod aggregate;
pub(crate) mod health;
pub(crate) mod latency;
pub(crate) mod metrics;
