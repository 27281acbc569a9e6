//! The policies as a [`tower::Layer`] (feature `tower`).
//!
//! [`PipelineLayer`] wraps any service in a [`Pipeline`] — a pipeline of your own, or the
//! one of a named dependency in the registry (which then follows its reconfigurations).
//! Each attempt calls a clone of the inner service with a clone of the request, so
//! retries work with any `Clone` service and request. The service's error type must
//! convert from [`ResilienceError`].
//!
//! ```
//! use resilience::tower::PipelineLayer;
//! use resilience::{Pipeline, ResilienceError};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = PipelineLayer::new(Pipeline::builder("echo").build().unwrap());
//! let svc = layer.layer(tower::service_fn(|x: u32| async move { Ok::<_, ResilienceError>(x) }));
//! assert_eq!(svc.oneshot(7).await.unwrap(), 7);
//! # }
//! ```

use std::task::{Context, Poll};

use resilience_core::{
    call_attempts, registry, Dependency, DependencyKind, ErrorPolicy, MakeAttempt, Pipeline, PipelineCall,
    ResilienceError, ResilienceStrategy,
};
use tower::util::Oneshot;
use tower::{Layer, Service};

/// Where a layer's pipeline comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Fixed(&'static Pipeline),
    Named(&'static Dependency),
}

/// Applies a [`Pipeline`] to every request of the services it wraps.
#[derive(Debug, Clone, Copy)]
pub struct PipelineLayer {
    source: Source,
}

impl PipelineLayer {
    /// A layer with its own pipeline. The pipeline is kept for the rest of the process
    /// (its futures borrow it); build layers at start-up, not per request.
    pub fn new(pipeline: Pipeline) -> Self {
        Self { source: Source::Fixed(Box::leak(Box::new(pipeline))) }
    }

    /// A layer using the pipeline of the named dependency in the global registry,
    /// created with `strategy`'s defaults if it was never registered. Later
    /// registrations and reloads of the name apply to the layer's services.
    pub fn for_dependency(name: &str, strategy: ResilienceStrategy) -> Self {
        Self {
            source: Source::Named(registry().resolve_as(name, DependencyKind::Strategy(strategy), &Default::default())),
        }
    }
}

impl<S> Layer<S> for PipelineLayer {
    type Service = PipelineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService { inner, source: self.source }
    }
}

/// A service wrapped by a [`PipelineLayer`].
#[derive(Debug, Clone)]
pub struct PipelineService<S> {
    inner: S,
    source: Source,
}

/// One attempt maker of a [`PipelineService`] call: the service and the request,
/// cloned for each attempt.
#[derive(Debug)]
pub struct ServiceAttempts<S, Req> {
    service: S,
    request: Req,
}

impl<S, Req> MakeAttempt<Oneshot<S, Req>> for ServiceAttempts<S, Req>
where
    S: Service<Req> + Clone,
    Req: Clone,
{
    fn make_attempt(&mut self, _last: bool) -> Oneshot<S, Req> {
        Oneshot::new(self.service.clone(), self.request.clone())
    }
}

impl<S, Req> Service<Req> for PipelineService<S>
where
    S: Service<Req> + Clone,
    S::Error: From<ResilienceError>,
    Req: Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = PipelineCall<'static, S::Error, ServiceAttempts<S, Req>, Oneshot<S, Req>>;

    /// Always ready: each attempt waits for its own clone of the inner service, so that
    /// the pipeline's bulkhead and breaker, not the inner service's queue, decide.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let attempts = ServiceAttempts { service: self.inner.clone(), request };
        match self.source {
            Source::Fixed(pipeline) => call_attempts(pipeline, &ErrorPolicy::default(), attempts),
            // The call keeps the dependency's current pipeline alive while it runs.
            Source::Named(dependency) => dependency.pipeline().call_attempts(&ErrorPolicy::default(), attempts),
        }
    }
}
