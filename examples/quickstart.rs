//! The four ways to protect a call, in the order of the usage guide: the strategy
//! shortcuts, the manager with call-site settings, the attribute on a function, and
//! dependencies registered at start-up and used by name. Each step prints what the
//! policies did.
//!
//! Run with `cargo run --release --example quickstart`.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use resilience::{
    database_call, manager, register_api_dependency, register_database_dependency, resilient, resilient_database_call,
    resilient_external_call, resilient_internal_call, ConfigOverrides, ResilienceError, ResilienceStrategy,
    RetryOverrides,
};

/// The error type of the example's services: their own failures, and the policies'.
#[derive(Debug)]
enum ServiceError {
    Unavailable(&'static str),
    Resilience(ResilienceError),
}

impl From<ResilienceError> for ServiceError {
    fn from(e: ResilienceError) -> Self {
        Self::Resilience(e)
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(what) => write!(f, "{what} unavailable"),
            Self::Resilience(e) => write!(f, "{e}"),
        }
    }
}

fn show<T: std::fmt::Debug>(what: &str, result: &Result<T, ServiceError>) {
    match result {
        Ok(value) => println!("  {what}: ok {value:?}"),
        Err(error) => println!("  {what}: {error}"),
    }
}

async fn fetch_user(id: u64) -> Result<String, ServiceError> {
    Ok(format!("user-{id}"))
}

static PAYMENT_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// A payment API that fails twice, then succeeds.
async fn call_payment_api(cents: u64) -> Result<String, ServiceError> {
    if PAYMENT_ATTEMPTS.fetch_add(1, SeqCst) < 2 {
        return Err(ServiceError::Unavailable("payment API"));
    }
    Ok(format!("charged {cents} cents"))
}

async fn query_orders(user: u64) -> Result<Vec<u64>, ServiceError> {
    Ok(vec![user * 10, user * 10 + 1])
}

/// 3. The attribute: every call of `process_payment` goes through the
/// `payment_processor` dependency (External strategy unless registered otherwise).
#[resilient(name = "payment_processor", strategy = External, retry(base_delay = "10ms"))]
async fn process_payment(cents: u64) -> Result<String, ServiceError> {
    call_payment_api(cents).await
}

static SLOW_QUERIES: AtomicU32 = AtomicU32::new(0);

/// 4. A function of the `user_db` dependency, which `main` registers at start-up.
#[database_call(dependency = "user_db", operation = "get_user")]
async fn get_user(id: u64) -> Result<String, ServiceError> {
    if id == 0 {
        // A query that hangs: the dependency's 50 ms timeout ends it.
        SLOW_QUERIES.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(format!("user-{id}"))
}

/// The same dependency from a plain function: the blocking pipeline, on this thread.
#[database_call(dependency = "user_db", operation = "count_users")]
fn count_users() -> Result<u64, ServiceError> {
    Ok(3)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("1. strategy shortcuts (the strategy's preset: breaker, retries, timeout, bulkhead)");
    let user = resilient_internal_call("user_service", || fetch_user(7)).await;
    show("resilient_internal_call(user_service)", &user);
    // The External strategy retries with 1 s, 2 s, … between attempts; keep this short.
    let fast_retries = ConfigOverrides {
        retry: RetryOverrides { base_delay: Some(Duration::from_millis(10)), ..Default::default() },
        ..Default::default()
    };
    let payment = manager()
        .execute_with("payments", ResilienceStrategy::ExternalService, &fast_retries, || call_payment_api(250))
        .await;
    show("external call to payments (fails twice, retried)", &payment);
    println!("    attempts made: {}", PAYMENT_ATTEMPTS.swap(0, SeqCst));
    let orders = resilient_database_call("orders_db", || query_orders(7)).await;
    show("resilient_database_call(orders_db)", &orders);
    let rate = resilient_external_call("exchange_rates", || async { Ok::<_, ServiceError>(1.08) }).await;
    show("resilient_external_call(exchange_rates)", &rate);

    println!("2. the manager with call-site settings (here: one attempt, 20 ms timeout)");
    let once = ConfigOverrides {
        timeout: Some(Duration::from_millis(20)),
        retry: RetryOverrides { enabled: Some(false), ..Default::default() },
        ..Default::default()
    };
    let slow = manager()
        .execute_with("custom_service", ResilienceStrategy::ExternalService, &once, || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, ServiceError>("too late")
        })
        .await;
    show("a 1 s call with a 20 ms timeout", &slow);

    println!("3. the attribute: #[resilient(name = \"payment_processor\", strategy = External)]");
    let charged = process_payment(990).await;
    show("process_payment(990) (fails twice inside, retried)", &charged);
    println!("    attempts made: {}", PAYMENT_ATTEMPTS.swap(0, SeqCst));

    println!("4. dependencies registered at start-up, used by name");
    register_database_dependency!("user_db", max_concurrent = 10, timeout = "50ms", retry(max_attempts = 1));
    register_api_dependency!("payment_gateway", max_concurrent = 5, timeout = "5s");
    show("get_user(42)", &get_user(42).await);
    show("get_user(0) (hangs)", &get_user(0).await);
    show("count_users() (plain fn)", &count_users());
    let user_db = resilience::registry().get("user_db").expect("registered");
    println!(
        "    user_db: {} slow query, breaker {:?}, bulkhead {} of {} free",
        SLOW_QUERIES.load(SeqCst),
        user_db.pipeline().circuit_breaker().map(|b| b.state()),
        user_db.pipeline().bulkhead().map_or(0, |b| b.available()),
        user_db.pipeline().bulkhead().map_or(0, |b| b.max_concurrent()),
    );

    println!("health: {}", resilience::health().to_json());
}
