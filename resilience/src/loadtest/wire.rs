//! The closed model's HTTP/1.1 client: each virtual user writes its request's bytes,
//! made once per path, and reads the answer with `httparse`, counting body bytes without
//! keeping them (content length, chunked, or until close). One connection per user,
//! kept alive until the server closes it or an error.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::record::ErrorKind;

/// The most bytes an answer's head may take.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// A request, as it goes on the wire.
#[derive(Debug, Clone)]
pub(crate) struct WireRequest {
    pub(crate) bytes: Vec<u8>,
    /// A `HEAD` request's answer has no body whatever its headers say.
    pub(crate) head: bool,
}

impl WireRequest {
    /// `method target HTTP/1.1`, `Host`, the headers, `Content-Length` when there is a
    /// body (or the method usually has one), then the body.
    pub(crate) fn new(method: &http::Method, target: &str, host: &str, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(128 + body.len());
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        if !headers.contains_key(http::header::HOST) {
            bytes.extend_from_slice(b"host: ");
            bytes.extend_from_slice(host.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        for (name, value) in headers {
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        let usually_has_body = matches!(*method, http::Method::POST | http::Method::PUT | http::Method::PATCH);
        if !body.is_empty() || usually_has_body {
            bytes.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        Self { bytes, head: *method == http::Method::HEAD }
    }
}

/// How an answer's body ends.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A user's connection and its read buffer.
#[derive(Debug, Default)]
pub(crate) struct WireConnection {
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
    /// Bytes at the start of `buffer` already used.
    start: usize,
}

impl WireConnection {
    /// Drops the connection (after a request was abandoned half-way).
    pub(crate) fn close(&mut self) {
        self.stream = None;
    }

    /// Sends `request` and reads its answer: the status and the body's length. On an
    /// error the connection is dropped (the next request makes a new one).
    pub(crate) async fn exchange(
        &mut self,
        address: std::net::SocketAddr,
        request: &WireRequest,
    ) -> Result<(u16, u64), ErrorKind> {
        let result = self.try_exchange(address, request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn try_exchange(
        &mut self,
        address: std::net::SocketAddr,
        request: &WireRequest,
    ) -> Result<(u16, u64), ErrorKind> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(address).await.map_err(|_| ErrorKind::Connect)?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
            self.buffer.clear();
            self.start = 0;
        }
        let stream = self.stream.as_mut().ok_or(ErrorKind::Other)?;
        if let Err(e) = stream.write_all(&request.bytes).await {
            return Err(ErrorKind::of_io(&e));
        }
        loop {
            let (status, framing, close, used) = self.read_head(request.head).await?;
            self.start += used;
            if (100..200).contains(&status) && status != 101 {
                continue; // An interim answer: the real one follows.
            }
            let body = self.read_body(framing).await?;
            if close {
                self.stream = None;
            }
            self.compact();
            return Ok((status, body));
        }
    }

    /// Reads more bytes into the buffer; `Reset` if the peer closed.
    async fn fill(&mut self) -> Result<usize, ErrorKind> {
        let stream = self.stream.as_mut().ok_or(ErrorKind::Other)?;
        if self.buffer.capacity() - self.buffer.len() < 4096 {
            self.buffer.reserve(8192);
        }
        match stream.read_buf(&mut self.buffer).await {
            Ok(0) => Err(ErrorKind::Reset),
            Ok(n) => Ok(n),
            Err(e) => Err(ErrorKind::of_io(&e)),
        }
    }

    fn compact(&mut self) {
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > 32 * 1024 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
    }

    /// The answer's head: status, framing, whether the server closes, bytes used.
    async fn read_head(&mut self, head_request: bool) -> Result<(u16, Framing, bool, usize), ErrorKind> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buffer[self.start..]) {
                Ok(httparse::Status::Complete(used)) => {
                    let status = response.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = response.version == Some(0);
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let text = std::str::from_utf8(h.value).map_err(|_| ErrorKind::Other)?;
                            length = Some(text.trim().parse::<u64>().map_err(|_| ErrorKind::Other)?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked =
                                h.value.split(|b| *b == b',').any(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = h.value.trim_ascii();
                            if v.eq_ignore_ascii_case(b"close") {
                                close = true;
                            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                                close = false;
                            }
                        }
                    }
                    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                        Framing::None
                    } else if chunked {
                        Framing::Chunked
                    } else if let Some(n) = length {
                        Framing::Length(n)
                    } else {
                        close = true;
                        Framing::UntilClose
                    };
                    return Ok((status, framing, close, used));
                }
                Ok(httparse::Status::Partial) => {
                    if self.buffer.len() - self.start > MAX_HEAD {
                        return Err(ErrorKind::Other);
                    }
                    self.fill().await?;
                }
                Err(_) => return Err(ErrorKind::Other),
            }
        }
    }

    /// Skips the body, returning its length.
    async fn read_body(&mut self, framing: Framing) -> Result<u64, ErrorKind> {
        match framing {
            Framing::None => Ok(0),
            Framing::Length(n) => {
                self.skip(n).await?;
                Ok(n)
            }
            Framing::UntilClose => {
                let mut total = (self.buffer.len() - self.start) as u64;
                self.buffer.clear();
                self.start = 0;
                loop {
                    match self.fill().await {
                        Ok(n) => {
                            total += n as u64;
                            self.buffer.clear();
                        }
                        Err(ErrorKind::Reset) => return Ok(total),
                        Err(e) => return Err(e),
                    }
                }
            }
            Framing::Chunked => {
                let mut total = 0u64;
                loop {
                    let line = self.line().await?;
                    let size_text = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size_text, 16).map_err(|_| ErrorKind::Other)?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        while !self.line().await?.is_empty() {}
                        return Ok(total);
                    }
                    self.skip(size).await?;
                    total += size;
                    if !self.line().await?.is_empty() {
                        return Err(ErrorKind::Other);
                    }
                }
            }
        }
    }

    /// Skips `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), ErrorKind> {
        loop {
            let buffered = (self.buffer.len() - self.start) as u64;
            if buffered >= n {
                self.start += n as usize;
                return Ok(());
            }
            n -= buffered;
            self.buffer.clear();
            self.start = 0;
            self.fill().await?;
        }
    }

    /// The next line (without its CRLF).
    async fn line(&mut self) -> Result<String, ErrorKind> {
        loop {
            let rest = &self.buffer[self.start..];
            if let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&rest[..end]).into_owned();
                self.start += end + 2;
                return Ok(line);
            }
            if rest.len() > MAX_HEAD {
                return Err(ErrorKind::Other);
            }
            self.fill().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each request with the next of `answers` (raw bytes).
    async fn raw_server(answers: Vec<&'static [u8]>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            for answer in answers {
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.expect("read");
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                stream.write_all(answer).await.expect("write");
            }
        });
        addr
    }

    #[tokio::test]
    async fn lengths_chunks_interim_answers_and_close_are_read() {
        let addr = raw_server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\nbusy",
        ])
        .await;
        let request = WireRequest::new(&http::Method::GET, "/", "localhost", &http::HeaderMap::new(), b"");
        assert!(request.bytes.starts_with(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"));
        let mut c = WireConnection::default();
        assert_eq!(c.exchange(addr, &request).await, Ok((200, 5)));
        assert_eq!(c.exchange(addr, &request).await, Ok((201, 5)));
        assert_eq!(c.exchange(addr, &request).await, Ok((204, 0)));
        assert_eq!(c.exchange(addr, &request).await, Ok((503, 4)));
        assert!(c.stream.is_none(), "closed after an answer without a length");
    }

    #[tokio::test]
    async fn a_broken_answer_is_an_error_not_a_panic() {
        let addr = raw_server(vec![b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"]).await;
        let request = WireRequest::new(&http::Method::GET, "/", "localhost", &http::HeaderMap::new(), b"");
        let mut c = WireConnection::default();
        assert_eq!(c.exchange(addr, &request).await, Err(ErrorKind::Other));
        let addr = raw_server(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
        let mut c = WireConnection::default();
        assert_eq!(c.exchange(addr, &request).await, Err(ErrorKind::Reset), "the server closed mid-body");
    }
}
