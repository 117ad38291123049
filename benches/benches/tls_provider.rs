//! Which rustls crypto provider for mesh TLS: *ring* (what ringlink uses) or aws-lc-rs
//! (what linkerd2-proxy uses), measured in memory on one thread: no sockets, both ends of
//! every connection driven here by moving TLS bytes through `Vec` buffers, so the numbers
//! are rustls plus the provider and nothing else.
//!
//! Shaped like Linkerd's mesh TLS (`ringlink_protocols::tls`): TLS 1.3 only; a trust
//! anchor and an issuer under it (both ECDSA P-256, as Linkerd's identity controller has),
//! server and client leaves (ECDSA P-256, DNS SAN `*.ns.serviceaccount.identity.linkerd.
//! cluster.local`, server and client auth) presented with the issuer; the server requires
//! and verifies the client's chain (`WebPkiClientVerifier`); ALPN `transport.l5d.io/v1`;
//! cipher suites AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 and key exchange X25519,
//! P-256, P-384, in that order; no session tickets, no session cache, no resumption.
//!
//! Measured for each provider, in rounds whose provider order alternates:
//! - `handshake`: full mutual-auth handshakes, client and server together, each on a new
//!   pair of connections (created, handshaken, dropped); CPU µs per handshake. With
//!   aws-lc-rs also with X25519MLKEM768 (the post-quantum group linkerd2-proxy offers first),
//!   which *ring* does not have;
//! - `bulk`: after one handshake, 64 MiB written by the client in 16 KiB writes, encrypted,
//!   moved, decrypted and read by the server; CPU ns per KiB, for each cipher suite forced;
//! - `small`: 1 KiB from client to server then 1 KiB back, each written, encrypted, moved,
//!   decrypted and read; CPU ns per exchange, for each cipher suite forced.
//!
//! CPU time is the thread's (`CLOCK_THREAD_CPUTIME_ID`); wall time is printed beside it.
//!
//! ```sh
//! taskset -c 1 cargo bench -p ringlink-benches --features aws-lc --bench tls_provider
//! ```
//!
//! Without `--features aws-lc` only *ring* is measured (and the output says so). Options
//! after `--`: `--rounds N` (5), `--handshakes N` (1000), `--bulk-mib N` (64),
//! `--exchanges N` (100000). Run without `--bench` (`cargo test --benches`) it does one
//! tiny round as a smoke test.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, Connection, NamedGroup, RootCertStore,
    ServerConfig, ServerConnection,
};

const ALPN: &[u8] = b"transport.l5d.io/v1";
const SERVER_NAME: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";
const CLIENT_NAME: &str = "vote-bot.ns.serviceaccount.identity.linkerd.cluster.local";
const BULK_WRITE: usize = 16 * 1024;
const SMALL_MESSAGE: usize = 1024;

const SUITES: [CipherSuite; 3] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
];

// === providers ===

/// A provider under test: its name and its mesh-shaped `CryptoProvider`, and with aws-lc-rs
/// the same with X25519MLKEM768 first.
struct Provider {
    name: &'static str,
    mesh: CryptoProvider,
    post_quantum: Option<CryptoProvider>,
}

fn ring() -> Provider {
    use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
    Provider {
        name: "ring",
        mesh: CryptoProvider {
            cipher_suites: vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
                cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            ],
            kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
            ..default_provider()
        },
        post_quantum: None,
    }
}

#[cfg(feature = "aws-lc")]
fn aws_lc() -> Provider {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
    let mesh = CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..default_provider()
    };
    let mut post_quantum = mesh.clone();
    post_quantum.kx_groups.insert(0, kx_group::X25519MLKEM768);
    Provider {
        name: "aws-lc-rs",
        mesh,
        post_quantum: Some(post_quantum),
    }
}

fn providers() -> Vec<Provider> {
    #[cfg(feature = "aws-lc")]
    return vec![ring(), aws_lc()];
    #[cfg(not(feature = "aws-lc"))]
    return vec![ring()];
}

/// `provider` with only `suite` left.
fn only(provider: &CryptoProvider, suite: CipherSuite) -> CryptoProvider {
    let mut provider = provider.clone();
    provider.cipher_suites.retain(|s| s.suite() == suite);
    assert_eq!(provider.cipher_suites.len(), 1, "{suite:?} missing");
    provider
}

// === PKI and configurations ===

struct Pki {
    anchor: CertificateDer<'static>,
    server: (Vec<CertificateDer<'static>>, Vec<u8>),
    client: (Vec<CertificateDer<'static>>, Vec<u8>),
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

impl Pki {
    fn new() -> Pki {
        let anchor = CertifiedIssuer::self_signed(ca_params("root.linkerd.cluster.local"), p256())
            .expect("anchor");
        let issuer = CertifiedIssuer::signed_by(
            ca_params("identity.linkerd.cluster.local"),
            p256(),
            &anchor,
        )
        .expect("issuer");
        let leaf = |name: &str| {
            let key = p256();
            let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &issuer).expect("leaf");
            (
                vec![cert.der().clone(), issuer.der().clone()],
                key.serialize_der(),
            )
        };
        Pki {
            anchor: anchor.der().clone(),
            server: leaf(SERVER_NAME),
            client: leaf(CLIENT_NAME),
        }
    }
}

/// A client and a server configuration on one provider.
struct Pair {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: ServerName<'static>,
}

fn key(pkcs8: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()))
}

impl Pair {
    fn new(pki: &Pki, provider: &CryptoProvider) -> Pair {
        let provider = Arc::new(provider.clone());
        let versions: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        let mut roots = RootCertStore::empty();
        roots.add(pki.anchor.clone()).expect("anchor");
        let roots = Arc::new(roots);

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .expect("server verifier");
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("TLS 1.3")
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(pki.client.0.clone(), key(&pki.client.1))
            .expect("client certificate");
        client.resumption = Resumption::disabled();
        client.alpn_protocols = vec![ALPN.to_vec()];

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .expect("client verifier");
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("TLS 1.3")
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(pki.server.0.clone(), key(&pki.server.1))
            .expect("server certificate");
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.alpn_protocols = vec![ALPN.to_vec()];

        Pair {
            client: Arc::new(client),
            server: Arc::new(server),
            name: ServerName::try_from(SERVER_NAME).expect("server name"),
        }
    }
}

// === driving the connections ===

/// Buffers reused across calls: TLS bytes in flight, plaintext read out.
struct Wire {
    tls: Vec<u8>,
    sink: Vec<u8>,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            tls: Vec::with_capacity(64 * 1024),
            sink: vec![0; 64 * 1024],
        }
    }

    /// Moves all that `from` has to send into `to`, has `to` process it and reads all the
    /// plaintext it yields. Returns the plaintext bytes read.
    fn transfer(&mut self, from: &mut Connection, to: &mut Connection) -> usize {
        self.tls.clear();
        while from.wants_write() {
            from.write_tls(&mut self.tls).expect("write to a Vec");
        }
        let mut plaintext = 0;
        let mut unread = &self.tls[..];
        while !unread.is_empty() {
            to.read_tls(&mut unread).expect("read from a slice");
            to.process_new_packets().expect("TLS");
            loop {
                match to.reader().read(&mut self.sink) {
                    Ok(0) => break,
                    Ok(n) => plaintext += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read plaintext: {e}"),
                }
            }
        }
        plaintext
    }

    /// A new client and server connection, handshaken.
    fn handshake(&mut self, pair: &Pair) -> (Connection, Connection) {
        let mut c = Connection::from(
            ClientConnection::new(pair.client.clone(), pair.name.clone()).expect("client"),
        );
        let mut s = Connection::from(ServerConnection::new(pair.server.clone()).expect("server"));
        for _ in 0..4 {
            self.transfer(&mut c, &mut s);
            self.transfer(&mut s, &mut c);
            if !c.is_handshaking() && !s.is_handshaking() {
                return (c, s);
            }
        }
        panic!("handshake did not complete");
    }
}

/// One handshake on `pair`, checked to be mesh-shaped; what it negotiated.
fn check(pair: &Pair, wire: &mut Wire) -> (CipherSuite, NamedGroup) {
    let (c, s) = wire.handshake(pair);
    for conn in [&c, &s] {
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(conn.alpn_protocol(), Some(ALPN));
        assert_eq!(conn.peer_certificates().map(<[_]>::len), Some(2));
    }
    let suite = c.negotiated_cipher_suite().expect("suite").suite();
    let group = c.negotiated_key_exchange_group().expect("group").name();
    assert_eq!(s.negotiated_cipher_suite().map(|s| s.suite()), Some(suite));
    (suite, group)
}

// === timing ===

#[derive(Clone, Copy)]
struct Sample {
    cpu_ns: f64,
    wall_ns: f64,
}

#[allow(unsafe_code)]
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU and wall time of `f`, divided by `units`.
fn timed(units: usize, f: impl FnOnce()) -> Sample {
    let wall = Instant::now();
    let cpu = thread_cpu_ns();
    f();
    let cpu = thread_cpu_ns() - cpu;
    let wall = wall.elapsed().as_nanos() as f64;
    Sample {
        cpu_ns: cpu as f64 / units as f64,
        wall_ns: wall / units as f64,
    }
}

// === measurements ===

struct Counts {
    rounds: usize,
    handshakes: usize,
    bulk_bytes: usize,
    exchanges: usize,
}

fn handshakes(pair: &Pair, wire: &mut Wire, n: usize) -> Sample {
    for _ in 0..(n / 20).max(1) {
        wire.handshake(pair);
    }
    timed(n, || {
        for _ in 0..n {
            wire.handshake(pair);
        }
    })
}

fn bulk(pair: &Pair, wire: &mut Wire, bytes: usize) -> Sample {
    let chunk = vec![0x5a; BULK_WRITE];
    let writes = bytes / BULK_WRITE;
    let (mut c, mut s) = wire.handshake(pair);
    let mut send = |wire: &mut Wire, n: usize| {
        let mut got = 0;
        for _ in 0..n {
            c.writer().write_all(&chunk).expect("write plaintext");
            got += wire.transfer(&mut c, &mut s);
        }
        assert_eq!(got, n * BULK_WRITE);
    };
    send(wire, (writes / 16).max(1));
    timed(bytes / 1024, || send(wire, writes))
}

fn small(pair: &Pair, wire: &mut Wire, exchanges: usize) -> Sample {
    let request = vec![0x71; SMALL_MESSAGE];
    let response = vec![0x72; SMALL_MESSAGE];
    let (mut c, mut s) = wire.handshake(pair);
    let mut exchange = |wire: &mut Wire, n: usize| {
        let mut got = 0;
        for _ in 0..n {
            c.writer().write_all(&request).expect("write request");
            got += wire.transfer(&mut c, &mut s);
            s.writer().write_all(&response).expect("write response");
            got += wire.transfer(&mut s, &mut c);
        }
        assert_eq!(got, n * 2 * SMALL_MESSAGE);
    };
    exchange(wire, (exchanges / 20).max(1));
    timed(exchanges, || exchange(wire, exchanges))
}

/// The rows of the table, in order.
#[derive(Clone, Copy, PartialEq)]
enum Row {
    Handshake,
    HandshakePostQuantum,
    Bulk(CipherSuite),
    Small(CipherSuite),
}

impl Row {
    fn all() -> Vec<Row> {
        let mut rows = vec![Row::Handshake, Row::HandshakePostQuantum];
        rows.extend(SUITES.map(Row::Bulk));
        rows.extend(SUITES.map(Row::Small));
        rows
    }

    fn label(self) -> String {
        match self {
            Row::Handshake => "handshake, mutual, X25519".to_string(),
            Row::HandshakePostQuantum => "handshake, mutual, X25519MLKEM768".to_string(),
            Row::Bulk(suite) => format!("bulk 16 KiB writes, {}", short(suite)),
            Row::Small(suite) => format!("small 1 KiB + 1 KiB, {}", short(suite)),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Row::Handshake | Row::HandshakePostQuantum => "µs/handshake",
            Row::Bulk(_) => "ns/KiB",
            Row::Small(_) => "ns/exchange",
        }
    }

    /// Per-unit nanoseconds in the row's unit.
    fn scale(self, ns: f64) -> f64 {
        match self {
            Row::Handshake | Row::HandshakePostQuantum => ns / 1000.0,
            _ => ns,
        }
    }
}

fn short(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "AES-128-GCM",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "AES-256-GCM",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "ChaCha20-Poly1305",
        _ => "?",
    }
}

/// The configurations of one provider: the mesh's, its post-quantum variant, and one per
/// forced suite.
struct Setup {
    mesh: Pair,
    post_quantum: Option<Pair>,
    forced: Vec<(CipherSuite, Pair)>,
}

impl Setup {
    fn new(pki: &Pki, provider: &Provider) -> Setup {
        Setup {
            mesh: Pair::new(pki, &provider.mesh),
            post_quantum: provider.post_quantum.as_ref().map(|p| Pair::new(pki, p)),
            forced: SUITES
                .iter()
                .map(|&suite| (suite, Pair::new(pki, &only(&provider.mesh, suite))))
                .collect(),
        }
    }

    fn forced(&self, suite: CipherSuite) -> &Pair {
        &self
            .forced
            .iter()
            .find(|(s, _)| *s == suite)
            .expect("suite")
            .1
    }

    /// Measures `row`, or `None` where the provider cannot (post-quantum on *ring*).
    fn measure(&self, row: Row, counts: &Counts, wire: &mut Wire) -> Option<Sample> {
        Some(match row {
            Row::Handshake => handshakes(&self.mesh, wire, counts.handshakes),
            Row::HandshakePostQuantum => {
                handshakes(self.post_quantum.as_ref()?, wire, counts.handshakes)
            }
            Row::Bulk(suite) => bulk(self.forced(suite), wire, counts.bulk_bytes),
            Row::Small(suite) => small(self.forced(suite), wire, counts.exchanges),
        })
    }
}

// === report ===

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cpu_info() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    #[allow(unused_mut)]
    let mut features = Vec::<&str>::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($f) { features.push($f); })*
            };
        }
        detect!(
            "aes",
            "pclmulqdq",
            "avx2",
            "avx512f",
            "vaes",
            "vpclmulqdq",
            "sha",
            "adx"
        );
    }
    let affinity = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .and_then(|l| l.split(':').nth(1))
                .map(|a| a.trim().to_string())
        })
        .unwrap_or_else(|| "?".to_string());
    format!(
        "CPU: {model}; features: {}; this process may run on CPUs {affinity}",
        features.join(" ")
    )
}

fn parse_args() -> Counts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let mut counts = if bench {
        Counts {
            rounds: 5,
            handshakes: 1000,
            bulk_bytes: 64 << 20,
            exchanges: 100_000,
        }
    } else {
        // `cargo test --benches`: one tiny round, to check that it all works.
        Counts {
            rounds: 1,
            handshakes: 4,
            bulk_bytes: 1 << 20,
            exchanges: 100,
        }
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--rounds" => counts.rounds = value().max(1),
            "--handshakes" => counts.handshakes = value().max(1),
            "--bulk-mib" => counts.bulk_bytes = value().max(1) << 20,
            "--exchanges" => counts.exchanges = value().max(1),
            _ => {}
        }
    }
    counts
}

fn main() {
    let counts = parse_args();
    let providers = providers();
    let pki = Pki::new();
    let setups: Vec<Setup> = providers.iter().map(|p| Setup::new(&pki, p)).collect();
    let mut wire = Wire::new();
    let rows = Row::all();

    let mut out = String::new();
    let _ = writeln!(out, "# rustls crypto provider: ring vs aws-lc-rs\n");
    let _ = writeln!(out, "{}\n", cpu_info());
    if cfg!(feature = "aws-lc") {
        let _ = writeln!(out, "Providers: ring and aws-lc-rs (`--features aws-lc`).");
    } else {
        let _ = writeln!(
            out,
            "Providers: **ring only**: built without `--features aws-lc`, so aws-lc-rs was \
             NOT measured and its columns are empty."
        );
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name).collect();
    let reversed: Vec<&str> = names.iter().rev().copied().collect();
    let _ = writeln!(
        out,
        "{} rounds; per round per provider: {} handshakes, {} MiB bulk per suite, {} small \
         exchanges per suite; order: odd rounds {}, even rounds {}.\n",
        counts.rounds,
        counts.handshakes,
        counts.bulk_bytes >> 20,
        counts.exchanges,
        names.join(", "),
        reversed.join(", "),
    );
    for (provider, setup) in providers.iter().zip(&setups) {
        let (suite, group) = check(&setup.mesh, &mut wire);
        let _ = write!(
            out,
            "- {}: the mesh configuration negotiates TLS 1.3, {suite:?}, {group:?}, ALPN \
             transport.l5d.io/v1, both chains (leaf + issuer) verified",
            provider.name
        );
        if let Some(pq) = &setup.post_quantum {
            let (_, group) = check(pq, &mut wire);
            let _ = write!(out, "; the post-quantum variant {group:?}");
        }
        for (suite, pair) in &setup.forced {
            assert_eq!(check(pair, &mut wire).0, *suite);
        }
        let _ = writeln!(out);
    }
    print!("{out}");
    out.clear();

    // samples[row][provider] = one Sample per round.
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); providers.len()]; rows.len()];
    for round in 0..counts.rounds {
        let mut order: Vec<usize> = (0..providers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &p in &order {
            eprintln!(
                "round {}/{}: {}",
                round + 1,
                counts.rounds,
                providers[p].name
            );
            for (r, &row) in rows.iter().enumerate() {
                if let Some(sample) = setups[p].measure(row, &counts, &mut wire) {
                    samples[r][p].push(sample);
                }
            }
        }
    }

    let columns = ["ring", "aws-lc-rs"];
    let _ = writeln!(
        out,
        "\nMedian of {} rounds, thread CPU time (and wall time) per unit; ratio = aws-lc-rs / \
         ring (below 1: aws-lc-rs cheaper).\n",
        counts.rounds
    );
    let _ = writeln!(
        out,
        "| measurement | unit | ring CPU | aws-lc-rs CPU | aws-lc/ring CPU | ring wall | \
         aws-lc-rs wall | aws-lc/ring wall |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    let medians: Vec<Vec<Option<(f64, f64)>>> = samples
        .iter()
        .zip(&rows)
        .map(|(per_provider, &row)| {
            columns
                .iter()
                .map(|name| {
                    let p = providers.iter().position(|p| p.name == *name)?;
                    let s = &per_provider[p];
                    if s.is_empty() {
                        return None;
                    }
                    let mut cpu: Vec<f64> = s.iter().map(|s| row.scale(s.cpu_ns)).collect();
                    let mut wall: Vec<f64> = s.iter().map(|s| row.scale(s.wall_ns)).collect();
                    Some((median(&mut cpu), median(&mut wall)))
                })
                .collect()
        })
        .collect();
    let handshake_ring = medians[0][0];
    for (r, &row) in rows.iter().enumerate() {
        let [ring, aws] = [medians[r][0], medians[r][1]];
        if ring.is_none() && aws.is_none() {
            continue;
        }
        // ring has no X25519MLKEM768: that row's ratio is against ring's X25519 handshake.
        let (base, note) = match row {
            Row::HandshakePostQuantum => (handshake_ring, " (vs ring X25519)"),
            _ => (ring, ""),
        };
        let cell = |v: Option<(f64, f64)>, wall: bool| {
            v.map(|(c, w)| fmt_value(if wall { w } else { c }))
                .unwrap_or_else(|| "-".to_string())
        };
        let ratio = |wall: bool| match (base, aws) {
            (Some(b), Some(a)) => {
                let (b, a) = if wall { (b.1, a.1) } else { (b.0, a.0) };
                format!("{:.2}×{note}", a / b)
            }
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label(),
            row.unit(),
            cell(ring, false),
            cell(aws, false),
            ratio(false),
            cell(ring, true),
            cell(aws, true),
            ratio(true),
        );
    }

    let _ = writeln!(out, "\nEvery round, CPU time per unit (in run order):\n");
    let _ = write!(out, "| measurement | provider |");
    for round in 1..=counts.rounds {
        let _ = write!(out, " round {round} |");
    }
    let _ = writeln!(out, "\n|---|---|{}", "---:|".repeat(counts.rounds));
    for (r, &row) in rows.iter().enumerate() {
        for (p, provider) in providers.iter().enumerate() {
            if samples[r][p].is_empty() {
                continue;
            }
            let _ = write!(out, "| {} | {} |", row.label(), provider.name);
            for s in &samples[r][p] {
                let _ = write!(out, " {} |", fmt_value(row.scale(s.cpu_ns)));
            }
            let _ = writeln!(out);
        }
    }
    print!("{out}");
}
