//! `web::routes()`: `/health`, `/metrics`, `/resilience` and `/resilience/dashboard`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use resilience_core::HealthStatus;

/// The dashboard: one page, no external assets (see `dashboard.html`).
const DASHBOARD: &str = include_str!("dashboard.html");

/// The observability routes, to `merge` into an application's router:
///
/// | route | answer |
/// |---|---|
/// | `/health` | [`health()`](crate::health) as JSON: 200 when `Up` or `Degraded`, 503 when `Down` |
/// | `/metrics` | every metric in Prometheus text format (feature `prometheus`: installs the recorder if none is; without the feature, 501) |
/// | `/resilience` | the same report as `/health`, always 200: every dependency's breaker state, failure rate, calls in flight and bulkhead use, every pool's use, the alerts |
/// | `/resilience/dashboard` | a page that shows `/resilience`, refreshed every second, with each dependency's error rate over the last minute |
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    #[cfg(feature = "prometheus")]
    let _ = crate::prometheus::install();
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/resilience", get(resilience))
        .route("/resilience/dashboard", get(dashboard))
}

/// Brings every metric up to now before a render: gauges, and what was counted per
/// thread.
fn refresh_gauges() {
    resilience_core::registry().refresh_gauges();
    resilience_core::aggregate::flush();
    #[cfg(feature = "http")]
    crate::pool_manager().refresh_gauges();
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn health() -> Response {
    let report = resilience_core::health();
    let status = if report.status == HealthStatus::Down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    json(status, report.to_json())
}

async fn resilience() -> Response {
    json(StatusCode::OK, resilience_core::health().to_json())
}

async fn metrics() -> Response {
    refresh_gauges();
    #[cfg(feature = "prometheus")]
    {
        match crate::prometheus::install() {
            Ok(handle) => {
                let content_type = "text/plain; version=0.0.4; charset=utf-8";
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], handle.render()).into_response()
            }
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        }
    }
    #[cfg(not(feature = "prometheus"))]
    {
        (StatusCode::NOT_IMPLEMENTED, "build `resilience` with the `prometheus` feature for /metrics").into_response()
    }
}

async fn dashboard() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], DASHBOARD).into_response()
}
