//! Sending the requests: one HTTP/1.1 connection per virtual user (closed model), or a
//! pool of keep-alive connections that grows as needed (open model).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::record::{ErrorKind, Outcome};
use super::wire::WireRequest;
use super::LoadTestError;

/// Where the requests go.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `http://host:port`, for the probes of `/resilience`.
    pub(crate) origin: String,
    pub(crate) address: SocketAddr,
    authority: HeaderValue,
    /// The URL's path without its trailing `/` (empty for none).
    prefix: String,
}

impl Target {
    /// Parses `url` and resolves its host once.
    pub(crate) async fn resolve(url: &str) -> Result<Self, LoadTestError> {
        let bad = |why: String| LoadTestError::InvalidScenario { field: "target_url", message: why };
        let parsed = url::Url::parse(url).map_err(|e| bad(format!("`{url}` is not a URL: {e}")))?;
        match parsed.scheme() {
            "http" => {}
            "https" => return Err(bad(format!("`{url}`: https targets are not supported; load-test over plain http"))),
            other => return Err(bad(format!("`{url}`: the scheme must be http, not {other}"))),
        }
        let host = parsed.host_str().ok_or_else(|| bad(format!("`{url}` has no host")))?.to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let lookup = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let address = tokio::net::lookup_host((lookup.as_str(), port))
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| LoadTestError::Unreachable {
                url: url.to_owned(),
                reason: format!("cannot resolve {host}"),
            })?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let authority = HeaderValue::from_str(&authority).map_err(|e| bad(format!("`{url}`: {e}")))?;
        let prefix = parsed.path().trim_end_matches('/').to_owned();
        Ok(Self { origin: format!("http://{address}"), address, authority, prefix })
    }

    /// Makes sure something listens there.
    pub(crate) async fn check_reachable(&self, url: &str, within: Duration) -> Result<(), LoadTestError> {
        let unreachable = |reason: String| LoadTestError::Unreachable { url: url.to_owned(), reason };
        match tokio::time::timeout(within, tokio::net::TcpStream::connect(self.address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!("no connection within {within:?}"))),
        }
    }
}

/// What every request of a run is made from.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    method: http::Method,
    /// The same as absolute URIs, for the pooled client.
    absolute: Vec<Uri>,
    /// The same as bytes on the wire, for the closed model's own client.
    wire: Vec<WireRequest>,
    headers: HeaderMap,
    body: Bytes,
}

impl RequestTemplate {
    pub(crate) fn new(
        target: &Target,
        method: http::Method,
        paths: &[String],
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Self, LoadTestError> {
        let bad = |field, message| LoadTestError::InvalidScenario { field, message };
        if paths.is_empty() {
            return Err(bad("request_paths", String::from("needs at least one path")));
        }
        let mut origin_form = Vec::with_capacity(paths.len());
        let mut absolute = Vec::with_capacity(paths.len());
        for path in paths {
            let joined = if path.starts_with('/') {
                format!("{}{path}", target.prefix)
            } else {
                format!("{}/{path}", target.prefix)
            };
            let uri: Uri = joined.parse().map_err(|e| bad("request_paths", format!("`{path}` is not a path: {e}")))?;
            if uri.scheme().is_some() {
                return Err(bad("request_paths", format!("`{path}` must be a path, not a URL")));
            }
            let full = format!("{}{joined}", target.origin);
            absolute.push(full.parse().map_err(|e| bad("request_paths", format!("`{path}`: {e}")))?);
            origin_form.push(uri);
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| bad("headers", format!("`{name}` is not a header name: {e}")))?;
            if n == http::header::CONTENT_LENGTH || n == http::header::TRANSFER_ENCODING {
                return Err(bad("headers", format!("`{name}` is set by the load tester from the body")));
            }
            let v = HeaderValue::from_str(value.trim())
                .map_err(|e| bad("headers", format!("the value of `{name}` is not a header value: {e}")))?;
            map.append(n, v);
        }
        if !map.contains_key(http::header::HOST) {
            map.insert(http::header::HOST, target.authority.clone());
        }
        let wire = origin_form.iter().map(|uri| WireRequest::new(&method, &uri.to_string(), "", &map, &body)).collect();
        Ok(Self { method, absolute, wire, headers: map, body })
    }

    /// Request `i` (paths are taken in turn) for the pooled client.
    fn build(&self, i: usize) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.absolute[i % self.absolute.len()].clone();
        *request.headers_mut() = self.headers.clone();
        request
    }

    /// Request `i` as bytes on the wire.
    pub(crate) fn wire(&self, i: usize) -> &WireRequest {
        &self.wire[i % self.wire.len()]
    }

    pub(crate) fn body_len(&self) -> u64 {
        self.body.len() as u64
    }
}

/// Why a hyper error ended a request.
fn classify(error: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return ErrorKind::Reset;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return ErrorKind::of_io(io);
        }
        source = e.source();
    }
    ErrorKind::Other
}

/// Reads a body to its end, counting its bytes.
async fn drain(mut body: hyper::body::Incoming) -> Result<u64, ErrorKind> {
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(e) => return Err(classify(&e)),
        }
    }
    Ok(bytes)
}

/// The open model's client: keep-alive connections, as many as requests in flight.
#[derive(Debug, Clone)]
pub(crate) struct Pooled {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Pooled {
    pub(crate) fn new() -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { client }
    }

    /// Sends request `i`: its outcome and the bytes of the answer's body.
    pub(crate) async fn send(&self, template: &RequestTemplate, i: usize, timeout: Duration) -> (Outcome, u64) {
        let exchange = async {
            let response = self.client.request(template.build(i)).await.map_err(|e| {
                if e.is_connect() {
                    ErrorKind::Connect
                } else {
                    classify(&e)
                }
            })?;
            let status = response.status().as_u16();
            let bytes = drain(response.into_body()).await?;
            Ok::<_, ErrorKind>((status, bytes))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((status, bytes))) => (Outcome::Status(status), bytes),
            Ok(Err(kind)) => (Outcome::Error(kind), 0),
            Err(_) => (Outcome::Error(ErrorKind::Timeout), 0),
        }
    }

    /// GETs `url` and returns the body, for the probes of `/resilience`.
    pub(crate) async fn get_text(&self, url: &str, timeout: Duration) -> Result<(u16, String), String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let request = Request::get(uri).body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer from {url} within {timeout:?}"))?
    }
}
