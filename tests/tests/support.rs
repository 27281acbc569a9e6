//! Shared test helpers.

use resilience::ResilienceError;

/// A call site's own error type, as users write it.
#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    /// The dependency failed.
    Down,
    /// An error the breaker should ignore.
    NotFound,
    /// A policy rejected or timed out the call.
    Resilience(ResilienceError),
}

impl From<ResilienceError> for AppError {
    fn from(e: ResilienceError) -> Self {
        Self::Resilience(e)
    }
}

impl AppError {
    /// Rejected by an open breaker.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::Resilience(ResilienceError::CircuitOpen { .. }))
    }

    /// Timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Resilience(ResilienceError::Timeout { .. }))
    }

    /// Rejected by a full bulkhead.
    pub fn is_bulkhead_full(&self) -> bool {
        matches!(self, Self::Resilience(ResilienceError::BulkheadFull { .. }))
    }
}

/// A `NonZeroU32` from a literal.
pub fn nz(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("non-zero")
}

/// A `NonZeroUsize` from a literal.
pub fn nzu(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("non-zero")
}

/// Runs headless Chromium on `page`, in a profile of its own (any host but 127.0.0.1
/// is unreachable for it): the page's DOM after its scripts ran, or with `screenshot`,
/// a screenshot saved there.
pub async fn chromium(page: String, screenshot: Option<&'static str>) -> std::process::Output {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let profile = std::env::temp_dir().join(format!("resilience-chromium-{}-{run}", std::process::id()));
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new("chromium");
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000",
            "--window-size=1200,700",
        ]);
        command.arg(format!("--user-data-dir={}", profile.display()));
        match screenshot {
            Some(path) => command.arg(format!("--screenshot={path}")),
            None => command.arg("--dump-dom"),
        };
        command.arg(page).output().expect("chromium runs (scripts/test installs it)")
    })
    .await
    .expect("joined")
}

/// Polls `check` every 10 ms until it holds, failing with `what` after `limit`.
pub async fn eventually(limit: std::time::Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A health checker of every pool, started: checks every `interval`, unhealthy after 3
/// failed checks in a row (the error rate alone never makes a pool unhealthy).
pub fn started_checker(interval: std::time::Duration) -> resilience::PoolHealthChecker {
    let checker = resilience::PoolHealthChecker::new(resilience::HealthCheckConfig {
        check_interval: interval,
        error_rate_threshold: 1.1,
        consecutive_failures_threshold: 3,
    });
    checker.start(resilience::pool_manager());
    checker
}

/// What `checker` last said of pool `name`.
pub fn healthy(checker: &resilience::PoolHealthChecker, name: &str) -> Option<bool> {
    checker.summary().into_iter().find(|p| p.name == name).and_then(|p| p.healthy)
}

/// Held by every test that sets a thread's tracing subscriber (see [`with_subscriber`]):
/// tracing caches each callsite's interest across all the subscribers alive at once, and
/// two tests' scoped subscribers made and dropped concurrently can leave a callsite's
/// cache stale for the other test (a span it expects goes unrecorded).
static SUBSCRIBED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with `subscriber` as this thread's tracing subscriber, one such test at a
/// time.
///
/// While a single dispatcher is registered, tracing-core (0.1.36) works out the interest
/// of a callsite hit for the first time from the *current thread's* subscriber. So a
/// concurrent test without a subscriber that first hits a callsite (the pipeline's
/// `enabled!` check, say) caches "never" for it, and `f`'s spans go unrecorded. A
/// second dispatcher kept registered meanwhile makes every callsite ask all of them;
/// and the interest cache is rebuilt once `subscriber` is set, for callsites registered
/// before.
pub(crate) fn with_subscriber<S, R>(subscriber: S, f: impl FnOnce() -> R) -> R
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    let _one_at_a_time = SUBSCRIBED.lock().unwrap_or_else(|p| p.into_inner());
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        f()
    })
}

/// Records the fields of the spans named `name` opened while it is the thread's
/// subscriber.
pub(crate) struct SpanRecorder {
    name: &'static str,
    /// Each recorded span's id and its place in `spans`.
    ids: std::sync::Mutex<Vec<(u64, usize)>>,
    pub(crate) spans: std::sync::Mutex<Vec<Vec<(String, String)>>>,
    next: std::sync::atomic::AtomicU64,
}

pub(crate) struct FieldsOf<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for FieldsOf<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl SpanRecorder {
    /// A recorder of the spans named `name`.
    pub(crate) fn of(name: &'static str) -> Self {
        Self { name, ids: Default::default(), spans: Default::default(), next: Default::default() }
    }
}

/// The value of field `name` of a recorded span (its `Debug` text), empty if it has none.
pub(crate) fn field(span: &[(String, String)], name: &str) -> String {
    span.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
}

impl tracing::Subscriber for SpanRecorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if attrs.metadata().name() == self.name {
            let mut fields = Vec::new();
            attrs.record(&mut FieldsOf(&mut fields));
            let mut spans = self.spans.lock().unwrap();
            spans.push(fields);
            self.ids.lock().unwrap().push((id, spans.len() - 1));
        }
        tracing::span::Id::from_u64(id)
    }
    /// Values recorded after the span was made (fields declared `Empty`) join its fields.
    fn record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let ids = self.ids.lock().unwrap();
        if let Some(&(_, i)) = ids.iter().find(|(made, _)| *made == id.into_u64()) {
            values.record(&mut FieldsOf(&mut self.spans.lock().unwrap()[i]));
        }
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
