//! A hyper server answering `hello` to every request on 127.0.0.1, for the HTTP
//! benchmarks (included with `#[path]`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// Starts the server on a thread of its own, with a current-thread runtime of its own
/// (as a dependency runs: outside its client's runtime); its address.
#[allow(dead_code)] // not every benchmark that includes this file uses it
pub fn start_on_own_thread() -> SocketAddr {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("hello-server".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                sender.send(start().await).expect("address sent");
                std::future::pending::<()>().await
            });
        })
        .expect("server thread");
    receiver.recv().expect("server address")
}

/// Starts the server on the current runtime; its address.
pub async fn start() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}
