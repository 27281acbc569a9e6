//! The pipeline as a tower layer.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience::tower::PipelineLayer;
use resilience::{CircuitBreakerConfig, CircuitState, Pipeline, ResilienceStrategy, RetryConfig};
use tower::{Layer, ServiceExt};

use crate::support::{nz, AppError};

fn flaky(
    calls: Arc<AtomicU32>,
    fail_first: u32,
) -> impl tower::Service<u32, Response = u32, Error = AppError, Future: Send> + Clone {
    tower::service_fn(move |x: u32| {
        let n = calls.fetch_add(1, SeqCst);
        async move {
            if n < fail_first {
                Err(AppError::Down)
            } else {
                Ok(x * 2)
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn retries_call_the_inner_service_again_with_the_same_request() {
    let calls = Arc::new(AtomicU32::new(0));
    let pipeline = Pipeline::builder("tower_retry")
        .retry(RetryConfig { max_attempts: nz(3), base_delay: Duration::from_millis(5), ..Default::default() })
        .build()
        .unwrap();
    let svc = PipelineLayer::new(pipeline).layer(flaky(Arc::clone(&calls), 2));
    let fut = svc.oneshot(21);
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&fut);
    assert_eq!(fut.await, Ok(42));
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_without_calling_the_service() {
    let calls = Arc::new(AtomicU32::new(0));
    let pipeline = Pipeline::builder("tower_breaker")
        .circuit_breaker(CircuitBreakerConfig { failure_threshold: Some(nz(2)), ..Default::default() })
        .build()
        .unwrap();
    let breaker = pipeline.circuit_breaker().unwrap().clone();
    let svc = PipelineLayer::new(pipeline).layer(flaky(Arc::clone(&calls), u32::MAX));
    for _ in 0..2 {
        assert_eq!(svc.clone().oneshot(1).await, Err(AppError::Down));
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(svc.clone().oneshot(1).await.unwrap_err().is_circuit_open());
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_layer_for_a_named_dependency_follows_its_registration() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = PipelineLayer::for_dependency("tower_named", ResilienceStrategy::InternalService);
    let svc = layer.layer(flaky(Arc::clone(&calls), u32::MAX));
    // Internal strategy: 3 attempts.
    assert_eq!(svc.clone().oneshot(1).await, Err(AppError::Down));
    assert_eq!(calls.swap(0, SeqCst), 3);
    let own = resilience::ConfigOverrides {
        retry: resilience::RetryOverrides { enabled: Some(false), ..Default::default() },
        circuit_breaker: resilience::BreakerOverrides { failure_threshold: Some(nz(50)), ..Default::default() },
        ..Default::default()
    };
    resilience::registry().register("tower_named", resilience::DependencyType::ExternalApi, own).unwrap();
    assert_eq!(svc.oneshot(1).await, Err(AppError::Down));
    assert_eq!(calls.load(SeqCst), 1, "the registration switched retries off");
}
