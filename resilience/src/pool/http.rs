//! The HTTP pool: reqwest's connection pool with the pool's limits, under its
//! dependency's policies.
//!
//! TLS is rustls with the `ring` crypto provider (no OpenSSL; a far smaller C and
//! assembly build than `aws-lc-rs`, the default of reqwest's `rustls` feature):
//! certificates are checked against the platform's roots plus the pool's
//! `root_certificates`. If the process has not chosen a rustls provider, building the
//! first pool installs `ring` as the process default.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use resilience_core::{
    registry, Dependency, DependencyKind, DependencyType, ErrorPolicy, ResilienceError, SemaphoreBulkhead,
    SemaphoreBulkheadConfig, Timeout,
};

use super::state::PoolState;
use super::{config_error, PoolError};

/// An HTTP pool's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpPoolConfig {
    /// Connections in use at once, over all hosts. Default 100.
    pub max_connections: usize,
    /// Connections in use at once to one host (`host:port`): requests beyond it wait up
    /// to `max_wait`, then fail with `BulkheadFull`. Also how many idle connections per
    /// host are kept for reuse. (A connection just freed goes back to reqwest's pool a
    /// moment after its answer is read; a request in that moment may open another one,
    /// so open connections can briefly exceed this by one.) Default 30.
    pub max_connections_per_host: usize,
    /// How long opening a connection may take. Default 10 s.
    pub connect_timeout: Duration,
    /// A cap on each request (answer and body included), reported as `Timeout`; `None`
    /// (the default) leaves it to the dependency's timeout policy.
    pub request_timeout: Option<Duration>,
    /// How long an idle connection is kept for reuse. Default 300 s.
    pub max_idle_time: Duration,
    /// How long a request waits for a connection slot (overall or per host) before it
    /// fails with `BulkheadFull`. Default zero: fail at once.
    pub max_wait: Duration,
    /// How often a [`PoolHealthChecker`](super::PoolHealthChecker) checks this pool at
    /// most (it looks every `check_interval` and skips a pool checked more recently).
    /// Default 60 s.
    pub health_check_interval: Duration,
    /// What relative URLs (`"/users/7"`) are joined to. Default none.
    pub base_url: Option<String>,
    /// The path a health check asks for (joined to `base_url`; a check needs both).
    /// Default `/health`.
    pub health_check_path: Option<String>,
    /// Answers compressed with gzip are decoded (and `Accept-Encoding: gzip` is sent).
    /// Default true.
    pub gzip: bool,
    /// PEM-encoded root certificates trusted besides the platform's.
    pub root_certificates: Vec<Vec<u8>>,
}

impl Default for HttpPoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 100,
            max_connections_per_host: 30,
            connect_timeout: Duration::from_secs(10),
            request_timeout: None,
            max_idle_time: Duration::from_secs(300),
            max_wait: Duration::ZERO,
            health_check_interval: Duration::from_secs(60),
            base_url: None,
            health_check_path: Some(String::from("/health")),
            gzip: true,
            root_certificates: Vec::new(),
        }
    }
}

/// An answer, with its whole body read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pool: Arc<str>,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpResponse {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body. (Read before the request returned: the connection is back in the pool.)
    pub async fn bytes(self) -> Result<Bytes, PoolError> {
        Ok(self.body)
    }

    /// The body as text (UTF-8, invalid sequences replaced).
    pub async fn text(self) -> Result<String, PoolError> {
        Ok(String::from_utf8_lossy(&self.body).into_owned())
    }

    /// The body parsed as JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, PoolError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| PoolError::Body { pool: self.pool.to_string(), message: e.to_string() })
    }
}

/// How one attempt failed, for the pipeline: a policy's error, no answer, or a 5xx
/// answer (a failure for the breaker and worth a retry, returned as the answer if it is
/// the last).
#[derive(Debug)]
enum AttemptError {
    Policy(ResilienceError),
    Transport(String),
    Status(Box<HttpResponse>),
}

impl From<ResilienceError> for AttemptError {
    fn from(error: ResilienceError) -> Self {
        Self::Policy(error)
    }
}

/// A rejection by the pool's own connection limits (a bulkhead) says nothing about the
/// server: it is neither recorded by the breaker nor retried.
fn not_rejected(error: &AttemptError) -> bool {
    !matches!(error, AttemptError::Policy(e) if e.is_rejection())
}

fn never(_: &AttemptError) -> bool {
    false
}

struct Inner {
    name: Arc<str>,
    config: HttpPoolConfig,
    client: reqwest::Client,
    base: Option<reqwest::Url>,
    dependency: &'static Dependency,
    total: SemaphoreBulkhead,
    /// The bulkhead of the first host the pool talked to, found without a lock (most
    /// pools talk to one host), then one per other `host:port` in a short list.
    first_host: std::sync::OnceLock<(String, u16, SemaphoreBulkhead)>,
    hosts: Mutex<Vec<(String, u16, SemaphoreBulkhead)>>,
    state: PoolState,
}

/// A pool of HTTP connections whose every request goes through the policies of the
/// dependency named like the pool. Cloning gives another handle to the same pool.
///
/// - `get`, `post` and `request` take a full URL or a path joined to `base_url`.
/// - A request waits up to `max_wait` for a connection slot (overall, then for its
///   host), else fails with `BulkheadFull`; the slot is held until the whole body is read.
/// - Transport errors and 5xx answers count as failures; 4xx answers do not. Only
///   idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, `TRACE`) are retried,
///   unless [`send`](Self::send) is told otherwise. A 5xx answer that still stands when
///   the attempts run out is returned as the answer (check `status()`).
/// - Reads (`GET`, `HEAD`, `OPTIONS`, `TRACE`, when retried) are hedged if the
///   dependency has a `hedge` (see `resilience::hedge`).
#[derive(Clone)]
pub struct HttpPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPool")
            .field("name", &self.inner.name)
            .field("in_use", &self.in_use())
            .field("max_connections", &self.inner.config.max_connections)
            .finish_non_exhaustive()
    }
}

fn positive(pool: &str, key: &str, n: usize) -> Result<NonZeroUsize, PoolError> {
    NonZeroUsize::new(n).ok_or_else(|| config_error(pool, format!("`{key}` must be at least 1")))
}

impl HttpPool {
    /// Builds the pool `name`; its dependency (created with `dependency_type`'s preset,
    /// `ExternalApi` by default, if nothing registered it) is looked up, never replaced.
    pub(super) fn new(
        name: &str,
        config: HttpPoolConfig,
        dependency_type: Option<DependencyType>,
    ) -> Result<Self, PoolError> {
        let max = positive(name, "max_connections", config.max_connections)?;
        let per_host = positive(name, "max_connections_per_host", config.max_connections_per_host)?;
        let base = config
            .base_url
            .as_deref()
            .map(|url| reqwest::Url::parse(url).map_err(|e| config_error(name, format!("`base_url` `{url}`: {e}"))))
            .transpose()?;
        // Checked as a timeout; applied by each call's pipeline (see `exchange`).
        if let Some(limit) = config.request_timeout {
            Timeout::new(name, limit).map_err(|e| config_error(name, e))?;
        }
        let total =
            SemaphoreBulkhead::new(name, SemaphoreBulkheadConfig { max_concurrent: max, max_wait: config.max_wait })
                .map_err(|e| config_error(name, e))?;
        SemaphoreBulkhead::new(name, SemaphoreBulkheadConfig { max_concurrent: per_host, max_wait: config.max_wait })
            .map_err(|e| config_error(name, e))?;
        let client = client(name, &config)?;
        let kind = DependencyKind::Type(dependency_type.unwrap_or(DependencyType::ExternalApi));
        let dependency = registry().resolve_as(name, kind, &Default::default());
        let state = PoolState::new(name, "http", config.max_connections, config.health_check_interval);
        Ok(Self {
            inner: Arc::new(Inner {
                name: Arc::from(name),
                config,
                client,
                base,
                dependency,
                total,
                first_host: std::sync::OnceLock::new(),
                hosts: Mutex::new(Vec::new()),
                state,
            }),
        })
    }

    /// The pool's name (also its dependency's).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The pool's settings.
    pub fn config(&self) -> &HttpPoolConfig {
        &self.inner.config
    }

    /// Connections in use now.
    pub fn in_use(&self) -> usize {
        self.inner.config.max_connections.saturating_sub(self.inner.total.available())
    }

    /// The reqwest client underneath (for what this pool does not wrap; requests made
    /// with it bypass the policies).
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// `GET url`.
    pub async fn get(&self, url: impl AsRef<str>) -> Result<HttpResponse, PoolError> {
        let url = self.resolve(url.as_ref())?;
        self.exchange(Method::GET, url, HeaderMap::new(), Bytes::new(), true).await
    }

    /// `POST url` with `body` (not retried: `POST` is not idempotent).
    pub async fn post(&self, url: impl AsRef<str>, body: impl Into<Bytes>) -> Result<HttpResponse, PoolError> {
        let url = self.resolve(url.as_ref())?;
        self.exchange(Method::POST, url, HeaderMap::new(), body.into(), false).await
    }

    /// Sends `request` (its URI full, or a path joined to `base_url`), retried when its
    /// method is idempotent.
    pub async fn request<B: Into<Bytes>>(&self, request: http::Request<B>) -> Result<HttpResponse, PoolError> {
        let idempotent = is_idempotent(request.method());
        let (parts, body) = request.into_parts();
        let url = self.resolve(&parts.uri.to_string())?;
        self.exchange(parts.method, url, parts.headers, body.into(), idempotent).await
    }

    fn resolve(&self, url: &str) -> Result<reqwest::Url, PoolError> {
        let bad = |message: String| PoolError::Request { pool: self.inner.name.to_string(), message };
        match reqwest::Url::parse(url) {
            Ok(url) => Ok(url),
            Err(url::ParseError::RelativeUrlWithoutBase) => match &self.inner.base {
                Some(base) => base.join(url).map_err(|e| bad(format!("`{url}` against `{base}`: {e}"))),
                None => Err(bad(format!("`{url}` is relative and the pool has no `base_url`"))),
            },
            Err(e) => Err(bad(format!("`{url}`: {e}"))),
        }
    }

    /// Sends `request` through the dependency's policies; `retry` says whether a failed
    /// attempt may be repeated (give `true` only for requests safe to repeat).
    pub async fn send(&self, request: http::Request<Bytes>, retry: bool) -> Result<HttpResponse, PoolError> {
        let (parts, body) = request.into_parts();
        let url = self.resolve(&parts.uri.to_string())?;
        self.exchange(parts.method, url, parts.headers, body, retry).await
    }

    // A plain `fn` returning an `async move` block rather than an `async fn`: an `async
    // fn`'s future keeps its arguments twice (as received, and bound again in its body),
    // and these are 248 bytes.
    #[allow(clippy::manual_async_fn)]
    fn exchange(
        &self,
        method: Method,
        url: reqwest::Url,
        headers: HeaderMap,
        body: Bytes,
        retry: bool,
    ) -> impl Future<Output = Result<HttpResponse, PoolError>> + Send + '_ {
        async move {
            let policy = ErrorPolicy { retry_if: if retry { not_rejected } else { never }, record_if: not_rejected };
            let pipeline = self.inner.dependency.pipeline();
            let read = is_safe(&method);
            let attempt = || self.attempt(&method, &url, &headers, &body);
            // `request_timeout` limits each attempt together with the dependency's own
            // timeout (the shorter wins): one timer per attempt. A read is hedged if the
            // dependency has a hedge.
            let limit = self.inner.config.request_timeout;
            let outcome = super::call_through(&pipeline, &policy, read && retry, limit, attempt).await;
            match outcome {
                Ok(response) => Ok(response),
                Err(AttemptError::Status(response)) => Ok(*response),
                Err(AttemptError::Policy(error)) => {
                    Err(PoolError::Rejected { pool: self.inner.name.to_string(), error })
                }
                Err(AttemptError::Transport(message)) => {
                    Err(PoolError::Transport { pool: self.inner.name.to_string(), message })
                }
            }
        }
    }

    /// The bulkhead of connections to `url`'s host: the first host's lent (no count to
    /// bump), another's cloned from the list.
    fn host(&self, url: &reqwest::Url) -> std::borrow::Cow<'_, SemaphoreBulkhead> {
        use std::borrow::Cow;
        let (host, port) = (url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
        let (h, p, b) = self.inner.first_host.get_or_init(|| (host.to_owned(), port, self.new_host()));
        if h == host && *p == port {
            return Cow::Borrowed(b);
        }
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, b)) = hosts.iter().find(|(h, p, _)| h == host && *p == port) {
            return Cow::Owned(b.clone());
        }
        let b = self.new_host();
        hosts.push((host.to_owned(), port, b.clone()));
        Cow::Owned(b)
    }

    /// A new host's bulkhead.
    fn new_host(&self) -> SemaphoreBulkhead {
        let config = SemaphoreBulkheadConfig {
            max_concurrent: NonZeroUsize::new(self.inner.config.max_connections_per_host).unwrap_or(NonZeroUsize::MIN),
            max_wait: self.inner.config.max_wait,
        };
        // Validated when the pool was built, with the same values.
        SemaphoreBulkhead::new(Arc::clone(&self.inner.name), config).unwrap_or_else(|_| self.inner.total.clone())
    }

    /// One attempt; it borrows the request's parts (copied into the request it sends,
    /// before its first wait) so that the call's future holds them once.
    async fn attempt(
        &self,
        method: &Method,
        url: &reqwest::Url,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<HttpResponse, AttemptError> {
        let inner = &*self.inner;
        let host = self.host(url);
        // The clock is read only when a slot may have to be waited for.
        let waited = (inner.total.available() == 0 || host.available() == 0).then(Instant::now);
        let _total = inner.total.acquire().await?;
        let _host = host.acquire().await?;
        inner.state.started(waited);
        let result = async {
            // Headers and body only when there are some (or the method has a body): each
            // step of the builder moves it, and it is large.
            let mut request = inner.client.request(method.clone(), url.clone());
            if !headers.is_empty() {
                request = request.headers(headers.clone());
            }
            if !body.is_empty() || !is_safe(method) {
                request = request.body(body.clone());
            }
            let mut response = request.send().await.map_err(|e| AttemptError::Transport(describe(&e)))?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let body = read_body(&mut response).await.map_err(|e| AttemptError::Transport(describe(&e)))?;
            Ok::<_, AttemptError>(HttpResponse { pool: Arc::clone(&inner.name), status, headers, body })
        }
        .await;
        let result = match result {
            Ok(response) if response.status.is_server_error() => Err(AttemptError::Status(Box::new(response))),
            other => other,
        };
        if result.is_err() {
            inner.state.failed();
        }
        result
    }

    pub(super) fn state(&self) -> &PoolState {
        &self.inner.state
    }

    /// Asks for the health path once, outside the policies (a check must reach the
    /// server while the breaker is open). `None` when the pool has no health URL.
    pub(super) async fn check(&self) -> Option<Result<(), String>> {
        let inner = &*self.inner;
        let base = inner.base.as_ref()?;
        let path = inner.config.health_check_path.as_deref()?;
        let url = match base.join(path) {
            Ok(url) => url,
            Err(e) => return Some(Err(format!("health URL: {e}"))),
        };
        let limit = inner.config.request_timeout.unwrap_or(inner.config.connect_timeout);
        let outcome = match tokio::time::timeout(limit, inner.client.get(url).send()).await {
            Err(_) => Err(format!("no answer within {limit:?}")),
            Ok(Err(e)) => Err(describe(&e)),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("answered {}", response.status())),
        };
        Some(outcome)
    }
}

/// The whole body of `response`, read chunk by chunk: a body of one chunk is that chunk,
/// not a copy. (`Response::bytes` does the same with a future of 568 bytes, a third of
/// this pool's request future; this one holds a chunk's.)
async fn read_body(response: &mut reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let Some(first) = response.chunk().await? else { return Ok(Bytes::new()) };
    let Some(second) = response.chunk().await? else { return Ok(first) };
    let mut body = bytes::BytesMut::with_capacity(first.len() + second.len());
    body.extend_from_slice(&first);
    body.extend_from_slice(&second);
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Whether `method` only reads (RFC 9110's safe methods): such a request may be hedged,
/// and carries no body unless it was given one.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Whether a request with `method` may be sent again (RFC 9110's idempotent methods).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE)
}

/// Makes `ring` the process's rustls crypto provider, unless one is installed already.
///
/// The pools do this themselves. Call it before building a reqwest client of your own
/// when your reqwest has no TLS provider of its own (with this crate's features it is
/// built with `rustls-no-provider`, and panics when it finds none).
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only if another thread installed one meanwhile, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A transport error in a line: its kind, then reqwest's chain of causes.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "connect"
    } else if error.is_timeout() {
        "timeout"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut message = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// The reqwest client of a pool: connection reuse, timeouts, gzip, rustls with `ring`.
fn client(name: &str, config: &HttpPoolConfig) -> Result<reqwest::Client, PoolError> {
    install_crypto_provider();
    let mut roots = Vec::with_capacity(config.root_certificates.len());
    for (i, pem) in config.root_certificates.iter().enumerate() {
        roots.push(
            reqwest::Certificate::from_pem(pem)
                .map_err(|e| config_error(name, format!("`root_certificates[{i}]` is not a PEM certificate: {e}")))?,
        );
    }
    reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(config.max_idle_time)
        .pool_max_idle_per_host(config.max_connections_per_host)
        .gzip(config.gzip)
        .tls_certs_merge(roots)
        .build()
        .map_err(|e| config_error(name, e))
}
