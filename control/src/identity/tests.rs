use std::sync::atomic::AtomicUsize;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};

use super::*;

// === helpers ===

const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const SEC: Duration = Duration::from_secs(1);

/// A test CA: a self-signed root and an intermediate issuer under it.
struct Ca {
    anchors_pem: String,
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root_params = ca_params("root.test");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let issuer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer_params = ca_params("issuer.test");
        let issuer_cert = issuer_params.signed_by(&issuer_key, &root_issuer).unwrap();
        Ca {
            anchors_pem: root.pem(),
            issuer: Issuer::new(issuer_params, issuer_key),
            issuer_der: issuer_cert.der().to_vec(),
        }
    }

    /// A leaf for `name` and the public half of `key_pkcs8`, with the issuer after it.
    fn chain(&self, name: &str, key_pkcs8: &[u8]) -> Vec<Vec<u8>> {
        let key = KeyPair::try_from(key_pkcs8).unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        vec![leaf.der().to_vec(), self.issuer_der.clone()]
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn config(ca: &Ca, dir: &Path) -> IdentityConfig {
    IdentityConfig {
        dir: dir.to_path_buf(),
        trust_anchors_pem: ca.anchors_pem.clone(),
        token_file: dir.join("token"),
        svc_addr: "localhost.:8080".to_string(),
        svc_name: None,
        local_name: NAME.to_string(),
        min_refresh: Duration::from_secs(10),
        max_refresh: Duration::from_secs(24 * 3600),
    }
}

fn response(chain: Vec<Vec<u8>>, valid_until: SystemTime) -> pb::CertifyResponse {
    let mut chain = chain.into_iter();
    pb::CertifyResponse {
        leaf_certificate: chain.next().unwrap_or_default(),
        intermediate_certificates: chain.collect(),
        valid_until: Some(valid_until.into()),
    }
}

/// A fresh, empty directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringlink-identity-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// === refresh_after ===

#[test]
fn refresh_at_70_percent_of_what_is_left() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let (min, max) = (10 * SEC, 24 * 3600 * SEC);
    let after = |left: Duration| refresh_after(now, now + left, min, max);
    assert_eq!(after(100 * SEC), 70 * SEC);
    assert_eq!(after(3600 * SEC), 2520 * SEC);
    assert_eq!(after(Duration::from_millis(1500)), min);
    // Linkerd's default 24h certificates: 16.8h.
    assert_eq!(after(24 * 3600 * SEC), 60480 * SEC);
    assert_eq!(after(365 * 24 * 3600 * SEC), max);
    // Exactly at the bounds.
    assert_eq!(refresh_after(now, now + 100 * SEC, 70 * SEC, max), 70 * SEC);
    assert_eq!(refresh_after(now, now + 100 * SEC, min, 70 * SEC), 70 * SEC);
}

#[test]
fn refresh_of_an_expired_certificate_is_min() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let (min, max) = (10 * SEC, 3600 * SEC);
    assert_eq!(refresh_after(now, now, min, max), min);
    assert_eq!(refresh_after(now, now - SEC, min, max), min);
    assert_eq!(refresh_after(now, UNIX_EPOCH, min, max), min);
}

#[test]
fn refresh_with_crossed_or_extreme_bounds() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    // min > max: min wins when 70% is below it, max when above it (as linkerd2-proxy).
    assert_eq!(
        refresh_after(now, now + 10 * SEC, 20 * SEC, 5 * SEC),
        20 * SEC
    );
    assert_eq!(
        refresh_after(now, now + 100 * SEC, 20 * SEC, 5 * SEC),
        5 * SEC
    );
    // Zero bounds and huge lifetimes do not panic.
    assert_eq!(
        refresh_after(now, now + SEC, Duration::ZERO, Duration::MAX),
        Duration::from_millis(700)
    );
    let far = now + Duration::from_secs(u64::MAX / 4);
    assert_eq!(refresh_after(now, far, SEC, 3600 * SEC), 3600 * SEC);
}

// === Documents ===

#[test]
fn generated_csr_has_the_name_as_cn_and_only_san() {
    let docs = Documents::generate(NAME).unwrap();
    assert_eq!(docs.source, Source::Generated);
    let csr = CertificateSigningRequestParams::from_der(&docs.csr_der.as_slice().into())
        .expect("the CSR parses and its signature verifies");
    let cn = csr.params.distinguished_name.get(&DnType::CommonName);
    assert_eq!(cn, Some(&rcgen::DnValue::Utf8String(NAME.to_string())));
    assert_eq!(csr.params.distinguished_name.iter().count(), 1);
    assert_eq!(
        csr.params.subject_alt_names,
        vec![SanType::DnsName(NAME.try_into().unwrap())]
    );
    assert_eq!(csr.public_key.algorithm(), &PKCS_ECDSA_P256_SHA256);

    // The key is DER PKCS#8 P-256, and the CSR is for it.
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(docs.key_pkcs8.as_slice()),
        &PKCS_ECDSA_P256_SHA256,
    )
    .unwrap();
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&csr.public_key),
        key.public_key_raw()
    );

    // Every call makes a new key.
    assert_ne!(Documents::generate(NAME).unwrap().key_pkcs8, docs.key_pkcs8);
}

#[test]
fn documents_from_the_identity_directory() {
    let dir = TempDir::new();
    let written = Documents::generate(NAME).unwrap();
    std::fs::write(dir.0.join("key.p8"), &written.key_pkcs8).unwrap();
    std::fs::write(dir.0.join("csr.der"), &written.csr_der).unwrap();
    let docs = Documents::load_or_generate(&dir.0, NAME).unwrap();
    assert_eq!(docs.source, Source::Dir);
    assert_eq!(docs.key_pkcs8, written.key_pkcs8);
    assert_eq!(docs.csr_der, written.csr_der);
}

#[test]
fn documents_are_generated_when_the_directory_has_none_or_bad_ones() {
    let generated = |dir: &Path| {
        let docs = Documents::load_or_generate(dir, NAME).unwrap();
        assert_eq!(docs.source, Source::Generated);
        docs
    };
    // No directory at all, an empty one, one file only.
    generated(Path::new("/nonexistent/ringlink/identity"));
    let dir = TempDir::new();
    generated(&dir.0);
    let a = Documents::generate(NAME).unwrap();
    std::fs::write(dir.0.join("key.p8"), &a.key_pkcs8).unwrap();
    generated(&dir.0);
    // An empty CSR.
    std::fs::write(dir.0.join("csr.der"), b"").unwrap();
    generated(&dir.0);
    // A CSR for another key.
    let b = Documents::generate(NAME).unwrap();
    std::fs::write(dir.0.join("csr.der"), &b.csr_der).unwrap();
    generated(&dir.0);
    // A key that is not PKCS#8 P-256.
    std::fs::write(dir.0.join("key.p8"), b"not a key").unwrap();
    generated(&dir.0);
    // And when they do match, they are used.
    std::fs::write(dir.0.join("key.p8"), &b.key_pkcs8).unwrap();
    assert_eq!(
        Documents::load_or_generate(&dir.0, NAME).unwrap().source,
        Source::Dir
    );
}

// === checks of the answer ===

#[test]
fn a_valid_answer_becomes_credentials() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let config = config(&ca, &dir.0);
    let docs = Documents::generate(NAME).unwrap();
    let verifier = Verifier::new(&ca.anchors_pem).unwrap();
    let now = SystemTime::now();
    let chain = ca.chain(NAME, &docs.key_pkcs8);
    let until = now + 3600 * SEC;
    let c = certified(
        &config,
        &docs,
        &verifier,
        response(chain.clone(), until),
        now,
    )
    .unwrap();
    assert_eq!(c.name, NAME);
    assert_eq!(c.key_pkcs8, docs.key_pkcs8);
    assert_eq!(c.chain, chain);
    // Timestamps carry nanoseconds; the round trip keeps them.
    assert_eq!(c.expiry, until);
    assert_eq!(c.trust_anchors_pem, ca.anchors_pem);
    assert!(!format!("{c:?}").contains("key_pkcs8"));
}

#[test]
fn invalid_answers_are_refused() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let config = config(&ca, &dir.0);
    let docs = Documents::generate(NAME).unwrap();
    let verifier = Verifier::new(&ca.anchors_pem).unwrap();
    let now = SystemTime::now();
    let until = now + 3600 * SEC;
    let good = ca.chain(NAME, &docs.key_pkcs8);
    let refused =
        |response: pb::CertifyResponse| match certified(&config, &docs, &verifier, response, now) {
            Err(IdentityError::Response(reason)) => reason,
            other => panic!("expected an invalid response, got {other:?}"),
        };

    let mut r = response(good.clone(), until);
    r.valid_until = None;
    assert!(refused(r).contains("valid_until"));
    assert!(refused(response(good.clone(), now)).contains("expired"));
    assert!(refused(response(good.clone(), now - SEC)).contains("expired"));
    // Garbage, an empty leaf, no intermediates.
    refused(response(
        vec![vec![0x30, 0x03, 1, 2, 3], ca.issuer_der.clone()],
        until,
    ));
    refused(response(vec![Vec::new(), ca.issuer_der.clone()], until));
    refused(response(vec![good[0].clone()], until));
    // Another name, another key, another CA.
    let other_name = ca.chain(
        "other.default.serviceaccount.identity.linkerd.cluster.local",
        &docs.key_pkcs8,
    );
    refused(response(other_name, until));
    let other_key = Documents::generate(NAME).unwrap().key_pkcs8;
    assert!(refused(response(ca.chain(NAME, &other_key), until)).contains("our key"));
    refused(response(Ca::new().chain(NAME, &docs.key_pkcs8), until));
}

#[test]
fn trust_anchors_must_hold_a_certificate() {
    assert!(Verifier::new("").is_err());
    assert!(
        Verifier::new("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
    );
    assert!(Verifier::new(&Ca::new().anchors_pem).is_ok());
}

// === transport ===

#[test]
fn plaintext_on_loopback_tls_otherwise() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let mut config = config(&ca, &dir.0);
    for addr in ["localhost.:8080", "127.0.0.1:8080", "[::1]:8080"] {
        config.svc_addr = addr.to_string();
        assert_eq!(endpoint(&config).unwrap().uri().scheme_str(), Some("http"));
    }
    config.svc_addr = "linkerd-identity-headless.linkerd.svc.cluster.local.:8080".to_string();
    assert!(matches!(
        endpoint(&config),
        Err(IdentityError::Endpoint { .. })
    ));
    config.svc_name =
        Some("linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local".to_string());
    assert_eq!(endpoint(&config).unwrap().uri().scheme_str(), Some("https"));
}

#[test]
fn token_is_read_and_must_not_be_empty() {
    let dir = TempDir::new();
    let path = dir.0.join("token");
    assert!(matches!(read_token(&path), Err(IdentityError::Read { .. })));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        read_token(&path),
        Err(IdentityError::EmptyToken(_))
    ));
    std::fs::write(&path, b"t0k3n").unwrap();
    assert_eq!(read_token(&path).unwrap(), b"t0k3n");
}

#[test]
fn metrics_expiry() {
    let metrics = IdentityMetrics::default();
    assert_eq!(metrics.expiry(), None);
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    metrics.set_expiry(at);
    assert_eq!(metrics.expiry(), Some(at));
}
