use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use tonic::transport::Channel;
use tonic::Code;

use super::*;

const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";

async fn client(server: &IdentityServer) -> IdentityClient<Channel> {
    IdentityClient::connect(format!("http://{}", server.addr()))
        .await
        .expect("connect to the mock identity service")
}

/// A key and a CSR with `cn` and `sans` (DNS names).
fn csr(cn: Option<&str>, sans: &[&str]) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::DnsName((*s).try_into().unwrap()))
        .collect();
    let csr = params.serialize_request(&key).unwrap();
    (key, csr.der().to_vec())
}

fn request(identity: &str, token: &[u8], csr: Vec<u8>) -> pb::CertifyRequest {
    pb::CertifyRequest {
        identity: identity.to_string(),
        token: token.to_vec(),
        certificate_signing_request: csr,
    }
}

/// The DNS SANs of a DER certificate and its `notAfter`, seconds since the epoch.
fn parsed(der: &[u8]) -> (Vec<String>, i64) {
    use x509_parser::extensions::GeneralName;
    let (_, x509) = x509_parser::parse_x509_certificate(der).unwrap();
    let sans = x509
        .subject_alternative_name()
        .unwrap()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .map(|name| match name {
                    GeneralName::DNSName(dns) => dns.to_string(),
                    other => panic!("unexpected SAN {other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    (sans, x509.validity().not_after.timestamp())
}

#[tokio::test]
async fn certify_signs_the_csr_key_for_the_identity() {
    let server = new();
    server.set_lifetime(Duration::from_secs(120));
    let (key, csr_der) = csr(Some(NAME), &[NAME]);
    let before = SystemTime::now();
    let response = client(&server)
        .await
        .certify(request(NAME, b"token", csr_der))
        .await
        .expect("certified")
        .into_inner();

    assert_eq!(
        response.intermediate_certificates,
        vec![server.issuer_der()]
    );
    let valid_until = SystemTime::try_from(response.valid_until.unwrap()).unwrap();
    assert!(
        valid_until <= before + Duration::from_secs(121),
        "{valid_until:?}"
    );
    assert!(
        valid_until > before + Duration::from_secs(118),
        "{valid_until:?}"
    );
    let (sans, not_after) = parsed(&response.leaf_certificate);
    assert_eq!(sans, vec![NAME.to_string()]);
    assert_eq!(unix_secs(valid_until), not_after);
    // The leaf is for the CSR's key.
    let x509 = x509_parser::parse_x509_certificate(&response.leaf_certificate)
        .unwrap()
        .1;
    assert_eq!(
        x509.public_key().subject_public_key.data,
        key.public_key_raw()
    );

    assert_eq!(server.calls(), 1);
    assert_eq!(server.issued(), 1);
    assert_eq!(server.last_token().as_deref(), Some(&b"token"[..]));
    assert_eq!(server.last_identity().as_deref(), Some(NAME));
}

#[tokio::test]
async fn certify_checks_like_linkerd() {
    let server = new();
    let mut client = client(&server).await;
    let code =
        |r: Result<Response<pb::CertifyResponse>, Status>| r.map(|_| ()).map_err(|s| s.code());

    // A CN that is empty is fine too.
    let (_, ok) = csr(None, &[NAME]);
    assert_eq!(code(client.certify(request(NAME, b"t", ok)).await), Ok(()));

    for (cn, sans) in [
        (Some(NAME), &[][..]),
        (Some(NAME), &["other.example"][..]),
        (Some(NAME), &[NAME, "other.example"][..]),
        (Some("other.example"), &[NAME][..]),
    ] {
        let (_, bad) = csr(cn, sans);
        assert_eq!(
            code(client.certify(request(NAME, b"t", bad)).await),
            Err(Code::FailedPrecondition),
            "CN {cn:?}, SANs {sans:?}"
        );
    }
    assert_eq!(
        code(
            client
                .certify(request(NAME, b"t", b"garbage".to_vec()))
                .await
        ),
        Err(Code::InvalidArgument)
    );

    server.expect_token("right");
    let (_, ok) = csr(Some(NAME), &[NAME]);
    assert_eq!(
        code(client.certify(request(NAME, b"wrong", ok.clone())).await),
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        code(client.certify(request(NAME, b"right", ok)).await),
        Ok(())
    );
    assert_eq!(server.issued(), 2);
}

#[tokio::test]
async fn certify_scripted_failures_and_garbage() {
    let server = new();
    let mut client = client(&server).await;
    let (_, csr_der) = csr(Some(NAME), &[NAME]);
    server.fail_next(2);
    server.answer_garbage_next(1);
    for _ in 0..2 {
        let status = client
            .certify(request(NAME, b"t", csr_der.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    let garbage = client
        .certify(request(NAME, b"t", csr_der.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(garbage.leaf_certificate.len(), 512);
    assert!(x509_parser::parse_x509_certificate(&garbage.leaf_certificate).is_err());
    let good = client
        .certify(request(NAME, b"t", csr_der))
        .await
        .unwrap()
        .into_inner();
    x509_parser::parse_x509_certificate(&good.leaf_certificate).unwrap();
    assert_eq!(server.calls(), 4);
    assert_eq!(server.issued(), 1);
}

#[tokio::test]
async fn issue_makes_peer_credentials() {
    let server = new();
    let (key_pkcs8, chain) = server.issue(
        "peer.ns.serviceaccount.identity.linkerd.cluster.local",
        Duration::from_secs(60),
    );
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], server.issuer_der());
    let key = KeyPair::try_from(key_pkcs8.as_slice()).unwrap();
    assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    let x509 = x509_parser::parse_x509_certificate(&chain[0]).unwrap().1;
    assert_eq!(
        x509.public_key().subject_public_key.data,
        key.public_key_raw()
    );
    let (sans, _) = parsed(&chain[0]);
    assert_eq!(
        sans,
        vec!["peer.ns.serviceaccount.identity.linkerd.cluster.local".to_string()]
    );
    assert!(server
        .trust_anchors_pem()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(server.calls(), 0);
}

#[test]
fn garbage_is_random() {
    let (a, b) = (random_bytes(13), random_bytes(13));
    assert_eq!(a.len(), 13);
    assert_ne!(a, b);
}
