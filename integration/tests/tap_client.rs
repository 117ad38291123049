//! The tap client (`ringlink_integration::tap`) and the `ringlink-tap` command against a
//! scripted Tap server on loopback, without a proxy: the request each sends, the events
//! each reads back, their exit statuses, and mesh mTLS with a client certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linkerd2_proxy_api::http_types::{self, http_method, scheme};
use linkerd2_proxy_api::net::TcpAddress;
use linkerd2_proxy_api::tap::tap_event::{self, http as ev, EndpointMeta, ProxyDirection};
use linkerd2_proxy_api::tap::tap_server::{Tap, TapServer};
use linkerd2_proxy_api::tap::{eos, Eos, ObserveRequest, TapEvent};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use ringlink_integration::tap::{self, EventKind, Match, Observe};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

const TAP: &str = env!("CARGO_BIN_EXE_ringlink-tap");
const TIMEOUT: Duration = Duration::from_secs(5);
const PROXY: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const CLIENT: &str = "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local";

type Item = Result<TapEvent, Status>;

/// A Tap server answering every `Observe` with the same script, then the end of the stream.
struct MockTap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

/// One `Observe` call as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    request: ObserveRequest,
    /// How many certificates the client presented (TLS only).
    client_certs: usize,
}

#[derive(Clone)]
struct Service {
    script: Vec<Item>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn mock(script: Vec<Item>, tls: Option<ServerTlsConfig>) -> MockTap {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = TapServer::new(Service {
        script,
        seen: seen.clone(),
    });
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).unwrap();
    }
    let task = tokio::spawn(async move {
        server
            .serve_with_incoming(service, TcpIncoming::from(listener))
            .await
            .unwrap()
    });
    MockTap { addr, seen, task }
}

impl MockTap {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for MockTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tonic::async_trait]
impl Tap for Service {
    type ObserveStream = tokio_stream::Iter<std::vec::IntoIter<Item>>;

    async fn observe(
        &self,
        request: Request<ObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let client_certs = request.peer_certs().map_or(0, |certs| certs.len());
        self.seen.lock().unwrap().push(Seen {
            request: request.into_inner(),
            client_certs,
        });
        Ok(Response::new(tokio_stream::iter(self.script.clone())))
    }
}

// === the script: one inbound request's three events ===

fn base(event: ev::Event) -> TapEvent {
    let tcp = |addr: &str| {
        let addr: SocketAddr = addr.parse().unwrap();
        Some(TcpAddress {
            ip: Some(addr.ip().into()),
            port: addr.port().into(),
        })
    };
    TapEvent {
        source: tcp("10.0.0.1:53000"),
        source_meta: Some(EndpointMeta {
            labels: [("tls".to_string(), "true".to_string())].into(),
        }),
        route_meta: None,
        destination: tcp("10.0.0.2:8080"),
        destination_meta: None,
        proxy_direction: ProxyDirection::Inbound.into(),
        event: Some(tap_event::Event::Http(tap_event::Http {
            event: Some(event),
        })),
    }
}

fn headers(pairs: &[(&str, &str)]) -> Option<http_types::Headers> {
    Some(http_types::Headers {
        headers: pairs
            .iter()
            .map(|(name, value)| http_types::headers::Header {
                name: name.to_string(),
                value: value.as_bytes().to_vec(),
            })
            .collect(),
    })
}

fn micros(us: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: 0,
        nanos: us * 1000,
    })
}

fn one_request() -> Vec<Item> {
    let id = Some(ev::StreamId { base: 7, stream: 1 });
    vec![
        Ok(base(ev::Event::RequestInit(ev::RequestInit {
            id,
            method: Some(http_types::HttpMethod {
                r#type: Some(http_method::Type::Registered(
                    http_method::Registered::Get.into(),
                )),
            }),
            scheme: Some(http_types::Scheme {
                r#type: Some(scheme::Type::Registered(scheme::Registered::Http.into())),
            }),
            authority: "web:8080".to_string(),
            path: "/x".to_string(),
            headers: headers(&[("user-agent", "test")]),
        }))),
        Ok(base(ev::Event::ResponseInit(ev::ResponseInit {
            id,
            since_request_init: micros(1234),
            http_status: 200,
            headers: headers(&[("content-type", "text/plain")]),
        }))),
        Ok(base(ev::Event::ResponseEnd(ev::ResponseEnd {
            id,
            since_request_init: micros(1300),
            since_response_init: micros(66),
            response_bytes: 512,
            eos: Some(Eos {
                end: Some(eos::End::GrpcStatusCode(0)),
            }),
            trailers: headers(&[("grpc-status", "0")]),
        }))),
    ]
}

const LINES: [&str; 6] = [
    "req id=7:1 proxy=in  src=10.0.0.1:53000 dst=10.0.0.2:8080 tls=true \
     :method=GET :authority=web:8080 :path=/x",
    "    user-agent: test",
    "rsp id=7:1 proxy=in  src=10.0.0.1:53000 dst=10.0.0.2:8080 tls=true \
     :status=200 latency=1234µs",
    "    content-type: text/plain",
    "end id=7:1 proxy=in  src=10.0.0.1:53000 dst=10.0.0.2:8080 tls=true \
     grpc-status=OK duration=66µs response-length=512B",
    "    grpc-status: 0",
];

/// Runs `ringlink-tap` with `args`.
async fn run_tap(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(TAP)
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(TIMEOUT, child)
        .await
        .expect("ringlink-tap did not exit")
        .expect("run ringlink-tap")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_the_built_request_and_reads_the_events() {
    let server = mock(one_request(), None).await;
    let mut client = tap::connect(server.addr, None).await.expect("connect");
    let request = Observe::new(3)
        .path_prefix("/x")
        .method("GET")
        .not(Match::destination_port(4191))
        .headers(true)
        .build();
    let mut stream = client.observe(request.clone()).await.unwrap().into_inner();
    let events = tap::until_end(&mut stream, TIMEOUT)
        .await
        .expect("stream ends");

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request, request);
    assert_eq!(seen[0].client_certs, 0);

    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::RequestInit,
            EventKind::ResponseInit,
            EventKind::ResponseEnd
        ]
    );
    assert!(events.iter().all(|e| e.id == (7, 1)
        && e.direction == "inbound"
        && e.source == Some("10.0.0.1:53000".parse().unwrap())
        && e.destination == Some("10.0.0.2:8080".parse().unwrap())
        && e.source_labels.get("tls").map(String::as_str) == Some("true")));
    let (req, rsp, end) = (&events[0], &events[1], &events[2]);
    assert_eq!(req.method.as_deref(), Some("GET"));
    assert_eq!(req.scheme.as_deref(), Some("http"));
    assert_eq!(req.authority.as_deref(), Some("web:8080"));
    assert_eq!(req.path.as_deref(), Some("/x"));
    assert_eq!(req.headers, [("user-agent".to_string(), b"test".to_vec())]);
    assert_eq!(rsp.status, Some(200));
    assert_eq!(rsp.since_request_init, Some(Duration::from_micros(1234)));
    assert_eq!(end.grpc_status, Some(0));
    assert_eq!(end.reset_code, None);
    assert_eq!(end.response_bytes, Some(512));
    assert_eq!(end.since_response_init, Some(Duration::from_micros(66)));
    assert_eq!(end.trailers, [("grpc-status".to_string(), b"0".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_stops_at_n_and_until_end_returns_the_status() {
    let mut script = one_request();
    script.push(Err(Status::permission_denied("not authorized to tap")));
    let server = mock(script, None).await;
    let mut client = tap::connect(server.addr, None).await.unwrap();

    let mut stream = client
        .observe(Observe::new(1).build())
        .await
        .unwrap()
        .into_inner();
    let events = tap::collect(&mut stream, 2, TIMEOUT).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventKind::ResponseInit);

    let mut stream = client
        .observe(Observe::new(1).build())
        .await
        .unwrap()
        .into_inner();
    let status = tap::until_end(&mut stream, TIMEOUT).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "not authorized to tap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_one_line_per_event() {
    let server = mock(one_request(), None).await;
    let addr = server.addr.to_string();
    let args = [
        "--path-prefix",
        "/x",
        "--method=GET",
        "--authority",
        "web:8080",
        "--port",
        "8080",
        "--limit",
        "3",
        "--headers",
        &addr,
    ];
    let out = run_tap(&args).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), LINES, "{stdout}");
    for part in ["req id=", ":path=/x", "rsp id=", ":status=200", "end id="] {
        assert!(stdout.contains(part), "{part} in {stdout}");
    }
    let expected = Observe::new(3)
        .path_prefix("/x")
        .method("GET")
        .authority("web:8080")
        .destination_port(8080)
        .headers(true)
        .build();
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request, expected);

    // Without options: every request, the default limit, no headers printed.
    let out = run_tap(&[&addr]).await;
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let unindented: Vec<&str> = LINES.iter().copied().step_by(2).collect();
    assert_eq!(lines, unindented);
    assert_eq!(server.seen()[1].request, Observe::new(100).build());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_exits_with_a_status_for_each_failure() {
    // Bad arguments: 64, naming the option, before any connection.
    let cases: &[(&[&str], &str)] = &[
        (&["--port", "x", "127.0.0.1:1"], "--port"),
        (&["--port", "0", "127.0.0.1:1"], "--port"),
        (&["--limit=-1", "127.0.0.1:1"], "--limit"),
        (&["--method", "GET /", "127.0.0.1:1"], "--method"),
        (&["--colour", "127.0.0.1:1"], "--colour"),
        (&["--headers=yes", "127.0.0.1:1"], "--headers"),
        (&["127.0.0.1:1", "--path-prefix"], "--path-prefix"),
        (&["--limit", "3"], "ADDR"),
        (&["localhost"], "ADDR"),
        (&["127.0.0.1:1", "127.0.0.2:1"], "ADDR"),
        (
            &["--cert", "c.pem", "--key", "k.p8", "127.0.0.1:1"],
            "--trust-anchors, --server-name",
        ),
        (
            &["--server-name", "not a name", "127.0.0.1:1"],
            "--server-name",
        ),
    ];
    for &(args, named) in cases {
        let out = run_tap(args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.starts_with("ringlink-tap: "), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    let help = run_tap(&["--help"]).await;
    assert!(help.status.success());
    assert!(text(&help.stdout).starts_with("usage: ringlink-tap [OPTIONS] ADDR\n"));

    // A gRPC error: 1, with the code and message, after the events before it.
    let server = mock(
        vec![
            one_request().remove(0),
            Err(Status::permission_denied("not authorized to tap")),
        ],
        None,
    )
    .await;
    let out = run_tap(&[&server.addr.to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert_eq!(
        text(&out.stderr),
        "ringlink-tap: PermissionDenied: not authorized to tap\n"
    );

    // Nothing listening: 69.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = run_tap(&[&addr]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

// === mesh mTLS ===

/// A CA, a certificate for the proxy (the server) and one for the tap client.
struct Pki {
    ca_pem: String,
    server: Identity,
    client_chain_pem: String,
    client_key: KeyPair,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key)
    };
    let (server_pem, server_key) = leaf(PROXY);
    let (client_chain_pem, client_key) = leaf(CLIENT);
    Pki {
        server: Identity::from_pem(server_pem, server_key.serialize_pem()),
        ca_pem,
        client_chain_pem,
        client_key,
    }
}

/// A directory of files for the command, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ringlink-tap-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_mtls_presents_the_client_certificate_and_checks_the_proxy_name() {
    let pki = pki();
    let tls = ServerTlsConfig::new()
        .identity(pki.server.clone())
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let server = mock(one_request(), Some(tls)).await;

    // The library: the proxy's name verifies; another name does not.
    let anchors = || {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        roots
    };
    let config = tap::client_config(
        vec![CertificateDer::from_pem_slice(pki.client_chain_pem.as_bytes()).unwrap()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.client_key.serialize_der())),
        anchors(),
    )
    .unwrap();
    let name = ServerName::try_from(PROXY).unwrap();
    let mut client = tap::connect(server.addr, Some((config.clone(), name)))
        .await
        .expect("mTLS connect");
    let mut stream = client
        .observe(Observe::new(1).build())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tap::until_end(&mut stream, TIMEOUT).await.unwrap().len(), 3);
    assert_eq!(server.seen()[0].client_certs, 1);
    let other = ServerName::try_from("other.default.serviceaccount.identity.linkerd.cluster.local")
        .unwrap();
    assert!(tap::connect(server.addr, Some((config, other)))
        .await
        .is_err());

    // The command, with the key as DER (a Linkerd identity directory's key.p8) and as PEM.
    let addr = server.addr.to_string();
    let dir = TempDir::new("mtls");
    let cert = dir.write("crt.pem", &pki.client_chain_pem);
    let anchors = dir.write("ca.pem", &pki.ca_pem);
    let der = dir.write("key.p8", pki.client_key.serialize_der());
    let pem = dir.write("key.pem", pki.client_key.serialize_pem());
    for key in [&der, &pem] {
        let args = [
            "--cert",
            &cert,
            "--key",
            key,
            "--trust-anchors",
            &anchors,
            "--server-name",
            PROXY,
            &addr,
        ];
        let out = run_tap(&args).await;
        assert!(out.status.success(), "{key}: {out:?}");
        assert_eq!(text(&out.stdout).lines().count(), 3, "{out:?}");
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.client_certs == 1), "{seen:?}");

    // A wrong name cannot connect (69); an unreadable key file is a bad argument (64).
    let args = [
        "--cert",
        &cert,
        "--key",
        &der,
        "--trust-anchors",
        &anchors,
        "--server-name",
        "other.example",
        &addr,
    ];
    let out = run_tap(&args).await;
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let args = [
        "--cert",
        &cert,
        "--key",
        "/nonexistent/key.p8",
        "--trust-anchors",
        &anchors,
        "--server-name",
        PROXY,
        &addr,
    ];
    let out = run_tap(&args).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        text(&out.stderr).contains("--key /nonexistent/key.p8"),
        "{out:?}"
    );
}
