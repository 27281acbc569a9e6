//! `ResilienceLayer`: a `tower::Layer` protecting a service's own routes.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use ipnet::IpNet;
use metrics::{counter, histogram};
use resilience_core::aggregate::{Counters, DurationHistogram};
use resilience_core::macro_support::{time_limited, TimeLimit, TimeLimited};
use resilience_core::{
    BulkheadPermit, CallPermit, CircuitBreaker, CircuitBreakerConfig, KeyedRateLimiter, Loan, RateLimiterConfig,
    Replicated, ResilienceError, SemaphoreBulkhead, SemaphoreBulkheadConfig,
};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::client_key::{client_of, Client, ClientKey, NoClient};

/// Per-client rate limits of a [`MiddlewareConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per second each client may make, sustained.
    pub per_second: f64,
    /// Requests a client may make at once after a quiet period.
    pub burst: u32,
    /// Most clients tracked at once (see [`KeyedRateLimiter`] for what happens beyond).
    /// Default 10,000.
    pub max_clients: usize,
    /// What tells clients apart. Default: the peer address ([`ClientKey::PeerAddress`]).
    pub key: ClientKey,
    /// Whether admitted answers carry `RateLimit-Limit`, `RateLimit-Remaining` and
    /// `RateLimit-Reset` too, so that clients can pace themselves (a 429 always carries
    /// them). Default false, as in `tower_governor` and Envoy: three more headers on
    /// every answer cost about 90 ns per request (the hashing of their names), and they
    /// tell every client its limit.
    pub quota_headers: bool,
}

impl RateLimitConfig {
    /// `per_second` requests per second and bursts of `burst` for each client, by peer
    /// address.
    pub fn per_client(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst, max_clients: 10_000, key: ClientKey::PeerAddress, quota_headers: false }
    }

    /// This limit, telling clients apart by `key`.
    pub fn keyed_by(mut self, key: ClientKey) -> Self {
        self.key = key;
        self
    }

    /// This limit, with the `RateLimit-*` headers on admitted answers too
    /// ([`quota_headers`](Self::quota_headers)).
    pub fn with_quota_headers(mut self) -> Self {
        self.quota_headers = true;
        self
    }
}

/// What [`ResilienceLayer`] does (the seed notes' `ResilienceConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct MiddlewareConfig {
    /// A circuit breaker per matched route, counting 5xx answers and timeouts; while open
    /// the route answers 503 with `Retry-After`. Default true.
    pub enable_circuit_breaker: bool,
    /// A bulkhead over all requests; when full the answer is 503 with `Retry-After`.
    /// Default true.
    pub enable_bulkhead: bool,
    /// Per-client rate limits (when `rate_limit` is set); over the limit the answer is
    /// 429 with `Retry-After` and the `RateLimit-*` headers (admitted answers carry them
    /// when [`RateLimitConfig::quota_headers`] is on). Default true.
    pub enable_rate_limiting: bool,
    /// Longest a request may take; the answer is then 504. Default 30 s.
    pub request_timeout: Duration,
    /// Requests handled at once. Default 1,000.
    pub bulkhead_max_concurrent: usize,
    /// How long a request waits for a bulkhead slot. Default zero: 503 at once.
    pub bulkhead_max_wait: Duration,
    /// 5xx answers and timeouts of a route, in its window of 100 requests, that open its
    /// breaker. Default 5.
    pub circuit_breaker_failure_threshold: u32,
    /// How long an open route breaker stays open. Default 60 s.
    pub circuit_breaker_recovery_timeout: Duration,
    /// Per-client rate limits. Default none.
    pub rate_limit: Option<RateLimitConfig>,
    /// A request id for every request: the client's `x-request-id` (1 to 128 visible
    /// ASCII characters), or a new one unique in the process, in the request's tracing
    /// span and on its answer. Default true. Off, the layer neither reads nor adds
    /// `x-request-id`: for a service whose gateway or own middleware (tower-http's
    /// `SetRequestId`) does it. The header costs about 2 % of a hello-world's
    /// throughput on loopback (BENCHMARKS.md).
    pub enable_request_id: bool,
    /// Proxies whose forwarding headers (`X-Forwarded-For`, `Forwarded`) are believed.
    /// Default none: the peer address is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Paths that bypass everything (exact, or a prefix ending in `/`). Default none.
    pub excluded_paths: Vec<String>,
    /// Fault injection into the requests themselves (needs the `chaos` feature and the
    /// settings' `resilience: { chaos: { enabled: true } }`; inert otherwise): a delay
    /// before the service is called, inside the request timeout, and answers of 500
    /// (`x-resilience-chaos: error`) that the route's breaker counts. Default none.
    pub chaos: Option<resilience_core::ChaosConfig>,
    /// A request header through which a request may ask for a fault of its own
    /// (`error`, `latency`, `latency=200ms`, comma-separated), capped by `chaos`: only
    /// the kinds it injects, no longer a delay than its `latency`, within its
    /// `max_active`. Default none: requests cannot ask.
    pub chaos_header: Option<String>,
}

impl Default for MiddlewareConfig {
    fn default() -> Self {
        Self {
            enable_circuit_breaker: true,
            enable_bulkhead: true,
            enable_rate_limiting: true,
            request_timeout: Duration::from_secs(30),
            bulkhead_max_concurrent: 1_000,
            bulkhead_max_wait: Duration::ZERO,
            circuit_breaker_failure_threshold: 5,
            circuit_breaker_recovery_timeout: Duration::from_secs(60),
            rate_limit: None,
            enable_request_id: true,
            trusted_proxies: Vec::new(),
            excluded_paths: Vec::new(),
            chaos: None,
            chaos_header: None,
        }
    }
}

/// Why the layer could not be built.
#[derive(Debug, Clone, PartialEq)]
pub struct MiddlewareConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for MiddlewareConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for MiddlewareConfigError {}

/// Timeouts, a bulkhead, a circuit breaker per matched route and per-client rate limits
/// for a service's own routes, as a `tower::Layer` (for axum: `Router::layer`, which
/// puts it after routing, so axum's `MatchedPath` names the route).
///
/// Answers: 504 on timeout; 503 with `Retry-After` when the bulkhead is full or the
/// route's breaker is open; 429 with `Retry-After` and `RateLimit-Limit`,
/// `RateLimit-Remaining`, `RateLimit-Reset` when a client is over its limit (admitted
/// answers carry the `RateLimit-*` headers too when [`RateLimitConfig::quota_headers`]
/// is on). Every answer carries `x-request-id` (the request's, or a new one), which is
/// also in the request's tracing span, unless
/// [`enable_request_id`](MiddlewareConfig::enable_request_id) is off.
///
/// Breakers are per route, never per raw path, and request metrics are labelled by
/// route and method, so clients cannot make either grow: requests no route matched
/// share the route `unmatched`, and methods beyond the standard nine share `OTHER`.
///
/// The inner service's answers need a body that can be made from [`Bytes`]
/// (`axum::body::Body`, as every axum route has, or `http_body_util::Full<Bytes>`): the
/// layer's own answers are bodies of that type too, so an admitted answer passes through
/// unchanged, neither wrapped nor boxed again. Another body can be mapped to
/// `axum::body::Body` first (`Body::new`).
#[derive(Debug, Clone)]
pub struct ResilienceLayer {
    shared: Arc<Shared>,
}

/// The layer's state. `repr(C)`, and what every request reads first: so that those
/// fields share two or three cache lines rather than being spread over the ten this
/// struct spans (a request under load meets them cold; each line is a miss).
#[derive(Debug)]
#[repr(C)]
struct Shared {
    /// `config.request_timeout`, as the answer's future takes it.
    timeout: TimeLimit,
    bulkhead: Option<SemaphoreBulkhead>,
    /// `config.enable_request_id`.
    request_ids: bool,
    /// Whether admitted answers carry the `RateLimit-*` headers.
    quota_headers: bool,
    /// Whether `config.excluded_paths` names any path.
    any_excluded: bool,
    /// The per-client limit, when clients are limited.
    clients: Option<Clients>,
    config: MiddlewareConfig,
    /// Per matched route (the application's routes and `unmatched`: a bounded map).
    routes: std::sync::RwLock<HashMap<Box<str>, Arc<RouteState>>>,
    #[cfg(feature = "chaos")]
    chaos: Option<(resilience_core::chaos::Chaos, Option<http::HeaderName>)>,
}

/// How clients are told apart and limited (`repr(C)`: the key's fields first, next to
/// the limiter's, as a request reads them).
#[derive(Debug)]
#[repr(C)]
struct Clients {
    key: ClientKey,
    trusted: Vec<IpNet>,
    limiter: KeyedRateLimiter<Client>,
    /// `RateLimit-Limit` of every answer that carries the `RateLimit-*` headers (made
    /// once: the same on every answer).
    limit_value: HeaderValue,
}

impl ResilienceLayer {
    /// The layer `config` describes.
    ///
    /// # Panics
    ///
    /// When `config` holds a value no layer can work with (a zero bulkhead or timeout,
    /// a rate that is not positive): see [`try_new`](Self::try_new) to get the error.
    pub fn new(config: MiddlewareConfig) -> Self {
        match Self::try_new(config) {
            Ok(layer) => layer,
            Err(e) => panic!("{e}"),
        }
    }

    /// The layer `config` describes, or what is wrong with `config`.
    pub fn try_new(config: MiddlewareConfig) -> Result<Self, MiddlewareConfigError> {
        let bad = |field, message: String| MiddlewareConfigError { field, message };
        if config.request_timeout.is_zero() {
            return Err(bad("request_timeout", String::from("must be greater than zero")));
        }
        if config.circuit_breaker_failure_threshold == 0 || config.circuit_breaker_failure_threshold > 100 {
            return Err(bad(
                "circuit_breaker_failure_threshold",
                format!("{} is not between 1 and the window of 100 requests", config.circuit_breaker_failure_threshold),
            ));
        }
        let bulkhead = match config.enable_bulkhead {
            false => None,
            true => {
                let max = NonZeroUsize::new(config.bulkhead_max_concurrent)
                    .ok_or_else(|| bad("bulkhead_max_concurrent", String::from("must be at least 1")))?;
                let c = SemaphoreBulkheadConfig { max_concurrent: max, max_wait: config.bulkhead_max_wait };
                Some(SemaphoreBulkhead::new("http", c).map_err(|e| bad("bulkhead_max_concurrent", e.to_string()))?)
            }
        };
        let clients = match (&config.rate_limit, config.enable_rate_limiting) {
            (Some(limit), true) => {
                let burst = NonZeroU32::new(limit.burst)
                    .ok_or_else(|| bad("rate_limit.burst", String::from("must be at least 1")))?;
                let max_keys = NonZeroUsize::new(limit.max_clients)
                    .ok_or_else(|| bad("rate_limit.max_clients", String::from("must be at least 1")))?;
                let c = RateLimiterConfig { rate: limit.per_second, burst, max_keys, shared: false };
                let limiter =
                    KeyedRateLimiter::new("http", c).map_err(|e| bad("rate_limit.per_second", e.to_string()))?;
                let limit_value = lasting_number(u64::from(limit.burst));
                Some(Clients { key: limit.key.clone(), trusted: config.trusted_proxies.clone(), limiter, limit_value })
            }
            _ => None,
        };
        if let Some(chaos) = &config.chaos {
            chaos.validate().map_err(|e| bad("chaos", e.to_string()))?;
        }
        let header = match &config.chaos_header {
            None => None,
            Some(name) => Some(
                http::HeaderName::try_from(name.as_str())
                    .map_err(|_| bad("chaos_header", format!("`{name}` is not a header name")))?,
            ),
        };
        #[cfg(feature = "chaos")]
        let chaos = config.chaos.map(|c| (resilience_core::chaos::Chaos::new(&Arc::from("http"), c), header));
        #[cfg(not(feature = "chaos"))]
        let _ = header;
        let quota_headers = config.rate_limit.as_ref().is_some_and(|limit| limit.quota_headers);
        let timeout = TimeLimit::new(config.request_timeout);
        Ok(Self {
            shared: Arc::new(Shared {
                timeout,
                bulkhead,
                request_ids: config.enable_request_id,
                quota_headers,
                any_excluded: !config.excluded_paths.is_empty(),
                clients,
                config,
                routes: Default::default(),
                #[cfg(feature = "chaos")]
                chaos,
            }),
        })
    }
}

impl<S> Layer<S> for ResilienceLayer {
    type Service = ResilienceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let site = Site { shared: Arc::clone(&self.shared), route: std::sync::OnceLock::new() };
        ResilienceService { inner, site: Replicated::new(site) }
    }
}

/// A service wrapped by [`ResilienceLayer`].
#[derive(Debug, Clone)]
pub struct ResilienceService<S> {
    inner: S,
    /// Replicated: axum clones the service for every request, and an `Arc` clone would
    /// be a count that every core's requests write.
    site: Replicated<Site>,
}

/// What one wrapped service shares with its clones (those made on one thread share a
/// replica of it): the layer's state, and the state of the route it serves (axum's
/// `Router::layer` wraps each route apart, so a service mostly sees one route: kept
/// here, it is found without a lock).
#[derive(Debug, Clone)]
struct Site {
    shared: Arc<Shared>,
    /// The service's own route (the first it served), and axum's text of it (`None`:
    /// `unmatched`), kept so that the next request's text is recognised by its address.
    route: std::sync::OnceLock<(Arc<RouteState>, Option<axum::extract::MatchedPath>)>,
}

impl Site {
    /// The state of the route axum `matched` (`None`: `unmatched`): this service's own
    /// route without a lock, any other from the layer's map.
    #[inline]
    fn route(&self, matched: Option<&axum::extract::MatchedPath>) -> std::borrow::Cow<'_, Arc<RouteState>> {
        let text = matched.map_or(UNMATCHED, axum::extract::MatchedPath::as_str);
        let (own, own_text) = self.route.get_or_init(|| (self.shared.route(text), matched.cloned()));
        let same = match (own_text, matched) {
            // axum gives every request of a route the same text: equal addresses.
            (Some(own), Some(this)) => std::ptr::eq(own.as_str(), this.as_str()) || own.as_str() == this.as_str(),
            (None, None) => true,
            _ => false,
        };
        match same {
            true => std::borrow::Cow::Borrowed(own),
            false => std::borrow::Cow::Owned(self.shared.route(text)),
        }
    }
}

/// The route of requests that matched none of the application's.
const UNMATCHED: &str = "unmatched";

const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// The method's index in `METHODS`, 9 for any other (a comparison of `http`'s own tag
/// for the standard ones, not of their names).
fn method_index(method: &http::Method) -> u8 {
    use http::Method;
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

fn method_name(index: u8) -> &'static str {
    METHODS.get(usize::from(index)).copied().unwrap_or("OTHER")
}

/// The request's route: axum's `MatchedPath` if routing matched (`None`: `unmatched`).
fn route_of<B>(request: &Request<B>) -> Option<&axum::extract::MatchedPath> {
    request.extensions().get::<axum::extract::MatchedPath>()
}

/// What the layer keeps per route: its breaker and its metric handles (made once, so a
/// request hashes no label and allocates none for its metrics).
///
/// `repr(C)`: the breaker first, then each method's handles side by side, so that a
/// request (mostly `GET`, index 0) reads one or two cache lines of it, not one for each
/// of the breaker, the `200` counter and the histogram.
#[derive(Debug)]
#[repr(C)]
struct RouteState {
    breaker: Option<CircuitBreaker>,
    /// By method (the index in `METHODS`, 9 for `OTHER`).
    methods: [MethodHandles; 10],
    route: Arc<str>,
    /// By method and status (other than `200`).
    requests: std::sync::RwLock<HashMap<(u8, u16), Counters<1>>>,
    /// By reason: rate limited, bulkhead full, circuit open, timeout.
    rejected: Counters<4>,
}

/// A route's handles for one method: what each of its answers takes.
#[derive(Debug)]
struct MethodHandles {
    /// `200` answers, found without a lock (made on the first).
    ok: std::sync::OnceLock<Counters<1>>,
    /// Made on the first answer (a counted histogram takes some memory per CPU).
    duration: std::sync::OnceLock<DurationHistogram>,
}

const REASONS: [&str; 4] = ["rate_limited", "bulkhead_full", "circuit_open", "timeout"];

impl RouteState {
    /// Counts one answer (the handle is made the first time a method and status meet).
    #[inline]
    fn count(&self, method: u8, status: u16) {
        if status == 200 {
            self.handles(method).ok.get_or_init(|| self.counter(method, status)).increment(0, 1);
            return;
        }
        self.count_other(method, status);
    }

    /// [`count`](Self::count) for a status other than `200`, out of line (the code an
    /// answer of `200` runs stays short).
    #[inline(never)]
    fn count_other(&self, method: u8, status: u16) {
        if let Some(c) = self.requests.read().unwrap_or_else(|p| p.into_inner()).get(&(method, status)) {
            c.increment(0, 1);
            return;
        }
        let mut requests = self.requests.write().unwrap_or_else(|p| p.into_inner());
        requests.entry((method, status)).or_insert_with(|| self.counter(method, status)).increment(0, 1);
    }

    /// The handles of `method` (an index of `method_index`).
    #[inline]
    fn handles(&self, method: u8) -> &MethodHandles {
        &self.methods[usize::from(method).min(9)]
    }

    /// The duration histogram of `method` (made the first time).
    #[inline]
    fn duration(&self, method: u8) -> &DurationHistogram {
        self.handles(method).duration.get_or_init(|| {
            let (method, route) = (method_name(method), self.route.to_string());
            DurationHistogram::new(
                histogram!("resilience_http_request_duration_seconds", "method" => method, "route" => route),
            )
        })
    }

    /// The counter of `method`'s answers with `status`.
    fn counter(&self, method: u8, status: u16) -> Counters<1> {
        let (method, route) = (method_name(method), self.route.to_string());
        Counters::new([counter!(
            "resilience_http_requests_total", "method" => method, "route" => route, "status" => status.to_string()
        )])
    }

    fn rejected(&self, reason: usize) {
        self.rejected.increment(reason, 1);
    }
}

/// The peer address axum's `ConnectInfo` gives (or a `SocketAddr` another stack put in
/// the request's extensions).
fn peer_of<B>(request: &Request<B>) -> Option<IpAddr> {
    if let Some(info) = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    request.extensions().get::<SocketAddr>().map(SocketAddr::ip)
}

fn excluded(path: &str, excluded: &[String]) -> bool {
    excluded.iter().any(|e| path == e || (e.ends_with('/') && path.starts_with(e.as_str())))
}

/// The request's id: the client's, if it is one we can repeat, else a new one (out of
/// line: the code of a layer without ids stays short).
#[inline(never)]
fn request_id_of<B>(request: &Request<B>) -> HeaderValue {
    client_request_id(request).unwrap_or_else(new_request_id)
}

/// A request id from the client, if it is one we can repeat: 1 to 128 visible ASCII
/// characters.
fn client_request_id<B>(request: &Request<B>) -> Option<HeaderValue> {
    let value = request.headers().get(X_REQUEST_ID)?;
    let ok = !value.is_empty() && value.len() <= 128 && value.as_bytes().iter().all(|b| b.is_ascii_graphic());
    ok.then(|| value.clone())
}

/// A request id no other request of this process gets, without an allocation of its own.
#[inline]
fn new_request_id() -> HeaderValue {
    thread_local! {
        /// This thread's block of ids, and where its next unused one starts.
        static IDS: std::cell::RefCell<(Bytes, usize)> = const { std::cell::RefCell::new((Bytes::new(), 0)) };
    }
    let sliced = IDS.try_with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.1 == ids.0.len() {
            *ids = (next_batch(), 0);
        }
        let at = ids.1;
        ids.1 = at + ID_BYTES;
        ids.0.slice(at..at + ID_BYTES)
    });
    // Only a thread that is ending has no block: its id gets bytes of its own.
    let bytes = sliced.unwrap_or_else(|_| Bytes::copy_from_slice(&request_id_text(NEXT.fetch_add(1, Relaxed))));
    // SAFETY: hex digits and `-` make a valid header value; this skips only the check of
    // every byte.
    #[allow(unsafe_code)]
    unsafe {
        HeaderValue::from_maybe_shared_unchecked(bytes)
    }
}

/// The block of the next `BATCH` ids, numbered from one draw on `NEXT` (out of line:
/// once per 160 requests, its loop kept off the lines every request runs).
#[cold]
#[inline(never)]
fn next_batch() -> Bytes {
    let first = NEXT.fetch_add(BATCH, Relaxed);
    let mut block = Vec::with_capacity(BATCH as usize * ID_BYTES);
    for n in first..first + BATCH {
        block.extend_from_slice(&request_id_text(n));
    }
    Bytes::from(block)
}

/// Ids made at once per thread, numbered from one draw on the process's counter (so that
/// workers do not contend for it on every request), into one block of `BATCH * ID_BYTES`
/// (4,000) bytes: each id is a slice of it, and the block is freed with its last id (two
/// allocations per 160 ids: the block and its shared count).
const BATCH: u64 = 160;

/// The first number of the next draw of ids.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Bytes of a request id the layer makes.
const ID_BYTES: usize = 25;

/// The id numbered `n`: `pppppppp-nnnnnnnnnnnnnnnn`, the process's random tag, then `n`,
/// in hex.
fn request_id_text(n: u64) -> [u8; ID_BYTES] {
    /// The process's random tag, in hex (made once).
    static TAG: std::sync::LazyLock<[u8; 8]> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        hex8(std::collections::hash_map::RandomState::new().build_hasher().finish() as u32)
    });
    let mut id = [0u8; ID_BYTES];
    id[..8].copy_from_slice(&*TAG);
    id[8] = b'-';
    id[9..17].copy_from_slice(&hex8((n >> 32) as u32));
    id[17..].copy_from_slice(&hex8(n as u32));
    id
}

/// `n` as eight lowercase hex digits, most significant first, eight at a time in one
/// word (about 15 instructions, where a digit at a time took about 60).
#[inline]
fn hex8(n: u32) -> [u8; 8] {
    // Each nibble to a byte of its own, the lowest nibble in the lowest byte.
    let x = u64::from(n);
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    let x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 0x01 in each byte whose nibble is 10 or more (nibble + 6 reaches 16), which then
    // needs `'a' - '0' - 10` = 39 more than a digit; no byte carries into the next.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// `text`, which must be visible ASCII, as a header value without an allocation of its
/// own: it is cut from a block of this thread's, one allocation per `BLOCK_BYTES` of
/// values (each value shares its block, which is freed with its last value).
fn cut_value(text: &[u8]) -> HeaderValue {
    const BLOCK_BYTES: usize = 4096;
    thread_local! {
        static BLOCK: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
    }
    debug_assert!(text.iter().all(u8::is_ascii_graphic), "not a header value");
    let cut = BLOCK.try_with(|block| {
        let mut block = block.borrow_mut();
        if block.capacity() < text.len() {
            *block = bytes::BytesMut::with_capacity(BLOCK_BYTES.max(text.len()));
        }
        block.extend_from_slice(text);
        block.split_to(text.len()).freeze()
    });
    // Only a thread that is ending has no block: it gets a copy of its own.
    let bytes = cut.unwrap_or_else(|_| Bytes::copy_from_slice(text));
    // SAFETY: visible ASCII (the callers' digits, hex and `-`) is a valid header value;
    // this skips only the check of every byte.
    #[allow(unsafe_code)]
    unsafe {
        HeaderValue::from_maybe_shared_unchecked(bytes)
    }
}

/// `n` as a header value, without allocating: below 10,000 (the usual `Retry-After`,
/// `RateLimit-Reset` and small `RateLimit-Remaining`) a slice of one static text of all
/// those numbers, above it cut from this thread's block (`cut_value`).
fn number(n: u64) -> HeaderValue {
    /// "0123456789101112…9999": every number below 10,000, in order (38,890 bytes, made
    /// once per process).
    static DIGITS: std::sync::LazyLock<&'static str> = std::sync::LazyLock::new(|| {
        let mut all = String::with_capacity(38_890);
        for n in 0..10_000u32 {
            all.push_str(&n.to_string());
        }
        Box::leak(all.into_boxed_str())
    });
    let (start, len) = match n {
        0..=9 => (n, 1),
        10..=99 => (10 + (n - 10) * 2, 2),
        100..=999 => (190 + (n - 100) * 3, 3),
        1_000..=9_999 => (2_890 + (n - 1_000) * 4, 4),
        _ => {
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut rest = n;
            while rest > 0 {
                at -= 1;
                digits[at] = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            return cut_value(&digits[at..]);
        }
    };
    let digits: &'static str = *DIGITS;
    HeaderValue::from_static(&digits[start as usize..(start + len) as usize])
}

/// `n` as a header value to be cloned for every answer: a static text (made once per
/// distinct number, for at most 1,024 of them), so that a clone is a copy of two words
/// rather than a count both workers update.
fn lasting_number(n: u64) -> HeaderValue {
    static MADE: std::sync::Mutex<Vec<(u64, &'static str)>> = std::sync::Mutex::new(Vec::new());
    if n < 10_000 {
        return number(n);
    }
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let text = match made.iter().find(|(m, _)| *m == n) {
        Some((_, text)) => *text,
        None if made.len() < 1_024 => {
            let text: &'static str = Box::leak(n.to_string().into_boxed_str());
            made.push((n, text));
            text
        }
        None => return HeaderValue::from(n),
    };
    HeaderValue::from_static(text)
}

/// An answer of the layer's own.
#[cold]
#[inline(never)]
fn answer<B: From<Bytes>>(status: StatusCode, message: &'static str, retry_after: Option<Duration>) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(after) = retry_after {
        headers.insert(http::header::RETRY_AFTER, number(seconds(after)));
    }
    response
}

/// Whole seconds, rounded up, at least 1 (what `Retry-After` and `RateLimit-Reset` take).
fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ResilienceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // One reading of the site, for all of the fast path but the loan (each reading of
        // a `Replicated` loads its cell anew).
        let site: &Site = &self.site;
        let shared = &*site.shared;
        if shared.any_excluded && excluded(request.uri().path(), &shared.config.excluded_paths) {
            return passthrough(&mut self.inner, request);
        }
        let started = Instant::now();
        let request_id = shared.request_ids.then(|| request_id_of(&request));
        let method = method_index(request.method());
        let route = site.route(route_of(&request));
        let span = request_span(method, &route.route, request_id.as_ref());
        // SAFETY (of `extend_route`): the state is the service's own route, which the
        // site lent to `tag` keeps, or the one `other_route` holds; both live in `tag`.
        #[allow(unsafe_code)]
        let (route, other_route) = match route {
            std::borrow::Cow::Borrowed(own) => (unsafe { extend_route(own) }, None),
            std::borrow::Cow::Owned(other) => (unsafe { extend_route(&other) }, Some(other)),
        };
        // The call is made whole here and filled in where it lies, then moved once, into
        // the answer's future (each move of it is a copy).
        let mut call = Call {
            permit: None,
            slot: None,
            quota: None,
            tag: Tag { span, request_id, started, method, route, _other_route: other_route, site: self.site.loan() },
        };

        // Per-client limit first: it says nothing about the service, and is the cheapest.
        call.quota = match check_client(shared, &mut request, started) {
            Ok(quota) => quota,
            Err(refusal) => return refuse(call.tag, refusal),
        };
        if let Some(bulkhead) = &shared.bulkhead {
            match bulkhead.take_free_slot() {
                // SAFETY (of `extend_slot`): the slot is of `shared.bulkhead`, which
                // `call.tag.site` keeps alive; `Call` drops it before its tag. (When
                // the breaker refuses below, the tag is given away first and the slot
                // dropped after it, here, while `self` still holds the bulkhead.)
                #[allow(unsafe_code)]
                Some(slot) => call.slot = Some(unsafe { extend_slot(slot) }),
                None if bulkhead.max_wait().is_zero() => return refuse(call.tag, Refusal::Full),
                None => {
                    let Call { tag, quota, .. } = call;
                    return off_path(&mut self.inner, |inner| wait_for_slot(tag, quota, inner, request));
                }
            }
        }
        call.permit = match admit_by_breaker(&call.tag) {
            Ok(permit) => permit,
            Err(refusal) => return refuse(call.tag, refusal),
        };
        #[cfg(feature = "chaos")]
        if let Some(injection) = injection_for(shared, &request) {
            let deadline = started + shared.config.request_timeout;
            return off_path(&mut self.inner, |inner| injected(call, injection, inner, request, deadline));
        }
        if call.tag.span.is_some() {
            return in_span(&mut self.inner, request, call, shared.timeout);
        }
        // One expression, the inner call last: the inner future is written where the
        // answer's future keeps it, not moved there (it is large: each move is a copy).
        ResponseFuture {
            kind: Kind::Guarded {
                guarded: Guarded {
                    future: time_limited(self.inner.call(request), shared.timeout),
                    call: Some(call),
                    _answer: std::marker::PhantomData,
                },
            },
        }
    }
}

/// The request's tracing span (`request`, at debug level, with its method, route and
/// request id), boxed, or `None` when no subscriber takes it (as the core keeps its
/// call spans: the answer's future carries a word, not a span).
///
/// Not the disabled span `debug_span!` makes when none does: with `tracing`'s `log`
/// feature on (axum's default features turn it on) a disabled span still formats its
/// fields and checks `log`'s level on each entry and exit, about 40 ns a request when
/// nobody looks. So a program that only has a `log` logger does not get these spans'
/// entries and exits as log records.
#[inline]
fn request_span(method: u8, route: &str, request_id: Option<&HeaderValue>) -> Option<Box<tracing::Span>> {
    if tracing::enabled!(target: "resilience::http", tracing::Level::DEBUG) {
        new_request_span(method, route, request_id)
    } else {
        None
    }
}

#[cold]
fn new_request_span(method: u8, route: &str, request_id: Option<&HeaderValue>) -> Option<Box<tracing::Span>> {
    let span = tracing::debug_span!(
        target: "resilience::http",
        "request",
        method = method_name(method),
        route = route,
        request_id = tracing::field::Empty
    );
    if let Some(id) = request_id {
        span.record("request_id", id.to_str().unwrap_or(""));
    }
    (!span.is_disabled()).then(|| Box::new(span))
}

// The paths off the fast one, out of line and marked cold: `call` stays small, so the
// code a request runs is compact (the slow paths' futures are large to build).

/// A request admitted at once whose span a subscriber takes: the inner service called
/// inside the span.
#[cold]
#[inline(never)]
fn in_span<S, ReqBody, ResBody>(
    inner: &mut S,
    request: Request<ReqBody>,
    call: Call,
    limit: TimeLimit,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let future = call.tag.in_span(|| inner.call(request));
    ResponseFuture { kind: Kind::Guarded { guarded: Guarded::new(future, limit, call) } }
}

/// A request to an excluded path: the inner service's own future, untouched.
#[cold]
#[inline(never)]
fn passthrough<S, ReqBody, ResBody>(
    inner: &mut S,
    request: Request<ReqBody>,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    ResponseFuture { kind: Kind::Passthrough { future: inner.call(request) } }
}

/// Why the layer refuses a request: a few bytes, which the fast path returns and hands
/// to [`refuse`] (the answer itself is made in [`Tag::refused`], out of line: the fast
/// path's code neither makes nor moves a `Response`).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The client is over its limit, for this long.
    RateLimited(Duration),
    /// Clients are told apart by a peer address the server does not pass on.
    NoPeerAddress,
    /// The bulkhead is full, and the request may not wait.
    Full,
    /// The route's breaker is open (for this long, when it says).
    CircuitOpen(Option<Duration>),
}

/// The layer's answer to a request it refuses at once, counted, timed and tagged.
#[cold]
#[inline(never)]
fn refuse<F, B: From<Bytes>, E>(tag: Tag, refusal: Refusal) -> ResponseFuture<F, B, E> {
    ResponseFuture { kind: Kind::Answer { response: Some(tag.refused(refusal)) } }
}

/// The answer saying `refusal`, counted as a rejection of `route` (but for a missing peer
/// address, the server's mistake rather than the client's).
#[cold]
#[inline(never)]
fn refusal_answer<B: From<Bytes>>(shared: &Shared, route: &RouteState, refusal: Refusal) -> Response<B> {
    match refusal {
        Refusal::RateLimited(after) => {
            route.rejected(0);
            let mut response = answer(StatusCode::TOO_MANY_REQUESTS, "too many requests", Some(after));
            if let Some(clients) = &shared.clients {
                put_quota(response.headers_mut(), clients, 0, seconds(after));
            }
            response
        }
        Refusal::NoPeerAddress => no_peer_address(),
        Refusal::Full => {
            route.rejected(1);
            busy()
        }
        Refusal::CircuitOpen(after) => {
            route.rejected(2);
            let after = after.unwrap_or(Duration::from_secs(1));
            answer(StatusCode::SERVICE_UNAVAILABLE, "service unavailable", Some(after))
        }
    }
}

/// A request off the fast path (a wait for a slot, an injected fault): `handle`'s future,
/// boxed, given the service that was made ready (tower's rule), a clone left in its place.
#[cold]
#[inline(never)]
fn off_path<S, ReqBody, ResBody, Fut>(
    inner: &mut S,
    handle: impl FnOnce(S) -> Fut,
) -> ResponseFuture<S::Future, ResBody, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    Fut: Future<Output = Result<Response<ResBody>, S::Error>> + Send + 'static,
{
    let clone = inner.clone();
    let ready = std::mem::replace(inner, clone);
    ResponseFuture { kind: Kind::Waiting { future: Box::pin(handle(ready)) } }
}

/// The per-client limit: what the request's client has left (when clients are limited
/// and admitted answers say so), or why the request is refused.
#[inline]
fn check_client<ReqBody>(
    shared: &Shared,
    request: &mut Request<ReqBody>,
    now: Instant,
) -> Result<Option<resilience_core::Quota>, Refusal> {
    let Some(clients) = &shared.clients else { return Ok(None) };
    let limiter = &clients.limiter;
    let peer = peer_of(request);
    let client = match client_of(request, peer, &clients.key, &clients.trusted) {
        Ok(client) => client,
        Err(NoClient::NoPeerAddress) => return Err(Refusal::NoPeerAddress),
    };
    // What the client has left is worked out only for answers that say so.
    let checked = match shared.quota_headers {
        true => limiter.check_key_quota_at(&client, now).map(Some),
        false => limiter.check_key_at(&client, now).map(|()| None),
    };
    checked.map_err(|e| Refusal::RateLimited(e.retry_after().unwrap_or(Duration::from_secs(1))))
}

/// The answer when clients are told apart by a peer address the server does not pass on.
#[cold]
#[inline(never)]
fn no_peer_address<B: From<Bytes>>() -> Response<B> {
    tracing::error!(target: "resilience::http", "per-client rate limiting by peer address needs the peer address: serve with `into_make_service_with_connect_info::<SocketAddr>()`");
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "per-client rate limiting needs the peer address: serve with into_make_service_with_connect_info::<SocketAddr>()",
        None,
    )
}

/// The `RateLimit-*` headers: the client's limit, what it has left and the seconds until
/// all of it is back.
#[inline]
fn put_quota(headers: &mut http::HeaderMap, clients: &Clients, remaining: u64, reset_seconds: u64) {
    headers.insert(RATELIMIT_LIMIT, clients.limit_value.clone());
    headers.insert(RATELIMIT_REMAINING, number(remaining));
    headers.insert(RATELIMIT_RESET, number(reset_seconds));
}

/// The answer to a full bulkhead.
fn busy<B: From<Bytes>>() -> Response<B> {
    answer(StatusCode::SERVICE_UNAVAILABLE, "service busy", Some(Duration::from_secs(1)))
}

/// Asks the route's breaker, if it has one: its permit, or the refusal while it is open.
#[inline]
fn admit_by_breaker(tag: &Tag) -> Result<Option<CallPermit<'static>>, Refusal> {
    let route = tag.route();
    let Some(breaker) = &route.breaker else { return Ok(None) };
    match breaker.try_acquire() {
        // SAFETY (of `extend_permit`): the breaker is of the route's state, which
        // `tag` keeps alive (its own route, or the state it holds); `Call` drops the
        // permit before `tag`.
        #[allow(unsafe_code)]
        Ok(permit) => Ok(Some(unsafe { extend_permit(permit) })),
        Err(e) => Err(circuit_open(&e)),
    }
}

/// The refusal while a route's breaker is open: for as long as it says.
#[cold]
#[inline(never)]
fn circuit_open(e: &ResilienceError) -> Refusal {
    Refusal::CircuitOpen(match e {
        ResilienceError::CircuitOpen { .. } => e.retry_after(),
        _ => None,
    })
}

/// Lets a bulkhead slot outlive the borrow of its bulkhead.
///
/// # Safety
///
/// The bulkhead must outlive the returned slot.
#[allow(unsafe_code)]
unsafe fn extend_slot(slot: BulkheadPermit<'_>) -> BulkheadPermit<'static> {
    // SAFETY: only the lifetime changes; the caller keeps the bulkhead alive.
    unsafe { std::mem::transmute::<BulkheadPermit<'_>, BulkheadPermit<'static>>(slot) }
}

/// Lets a route's state outlive the borrow it was found by.
///
/// # Safety
///
/// The state must outlive the returned reference.
#[allow(unsafe_code)]
unsafe fn extend_route(route: &RouteState) -> &'static RouteState {
    // SAFETY: only the lifetime changes; the caller keeps the state alive.
    unsafe { std::mem::transmute::<&RouteState, &'static RouteState>(route) }
}

/// Lets a breaker permit outlive the borrow of its breaker.
///
/// # Safety
///
/// The breaker must outlive the returned permit.
#[allow(unsafe_code)]
unsafe fn extend_permit(permit: CallPermit<'_>) -> CallPermit<'static> {
    // SAFETY: only the lifetime changes; the caller keeps the breaker alive.
    unsafe { std::mem::transmute::<CallPermit<'_>, CallPermit<'static>>(permit) }
}

/// The slow path: waits up to `bulkhead_max_wait` for a slot, then calls `inner`.
async fn wait_for_slot<S, ReqBody, ResBody>(
    tag: Tag,
    quota: Option<resilience_core::Quota>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    let site = Arc::clone(&tag.site.shared);
    let Some(bulkhead) = &site.bulkhead else { return Ok(tag.finish(busy())) };
    let slot = match bulkhead.acquire().await {
        Ok(slot) => slot,
        Err(_) => return Ok(tag.refused(Refusal::Full)),
    };
    // SAFETY (of `extend_slot`): `tag.site` keeps the bulkhead alive and `Call` drops
    // the slot before `tag`.
    #[allow(unsafe_code)]
    let slot = Some(unsafe { extend_slot(slot) });
    let permit = match admit_by_breaker(&tag) {
        Ok(permit) => permit,
        Err(refusal) => return Ok(tag.refused(refusal)),
    };
    let future = tag.in_span(|| inner.call(request));
    Guarded::new(future, site.timeout, Call { permit, slot, quota, tag }).await
}

/// The fault a request gets: what its override header asks for (when the layer takes
/// one), else the injector's choice.
#[cfg(feature = "chaos")]
fn injection_for<B>(shared: &Shared, request: &Request<B>) -> Option<resilience_core::chaos::Injection> {
    let (chaos, header) = shared.chaos.as_ref()?;
    let asked = header.as_ref().and_then(|h| request.headers().get(h));
    match asked.and_then(|v| v.to_str().ok()) {
        None => chaos.choose(),
        Some(asked) => {
            let (mut latency, mut error) = (None, false);
            for part in asked.split(',').map(str::trim) {
                match part.split_once('=') {
                    _ if part == "error" => error = true,
                    _ if part == "latency" => latency = Some(Duration::MAX),
                    Some(("latency", d)) => latency = resilience_core::parse_duration(d.trim()).or(latency),
                    _ => {}
                }
            }
            chaos.force(latency, error)
        }
    }
}

/// A request under an injected fault: the delay (inside the request timeout: a delay past
/// it answers 504), then a 500 counted by the route's breaker, or the service's answer.
#[cfg(feature = "chaos")]
async fn injected<S, ReqBody, ResBody>(
    call: Call,
    injection: resilience_core::chaos::Injection,
    mut inner: S,
    request: Request<ReqBody>,
    deadline: Instant,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    if let Some(latency) = injection.latency {
        if tokio::time::timeout_at(deadline, tokio::time::sleep(latency)).await.is_err() {
            return call.finish::<ResBody, S::Error>(None);
        }
    }
    if injection.error {
        let Call { permit, slot, quota: _, tag } = call;
        if let Some(permit) = permit {
            permit.failure();
        }
        drop(slot);
        let mut response = answer(StatusCode::INTERNAL_SERVER_ERROR, "injected fault", None);
        response.headers_mut().insert(X_CHAOS, HeaderValue::from_static("error"));
        drop(injection);
        return Ok(tag.finish(response));
    }
    drop(injection);
    let future = call.tag.in_span(|| inner.call(request));
    Guarded::new(future, TimeLimit::new(deadline.saturating_duration_since(Instant::now())), call).await
}

#[cfg(feature = "chaos")]
#[allow(clippy::declare_interior_mutable_const)] // see `X_REQUEST_ID`
const X_CHAOS: http::HeaderName = http::HeaderName::from_static("x-resilience-chaos");

/// What every answer of a guarded request gets at its end: its request id, its count and
/// its duration.
struct Tag {
    /// `None` when no subscriber takes the request's span.
    span: Option<Box<tracing::Span>>,
    /// `None` when the layer gives requests no id.
    request_id: Option<HeaderValue>,
    started: Instant,
    method: u8,
    /// The route's state: the service's own (which `site` keeps) or `other_route`.
    route: &'static RouteState,
    /// The route's state when it is not the service's own (`site.route`): held, so
    /// that `route` stays valid.
    _other_route: Option<Arc<RouteState>>,
    /// Lent rather than an `Arc` clone: no count that every core's requests share.
    site: Loan<Site>,
}

impl Tag {
    /// `f`'s result, run inside the request's span if it has one.
    #[inline]
    fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.span.as_deref().map(tracing::Span::enter);
        f()
    }

    #[inline]
    fn route(&self) -> &RouteState {
        self.route
    }

    /// The answer saying `refusal`, counted, timed and given the request id.
    fn refused<B: From<Bytes>>(self, refusal: Refusal) -> Response<B> {
        let response = refusal_answer(&self.site.shared, self.route(), refusal);
        self.finish(response)
    }

    /// `response`, counted, timed and given the request id.
    fn finish<B>(mut self, mut response: Response<B>) -> Response<B> {
        self.stamp(&mut response);
        response
    }

    /// Counts and times `response` and gives it the request id (taken: stamp an answer
    /// once), in place: neither the answer nor the tag moves (each move is a copy).
    #[inline]
    fn stamp<B>(&mut self, response: &mut Response<B>) {
        let route = self.route();
        route.count(self.method, response.status().as_u16());
        let started = self.started;
        route.duration(self.method).record_with(|| started.elapsed());
        if let Some(id) = self.request_id.take() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
    }
}

/// A request let through: what it holds until its answer, dropped in this order (the
/// permits before the tag that keeps their breaker and bulkhead alive).
struct Call {
    permit: Option<CallPermit<'static>>,
    slot: Option<BulkheadPermit<'static>>,
    quota: Option<resilience_core::Quota>,
    tag: Tag,
}

impl Call {
    /// The answer to `outcome` (`None`: the inner service ran out of time), recorded by
    /// the route's breaker.
    #[cfg(feature = "chaos")]
    fn finish<B: From<Bytes>, E>(mut self, outcome: Option<Result<Response<B>, E>>) -> Result<Response<B>, E> {
        match outcome {
            Some(Ok(mut response)) => {
                self.answered(&mut response);
                Ok(response)
            }
            Some(Err(e)) => self.unanswered(Some(e)),
            None => self.unanswered(None),
        }
    }

    /// Records the inner service's answer and completes it, in place: neither the answer
    /// nor the call moves (each move is a copy). The permit and the slot are given back
    /// here; what is left of the call (its tag) is the caller's to drop.
    #[inline]
    fn answered<B>(&mut self, response: &mut Response<B>) {
        if let Some(permit) = self.permit.take() {
            if response.status().is_server_error() {
                permit.failure();
            } else {
                permit.success();
            }
        }
        self.slot = None;
        complete(self.quota, &mut self.tag, response);
    }

    /// The inner service's error, or (`None`) the 504 when it ran out of time: a
    /// failure for the route's breaker.
    #[cold]
    #[inline(never)]
    fn unanswered<B: From<Bytes>, E>(self, error: Option<E>) -> Result<Response<B>, E> {
        let Self { permit, slot, quota, mut tag } = self;
        if let Some(permit) = permit {
            permit.failure();
        }
        drop(slot);
        if let Some(e) = error {
            return Err(e);
        }
        tag.route().rejected(3);
        let mut response = answer(StatusCode::GATEWAY_TIMEOUT, "request timed out", None);
        complete(quota, &mut tag, &mut response);
        Ok(response)
    }
}

/// Gives an admitted request's answer what the client has left (when answers say so),
/// then counts, times and tags it.
#[inline]
fn complete<B>(quota: Option<resilience_core::Quota>, tag: &mut Tag, response: &mut Response<B>) {
    if let (Some(q), Some(clients)) = (quota, &tag.site.shared.clients) {
        put_quota(response.headers_mut(), clients, q.remaining.into(), seconds(q.reset));
    }
    tag.stamp(response);
}

// Constants, not statics: each use is a fresh name made at compile time, which an insert
// takes by value (a `&'static HeaderName` is cloned through a call per insert).
#[allow(clippy::declare_interior_mutable_const)]
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
#[allow(clippy::declare_interior_mutable_const)]
const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
#[allow(clippy::declare_interior_mutable_const)]
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
#[allow(clippy::declare_interior_mutable_const)]
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");

pin_project_lite::pin_project! {
    /// The inner service's future under the request timeout, limited the way the core
    /// limits a pipeline's attempt: the timer is armed only when the inner future first
    /// returns `Pending` (an answer ready at once never touches a timer), and a long
    /// timeout is kept by the core's helper thread rather than tokio's timer wheel.
    struct Guarded<F, B, E> {
        #[pin]
        future: TimeLimited<F>,
        call: Option<Call>,
        _answer: std::marker::PhantomData<fn() -> (B, E)>,
    }
}

impl<F: Future, B, E> Guarded<F, B, E> {
    /// `future` with `limit` left of the request's timeout.
    fn new(future: F, limit: TimeLimit, call: Call) -> Self {
        let future = time_limited(future, limit);
        Self { future, call: Some(call), _answer: std::marker::PhantomData }
    }
}

impl<F, B: From<Bytes>, E> Future for Guarded<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut future = this.future;
        let Some(call) = this.call.as_mut() else { panic!("ResilienceService's future polled after it completed") };
        // The inner service's poll is this poll's own output: a ready answer is completed
        // where it lies and returned as it is, not unwrapped and wrapped again (each a
        // copy of it).
        let mut polled = match call.tag.span.as_deref() {
            None => future.as_mut().poll_inner(cx),
            Some(span) => poll_in_span(span, future.as_mut(), cx),
        };
        match &mut polled {
            Poll::Ready(Ok(response)) => {
                call.answered(response);
                *this.call = None;
                return polled;
            }
            Poll::Ready(Err(_)) => {}
            Poll::Pending if future.expired(cx) => {}
            Poll::Pending => return Poll::Pending,
        }
        // The inner service's error, or (`None`) it ran out of time.
        let error = match polled {
            Poll::Ready(Err(e)) => Some(e),
            _ => None,
        };
        let Some(call) = this.call.take() else { unreachable!("checked above") };
        Poll::Ready(call.unanswered(error))
    }
}

/// `future` polled inside `span` (out of line: the span's entry and exit, and their
/// `log` records, kept off the lines of a request that has no span).
#[cold]
#[inline(never)]
fn poll_in_span<F: Future>(
    span: &tracing::Span,
    future: Pin<&mut TimeLimited<F>>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    let _entered = span.enter();
    future.poll_inner(cx)
}

pin_project_lite::pin_project! {
    /// The future of a [`ResilienceService`]'s answer.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

type Waiting<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        /// An excluded path: the inner service's own future.
        Passthrough { #[pin] future: F },
        /// The layer's own answer, made at once.
        Answer { response: Option<Response<B>> },
        /// Admitted at once: the inner future under the timeout.
        Guarded { #[pin] guarded: Guarded<F, B, E> },
        /// Waiting for a bulkhead slot.
        Waiting { future: Waiting<B, E> },
    }
}

impl<F, B: From<Bytes>, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => future.poll(cx),
            KindProj::Answer { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResilienceService's future polled after it completed"),
            },
            KindProj::Guarded { guarded } => guarded.poll(cx),
            KindProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Shared {
    /// The state of `route`, made on first use.
    fn route(&self, route: &str) -> Arc<RouteState> {
        if let Some(state) = self.routes.read().unwrap_or_else(|p| p.into_inner()).get(route) {
            return Arc::clone(state);
        }
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = routes.get(route) {
            return Arc::clone(state);
        }
        let state = Arc::new(RouteState {
            breaker: if self.config.enable_circuit_breaker { self.breaker(route) } else { None },
            methods: std::array::from_fn(|_| MethodHandles {
                ok: std::sync::OnceLock::new(),
                duration: std::sync::OnceLock::new(),
            }),
            route: Arc::from(route),
            requests: Default::default(),
            rejected: Counters::new(REASONS.map(
                |reason| counter!("resilience_http_rejected_total", "route" => route.to_owned(), "reason" => reason),
            )),
        });
        routes.insert(Box::from(route), Arc::clone(&state));
        state
    }

    /// A breaker for `route`.
    fn breaker(&self, route: &str) -> Option<CircuitBreaker> {
        let config = CircuitBreakerConfig {
            failure_threshold: NonZeroU32::new(self.config.circuit_breaker_failure_threshold),
            recovery_timeout: self.config.circuit_breaker_recovery_timeout,
            ..Default::default()
        };
        // `try_new` checked that the threshold fits the window, so this does not fail.
        match CircuitBreaker::new(format!("http {route}"), config) {
            Ok(breaker) => Some(breaker),
            Err(error) => {
                tracing::error!(target: "resilience::http", route, %error, "route breaker refused");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{hex8, lasting_number, method_index, new_request_id, number, METHODS};

    /// A standard method's index is its place in `METHODS`; any other's is 9.
    #[test]
    fn methods_are_indexed_by_their_names() {
        for (i, name) in METHODS.iter().enumerate() {
            let method = http::Method::from_bytes(name.as_bytes()).expect("a method");
            assert_eq!(usize::from(method_index(&method)), i, "{name}");
        }
        assert_eq!(method_index(&http::Method::from_bytes(b"PROPFIND").expect("a method")), 9);
    }

    /// Every number's header value is its decimal text, from the static table or not.
    #[test]
    fn numbers_are_their_decimal_text() {
        for n in (0..12_000u64).chain([u64::from(u32::MAX), u64::MAX]) {
            assert_eq!(number(n).to_str().ok(), Some(n.to_string().as_str()), "{n}");
            assert_eq!(lasting_number(n).to_str().ok(), Some(n.to_string().as_str()), "{n}");
        }
    }

    /// Eight hex digits at once are `format!`'s eight.
    #[test]
    fn hex8_matches_format() {
        let mut n = 0x0123_4567u32;
        for k in 0..100_000u32 {
            assert_eq!(std::str::from_utf8(&hex8(n)).ok(), Some(format!("{n:08x}").as_str()), "{n:#x}");
            n = n.wrapping_mul(2_654_435_761).wrapping_add(k);
        }
        for n in [0, 9, 10, 15, 16, 0x9999_9999, 0xaaaa_aaaa, 0xffff_ffff] {
            assert_eq!(std::str::from_utf8(&hex8(n)).ok(), Some(format!("{n:08x}").as_str()), "{n:#x}");
        }
    }

    /// Request ids cut from a thread's blocks are distinct, well formed, and survive
    /// the block they came from being replaced.
    #[test]
    fn request_ids_from_blocks_are_distinct() {
        let ids: Vec<_> = (0..1_000).map(|_| new_request_id()).collect();
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            let text = id.to_str().expect("ascii");
            assert_eq!(text.len(), 25);
            assert_eq!(text.as_bytes()[8], b'-');
            assert!(text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
            assert!(seen.insert(text.to_owned()), "{text} twice");
        }
    }
}
