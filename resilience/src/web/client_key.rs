//! Who a request comes from: the peer address, a forwarded address from a trusted proxy,
//! a header, or the user's own function. Pure functions, tested without sockets.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderName, Request};
use ipnet::IpNet;

/// The longest client key kept (a header value beyond it is cut: a long key cannot
/// cost more memory than this).
pub(super) const MAX_KEY_BYTES: usize = 128;

/// A function telling the client of a request from its head.
pub type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// What tells clients apart for per-client rate limits.
#[derive(Clone, Default)]
pub enum ClientKey {
    /// The peer's IP address, or the right-most address of `X-Forwarded-For` /
    /// `Forwarded` not in `trusted_proxies` when the peer is a trusted proxy. Needs the
    /// peer address (`into_make_service_with_connect_info::<SocketAddr>()`).
    #[default]
    PeerAddress,
    /// A request header (an API key, say); requests without it share one limit.
    Header(HeaderName),
    /// A function of the request's head; `None` shares one limit.
    Custom(KeyFn),
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerAddress => f.write_str("PeerAddress"),
            Self::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::PeerAddress, Self::PeerAddress) => true,
            (Self::Header(a), Self::Header(b)) => a == b,
            (Self::Custom(a), Self::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One client, as the limiter keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Client {
    Address(IpAddr),
    Key(Box<str>),
    /// Requests without a key (no header, the function said `None`).
    Anonymous,
}

/// Why a client could not be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoClient {
    /// Keyed by peer address, and the server does not pass it on.
    NoPeerAddress,
}

/// The client of `request`: `peer` is the connection's peer address, if known. The
/// request is borrowed, never moved (it is large, and this is on every request's path).
#[inline]
pub(super) fn client_of<B>(
    request: &mut Request<B>,
    peer: Option<IpAddr>,
    key: &ClientKey,
    trusted: &[IpNet],
) -> Result<Client, NoClient> {
    match (key, peer) {
        // The common case, inline: no proxy to look behind.
        (ClientKey::PeerAddress, Some(peer)) if trusted.is_empty() => Ok(Client::Address(peer)),
        _ => other_client_of(request, peer, key, trusted),
    }
}

/// [`client_of`] but for a peer address without trusted proxies.
#[inline(never)]
fn other_client_of<B>(
    request: &mut Request<B>,
    peer: Option<IpAddr>,
    key: &ClientKey,
    trusted: &[IpNet],
) -> Result<Client, NoClient> {
    match key {
        ClientKey::PeerAddress => match peer {
            None => Err(NoClient::NoPeerAddress),
            Some(peer) => Ok(Client::Address(forwarded_client(request.headers(), peer, trusted))),
        },
        ClientKey::Header(name) => Ok(request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map_or(Client::Anonymous, |v| Client::Key(cut(v).into()))),
        ClientKey::Custom(f) => {
            // The function sees the request's head as `Parts`: lent to it for the call
            // and given back (none of these fields allocates when empty).
            let mut parts = Request::new(()).into_parts().0;
            swap_head(&mut parts, request);
            let client = f(&parts).map_or(Client::Anonymous, |v| Client::Key(cut(&v).into()));
            swap_head(&mut parts, request);
            Ok(client)
        }
    }
}

/// Swaps the head of `request` with `parts`.
fn swap_head<B>(parts: &mut Parts, request: &mut Request<B>) {
    std::mem::swap(&mut parts.method, request.method_mut());
    std::mem::swap(&mut parts.uri, request.uri_mut());
    std::mem::swap(&mut parts.version, request.version_mut());
    std::mem::swap(&mut parts.headers, request.headers_mut());
    std::mem::swap(&mut parts.extensions, request.extensions_mut());
}

fn cut(value: &str) -> &str {
    if value.len() <= MAX_KEY_BYTES {
        return value;
    }
    let mut end = MAX_KEY_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn trusted_peer(addr: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&addr))
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy, else the
/// right-most hop of the forwarding headers that is not a trusted proxy. A hop that does
/// not parse ends the walk there (the hops before it cannot be trusted either), and the
/// last trusted proxy is then the client.
pub(super) fn forwarded_client(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    if !trusted_peer(peer, trusted) {
        return peer;
    }
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for value in headers.get_all("forwarded") {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            for pair in element.split(';') {
                let mut kv = pair.splitn(2, '=');
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else { continue };
                if k.trim().eq_ignore_ascii_case("for") {
                    hops.push(parse_forwarded_node(v.trim()));
                }
            }
        }
    }
    if hops.is_empty() {
        for value in headers.get_all("x-forwarded-for") {
            let Ok(value) = value.to_str() else {
                hops.push(None);
                continue;
            };
            hops.extend(value.split(',').map(|hop| hop.trim().parse::<IpAddr>().ok()));
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(addr) if trusted_peer(addr, trusted) => client = addr,
            Some(addr) => return addr,
            None => return client,
        }
    }
    client
}

/// A `Forwarded` node: `192.0.2.1`, `"192.0.2.1:80"`, `"[2001:db8::1]:80"`, `unknown`.
fn parse_forwarded_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    match node.parse() {
        Ok(addr) => Some(addr),
        Err(_) => node.rsplit_once(':').and_then(|(host, _port)| host.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = http::Request::builder();
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("request")
    }

    fn headers(headers: &[(&str, &str)]) -> HeaderMap {
        request(headers).into_parts().0.headers
    }

    fn client(mut request: Request<()>, key: &ClientKey) -> Result<Client, NoClient> {
        client_of(&mut request, None, key, &[])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(forwarded_client(&p, ip("9.9.9.9"), &nets(&["10.0.0.0/8"])), ip("9.9.9.9"));
        assert_eq!(forwarded_client(&p, ip("9.9.9.9"), &[]), ip("9.9.9.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        let p = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 192.168.1.1")]);
        assert_eq!(forwarded_client(&p, ip("10.0.0.1"), &trusted), ip("1.2.3.4"), "6.6.6.6 may be forged");
        let p = headers(&[("forwarded", "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.1.1.1")]);
        assert_eq!(forwarded_client(&p, ip("10.0.0.1"), &trusted), ip("2001:db8::7"));
        let p = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        assert_eq!(forwarded_client(&p, ip("10.0.0.1"), &trusted), ip("2.2.2.2"), "several headers are one list");
    }

    #[test]
    fn malformed_forwarding_headers_stop_at_the_last_trusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        for bad in ["not an address", "1.2.3.4, garbage", "", ",,,", "999.1.1.1", "1.2.3.4 10.0.0.2"] {
            let p = headers(&[("x-forwarded-for", bad)]);
            let client = forwarded_client(&p, ip("10.0.0.1"), &trusted);
            assert!(client == ip("10.0.0.1") || client == ip("1.2.3.4"), "{bad}: {client}");
        }
        let p = headers(&[("x-forwarded-for", "1.2.3.4, garbage, 10.0.0.3")]);
        assert_eq!(forwarded_client(&p, ip("10.0.0.1"), &trusted), ip("10.0.0.3"), "a forged hop ends the walk");
        let p = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(forwarded_client(&p, ip("10.0.0.1"), &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn header_keys_are_trimmed_cut_and_default_to_one_anonymous_client() {
        let key = ClientKey::Header(HeaderName::from_static("x-api-key"));
        assert_eq!(client(request(&[("x-api-key", " k1 ")]), &key), Ok(Client::Key("k1".into())));
        assert_eq!(client(request(&[]), &key), Ok(Client::Anonymous));
        let long = "x".repeat(200);
        let Ok(Client::Key(cut)) = client(request(&[("x-api-key", &long)]), &key) else { panic!("a key") };
        assert_eq!(cut.len(), MAX_KEY_BYTES);
        // A key cut inside a character is cut before it.
        let custom = ClientKey::Custom(Arc::new(|_: &Parts| Some("é".repeat(200))));
        let Ok(Client::Key(cut)) = client(request(&[]), &custom) else { panic!("a key") };
        assert!(cut.len() <= MAX_KEY_BYTES && "é".repeat(200).starts_with(&*cut));
        assert_eq!(client(request(&[]), &ClientKey::PeerAddress), Err(NoClient::NoPeerAddress));
    }

    /// A custom function sees the request's whole head, and the request has it back.
    #[test]
    fn a_custom_key_sees_the_head_and_leaves_it_in_place() {
        let key = ClientKey::Custom(Arc::new(|parts: &Parts| {
            let tenant = parts.uri.path().split('/').nth(1)?;
            Some(format!("{} {tenant} {}", parts.method, parts.headers.len()))
        }));
        let mut request = http::Request::post("/acme/orders?x=1").header("a", "1").body(()).expect("request");
        request.extensions_mut().insert(7u8);
        assert_eq!(client_of(&mut request, None, &key, &[]), Ok(Client::Key("POST acme 1".into())));
        assert_eq!((request.method(), request.uri().to_string()), (&http::Method::POST, "/acme/orders?x=1".into()));
        assert_eq!((request.headers()["a"].to_str().ok(), request.extensions().get::<u8>()), (Some("1"), Some(&7)));
    }
}
