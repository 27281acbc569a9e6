//! The attribute macros, as users write them, on the paused tokio clock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use resilience::{
    api_call, cache_call, database_call, register_database_dependency, resilience_pattern, resilient, CircuitState,
    ResilienceError,
};
use tokio::time::Instant;

use crate::support::AppError;

fn available(name: &str) -> usize {
    let dependency = resilience::registry().get(name).expect("registered");
    dependency.pipeline().bulkhead().expect("a bulkhead").available()
}

fn breaker_state(name: &str) -> CircuitState {
    let dependency = resilience::registry().get(name).expect("used");
    dependency.pipeline().circuit_breaker().expect("a breaker").state()
}

static BREAKER_BODY_RUNS: AtomicU32 = AtomicU32::new(0);
static BREAKER_HEALTHY: AtomicBool = AtomicBool::new(false);

// Database strategy: 3 failures open the breaker, 2 attempts per call, 60 s recovery,
// 2 successes close it again.
#[resilient(name = "attr_breaker", strategy = Database)]
async fn flaky_lookup(id: u64) -> Result<u64, AppError> {
    BREAKER_BODY_RUNS.fetch_add(1, SeqCst);
    if BREAKER_HEALTHY.load(SeqCst) {
        Ok(id)
    } else {
        Err(AppError::Down)
    }
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opens_after_its_presets_failures_and_recovers() {
    assert_eq!(flaky_lookup(1).await, Err(AppError::Down));
    assert_eq!(BREAKER_BODY_RUNS.load(SeqCst), 2, "two attempts");
    // The third failure opens the breaker; the retry after it is rejected.
    assert!(flaky_lookup(1).await.unwrap_err().is_circuit_open());
    assert_eq!(BREAKER_BODY_RUNS.load(SeqCst), 3);
    assert_eq!(breaker_state("attr_breaker"), CircuitState::Open);
    for _ in 0..5 {
        assert!(flaky_lookup(1).await.unwrap_err().is_circuit_open());
    }
    assert_eq!(BREAKER_BODY_RUNS.load(SeqCst), 3, "an open breaker never runs the body");

    BREAKER_HEALTHY.store(true, SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(flaky_lookup(7).await, Ok(7));
    assert_eq!(breaker_state("attr_breaker"), CircuitState::HalfOpen);
    assert_eq!(flaky_lookup(8).await, Ok(8));
    assert_eq!(breaker_state("attr_breaker"), CircuitState::Closed);
}

static RETRY_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(name = "attr_retry_preset", strategy = Internal)]
async fn always_down() -> Result<(), AppError> {
    RETRY_RUNS.fetch_add(1, SeqCst);
    Err(AppError::Down)
}

static RETRY_KEYED_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    name = "attr_retry_keys",
    strategy = Internal,
    retry(max_attempts = 4, base_delay = "10ms"),
    circuit_breaker(failure_threshold = 10)
)]
async fn down_until_the_fourth(attempt_to_succeed: u32) -> Result<u32, AppError> {
    let n = RETRY_KEYED_RUNS.fetch_add(1, SeqCst) + 1;
    if n >= attempt_to_succeed {
        Ok(n)
    } else {
        Err(AppError::Down)
    }
}

#[tokio::test(start_paused = true)]
async fn retries_run_the_body_again_as_configured() {
    assert_eq!(always_down().await, Err(AppError::Down));
    assert_eq!(RETRY_RUNS.load(SeqCst), 3, "Internal strategy: 3 attempts");

    let start = Instant::now();
    assert_eq!(down_until_the_fourth(4).await, Ok(4));
    assert_eq!(RETRY_KEYED_RUNS.load(SeqCst), 4);
    // Delays of 10, 20 and 40 ms between the four attempts.
    assert_eq!(start.elapsed(), Duration::from_millis(70));
}

#[resilient(name = "attr_timeout", timeout = "100ms", retry(enabled = false))]
async fn slow() -> Result<(), AppError> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_call_site_timeout_fires() {
    let start = Instant::now();
    assert!(slow().await.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

#[database_call(dependency = "attr_capped_db", operation = "load")]
async fn capped_query(id: usize) -> Result<usize, AppError> {
    let now = IN_FLIGHT.fetch_add(1, SeqCst) + 1;
    MOST_IN_FLIGHT.fetch_max(now, SeqCst);
    tokio::time::sleep(Duration::from_millis(10)).await;
    IN_FLIGHT.fetch_sub(1, SeqCst);
    Ok(id)
}

#[tokio::test(start_paused = true)]
async fn a_registered_bulkhead_caps_concurrency() {
    register_database_dependency!("attr_capped_db", max_concurrent = 2, max_wait = "10s");
    let mut calls = tokio::task::JoinSet::new();
    for id in 0..10 {
        calls.spawn(capped_query(id));
    }
    let mut done = 0;
    while let Some(result) = calls.join_next().await {
        assert!(result.expect("no panic").is_ok());
        done += 1;
    }
    assert_eq!(done, 10);
    assert_eq!(MOST_IN_FLIGHT.load(SeqCst), 2);
    assert_eq!(available("attr_capped_db"), 2);
}

#[cache_call(dependency = "attr_session_cache")]
async fn cache_lookup() -> Result<(), AppError> {
    Err(AppError::Down)
}

#[resilient(name = "attr_cache_strategy", strategy = Cache, retry(enabled = false))]
async fn cache_strategy_lookup() -> Result<(), AppError> {
    Err(AppError::Down)
}

#[tokio::test(start_paused = true)]
async fn a_cache_dependency_has_no_breaker_and_the_cache_strategy_opens_after_20() {
    for _ in 0..100 {
        assert_eq!(cache_lookup().await, Err(AppError::Down), "the Cache type has no breaker");
    }
    let d = resilience::registry().get("attr_session_cache").expect("used");
    assert!(d.pipeline().circuit_breaker().is_none());

    for call in 1..=20 {
        assert_eq!(cache_strategy_lookup().await, Err(AppError::Down), "call {call}");
    }
    assert!(cache_strategy_lookup().await.unwrap_err().is_circuit_open());
}

static SYNC_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(name = "attr_sync", strategy = Internal, retry(base_delay = "1ms"))]
fn parse_blocking(text: &str) -> Result<u32, AppError> {
    if SYNC_RUNS.fetch_add(1, SeqCst) < 2 {
        return Err(AppError::Down);
    }
    text.parse().map_err(|_| AppError::NotFound)
}

#[test]
fn a_sync_fn_works_without_a_runtime() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    assert_eq!(parse_blocking("42"), Ok(42));
    assert_eq!(SYNC_RUNS.load(SeqCst), 3, "two failures, then the third attempt");
}

#[database_call(dependency = "attr_cancelled_db")]
async fn hangs() -> Result<(), AppError> {
    std::future::pending::<()>().await;
    Ok(())
}

struct Hanger;

impl Hanger {
    // `&mut self`: the loop of attempts rather than the pipeline's own future.
    #[database_call(dependency = "attr_cancelled_db")]
    async fn hang(&mut self) -> Result<(), AppError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_leaks_no_permit() {
    register_database_dependency!("attr_cancelled_db", max_concurrent = 3);
    for _ in 0..50 {
        let cancelled = tokio::time::timeout(Duration::from_millis(1), hangs()).await;
        assert!(cancelled.is_err());
    }
    let mut held: Vec<_> = (0..3).map(|_| Box::pin(hangs())).collect();
    for call in &mut held {
        assert!(futures_poll_once(call.as_mut()).await.is_none());
    }
    assert_eq!(available("attr_cancelled_db"), 0);
    drop(held);
    assert_eq!(available("attr_cancelled_db"), 3);

    let mut hangers = [Hanger, Hanger, Hanger];
    for _ in 0..50 {
        let cancelled = tokio::time::timeout(Duration::from_millis(1), hangers[0].hang()).await;
        assert!(cancelled.is_err());
    }
    let [a, b, c] = &mut hangers;
    let mut held = [Box::pin(a.hang()), Box::pin(b.hang()), Box::pin(c.hang())];
    for call in &mut held {
        assert!(futures_poll_once(call.as_mut()).await.is_none());
    }
    assert_eq!(available("attr_cancelled_db"), 0);
    drop(held);
    assert_eq!(available("attr_cancelled_db"), 3);
}

/// Polls `fut` once; `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut fut).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// A client with state that each attempt changes.
struct Client {
    attempts: u32,
    log: Vec<String>,
}

impl Client {
    #[resilient(name = "attr_mut_self", strategy = Internal, retry(base_delay = "1ms"))]
    async fn send(&mut self, message: String, tag: &str) -> Result<usize, AppError> {
        self.attempts += 1;
        if self.attempts < 3 {
            return Err(AppError::Down);
        }
        // Moves the owned argument: each attempt got its own clone.
        self.log.push(message + tag);
        Ok(self.log.len())
    }

    #[resilient(name = "attr_mut_self_sync", strategy = Internal, retry(base_delay = "1ms"))]
    fn send_blocking(&mut self, (left, right): (u32, u32)) -> Result<u32, AppError> {
        self.attempts += 1;
        if self.attempts % 2 == 1 {
            Err(AppError::Down)
        } else {
            Ok(left + right)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn mut_self_methods_and_owned_arguments_are_retried() {
    let mut client = Client { attempts: 0, log: Vec::new() };
    assert_eq!(client.send(String::from("hello"), "!").await, Ok(1));
    assert_eq!(client.attempts, 3);
    assert_eq!(client.log, ["hello!"]);

    let mut client = Client { attempts: 0, log: Vec::new() };
    assert_eq!(tokio::task::spawn_blocking(move || client.send_blocking((2, 3))).await.unwrap(), Ok(5));
}

static FALLBACK_RUNS: AtomicU32 = AtomicU32::new(0);

fn cached_price(item: String, error: AppError) -> Result<String, AppError> {
    assert_eq!(error, AppError::Down);
    Ok(format!("{item}: cached"))
}

async fn price_from_backup(item: String, _error: AppError) -> Result<String, AppError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(format!("{item}: backup"))
}

#[api_call(dependency = "attr_prices", fallback = cached_price, retry(max_attempts = 2, base_delay = "1ms"))]
async fn price(item: String) -> Result<String, AppError> {
    FALLBACK_RUNS.fetch_add(1, SeqCst);
    drop(item);
    Err(AppError::Down)
}

#[api_call(dependency = "attr_prices_async", fallback = price_from_backup, retry(enabled = false))]
async fn price_async_fallback(item: String) -> Result<String, AppError> {
    Err(AppError::Down).map(|()| item)
}

#[tokio::test(start_paused = true)]
async fn a_fallback_gets_the_arguments_and_the_error() {
    assert_eq!(price(String::from("tea")).await.as_deref(), Ok("tea: cached"));
    assert_eq!(FALLBACK_RUNS.load(SeqCst), 2, "both attempts ran before the fallback");
    assert_eq!(price_async_fallback(String::from("milk")).await.as_deref(), Ok("milk: backup"));
}

fn only_down(error: &AppError) -> bool {
    *error == AppError::Down
}

static CLASSIFIED_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    name = "attr_classified",
    strategy = Internal,
    retry(base_delay = "1ms"),
    retry_if = only_down,
    record_if = only_down,
    circuit_breaker(failure_threshold = 1)
)]
async fn not_found() -> Result<(), AppError> {
    CLASSIFIED_RUNS.fetch_add(1, SeqCst);
    Err(AppError::NotFound)
}

#[tokio::test(start_paused = true)]
async fn retry_if_and_record_if_classify_errors() {
    for _ in 0..5 {
        assert_eq!(not_found().await, Err(AppError::NotFound));
    }
    assert_eq!(CLASSIFIED_RUNS.load(SeqCst), 5, "not retried");
    assert_eq!(breaker_state("attr_classified"), CircuitState::Closed, "not recorded");
}

static PATTERN_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilience_pattern(name = "attr_pattern", timeout = "50ms")]
async fn pattern_with_only_a_timeout(wait: Duration) -> Result<(), AppError> {
    PATTERN_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(wait).await;
    Err(AppError::Down)
}

#[tokio::test(start_paused = true)]
async fn a_pattern_has_only_the_policies_it_names() {
    for _ in 0..10 {
        assert_eq!(pattern_with_only_a_timeout(Duration::ZERO).await, Err(AppError::Down));
    }
    assert_eq!(PATTERN_RUNS.load(SeqCst), 10, "no retries, and no breaker to open");
    let pipeline = resilience::registry().get("attr_pattern").expect("used").pipeline();
    assert!(pipeline.circuit_breaker().is_none());
    assert!(pipeline.bulkhead().is_none());
    let start = Instant::now();
    assert!(pattern_with_only_a_timeout(Duration::from_secs(1)).await.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

trait Store {
    async fn get(&self, key: u32) -> Result<u32, AppError>;
}

struct Doubling;

impl Store for Doubling {
    #[database_call(dependency = "attr_trait_store")]
    async fn get(&self, key: u32) -> Result<u32, AppError> {
        Ok(key * 2)
    }
}

#[resilient(name = "attr_generic")]
async fn describe<T: std::fmt::Display + Clone + Send>(value: T) -> Result<String, AppError> {
    Ok(value.to_string())
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[tokio::test]
async fn trait_methods_and_generic_functions_work_and_calls_are_send() {
    assert_eq!(Doubling.get(21).await, Ok(42));
    assert_eq!(assert_send(describe(5)).await.as_deref(), Ok("5"));
    let default_name = format!("{}::describe", module_path!());
    assert!(resilience::registry().get("attr_generic").is_some());
    assert!(resilience::registry().get(&default_name).is_none());
    let joined = tokio::spawn(describe("spawned")).await.expect("no panic");
    assert_eq!(joined.as_deref(), Ok("spawned"));
}

#[resilient(strategy = External)]
async fn named_by_its_path() -> Result<(), ResilienceError> {
    Ok(())
}

#[tokio::test]
async fn the_name_defaults_to_the_module_path_and_function() {
    named_by_its_path().await.unwrap();
    let name = format!("{}::named_by_its_path", module_path!());
    assert!(resilience::registry().get(&name).is_some(), "{name}");
}

static SEEN_BY_ATTEMPTS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

#[resilient(name = "attr_mut_arg", strategy = Internal, retry(base_delay = "1ms"))]
async fn changes_its_argument(mut n: u32) -> Result<u32, AppError> {
    SEEN_BY_ATTEMPTS.lock().unwrap().push(n);
    n += 10;
    if n < 100 {
        Err(AppError::Down)
    } else {
        Ok(n)
    }
}

struct Tally(u32);

impl Tally {
    #[resilient(name = "attr_mut_arg_loop", strategy = Internal, retry(base_delay = "1ms"))]
    async fn add(&mut self, mut n: u32, mut label: String) -> Result<u32, AppError> {
        self.0 += 1;
        n += 1;
        label.push('!');
        if self.0 < 3 {
            Err(AppError::Down)
        } else {
            Ok(n * 100 + label.len() as u32)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempt_starts_from_the_arguments_as_passed() {
    assert_eq!(changes_its_argument(1).await, Err(AppError::Down));
    assert_eq!(*SEEN_BY_ATTEMPTS.lock().unwrap(), [1, 1, 1]);
    let mut tally = Tally(0);
    // Third attempt: n is 5 + 1, the label "ab" + "!".
    assert_eq!(tally.add(5, String::from("ab")).await, Ok(603));
}

static KEYED_CALLS: AtomicU32 = AtomicU32::new(0);

/// One limit per value of `tenant`: 1 call per second, bursts of 1.
#[resilience::resilient(name = "attr_keyed", rate_limit(rate = 1, burst = 1, key = tenant))]
async fn keyed(tenant: &str, payload: String) -> Result<String, AppError> {
    KEYED_CALLS.fetch_add(1, SeqCst);
    Ok(format!("{tenant}: {payload}"))
}

#[tokio::test(start_paused = true)]
async fn rate_limit_key_gives_each_value_its_own_limit() {
    assert_eq!(keyed("a", "1".into()).await.unwrap(), "a: 1");
    let limited = keyed("a", "2".into()).await.unwrap_err();
    assert!(matches!(limited, AppError::Resilience(ResilienceError::RateLimited { .. })), "{limited:?}");
    // Client B is not limited by client A's call.
    assert_eq!(keyed("b", "1".into()).await.unwrap(), "b: 1");
    assert_eq!(KEYED_CALLS.load(SeqCst), 2, "a rejected call never runs the body");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(keyed("a", "3".into()).await.unwrap(), "a: 3");
}

static SLOW_FS_CALLS: AtomicU32 = AtomicU32::new(0);

/// Takes everything by value: each attempt runs on the thread pool.
#[resilience::file_system_call(dependency = "attr_slow_fs")]
fn slow_read(path: String) -> Result<usize, AppError> {
    SLOW_FS_CALLS.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(700));
    Ok(path.len())
}

/// Borrows its argument: runs in place, an overrun is reported once.
#[resilience::file_system_call(dependency = "attr_slow_fs")]
fn slow_read_borrowed(path: &str) -> Result<usize, AppError> {
    SLOW_FS_CALLS.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    Ok(path.len())
}

/// A blocking fn whose arguments are all owned and `Send` times out on time on its
/// dependency's thread pool (it took 5.1 s, three attempts in place, before).
#[test]
fn an_owned_blocking_fn_times_out_on_time_on_its_thread_pool() {
    resilience::register_file_system_dependency!(
        "attr_slow_fs",
        timeout = "100ms",
        retry(max_attempts = 3, base_delay = "10ms", jitter = none)
    );
    let start = std::time::Instant::now();
    let error = slow_read("/tmp/x".into()).unwrap_err();
    let took = start.elapsed();
    assert!(error.is_timeout(), "{error:?}");
    assert!(took < Duration::from_millis(650), "three attempts of 100 ms took {took:?}");
    assert_eq!(SLOW_FS_CALLS.load(SeqCst), 3, "each attempt ran, on a worker");
    let start = std::time::Instant::now();
    assert!(slow_read_borrowed("/tmp/x").unwrap_err().is_timeout());
    let took = start.elapsed();
    assert!(took < Duration::from_millis(550), "an overrun in place is not retried: {took:?}");
    assert_eq!(SLOW_FS_CALLS.load(SeqCst), 4);
}
