//! Real HTTP servers on 127.0.0.1 for the pool tests: plain or TLS (with a certificate
//! made by the test), counting the connections they accept, stoppable and restartable on
//! the same port.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What a server answers: a request in, an answer out.
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>> + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// An answer with `status` and `body`.
pub fn answer(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(body.into())).expect("a valid answer")
}

/// A certificate for `127.0.0.1` and `localhost`, and its key, made for one test.
pub struct TestCertificate {
    /// The certificate, PEM.
    pub pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl TestCertificate {
    pub fn new() -> Self {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names).expect("certificate");
        let der = rustls::pki_types::CertificateDer::from(cert.der().to_vec());
        let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .expect("server config");
        Self { pem: cert.pem(), config: Arc::new(config) }
    }
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Connections accepted since the server first started.
    pub accepted: Arc<AtomicUsize>,
    /// Requests being answered now, and the most at once.
    pub in_flight: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
    handler: Handler,
    tls: Option<Arc<rustls::ServerConfig>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// While stopped: the port, bound but not listening, so that connections are refused
    /// and no other test's server can take it.
    reserved: Mutex<Option<tokio::net::TcpSocket>>,
}

impl TestServer {
    /// Starts a plain HTTP server on a free port of 127.0.0.1.
    pub async fn start(handler: Handler) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("address"), handler, None).await
    }

    /// Starts an HTTPS server with `certificate`.
    pub async fn start_tls(handler: Handler, certificate: &TestCertificate) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("address"), handler, Some(Arc::clone(&certificate.config))).await
    }

    async fn start_on(addr: SocketAddr, handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind 127.0.0.1");
        let server = Self {
            addr: listener.local_addr().expect("local address"),
            accepted: Arc::default(),
            in_flight: Arc::default(),
            peak: Arc::default(),
            handler,
            tls,
            task: Mutex::new(None),
            reserved: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let (handler, accepted, tls) = (Arc::clone(&self.handler), Arc::clone(&self.accepted), self.tls.clone());
        let (in_flight, peak) = (Arc::clone(&self.in_flight), Arc::clone(&self.peak));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                accepted.fetch_add(1, SeqCst);
                let (handler, tls) = (Arc::clone(&handler), tls.clone());
                let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (handler, in_flight, peak) =
                            (Arc::clone(&handler), Arc::clone(&in_flight), Arc::clone(&peak));
                        async move {
                            let now = in_flight.fetch_add(1, SeqCst) + 1;
                            peak.fetch_max(now, SeqCst);
                            let response = handler(req).await;
                            in_flight.fetch_sub(1, SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(config) => {
                            if let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        *self.task.lock().expect("task") = Some(task);
    }

    /// Stops accepting and closes every connection; the port stays reserved (connections
    /// to it are refused) until [`restart`](Self::restart).
    pub async fn stop(&self) {
        let task = self.task.lock().expect("task").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).expect("the port just freed");
        *self.reserved.lock().expect("reserved") = Some(socket);
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        let socket = self.reserved.lock().expect("reserved").take().expect("stopped before");
        self.serve(socket.listen(1024).expect("listen"));
    }

    /// `http://127.0.0.1:port` (or `https://…` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().map(|mut t| t.take()).unwrap_or(None) {
            task.abort();
        }
    }
}
