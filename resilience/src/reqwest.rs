//! A named dependency's policies for any reqwest client (feature `reqwest`).
//!
//! ```no_run
//! use resilience::reqwest::ResilienceMiddleware;
//!
//! # async fn run() -> Result<(), reqwest_middleware::Error> {
//! // This crate builds reqwest with rustls and no provider of its own: install one
//! // (ring) before building a client, unless your reqwest brings its own.
//! resilience::install_crypto_provider();
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(ResilienceMiddleware::new("payment_gateway"))
//!     .build();
//! let answer = client.get("http://127.0.0.1:8080/charges/7").send().await?;
//! # Ok(()) }
//! ```

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};
use resilience_core::{registry, Dependency, DependencyKind, DependencyType, ErrorPolicy, ResilienceError};

/// Sends every request of a `reqwest_middleware` client through the policies of the
/// dependency `name` (created with the `ExternalApi` preset if nothing registered it):
/// breaker, retry, rate limiter, bulkhead and timeout, per attempt.
///
/// Transport errors and 5xx answers count as failures for the breaker; 4xx answers do
/// not. Only idempotent methods whose body can be cloned are retried; a 5xx answer that
/// still stands when the attempts run out is returned as the answer. A rejection by the
/// policies is an [`Error::Middleware`] holding the [`ResilienceError`].
#[derive(Debug, Clone, Copy)]
pub struct ResilienceMiddleware {
    dependency: &'static Dependency,
}

impl ResilienceMiddleware {
    /// The policies of the dependency `name`.
    pub fn new(name: &str) -> Self {
        Self::with_type(name, DependencyType::ExternalApi)
    }

    /// The policies of the dependency `name`, created with `dependency_type`'s preset if
    /// nothing registered it.
    pub fn with_type(name: &str, dependency_type: DependencyType) -> Self {
        crate::install_crypto_provider();
        Self { dependency: registry().resolve_as(name, DependencyKind::Type(dependency_type), &Default::default()) }
    }
}

enum AttemptError {
    Policy(ResilienceError),
    Failed(Error),
    Status(Response),
}

impl From<ResilienceError> for AttemptError {
    fn from(error: ResilienceError) -> Self {
        Self::Policy(error)
    }
}

fn always(_: &AttemptError) -> bool {
    true
}

fn never(_: &AttemptError) -> bool {
    false
}

#[async_trait::async_trait]
impl Middleware for ResilienceMiddleware {
    async fn handle(&self, req: Request, extensions: &mut Extensions, next: Next<'_>) -> Result<Response> {
        let idempotent = crate::pool::is_idempotent(req.method());
        // A request whose body cannot be cloned is sent once.
        let retry = idempotent && req.try_clone().is_some();
        let policy = ErrorPolicy { retry_if: if retry { always } else { never }, record_if: always };
        // Attempts run one after another; each lends the extensions to the rest of the chain.
        let extensions = tokio::sync::Mutex::new(extensions);
        let mut original = Some(req);
        let outcome = self
            .dependency
            .pipeline()
            .call_with(&policy, || {
                let request = match original.as_ref().and_then(Request::try_clone) {
                    Some(copy) if retry => Some(copy),
                    _ => original.take(),
                };
                let (next, extensions) = (next.clone(), &extensions);
                async move {
                    let Some(request) = request else {
                        return Err(AttemptError::Failed(Error::middleware(NotRepeatable)));
                    };
                    let mut extensions = extensions.lock().await;
                    match next.run(request, &mut extensions).await {
                        Ok(response) if response.status().is_server_error() => Err(AttemptError::Status(response)),
                        Ok(response) => Ok(response),
                        Err(error) => Err(AttemptError::Failed(error)),
                    }
                }
            })
            .await;
        match outcome {
            Ok(response) | Err(AttemptError::Status(response)) => Ok(response),
            Err(AttemptError::Failed(error)) => Err(error),
            Err(AttemptError::Policy(error)) => Err(Error::middleware(error)),
        }
    }
}

/// A request without a body to send again was asked to be sent again.
#[derive(Debug)]
struct NotRepeatable;

impl std::fmt::Display for NotRepeatable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request's body cannot be sent again")
    }
}

impl std::error::Error for NotRepeatable {}
