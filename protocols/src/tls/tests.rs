use std::io::{Read, Write};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::{
    CipherSuite, ClientConnection, Connection, NamedGroup, ProtocolVersion, ServerConnection,
};

use super::*;

const FOO: &str = "foo.ns.serviceaccount.identity.linkerd.cluster.local";
const BAR: &str = "bar.ns.serviceaccount.identity.linkerd.cluster.local";

// === test PKI ===

/// A trust anchor and an intermediate issuer under it, as Linkerd's identity controller has.
struct Pki {
    anchor_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
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
    fn new(label: &str) -> Pki {
        let anchor = CertifiedIssuer::self_signed(ca_params(&format!("{label} root")), p256())
            .expect("anchor");
        let issuer =
            CertifiedIssuer::signed_by(ca_params(&format!("{label} issuer")), p256(), &anchor)
                .expect("issuer");
        Pki {
            anchor_pem: pem(anchor.der()),
            issuer,
        }
    }

    fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(&self.anchor_pem).expect("anchors")
    }

    /// A leaf for `name` (DNS SAN, server and client auth, as Linkerd issues them), with
    /// its key and the intermediate.
    fn credentials(&self, name: &str) -> Credentials {
        let key = p256();
        let leaf = self.leaf(name, &key);
        Credentials {
            name: name.to_string(),
            key_pkcs8: key.serialize_der(),
            chain: vec![leaf, self.issuer.der().to_vec()],
        }
    }

    fn leaf(&self, name: &str, key: &KeyPair) -> Vec<u8> {
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params
            .signed_by(key, &self.issuer)
            .expect("leaf")
            .der()
            .to_vec()
    }

    fn mesh(&self, name: &str) -> MeshTls {
        MeshTls::new(&self.credentials(name), &self.anchors()).expect("mesh TLS")
    }
}

/// PEM for a DER certificate (base64 in 64-character lines).
fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

// === in-memory handshakes ===

#[derive(Debug)]
enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Moves everything `from` has to write into `to`, and has `to` process it.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<usize, rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).expect("write to a Vec");
    }
    let mut unread = &bytes[..];
    while !unread.is_empty() {
        to.read_tls(&mut unread).expect("read from a slice");
        to.process_new_packets()?;
    }
    Ok(bytes.len())
}

/// A client with `client` connecting as to `server_name`, a server with `server`, and the
/// outcome of their handshake (over in-memory buffers).
fn connect(
    client: &Arc<ClientConfig>,
    server_name: &str,
    server: &Arc<ServerConfig>,
) -> (Connection, Connection, Result<(), Failed>) {
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let mut c = Connection::from(ClientConnection::new(client.clone(), name).expect("client"));
    let mut s = Connection::from(ServerConnection::new(server.clone()).expect("server"));
    let mut outcome = Ok(());
    for _ in 0..8 {
        let sent = match transfer(&mut c, &mut s) {
            Ok(n) => n,
            Err(e) => {
                outcome = Err(Failed::Server(e));
                break;
            }
        };
        let answered = match transfer(&mut s, &mut c) {
            Ok(n) => n,
            Err(e) => {
                outcome = Err(Failed::Client(e));
                break;
            }
        };
        if sent == 0 && answered == 0 {
            break;
        }
    }
    if outcome.is_ok() {
        assert!(
            !c.is_handshaking() && !s.is_handshaking(),
            "handshake stalled"
        );
    }
    (c, s, outcome)
}

/// A client configuration without a certificate, trusting `anchors`.
fn anonymous_client(anchors: &TrustAnchors) -> Arc<ClientConfig> {
    let provider = Arc::new(provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(anchors.roots.clone(), provider.clone())
            .build()
            .unwrap();
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

fn peer_leaf(conn: &Connection) -> Option<Vec<u8>> {
    conn.peer_certificates()?.first().map(|c| c.to_vec())
}

// === MeshTls ===

#[test]
fn builds_four_configurations() {
    let pki = Pki::new("a");
    let mesh = pki.mesh(FOO);
    assert_eq!(mesh.name, FOO);
    assert!(mesh.server.alpn_protocols.is_empty());
    assert_eq!(
        mesh.server_direct.alpn_protocols,
        [b"transport.l5d.io/v1".to_vec()]
    );
    assert!(mesh.client.alpn_protocols.is_empty());
    assert_eq!(
        mesh.client_transport_header.alpn_protocols,
        [b"transport.l5d.io/v1".to_vec()]
    );
    for server in [&mesh.server, &mesh.server_direct] {
        assert_eq!(server.send_tls13_tickets, 0);
        assert!(!server.session_storage.can_cache());
    }
    for client in [&mesh.client, &mesh.client_transport_header] {
        assert!(client.client_auth_cert_resolver.has_certs());
        assert!(client.enable_sni);
    }
    assert!(format!("{:?}", pki.credentials(FOO)).contains("<2 certificates>"));
}

#[test]
fn mutual_tls_1_3_handshake() {
    let pki = Pki::new("a");
    let (foo, bar) = (pki.mesh(FOO), pki.mesh(BAR));
    let foo_creds = pki.credentials(FOO);
    let (mut client, mut server, outcome) = connect(&foo.client, BAR, &bar.server);
    outcome.expect("handshake");

    for conn in [&client, &server] {
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        // The client's first preferences.
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        assert_eq!(
            conn.negotiated_key_exchange_group().map(|g| g.name()),
            Some(NamedGroup::X25519)
        );
        assert_eq!(conn.alpn_protocol(), None);
    }
    // The server sees the client's whole chain, and its identity.
    let client_chain: Vec<Vec<u8>> = server
        .peer_certificates()
        .expect("client certificates")
        .iter()
        .map(|c| c.to_vec())
        .collect();
    assert_eq!(client_chain.len(), 2);
    assert_eq!(client_chain[1], foo_creds.chain[1]);
    assert_eq!(peer_identity(&client_chain[0]).as_deref(), Some(FOO));
    // And the client the server's.
    let server_leaf = peer_leaf(&client).expect("server certificate");
    assert_eq!(peer_identity(&server_leaf).as_deref(), Some(BAR));
    match &server {
        Connection::Server(s) => assert_eq!(s.server_name(), Some(BAR)),
        Connection::Client(_) => unreachable!(),
    }

    // Data flows both ways.
    client.writer().write_all(b"ping").unwrap();
    transfer(&mut client, &mut server).unwrap();
    let mut got = [0; 4];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    server.writer().write_all(b"pong").unwrap();
    transfer(&mut server, &mut client).unwrap();
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
}

#[test]
fn each_cipher_suite_and_group_is_offered() {
    let pki = Pki::new("a");
    let bar = pki.mesh(BAR);
    let foo = pki.credentials(FOO);
    let base = MeshTls::new(&foo, &pki.anchors()).unwrap();
    for suite in provider().cipher_suites {
        for group in provider().kx_groups {
            let mut client = (*base.client).clone();
            let mut crypto = provider();
            crypto.cipher_suites = vec![suite];
            crypto.kx_groups = vec![group];
            // Same verifier and resolver, narrower provider: rebuild the client.
            let verifier = WebPkiServerVerifier::builder_with_provider(
                pki.anchors().roots.clone(),
                Arc::new(provider()),
            )
            .build()
            .unwrap();
            client = ClientConfig::builder_with_provider(Arc::new(crypto))
                .with_protocol_versions(VERSIONS)
                .unwrap()
                .with_webpki_verifier(verifier)
                .with_client_cert_resolver(client.client_auth_cert_resolver.clone());
            let (c, _s, outcome) = connect(&Arc::new(client), BAR, &bar.server);
            outcome.unwrap_or_else(|e| panic!("{suite:?} {group:?}: {e:?}"));
            assert_eq!(c.negotiated_cipher_suite(), Some(suite));
            assert_eq!(
                c.negotiated_key_exchange_group().map(|g| g.name()),
                Some(group.name())
            );
        }
    }
}

#[test]
fn client_checks_the_server_name() {
    let pki = Pki::new("a");
    let (foo, bar) = (pki.mesh(FOO), pki.mesh(BAR));
    let other = "baz.ns.serviceaccount.identity.linkerd.cluster.local";
    let (_c, _s, outcome) = connect(&foo.client, other, &bar.server);
    match outcome {
        Err(Failed::Client(rustls::Error::InvalidCertificate(e))) => {
            assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_refuses_a_client_certificate_from_another_ca() {
    let (pki, rogue) = (Pki::new("a"), Pki::new("rogue"));
    let bar = pki.mesh(BAR);
    // The rogue client trusts both CAs (so it accepts the server), but its own certificate
    // comes from the other one.
    let both = TrustAnchors::from_pem(&format!("{}{}", rogue.anchor_pem, pki.anchor_pem)).unwrap();
    assert_eq!(both.count(), 2);
    let foo = MeshTls::new(&rogue.credentials(FOO), &both).expect("rogue credentials");
    let (_c, _s, outcome) = connect(&foo.client, BAR, &bar.server);
    match outcome {
        Err(Failed::Server(rustls::Error::InvalidCertificate(e))) => {
            assert_eq!(e, rustls::CertificateError::UnknownIssuer)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_refuses_a_server_certificate_from_another_ca() {
    let (pki, rogue) = (Pki::new("a"), Pki::new("rogue"));
    let foo = pki.mesh(FOO);
    let bar = rogue.mesh(BAR);
    let (_c, _s, outcome) = connect(&foo.client, BAR, &bar.server);
    match outcome {
        Err(Failed::Client(rustls::Error::InvalidCertificate(e))) => {
            assert_eq!(e, rustls::CertificateError::UnknownIssuer)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_without_a_certificate_is_accepted() {
    let pki = Pki::new("a");
    let bar = pki.mesh(BAR);
    let (client, server, outcome) = connect(&anonymous_client(&pki.anchors()), BAR, &bar.server);
    outcome.expect("handshake");
    assert!(server.peer_certificates().is_none());
    assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
}

#[test]
fn direct_server_negotiates_the_transport_header() {
    let pki = Pki::new("a");
    let (foo, bar) = (pki.mesh(FOO), pki.mesh(BAR));
    let (c, s, outcome) = connect(&foo.client_transport_header, BAR, &bar.server_direct);
    outcome.expect("handshake");
    assert_eq!(c.alpn_protocol(), Some(transport_header::ALPN));
    assert_eq!(s.alpn_protocol(), Some(transport_header::ALPN));
    assert_eq!(
        peer_leaf(&s).and_then(|l| peer_identity(&l)).as_deref(),
        Some(FOO)
    );

    // A client offering nothing still connects (linkerd2-proxy then refuses the connection
    // for want of the protocol); one to the inbound server negotiates nothing.
    let (_c, s, outcome) = connect(&foo.client, BAR, &bar.server_direct);
    outcome.expect("handshake");
    assert_eq!(s.alpn_protocol(), None);
    let (_c, s, outcome) = connect(&foo.client_transport_header, BAR, &bar.server);
    outcome.expect("handshake");
    assert_eq!(s.alpn_protocol(), None);

    // A client offering only other protocols is refused by the direct server.
    let mut h2 = (*foo.client).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let (_c, _s, outcome) = connect(&Arc::new(h2), BAR, &bar.server_direct);
    assert!(
        matches!(
            outcome,
            Err(Failed::Server(rustls::Error::NoApplicationProtocol))
        ),
        "{outcome:?}"
    );
}

#[test]
fn chain_without_an_intermediate_under_the_anchor() {
    // A leaf issued by the anchor itself works too.
    let key = p256();
    let anchor = CertifiedIssuer::self_signed(ca_params("root"), p256()).unwrap();
    let mut params = CertificateParams::new(vec![FOO.to_string()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = params.signed_by(&key, &anchor).unwrap().der().to_vec();
    let creds = Credentials {
        name: FOO.to_string(),
        key_pkcs8: key.serialize_der(),
        chain: vec![leaf],
    };
    let anchors = TrustAnchors::from_pem(&pem(anchor.der())).unwrap();
    MeshTls::new(&creds, &anchors).expect("mesh TLS");
}

// === credential errors ===

#[test]
fn key_must_match_the_leaf() {
    let pki = Pki::new("a");
    let mut creds = pki.credentials(FOO);
    creds.key_pkcs8 = p256().serialize_der();
    let err = MeshTls::new(&creds, &pki.anchors()).unwrap_err();
    assert!(
        matches!(err, TlsError::Key(rustls::Error::InconsistentKeys(_))),
        "{err:?}"
    );
    // Not a key at all.
    creds.key_pkcs8 = vec![0x30, 0x03, 0x02, 0x01, 0x00];
    let err = MeshTls::new(&creds, &pki.anchors()).unwrap_err();
    assert!(matches!(err, TlsError::Key(_)), "{err:?}");
    creds.key_pkcs8 = Vec::new();
    assert!(matches!(
        MeshTls::new(&creds, &pki.anchors()),
        Err(TlsError::Key(_))
    ));
}

#[test]
fn key_must_be_p256() {
    let pki = Pki::new("a");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let creds = Credentials {
        name: FOO.to_string(),
        key_pkcs8: key.serialize_der(),
        chain: vec![pki.leaf(FOO, &key), pki.issuer.der().to_vec()],
    };
    let err = MeshTls::new(&creds, &pki.anchors()).unwrap_err();
    assert!(matches!(err, TlsError::UnsupportedKey), "{err:?}");
}

#[test]
fn chain_must_lead_to_the_anchors_and_name_the_identity() {
    let (pki, rogue) = (Pki::new("a"), Pki::new("rogue"));
    let err = MeshTls::new(&rogue.credentials(FOO), &pki.anchors()).unwrap_err();
    assert!(matches!(err, TlsError::Chain { .. }), "{err:?}");
    // The leaf is for FOO, the identity BAR.
    let mut creds = pki.credentials(FOO);
    creds.name = BAR.to_string();
    let err = MeshTls::new(&creds, &pki.anchors()).unwrap_err();
    assert!(
        matches!(&err, TlsError::Chain { name, .. } if name == BAR),
        "{err:?}"
    );
    // The intermediate left out.
    let mut creds = pki.credentials(FOO);
    creds.chain.truncate(1);
    let err = MeshTls::new(&creds, &pki.anchors()).unwrap_err();
    assert!(matches!(err, TlsError::Chain { .. }), "{err:?}");
    // No chain at all.
    creds.chain.clear();
    assert!(matches!(
        MeshTls::new(&creds, &pki.anchors()),
        Err(TlsError::EmptyChain)
    ));
}

#[test]
fn identity_must_be_a_dns_name() {
    let pki = Pki::new("a");
    for name in ["", "10.0.0.1", "not a name", "foo.ns.", "*.ns.svc"] {
        let mut creds = pki.credentials(FOO);
        creds.name = name.to_string();
        let err = MeshTls::new(&creds, &pki.anchors()).unwrap_err();
        assert!(
            matches!(&err, TlsError::InvalidName(n) if n == name),
            "{err:?}"
        );
    }
}

// === trust anchors ===

#[test]
fn trust_anchors_from_pem() {
    let (a, b) = (Pki::new("a"), Pki::new("b"));
    assert_eq!(a.anchors().count(), 1);
    // A bundle, with text around the sections and a key section skipped.
    let bundle = format!(
        "# anchors\n{}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
        a.anchor_pem, b.anchor_pem
    );
    assert_eq!(TrustAnchors::from_pem(&bundle).unwrap().count(), 2);
    // CRLF line ends.
    assert_eq!(
        TrustAnchors::from_pem(&a.anchor_pem.replace('\n', "\r\n"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn bad_trust_anchors() {
    let a = Pki::new("a");
    let err = |pem: &str| TrustAnchors::from_pem(pem).unwrap_err();
    assert!(matches!(err(""), TlsError::NoTrustAnchors));
    assert!(matches!(err("not PEM at all"), TlsError::NoTrustAnchors));
    assert!(matches!(
        err("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        TlsError::NoTrustAnchors
    ));
    // Not base64; no end line.
    assert!(matches!(
        err("-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n"),
        TlsError::Pem(_)
    ));
    assert!(matches!(
        err("-----BEGIN CERTIFICATE-----\nAAAA\n"),
        TlsError::Pem(_)
    ));
    // Base64, but not a certificate: the first or the second.
    let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    assert!(matches!(err(junk), TlsError::TrustAnchor { index: 0, .. }));
    let second = format!("{}{junk}", a.anchor_pem);
    assert!(matches!(
        err(&second),
        TlsError::TrustAnchor { index: 1, .. }
    ));
    // Errors say what is wrong.
    assert!(err(junk).to_string().contains("trust anchor 0"));
}

// === peer_identity ===

/// A self-signed certificate with these SANs and extra extensions.
fn cert_with(sans: Vec<SanType>, extensions: Vec<CustomExtension>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.custom_extensions = extensions;
    params.self_signed(&p256()).unwrap().der().to_vec()
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

#[test]
fn identity_is_the_first_dns_name() {
    let ip = SanType::IpAddress("10.1.2.3".parse().unwrap());
    let uri = SanType::URI("spiffe://cluster.local/ns/ns/sa/foo".try_into().unwrap());
    let email = SanType::Rfc822Name("foo@example.com".try_into().unwrap());
    let cases: Vec<(Vec<SanType>, Option<&str>)> = vec![
        (vec![dns(FOO)], Some(FOO)),
        (vec![ip.clone(), dns(FOO)], Some(FOO)),
        (vec![dns(FOO), dns(BAR)], Some(FOO)),
        (vec![uri.clone(), dns(BAR)], Some(BAR)),
        (
            vec![email.clone(), ip.clone(), dns(BAR), dns(FOO)],
            Some(BAR),
        ),
        (vec![], None),
        (vec![ip, uri, email], None),
        // Lowercased, as linkerd2-proxy's names are.
        (
            vec![dns("Foo.NS.serviceaccount.identity.linkerd.cluster.local")],
            Some(FOO),
        ),
        // Names linkerd2-proxy does not take as identities are passed over.
        (vec![dns("foo.ns.svc."), dns(BAR)], Some(BAR)),
        (vec![dns("*.ns.svc")], None),
        (vec![dns("foo.ns.svc.")], None),
    ];
    for (sans, expected) in cases {
        let cert = cert_with(sans.clone(), vec![]);
        assert_eq!(peer_identity(&cert).as_deref(), expected, "{sans:?}");
    }
}

#[test]
fn no_san_extension() {
    // rcgen leaves the extension out when there are no names; the cert has others.
    let mut params = CertificateParams::default();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&p256()).unwrap().der().to_vec();
    assert_eq!(peer_identity(&cert), None);
    let pki = Pki::new("a");
    assert_eq!(peer_identity(pki.issuer.der()), None);
}

/// A subjectAltName extension with `general_names` (the contents of GeneralNames).
fn san_extension(general_names: &[u8]) -> CustomExtension {
    CustomExtension::from_oid_content(&[2, 5, 29, 17], der(0x30, general_names))
}

fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(contents);
    out
}

#[test]
fn san_extension_strictness() {
    let name = der(0x82, FOO.as_bytes());
    // A critical extension is fine.
    let mut critical = san_extension(&name);
    critical.set_criticality(true);
    assert_eq!(
        peer_identity(&cert_with(vec![], vec![critical])).as_deref(),
        Some(FOO)
    );
    // Two subjectAltName extensions: none.
    let twice = cert_with(vec![dns(BAR)], vec![san_extension(&name)]);
    assert_eq!(peer_identity(&twice), None);
    // A dNSName that is not ASCII, even after the first good one: none.
    let bad = [name.clone(), der(0x82, "é.com".as_bytes())].concat();
    assert_eq!(
        peer_identity(&cert_with(vec![], vec![san_extension(&bad)])),
        None
    );
    // A GeneralName that runs past the end: none.
    let cut = [name.clone(), vec![0x86, 0x05, b'a']].concat();
    assert_eq!(
        peer_identity(&cert_with(vec![], vec![san_extension(&cut)])),
        None
    );
    // GeneralNames followed by something else in the extension value: none.
    let extra = CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        [der(0x30, &name), vec![0x05, 0x00]].concat(),
    );
    assert_eq!(peer_identity(&cert_with(vec![], vec![extra])), None);
    // Other kinds of names, including constructed ones, are walked over.
    let other_name = der(
        0xa0,
        &[der(0x06, &[0x2b, 0x06, 0x01]), der(0xa0, &der(0x0c, b"x"))].concat(),
    );
    let directory = der(0xa4, &der(0x30, &[]));
    let mixed = [
        other_name,
        directory,
        der(0x87, &[10, 0, 0, 1]),
        name.clone(),
    ]
    .concat();
    assert_eq!(
        peer_identity(&cert_with(vec![], vec![san_extension(&mixed)])).as_deref(),
        Some(FOO)
    );
    // An empty dNSName is passed over.
    let empty_first = [der(0x82, b""), name].concat();
    assert_eq!(
        peer_identity(&cert_with(vec![], vec![san_extension(&empty_first)])).as_deref(),
        Some(FOO)
    );
}

/// A minimal certificate, by hand: `tbs_fields` in a TBSCertificate, then an algorithm and
/// a signature.
fn hand_cert(tbs_fields: &[Vec<u8>]) -> Vec<u8> {
    let tbs = der(0x30, &tbs_fields.concat());
    let alg = der(
        0x30,
        &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
    );
    let sig = der(0x03, &[0x00, 0x01, 0x02]);
    der(0x30, &[tbs, alg, sig].concat())
}

fn tbs_fields(extensions: Option<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut fields = vec![
        der(0xa0, &der(0x02, &[2])),
        der(0x02, &[1]),
        der(0x30, &[]),
        der(0x30, &[]),
        der(0x30, &[]),
        der(0x30, &[]),
        der(0x30, &[]),
    ];
    if let Some(extensions) = extensions {
        fields.push(der(0xa3, &der(0x30, &extensions)));
    }
    fields
}

fn san_ext(names: &[u8]) -> Vec<u8> {
    der(
        0x30,
        &[der(0x06, &[0x55, 0x1d, 0x11]), der(0x04, &der(0x30, names))].concat(),
    )
}

#[test]
fn hand_made_certificates() {
    let names = der(0x82, b"a.b");
    let good = hand_cert(&tbs_fields(Some(san_ext(&names))));
    assert_eq!(peer_identity(&good).as_deref(), Some("a.b"));
    // No version (v1 layout), issuer and subject unique ids: still walked.
    let mut fields = tbs_fields(Some(san_ext(&names)));
    fields.remove(0);
    fields.insert(6, der(0x81, &[0, 1]));
    fields.insert(7, der(0x82, &[0, 2]));
    assert_eq!(peer_identity(&hand_cert(&fields)).as_deref(), Some("a.b"));
    // Without extensions.
    assert_eq!(peer_identity(&hand_cert(&tbs_fields(None))), None);
    // Another extension before, with a critical flag.
    let key_usage = der(
        0x30,
        &[
            der(0x06, &[0x55, 0x1d, 0x0f]),
            der(0x01, &[0xff]),
            der(0x04, &der(0x03, &[0x07, 0x80])),
        ]
        .concat(),
    );
    let two = [key_usage, san_ext(&names)].concat();
    assert_eq!(
        peer_identity(&hand_cert(&tbs_fields(Some(two)))).as_deref(),
        Some("a.b")
    );

    // Not as X.509 lays it out: none.
    let mut missing_serial = tbs_fields(Some(san_ext(&names)));
    missing_serial.remove(1);
    assert_eq!(peer_identity(&hand_cert(&missing_serial)), None);
    let mut after_extensions = tbs_fields(Some(san_ext(&names)));
    after_extensions.push(der(0x05, &[]));
    assert_eq!(peer_identity(&hand_cert(&after_extensions)), None);
    let trailing = [good.clone(), vec![0]].concat();
    assert_eq!(peer_identity(&trailing), None);
    // Without its signature.
    let tbs = der(0x30, &tbs_fields(Some(san_ext(&names))).concat());
    assert_eq!(peer_identity(&der(0x30, &tbs)), None);
    // Long-form lengths are read...
    let long_name = ["x".repeat(60).as_str(); 4].join(".");
    let long = hand_cert(&tbs_fields(Some(san_ext(&der(0x82, long_name.as_bytes())))));
    assert_eq!(long[1], 0x82);
    assert_eq!(peer_identity(&long), Some(long_name));
    // ...but only in their shortest form, and never for a length under 128.
    assert!(good[1] < 0x80);
    let len = good[1];
    let non_minimal = [&[0x30, 0x81, len][..], &good[2..]].concat();
    assert_eq!(peer_identity(&non_minimal), None);
    let leading_zero = [&[0x30, 0x82, 0, len][..], &good[2..]].concat();
    assert_eq!(peer_identity(&leading_zero), None);
    let mut padded = long.clone();
    padded.splice(1..2, [0x83, 0]);
    assert_eq!(peer_identity(&padded), None);
    // Nor indefinite lengths.
    let mut indefinite = good;
    indefinite[1] = 0x80;
    assert_eq!(peer_identity(&indefinite), None);
}

#[test]
fn truncated_and_garbage_certificates() {
    let pki = Pki::new("a");
    let leaf = pki.credentials(FOO).chain.remove(0);
    assert_eq!(peer_identity(&leaf).as_deref(), Some(FOO));
    for end in 0..leaf.len() {
        assert_eq!(peer_identity(&leaf[..end]), None, "{end} bytes");
    }
    for garbage in [
        &[][..],
        &[0x30],
        &[0x30, 0x80],
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        &[0x1f, 0x00],
        &[0xff; 64],
    ] {
        assert_eq!(peer_identity(garbage), None);
    }
}
