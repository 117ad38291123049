//! A client of Linkerd's tap API (`io.linkerd.proxy.tap.Tap/Observe`), for tests and for the
//! `ringlink-tap` command.
//!
//! The proxy serves tap as gRPC over HTTP/2 on its control port: plaintext to loopback
//! clients only, mesh mTLS from anywhere else. [`connect`] dials either way; [`Observe`]
//! builds the `ObserveRequest` (a limit and a tree of [`Match`]es); [`Event`] flattens each
//! `TapEvent` for assertions and prints as a `linkerd viz tap` line.
//!
//! ```ignore
//! let mut client = tap::connect(proxy.control, None).await?;
//! let request = Observe::new(10).path_prefix("/api").method("GET").build();
//! let mut stream = client.observe(request).await?.into_inner();
//! let events = tap::collect(&mut stream, 3, Duration::from_secs(5)).await;
//! assert_eq!(events[0].path.as_deref(), Some("/api/users"));
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::http_types::{self, http_method, scheme};
use linkerd2_proxy_api::net;
use linkerd2_proxy_api::tap::observe_request::{self, extract, r#match as pb};
use linkerd2_proxy_api::tap::tap_client::TapClient;
use linkerd2_proxy_api::tap::tap_event::{self, http as ev};
use linkerd2_proxy_api::tap::{eos, ObserveRequest, TapEvent};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// How long [`connect`] waits for the TCP connection and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// === types ===

/// Builds an `ObserveRequest`: tap up to `limit` requests that satisfy every match added.
///
/// The matches are sent as one `all` (an empty `all` matches every request, as
/// `linkerd viz tap` sends with no filter); [`Observe::not`], [`Observe::any`] and
/// [`Observe::all`] add sub-trees made of [`Match`]es.
#[derive(Clone, Debug)]
pub struct Observe {
    limit: u32,
    matches: Vec<Match>,
    headers: bool,
}

/// One node of an `ObserveRequest`'s match tree: a leaf (`Match::path_prefix("/api")`), a
/// negation (`!m`) or a list (`Match::any([..])`, `Match::all([..])`).
#[derive(Clone, Debug, PartialEq)]
pub struct Match(observe_request::Match);

/// A `TapEvent`, flattened: the fields of the event's kind are `Some`, the others `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// The request's stream id: (`base`, `stream`).
    pub id: (u32, u64),
    /// `"inbound"`, `"outbound"` or `"unknown"`.
    pub direction: &'static str,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub source_labels: BTreeMap<String, String>,
    pub destination_labels: BTreeMap<String, String>,
    pub route_labels: BTreeMap<String, String>,
    /// The method: a registered one upper-case (`GET`), else as sent.
    pub method: Option<String>,
    /// The scheme: `http` or `https` when registered, else as sent.
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    /// The response status (response-init).
    pub status: Option<u16>,
    /// Request headers (request-init) or response headers (response-init), when extracted.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Response trailers (response-end), when extracted.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// How the response ended: a gRPC status code, or an HTTP/2 reset's error code.
    pub grpc_status: Option<u32>,
    pub reset_code: Option<u32>,
    /// Response body bytes (response-end).
    pub response_bytes: Option<u64>,
    pub since_request_init: Option<Duration>,
    pub since_response_init: Option<Duration>,
}

/// Which of the three HTTP tap events an [`Event`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    RequestInit,
    ResponseInit,
    ResponseEnd,
    /// A `TapEvent` without an HTTP event (a proxy never sends one).
    Unknown,
}

/// Dials the proxy's control port: TCP, then TLS when configured.
#[derive(Clone)]
struct Connector {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A connection to the proxy, plaintext or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

// === functions ===

/// Connects a tap client to the proxy's control port at `addr`: h2c, or TLS with `tls`'s
/// configuration, verifying the proxy's certificate for its identity (also the SNI).
///
/// The connection is made before this returns (within [`CONNECT_TIMEOUT`]), so an
/// unreachable proxy or a failed handshake is an error here. ALPN `h2` is offered,
/// whatever the configuration offers.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
) -> Result<TapClient<Channel>, tonic::transport::Error> {
    let tls = tls.map(|(config, name)| {
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols = vec![b"h2".to_vec()];
        (TlsConnector::from(Arc::new(config)), name)
    });
    // The URI only names the peer (`:authority`); the connector decides where to dial.
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(Connector { addr, tls })
        .await?;
    Ok(TapClient::new(channel))
}

/// A mesh mTLS client configuration: presents `chain` (leaf first) with `key`, and trusts
/// servers whose chain leads to `anchors`. TLS 1.3 only, as the mesh is.
pub fn client_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    anchors: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(anchors)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// Reads up to `n` events, stopping early when the stream ends or `timeout` has passed.
///
/// # Panics
///
/// If the stream fails with a gRPC status.
pub async fn collect(
    stream: &mut tonic::Streaming<TapEvent>,
    n: usize,
    timeout: Duration,
) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Vec::new();
    while events.len() < n {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(event))) => events.push(Event::from(event)),
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) => panic!(
                "tap stream failed after {} events: {status:?}",
                events.len()
            ),
        }
    }
    events
}

/// Reads events until the server ends the stream; a gRPC status ends it with `Err`.
///
/// # Panics
///
/// If the stream has not ended within `timeout`.
pub async fn until_end(
    stream: &mut tonic::Streaming<TapEvent>,
    timeout: Duration,
) -> Result<Vec<Event>, tonic::Status> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(event))) => events.push(Event::from(event)),
            Ok(Ok(None)) => return Ok(events),
            Ok(Err(status)) => return Err(status),
            Err(_) => panic!(
                "tap stream did not end within {timeout:?}; {} events: {events:#?}",
                events.len()
            ),
        }
    }
}

/// A gRPC status code's name as `linkerd viz tap` prints it (Go's `codes.Code`): `OK`,
/// `InvalidArgument`, …, `Code(17)` for an unknown one.
pub fn grpc_code_name(code: u32) -> Cow<'static, str> {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    match NAMES.get(code as usize) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("Code({code})")),
    }
}

// === impl Observe ===

impl Observe {
    /// Taps up to `limit` requests (the proxy refuses 0), matching every request until
    /// matches are added; headers are not extracted.
    pub fn new(limit: u32) -> Observe {
        Observe {
            limit,
            matches: Vec::new(),
            headers: false,
        }
    }

    /// Requests whose path starts with `prefix`.
    pub fn path_prefix(self, prefix: &str) -> Self {
        self.matching(Match::path_prefix(prefix))
    }

    /// Requests whose path is `path`.
    pub fn path_exact(self, path: &str) -> Self {
        self.matching(Match::path_exact(path))
    }

    /// Requests with method `method` (see [`Match::method`]).
    pub fn method(self, method: &str) -> Self {
        self.matching(Match::method(method))
    }

    /// Requests whose authority is `authority`.
    pub fn authority(self, authority: &str) -> Self {
        self.matching(Match::authority(authority))
    }

    /// Requests with scheme `scheme` (see [`Match::scheme`]).
    pub fn scheme(self, scheme: &str) -> Self {
        self.matching(Match::scheme(scheme))
    }

    /// Requests to destination port `port`.
    pub fn destination_port(self, port: u16) -> Self {
        self.matching(Match::destination_port(port))
    }

    /// Requests to a destination in `ip`/`prefix_len`.
    pub fn destination_net(self, ip: IpAddr, prefix_len: u8) -> Self {
        self.matching(Match::destination_net(ip, prefix_len))
    }

    /// Requests from a source in `ip`/`prefix_len`.
    pub fn source_net(self, ip: IpAddr, prefix_len: u8) -> Self {
        self.matching(Match::source_net(ip, prefix_len))
    }

    /// Requests that do not satisfy `m`.
    pub fn not(self, m: Match) -> Self {
        self.matching(!m)
    }

    /// Requests that satisfy at least one of `ms`.
    pub fn any(self, ms: impl IntoIterator<Item = Match>) -> Self {
        self.matching(Match::any(ms))
    }

    /// Requests that satisfy all of `ms`.
    pub fn all(self, ms: impl IntoIterator<Item = Match>) -> Self {
        self.matching(Match::all(ms))
    }

    /// Requests that satisfy `m` (any match, including hand-made ones).
    pub fn matching(mut self, m: Match) -> Self {
        self.matches.push(m);
        self
    }

    /// Whether events carry the request's and response's headers and trailers
    /// (`extract.http.headers`); without, `extract.http` asks for none.
    pub fn headers(mut self, headers: bool) -> Self {
        self.headers = headers;
        self
    }

    pub fn build(self) -> ObserveRequest {
        let headers = self
            .headers
            .then_some(extract::http::Extract::Headers(extract::http::Headers {}));
        ObserveRequest {
            limit: self.limit,
            r#match: Some(Match::all(self.matches).0),
            extract: Some(observe_request::Extract {
                extract: Some(extract::Extract::Http(extract::Http { extract: headers })),
            }),
        }
    }
}

// === impl Match ===

impl Match {
    pub fn path_prefix(prefix: &str) -> Match {
        Self::http(pb::http::Match::Path(Self::prefix(prefix)))
    }

    pub fn path_exact(path: &str) -> Match {
        Self::http(pb::http::Match::Path(Self::exact(path)))
    }

    /// The method: `GET`, `POST`, … (the nine methods the API registers, upper-case) as the
    /// registered enum, as linkerd sends them; any other spelling as `unregistered`.
    pub fn method(method: &str) -> Match {
        let ty = match http_method::Registered::from_str_name(method) {
            Some(registered) => http_method::Type::Registered(registered.into()),
            None => http_method::Type::Unregistered(method.to_string()),
        };
        Self::http(pb::http::Match::Method(http_types::HttpMethod {
            r#type: Some(ty),
        }))
    }

    /// The authority, exactly.
    pub fn authority(authority: &str) -> Match {
        Self::http(pb::http::Match::Authority(Self::exact(authority)))
    }

    /// The scheme: `http` and `https` as the registered enum, any other as `unregistered`.
    pub fn scheme(scheme: &str) -> Match {
        Self::http(pb::http::Match::Scheme(http_types::Scheme::from(scheme)))
    }

    /// The destination port: a port range of one port.
    pub fn destination_port(port: u16) -> Match {
        let range = pb::tcp::PortRange {
            min: port.into(),
            max: port.into(),
        };
        Self::node(pb::Match::Destination(pb::Tcp {
            r#match: Some(pb::tcp::Match::Ports(range)),
        }))
    }

    pub fn destination_net(ip: IpAddr, prefix_len: u8) -> Match {
        Self::node(pb::Match::Destination(Self::netmask(ip, prefix_len)))
    }

    pub fn source_net(ip: IpAddr, prefix_len: u8) -> Match {
        Self::node(pb::Match::Source(Self::netmask(ip, prefix_len)))
    }

    pub fn any(ms: impl IntoIterator<Item = Match>) -> Match {
        Self::node(pb::Match::Any(Self::seq(ms)))
    }

    pub fn all(ms: impl IntoIterator<Item = Match>) -> Match {
        Self::node(pb::Match::All(Self::seq(ms)))
    }

    fn node(m: pb::Match) -> Match {
        Match(observe_request::Match { r#match: Some(m) })
    }

    fn http(m: pb::http::Match) -> Match {
        Self::node(pb::Match::Http(pb::Http { r#match: Some(m) }))
    }

    fn seq(ms: impl IntoIterator<Item = Match>) -> pb::Seq {
        pb::Seq {
            matches: ms.into_iter().map(|m| m.0).collect(),
        }
    }

    fn exact(s: &str) -> pb::http::StringMatch {
        pb::http::StringMatch {
            r#match: Some(pb::http::string_match::Match::Exact(s.to_string())),
        }
    }

    fn prefix(s: &str) -> pb::http::StringMatch {
        pb::http::StringMatch {
            r#match: Some(pb::http::string_match::Match::Prefix(s.to_string())),
        }
    }

    fn netmask(ip: IpAddr, prefix_len: u8) -> pb::Tcp {
        let mask = pb::tcp::Netmask {
            ip: Some(net::IpAddress::from(ip)),
            mask: prefix_len.into(),
        };
        pb::Tcp {
            r#match: Some(pb::tcp::Match::Netmask(mask)),
        }
    }
}

/// `!m`: requests that do not satisfy `m`.
impl std::ops::Not for Match {
    type Output = Match;

    fn not(self) -> Match {
        Match::node(pb::Match::Not(Box::new(self.0)))
    }
}

impl From<observe_request::Match> for Match {
    fn from(m: observe_request::Match) -> Match {
        Match(m)
    }
}

impl From<Match> for observe_request::Match {
    fn from(m: Match) -> observe_request::Match {
        m.0
    }
}

// === impl Event ===

impl Event {
    fn new(kind: EventKind, id: Option<ev::StreamId>, tap: TapEvent) -> Event {
        let direction = match tap_event::ProxyDirection::try_from(tap.proxy_direction) {
            Ok(tap_event::ProxyDirection::Inbound) => "inbound",
            Ok(tap_event::ProxyDirection::Outbound) => "outbound",
            _ => "unknown",
        };
        Event {
            kind,
            id: id.map_or((0, 0), |id| (id.base, id.stream)),
            direction,
            source: tap.source.and_then(socket_addr),
            destination: tap.destination.and_then(socket_addr),
            source_labels: labels(tap.source_meta.map(|m| m.labels)),
            destination_labels: labels(tap.destination_meta.map(|m| m.labels)),
            route_labels: labels(tap.route_meta.map(|m| m.labels)),
            method: None,
            scheme: None,
            authority: None,
            path: None,
            status: None,
            headers: Vec::new(),
            trailers: Vec::new(),
            grpc_status: None,
            reset_code: None,
            response_bytes: None,
            since_request_init: None,
            since_response_init: None,
        }
    }

    /// The peer's TLS status as `linkerd viz tap` shows it: the `tls` label of the source
    /// (inbound) or of the destination (outbound).
    fn tls(&self) -> &str {
        let labels = match self.direction {
            "inbound" => &self.source_labels,
            "outbound" => &self.destination_labels,
            _ => return "",
        };
        labels.get("tls").map_or("", String::as_str)
    }
}

impl From<TapEvent> for Event {
    fn from(mut tap: TapEvent) -> Event {
        let http = match tap.event.take() {
            Some(tap_event::Event::Http(http)) => http.event,
            None => None,
        };
        match http {
            Some(ev::Event::RequestInit(init)) => Event {
                method: init.method.and_then(|m| m.r#type).map(method_name),
                scheme: init.scheme.and_then(|s| s.r#type).map(scheme_name),
                authority: Some(init.authority),
                path: Some(init.path),
                headers: headers(init.headers),
                ..Event::new(EventKind::RequestInit, init.id, tap)
            },
            Some(ev::Event::ResponseInit(init)) => Event {
                status: u16::try_from(init.http_status).ok(),
                headers: headers(init.headers),
                since_request_init: duration(init.since_request_init),
                ..Event::new(EventKind::ResponseInit, init.id, tap)
            },
            Some(ev::Event::ResponseEnd(end)) => {
                let (grpc_status, reset_code) = match end.eos.and_then(|e| e.end) {
                    Some(eos::End::GrpcStatusCode(code)) => (Some(code), None),
                    Some(eos::End::ResetErrorCode(code)) => (None, Some(code)),
                    None => (None, None),
                };
                Event {
                    trailers: headers(end.trailers),
                    grpc_status,
                    reset_code,
                    response_bytes: Some(end.response_bytes),
                    since_request_init: duration(end.since_request_init),
                    since_response_init: duration(end.since_response_init),
                    ..Event::new(EventKind::ResponseEnd, end.id, tap)
                }
            }
            None => Event::new(EventKind::Unknown, None, tap),
        }
    }
}

/// The event as one line of `linkerd viz tap`'s default output (`renderTapEvent` in
/// linkerd2's `viz/cmd/tap.go`), e.g.
/// `req id=0:1 proxy=in  src=10.0.0.1:53000 dst=10.0.0.2:8080 tls=true :method=GET
/// :authority=web:8080 :path=/api`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proxy = match self.direction {
            "inbound" => "in ",
            "outbound" => "out",
            _ => "???",
        };
        let flow = format_args!(
            "proxy={proxy} src={} dst={} tls={}",
            Addr(self.source),
            Addr(self.destination),
            self.tls()
        );
        let (base, stream) = self.id;
        let micros = |d: Option<Duration>| d.unwrap_or_default().as_micros();
        match self.kind {
            EventKind::RequestInit => write!(
                f,
                "req id={base}:{stream} {flow} :method={} :authority={} :path={}",
                self.method.as_deref().unwrap_or(""),
                self.authority.as_deref().unwrap_or(""),
                self.path.as_deref().unwrap_or(""),
            ),
            EventKind::ResponseInit => write!(
                f,
                "rsp id={base}:{stream} {flow} :status={} latency={}µs",
                self.status.unwrap_or(0),
                micros(self.since_request_init),
            ),
            EventKind::ResponseEnd => {
                write!(f, "end id={base}:{stream} {flow}")?;
                if let Some(code) = self.grpc_status {
                    write!(f, " grpc-status={}", grpc_code_name(code))?;
                } else if let Some(code) = self.reset_code {
                    write!(f, " reset-error={code}")?;
                }
                write!(
                    f,
                    " duration={}µs response-length={}B",
                    micros(self.since_response_init),
                    self.response_bytes.unwrap_or(0),
                )
            }
            EventKind::Unknown => write!(f, "unknown {flow}"),
        }
    }
}

/// An event's address, `-` when it has none.
struct Addr(Option<SocketAddr>);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

fn socket_addr(addr: net::TcpAddress) -> Option<SocketAddr> {
    let ip = IpAddr::try_from(addr.ip?).ok()?;
    Some(SocketAddr::new(ip, u16::try_from(addr.port).ok()?))
}

fn labels(labels: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    labels.unwrap_or_default().into_iter().collect()
}

fn headers(headers: Option<http_types::Headers>) -> Vec<(String, Vec<u8>)> {
    headers
        .map(|h| h.headers)
        .unwrap_or_default()
        .into_iter()
        .map(|h| (h.name, h.value))
        .collect()
}

/// A negative or out-of-range duration is treated as absent.
fn duration(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(d).ok())
}

fn method_name(method: http_method::Type) -> String {
    match method {
        http_method::Type::Registered(n) => match http_method::Registered::try_from(n) {
            Ok(registered) => registered.as_str_name().to_string(),
            Err(_) => n.to_string(),
        },
        http_method::Type::Unregistered(method) => method,
    }
}

fn scheme_name(scheme: scheme::Type) -> String {
    match scheme {
        scheme::Type::Registered(n) => match scheme::Registered::try_from(n) {
            Ok(scheme::Registered::Http) => "http".to_string(),
            Ok(scheme::Registered::Https) => "https".to_string(),
            Err(_) => n.to_string(),
        },
        scheme::Type::Unregistered(scheme) => scheme,
    }
}

// === impl Connector ===

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let Connector { addr, tls } = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let io: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some((tls, name)) => Box::new(tls.connect(name, tcp).await?),
            };
            Ok(TokioIo::new(io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::tap::tap_event::{EndpointMeta, RouteMeta};
    use ringlink_control::tap::Observed;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn leaf(m: pb::Match) -> observe_request::Match {
        observe_request::Match { r#match: Some(m) }
    }

    fn http_leaf(m: pb::http::Match) -> observe_request::Match {
        leaf(pb::Match::Http(pb::Http { r#match: Some(m) }))
    }

    fn all(ms: Vec<observe_request::Match>) -> Option<observe_request::Match> {
        Some(leaf(pb::Match::All(pb::Seq { matches: ms })))
    }

    fn no_headers() -> Option<observe_request::Extract> {
        Some(observe_request::Extract {
            extract: Some(extract::Extract::Http(extract::Http { extract: None })),
        })
    }

    #[test]
    fn an_empty_builder_matches_everything_without_headers() {
        assert_eq!(
            Observe::new(7).build(),
            ObserveRequest {
                limit: 7,
                r#match: all(vec![]),
                extract: no_headers(),
            }
        );
        let with_headers = Observe::new(1).headers(true).build();
        assert_eq!(
            with_headers.extract,
            Some(observe_request::Extract {
                extract: Some(extract::Extract::Http(extract::Http {
                    extract: Some(extract::http::Extract::Headers(extract::http::Headers {})),
                })),
            })
        );
        assert_eq!(
            Observe::new(1).headers(true).headers(false).build().extract,
            no_headers()
        );
    }

    #[test]
    fn leaves_combine_with_all_in_order() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        let built = Observe::new(100)
            .path_prefix("/api")
            .path_exact("/api/x")
            .method("GET")
            .method("PURGE")
            .authority("web:8080")
            .scheme("https")
            .scheme("ftp")
            .destination_port(8080)
            .destination_net(v4, 16)
            .source_net(v6, 64)
            .build();
        let string = |m| pb::http::StringMatch { r#match: Some(m) };
        use pb::http::string_match::Match::{Exact, Prefix};
        let get = http_method::Type::Registered(http_method::Registered::Get as i32);
        let https = scheme::Type::Registered(scheme::Registered::Https as i32);
        let expected = vec![
            http_leaf(pb::http::Match::Path(string(Prefix("/api".into())))),
            http_leaf(pb::http::Match::Path(string(Exact("/api/x".into())))),
            http_leaf(pb::http::Match::Method(http_types::HttpMethod {
                r#type: Some(get),
            })),
            http_leaf(pb::http::Match::Method(http_types::HttpMethod {
                r#type: Some(http_method::Type::Unregistered("PURGE".into())),
            })),
            http_leaf(pb::http::Match::Authority(string(Exact("web:8080".into())))),
            http_leaf(pb::http::Match::Scheme(http_types::Scheme {
                r#type: Some(https),
            })),
            http_leaf(pb::http::Match::Scheme(http_types::Scheme {
                r#type: Some(scheme::Type::Unregistered("ftp".into())),
            })),
            leaf(pb::Match::Destination(pb::Tcp {
                r#match: Some(pb::tcp::Match::Ports(pb::tcp::PortRange {
                    min: 8080,
                    max: 8080,
                })),
            })),
            leaf(pb::Match::Destination(pb::Tcp {
                r#match: Some(pb::tcp::Match::Netmask(pb::tcp::Netmask {
                    ip: Some(net::IpAddress {
                        ip: Some(net::ip_address::Ip::Ipv4(0x0a01_0000)),
                    }),
                    mask: 16,
                })),
            })),
            leaf(pb::Match::Source(pb::Tcp {
                r#match: Some(pb::tcp::Match::Netmask(pb::tcp::Netmask {
                    ip: Some(net::IpAddress {
                        ip: Some(net::ip_address::Ip::Ipv6(net::IPv6 {
                            first: 0xfd00_0000_0000_0000,
                            last: 1,
                        })),
                    }),
                    mask: 64,
                })),
            })),
        ];
        assert_eq!(
            built,
            ObserveRequest {
                limit: 100,
                r#match: all(expected),
                extract: no_headers(),
            }
        );
    }

    #[test]
    fn methods_are_registered_only_in_their_upper_case_spelling() {
        for name in [
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "HEAD", "TRACE",
        ] {
            let registered = http_method::Registered::from_str_name(name).unwrap();
            assert_eq!(
                Match::method(name),
                Match(http_leaf(pb::http::Match::Method(http_types::HttpMethod {
                    r#type: Some(http_method::Type::Registered(registered as i32)),
                })))
            );
        }
        assert_eq!(
            Match::method("get"),
            Match(http_leaf(pb::http::Match::Method(http_types::HttpMethod {
                r#type: Some(http_method::Type::Unregistered("get".into())),
            })))
        );
    }

    #[test]
    fn combinators_nest() {
        let built = Observe::new(3)
            .not(Match::path_prefix("/health"))
            .any([Match::destination_port(80), Match::destination_port(8080)])
            .all([!Match::method("HEAD")])
            .build();
        let r#match = observe_request::Match::from;
        let expected = all(vec![
            leaf(pb::Match::Not(Box::new(r#match(Match::path_prefix(
                "/health",
            ))))),
            leaf(pb::Match::Any(pb::Seq {
                matches: vec![
                    r#match(Match::destination_port(80)),
                    r#match(Match::destination_port(8080)),
                ],
            })),
            leaf(pb::Match::All(pb::Seq {
                matches: vec![leaf(pb::Match::Not(Box::new(r#match(Match::method(
                    "HEAD",
                )))))],
            })),
        ]);
        assert_eq!(built.r#match, expected);
    }

    /// The server's own decoder (control::tap) accepts what the builder makes and matches
    /// the requests the builder meant.
    #[test]
    fn the_server_model_decodes_and_applies_built_requests() {
        use ringlink_control::tap::Match as ServerMatch;
        let request = |method: &'static str, path: &'static str, dst: &str| Observed {
            src: "10.0.0.1:53000".parse().unwrap(),
            dst: dst.parse().unwrap(),
            dst_labels: &(),
            route_labels: &(),
            scheme: Some("http"),
            method,
            authority: Some("web:8080"),
            path,
        };
        let built = Observe::new(10)
            .path_prefix("/api")
            .destination_net(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8)
            .not(Match::method("DELETE"))
            .any([Match::destination_port(80), Match::destination_port(8080)])
            .source_net(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 32)
            .authority("web:8080")
            .scheme("http")
            .build();
        let m = ServerMatch::try_new(built.r#match).expect("a valid match tree");
        assert!(m.matches(&request("GET", "/api/x", "10.0.0.2:8080")));
        assert!(m.matches(&request("PURGE", "/api", "10.9.9.9:80")));
        assert!(!m.matches(&request("DELETE", "/api/x", "10.0.0.2:8080")));
        assert!(!m.matches(&request("GET", "/web", "10.0.0.2:8080")));
        assert!(!m.matches(&request("GET", "/api/x", "10.0.0.2:9090")));
        assert!(!m.matches(&request("GET", "/api/x", "192.168.0.2:8080")));
        // With no matches, every request.
        let m = ServerMatch::try_new(Observe::new(1).build().r#match).unwrap();
        assert!(m.matches(&request("DELETE", "/", "192.168.0.2:1")));
    }

    fn tcp(addr: &str) -> Option<net::TcpAddress> {
        let addr: SocketAddr = addr.parse().unwrap();
        Some(net::TcpAddress {
            ip: Some(addr.ip().into()),
            port: addr.port().into(),
        })
    }

    fn tap(direction: tap_event::ProxyDirection, event: ev::Event) -> TapEvent {
        let meta = |pairs: &[(&str, &str)]| {
            Some(EndpointMeta {
                labels: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        };
        TapEvent {
            source: tcp("10.0.0.1:53000"),
            source_meta: meta(&[("tls", "true")]),
            route_meta: Some(RouteMeta {
                labels: [("route".to_string(), "get-api".to_string())].into(),
            }),
            destination: tcp("[fd00::2]:8080"),
            destination_meta: meta(&[("tls", "no_identity"), ("pod", "web-0")]),
            proxy_direction: direction.into(),
            event: Some(tap_event::Event::Http(tap_event::Http {
                event: Some(event),
            })),
        }
    }

    fn id(stream: u64) -> Option<ev::StreamId> {
        Some(ev::StreamId { base: 7, stream })
    }

    fn header(name: &str, value: &[u8]) -> http_types::headers::Header {
        http_types::headers::Header {
            name: name.to_string(),
            value: value.to_vec(),
        }
    }

    fn micros(us: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: 0,
            nanos: us * 1000,
        })
    }

    #[test]
    fn a_request_init_flattens() {
        let init = ev::RequestInit {
            id: id(1),
            method: Some(http_types::HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Post as i32,
                )),
            }),
            scheme: Some(http_types::Scheme {
                r#type: Some(scheme::Type::Registered(scheme::Registered::Https as i32)),
            }),
            authority: "web:8080".into(),
            path: "/api".into(),
            headers: Some(http_types::Headers {
                headers: vec![header("user-agent", b"curl"), header("x-bin", &[0, 255])],
            }),
        };
        let event = Event::from(tap(
            tap_event::ProxyDirection::Inbound,
            ev::Event::RequestInit(init),
        ));
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            event,
            Event {
                kind: EventKind::RequestInit,
                id: (7, 1),
                direction: "inbound",
                source: Some("10.0.0.1:53000".parse().unwrap()),
                destination: Some("[fd00::2]:8080".parse().unwrap()),
                source_labels: labels(&[("tls", "true")]),
                destination_labels: labels(&[("pod", "web-0"), ("tls", "no_identity")]),
                route_labels: labels(&[("route", "get-api")]),
                method: Some("POST".into()),
                scheme: Some("https".into()),
                authority: Some("web:8080".into()),
                path: Some("/api".into()),
                status: None,
                headers: vec![
                    ("user-agent".into(), b"curl".to_vec()),
                    ("x-bin".into(), vec![0, 255]),
                ],
                trailers: vec![],
                grpc_status: None,
                reset_code: None,
                response_bytes: None,
                since_request_init: None,
                since_response_init: None,
            }
        );
        assert_eq!(
            event.to_string(),
            "req id=7:1 proxy=in  src=10.0.0.1:53000 dst=[fd00::2]:8080 tls=true \
             :method=POST :authority=web:8080 :path=/api"
        );
    }

    #[test]
    fn unregistered_and_unknown_methods_and_schemes() {
        let init = |method, scheme| {
            let init = ev::RequestInit {
                id: id(2),
                method: Some(http_types::HttpMethod {
                    r#type: Some(method),
                }),
                scheme: Some(http_types::Scheme {
                    r#type: Some(scheme),
                }),
                ..Default::default()
            };
            Event::from(tap(
                tap_event::ProxyDirection::Outbound,
                ev::Event::RequestInit(init),
            ))
        };
        let event = init(
            http_method::Type::Unregistered("PURGE".into()),
            scheme::Type::Unregistered("ftp".into()),
        );
        assert_eq!(event.method.as_deref(), Some("PURGE"));
        assert_eq!(event.scheme.as_deref(), Some("ftp"));
        assert_eq!(event.direction, "outbound");
        assert_eq!(
            event.to_string(),
            "req id=7:2 proxy=out src=10.0.0.1:53000 dst=[fd00::2]:8080 tls=no_identity \
             :method=PURGE :authority= :path="
        );
        let event = init(
            http_method::Type::Registered(42),
            scheme::Type::Registered(scheme::Registered::Http as i32),
        );
        assert_eq!(event.method.as_deref(), Some("42"));
        assert_eq!(event.scheme.as_deref(), Some("http"));
    }

    #[test]
    fn a_response_init_flattens() {
        let init = ev::ResponseInit {
            id: id(3),
            since_request_init: micros(1234),
            http_status: 503,
            headers: Some(http_types::Headers {
                headers: vec![header("content-type", b"text/plain")],
            }),
        };
        let event = Event::from(tap(
            tap_event::ProxyDirection::Inbound,
            ev::Event::ResponseInit(init),
        ));
        assert_eq!(event.kind, EventKind::ResponseInit);
        assert_eq!(event.id, (7, 3));
        assert_eq!(event.status, Some(503));
        assert_eq!(event.since_request_init, Some(Duration::from_micros(1234)));
        assert_eq!(event.since_response_init, None);
        assert_eq!(event.response_bytes, None);
        assert_eq!(event.path, None);
        assert_eq!(
            event.headers,
            [("content-type".to_string(), b"text/plain".to_vec())]
        );
        assert_eq!(
            event.to_string(),
            "rsp id=7:3 proxy=in  src=10.0.0.1:53000 dst=[fd00::2]:8080 tls=true \
             :status=503 latency=1234µs"
        );
    }

    #[test]
    fn a_response_end_flattens_each_way_to_end() {
        let end = |eos: Option<eos::End>| {
            let end = ev::ResponseEnd {
                id: id(4),
                since_request_init: micros(2000),
                since_response_init: micros(1300),
                response_bytes: 512,
                eos: eos.map(|end| linkerd2_proxy_api::tap::Eos { end: Some(end) }),
                trailers: Some(http_types::Headers {
                    headers: vec![header("grpc-status", b"0")],
                }),
            };
            Event::from(tap(
                tap_event::ProxyDirection::Inbound,
                ev::Event::ResponseEnd(end),
            ))
        };
        let flow = "proxy=in  src=10.0.0.1:53000 dst=[fd00::2]:8080 tls=true";

        let grpc = end(Some(eos::End::GrpcStatusCode(0)));
        assert_eq!(grpc.kind, EventKind::ResponseEnd);
        assert_eq!((grpc.grpc_status, grpc.reset_code), (Some(0), None));
        assert_eq!(grpc.response_bytes, Some(512));
        assert_eq!(grpc.since_request_init, Some(Duration::from_millis(2)));
        assert_eq!(grpc.since_response_init, Some(Duration::from_micros(1300)));
        assert_eq!(grpc.trailers, [("grpc-status".to_string(), b"0".to_vec())]);
        assert!(grpc.headers.is_empty());
        assert_eq!(
            grpc.to_string(),
            format!("end id=7:4 {flow} grpc-status=OK duration=1300µs response-length=512B")
        );

        let reset = end(Some(eos::End::ResetErrorCode(8)));
        assert_eq!((reset.grpc_status, reset.reset_code), (None, Some(8)));
        assert_eq!(
            reset.to_string(),
            format!("end id=7:4 {flow} reset-error=8 duration=1300µs response-length=512B")
        );

        let plain = end(None);
        assert_eq!((plain.grpc_status, plain.reset_code), (None, None));
        assert_eq!(
            plain.to_string(),
            format!("end id=7:4 {flow} duration=1300µs response-length=512B")
        );
    }

    #[test]
    fn missing_and_invalid_parts_are_absent() {
        let event = Event::from(TapEvent {
            source: Some(net::TcpAddress { ip: None, port: 80 }),
            destination: Some(net::TcpAddress {
                ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)).into()),
                port: 70_000,
            }),
            proxy_direction: 9,
            ..Default::default()
        });
        assert_eq!(event.kind, EventKind::Unknown);
        assert_eq!(event.direction, "unknown");
        assert_eq!((event.source, event.destination), (None, None));
        assert!(event.source_labels.is_empty());
        assert_eq!(event.to_string(), "unknown proxy=??? src=- dst=- tls=");

        let negative = ev::ResponseInit {
            since_request_init: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let event = Event::from(tap(
            tap_event::ProxyDirection::Inbound,
            ev::Event::ResponseInit(negative),
        ));
        assert_eq!(event.since_request_init, None);
        assert_eq!(event.id, (0, 0));
    }

    #[test]
    fn grpc_codes_are_named_as_go_names_them() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(1), "Canceled");
        assert_eq!(grpc_code_name(7), "PermissionDenied");
        assert_eq!(grpc_code_name(16), "Unauthenticated");
        assert_eq!(grpc_code_name(17), "Code(17)");
        for code in 0..=16 {
            let tonic = tonic::Code::from_i32(code as i32);
            assert_eq!(
                grpc_code_name(code).to_lowercase(),
                format!("{tonic:?}")
                    .to_lowercase()
                    .replace("cancelled", "canceled")
            );
        }
    }
}
