//! Behaviour tests of `resilience`, through the facade only. One binary for the crate.

mod adaptive;
mod attributes;
mod breaker;
mod breaker_model;
mod bulkhead;
mod call_site;
mod cancellation;
mod http_pool;
mod http_server;
mod loadtest;
mod observe;
mod pipeline;
mod postgres_pool;
mod rate_limit;
mod reconfiguration;
mod redis_pool;
mod registration;
mod registry;
mod retry;
mod retry_budget;
mod servers;
mod settings;
mod support;
mod timeout;
mod tower_layer;
mod web_layer;
