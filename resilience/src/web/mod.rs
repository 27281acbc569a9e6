//! The middleware for a service's own routes (feature `axum`): [`ResilienceLayer`], a
//! plain `tower::Layer` made for axum's `Router::layer`.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use resilience::{MiddlewareConfig, RateLimitConfig, ResilienceLayer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = axum::Router::new()
//!     .route("/users/{id}", axum::routing::get(|| async { "a user" }))
//!     .layer(ResilienceLayer::new(MiddlewareConfig {
//!         rate_limit: Some(RateLimitConfig::per_client(100.0, 20)),
//!         excluded_paths: vec!["/health".into()],
//!         ..Default::default()
//!     }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```

mod client_key;
mod layer;
mod routes;
mod settings;

pub use client_key::{ClientKey, KeyFn};
pub use ipnet::IpNet;
pub use layer::{
    MiddlewareConfig, MiddlewareConfigError, RateLimitConfig, ResilienceLayer, ResilienceService, ResponseFuture,
};
pub use routes::routes;
pub use settings::middleware_from_settings;
