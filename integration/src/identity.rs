//! A mock Linkerd Identity service: a real tonic server on loopback serving
//! `io.linkerd.proxy.identity.Identity/Certify` from `linkerd2-proxy-api`'s generated code,
//! with a test CA made by rcgen (an ECDSA P-256 trust anchor and an intermediate issuer
//! under it).
//!
//! `Certify` behaves like Linkerd's identity controller (L `pkg/identity/service.go`):
//! - the token must be the expected one, when one is set ([`IdentityServer::expect_token`]),
//!   else `InvalidArgument`;
//! - the DER CSR must parse (with a valid signature), else `InvalidArgument`;
//! - it must carry exactly one SAN, a DNS name equal to `identity`, and a CN that is empty
//!   or `identity`, else `FailedPrecondition`;
//! - the answer is a leaf for the CSR's key, signed by the issuer, with DNS SAN = `identity`,
//!   valid from a minute ago for the scripted lifetime (default 1h), the issuer as the only
//!   intermediate, and `valid_until` = the leaf's `notAfter`.
//!
//! Scripting: [`IdentityServer::fail_next`] (answer `Unavailable`),
//! [`IdentityServer::answer_garbage_next`] (a leaf of random bytes), [`set_lifetime`]; and
//! [`IdentityServer::issue`] makes credentials for peers directly.
//!
//! ```ignore
//! let identity = identity::new();
//! identity.set_lifetime(Duration::from_secs(2));
//! identity.fail_next(1);
//! // … point LINKERD2_PROXY_IDENTITY_SVC_ADDR at identity.addr(), with
//! // LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS = identity.trust_anchors_pem()
//! ```
//!
//! [`set_lifetime`]: IdentityServer::set_lifetime

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linkerd2_proxy_api::identity as pb;
use linkerd2_proxy_api::identity::identity_server::{Identity, IdentityServer as IdentityGrpc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status};

#[cfg(test)]
mod tests;

/// Certificates are issued for this long unless [`IdentityServer::set_lifetime`] says
/// otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Leaves are valid from this long before they are issued (Linkerd allows clock skew too).
const BACKDATE: Duration = Duration::from_secs(60);

// === types ===

/// A running Identity service; it stops when dropped or when the test's runtime ends.
#[derive(Debug)]
pub struct IdentityServer {
    addr: SocketAddr,
    ca: Arc<Ca>,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

/// The test CA: a self-signed trust anchor and an intermediate issuer signed by it.
struct Ca {
    anchor_pem: String,
    issuer_der: Vec<u8>,
    issuer_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

#[derive(Debug)]
struct State {
    lifetime: Duration,
    expected_token: Option<Vec<u8>>,
    fail_next: usize,
    garbage_next: usize,
    calls: usize,
    issued: usize,
    last_token: Option<Vec<u8>>,
    last_identity: Option<String>,
}

#[derive(Clone)]
struct Service {
    ca: Arc<Ca>,
    state: Arc<Mutex<State>>,
}

/// A directory holding a token file for a proxy's `LINKERD2_PROXY_IDENTITY_DIR` and
/// `_TOKEN_FILE` (the key and CSR are generated in process), removed on drop.
pub struct TokenDir(pub std::path::PathBuf);

impl TokenDir {
    /// A fresh directory whose token file holds `token`; `tag` keeps parallel tests apart.
    pub fn new(tag: &str, token: &[u8]) -> TokenDir {
        let path = std::env::temp_dir().join(format!("ringlink-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("identity directory");
        std::fs::write(path.join("token"), token).expect("token file");
        TokenDir(path)
    }

    pub fn token(&self) -> std::path::PathBuf {
        self.0.join("token")
    }
}

impl Drop for TokenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `builder` with the identity environment an injector writes, pointing at `service` and
/// naming the proxy `name`. A meshed proxy must have a policy controller: this one points at
/// a loopback port where none listens (every port keeps its default policy) unless the
/// test sets its own (`Builder::control_plane`, after this).
pub fn with_identity(
    builder: crate::proxy::Builder,
    service: &IdentityServer,
    dir: &TokenDir,
    name: &str,
) -> crate::proxy::Builder {
    builder
        .env("LINKERD2_PROXY_IDENTITY_DIR", dir.0.display())
        .env(
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            service.trust_anchors_pem(),
        )
        .env("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", dir.token().display())
        .env("LINKERD2_PROXY_IDENTITY_SVC_ADDR", service.addr())
        .env("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", name)
        .env("LINKERD2_PROXY_POLICY_SVC_ADDR", NO_POLICY_CONTROLLER)
        .env("LINKERD2_PROXY_POLICY_WORKLOAD", crate::proxy::WORKLOAD)
}

/// Where no policy controller listens (tcpmux's port; nothing runs there on loopback).
pub const NO_POLICY_CONTROLLER: &str = "127.0.0.1:1";

/// Waits until the proxy's `/ready` answers 200 (it is certified), at most 10 s.
pub async fn wait_ready(proxy: &crate::proxy::Proxy) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while crate::http::call(proxy.admin, "GET", "/ready", "")
        .await
        .status
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not certified:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === functions ===

/// Starts a plaintext (h2c) Identity service on `127.0.0.1:0`, as a client reaches it on
/// loopback. Must be called inside a tokio runtime.
pub fn new() -> IdentityServer {
    start(Arc::new(Ca::new()), None)
}

/// Starts an Identity service on `127.0.0.1:0` that serves TLS with a certificate for
/// `server_name` (the client's `LINKERD2_PROXY_IDENTITY_SVC_NAME`) from its own CA, as a
/// client reaches it off loopback. Must be called inside a tokio runtime.
pub fn new_tls(server_name: &str) -> IdentityServer {
    let ca = Arc::new(Ca::new());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
    let not_after = unix_secs(SystemTime::now() + DEFAULT_LIFETIME);
    let leaf = ca
        .leaf(server_name, &key, not_after)
        .expect("server certificate for a valid name");
    let chain_pem = format!("{}{}", leaf.pem(), ca.issuer_pem);
    let identity = tonic::transport::Identity::from_pem(chain_pem, key.serialize_pem());
    start(ca, Some(ServerTlsConfig::new().identity(identity)))
}

fn start(ca: Arc<Ca>, tls: Option<ServerTlsConfig>) -> IdentityServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind identity service");
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let addr = listener.local_addr().expect("identity service address");
    let state = Arc::new(Mutex::new(State {
        lifetime: DEFAULT_LIFETIME,
        expected_token: None,
        fail_next: 0,
        garbage_next: 0,
        calls: 0,
        issued: 0,
        last_token: None,
        last_identity: None,
    }));
    let service = IdentityGrpc::new(Service {
        ca: ca.clone(),
        state: state.clone(),
    });
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).expect("server TLS configuration");
    }
    let task = tokio::spawn(async move {
        let result = server
            .serve_with_incoming(service, TcpIncoming::from(listener))
            .await;
        if let Err(e) = result {
            eprintln!("mock identity service on {addr} stopped: {e}");
        }
    });
    IdentityServer {
        addr,
        ca,
        state,
        task,
    }
}

/// `len` unpredictable bytes (not cryptographic; enough for garbage).
fn random_bytes(len: usize) -> Vec<u8> {
    let state = RandomState::new();
    (0..len.div_ceil(8))
        .flat_map(|i| {
            let mut h = state.build_hasher();
            h.write_usize(i);
            h.finish().to_le_bytes()
        })
        .take(len)
        .collect()
}

/// Whole seconds since the epoch, rounded down: what an X.509 time can hold.
fn unix_secs(t: SystemTime) -> i64 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn datetime(unix_secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_secs).expect("a time X.509 can hold")
}

// === impl IdentityServer ===

impl IdentityServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The trust anchor, PEM: what `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS` must hold.
    pub fn trust_anchors_pem(&self) -> String {
        self.ca.anchor_pem.clone()
    }

    /// The issuer (intermediate) certificate, DER: the chain's second element.
    pub fn issuer_der(&self) -> Vec<u8> {
        self.ca.issuer_der.clone()
    }

    /// Certificates issued from now on are valid for `lifetime`.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    /// From now on `Certify` requires this token (else `InvalidArgument`).
    pub fn expect_token(&self, token: impl Into<Vec<u8>>) {
        self.lock().expected_token = Some(token.into());
    }

    /// The next `n` calls are answered `Unavailable` (before any check).
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// The next `n` calls that pass the checks are answered with a leaf of random bytes (and
    /// the real issuer and a valid `valid_until`).
    pub fn answer_garbage_next(&self, n: usize) {
        self.lock().garbage_next = n;
    }

    /// How many `Certify` calls arrived, whatever their outcome.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    /// How many certificates were issued by `Certify` (not counting [`Self::issue`]).
    pub fn issued(&self) -> usize {
        self.lock().issued
    }

    /// The token of the last call.
    pub fn last_token(&self) -> Option<Vec<u8>> {
        self.lock().last_token.clone()
    }

    /// The `identity` of the last call.
    pub fn last_identity(&self) -> Option<String> {
        self.lock().last_identity.clone()
    }

    /// Credentials for `name` from this CA, without a call: a new ECDSA P-256 key (DER
    /// PKCS#8) and its chain (leaf first, then the issuer, DER), valid for `lifetime`.
    pub fn issue(&self, name: &str, lifetime: Duration) -> (Vec<u8>, Vec<Vec<u8>>) {
        self.ca.issue(name, lifetime)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Ca ===

impl Ca {
    fn new() -> Ca {
        let anchor_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("anchor key");
        let anchor_params = ca_params("identity.linkerd.cluster.local");
        let anchor = anchor_params
            .self_signed(&anchor_key)
            .expect("self-signed trust anchor");
        let anchor_issuer = Issuer::new(anchor_params, anchor_key);
        let issuer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("issuer key");
        let issuer_params = ca_params("identity.linkerd.cluster.local");
        let issuer = issuer_params
            .signed_by(&issuer_key, &anchor_issuer)
            .expect("issuer signed by the anchor");
        Ca {
            anchor_pem: anchor.pem(),
            issuer_der: issuer.der().to_vec(),
            issuer_pem: issuer.pem(),
            issuer: Issuer::new(issuer_params, issuer_key),
        }
    }

    fn issue(&self, name: &str, lifetime: Duration) -> (Vec<u8>, Vec<Vec<u8>>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let not_after = unix_secs(SystemTime::now() + lifetime);
        let leaf = self
            .leaf(name, &key, not_after)
            .expect("leaf for a valid name");
        (
            key.serialize_der(),
            vec![leaf.der().to_vec(), self.issuer_der.clone()],
        )
    }

    /// A leaf for `name` and `public_key`, valid from a minute ago until `not_after`.
    fn leaf(
        &self,
        name: &str,
        public_key: &impl PublicKeyData,
        not_after: i64,
    ) -> Result<rcgen::Certificate, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
        params.not_before = datetime(unix_secs(SystemTime::now() - BACKDATE));
        params.not_after = datetime(not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.signed_by(public_key, &self.issuer)
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

// === impl Service ===

impl Service {
    /// The CSR's requested parameters, if it is one Linkerd would sign for `identity`.
    fn check_csr(
        identity: &str,
        csr_der: &[u8],
    ) -> Result<CertificateSigningRequestParams, Status> {
        let csr = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(|e| Status::invalid_argument(format!("mock identity: invalid CSR: {e}")))?;
        let sans = &csr.params.subject_alt_names;
        let one_dns_san =
            matches!(sans.as_slice(), [SanType::DnsName(san)] if san.as_str() == identity);
        if !one_dns_san {
            return Err(Status::failed_precondition(format!(
                "mock identity: the CSR must have exactly one SAN, the DNS name {identity:?}; it has {sans:?}"
            )));
        }
        let cn_ok = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .is_none_or(|cn| match cn {
                DnValue::Utf8String(s) => s.is_empty() || s == identity,
                DnValue::PrintableString(s) => s.as_str().is_empty() || s.as_str() == identity,
                DnValue::Ia5String(s) => s.as_str().is_empty() || s.as_str() == identity,
                _ => false,
            });
        if !cn_ok {
            return Err(Status::failed_precondition(format!(
                "mock identity: the CSR's CN must be empty or {identity:?}"
            )));
        }
        Ok(csr)
    }
}

#[tonic::async_trait]
impl Identity for Service {
    async fn certify(
        &self,
        request: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let pb::CertifyRequest {
            identity,
            token,
            certificate_signing_request,
        } = request.into_inner();
        let (lifetime, garbage) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.calls += 1;
            state.last_token = Some(token.clone());
            state.last_identity = Some(identity.clone());
            if state.fail_next > 0 {
                state.fail_next -= 1;
                return Err(Status::unavailable("mock identity: scripted failure"));
            }
            if state.expected_token.as_ref().is_some_and(|t| *t != token) {
                return Err(Status::invalid_argument("mock identity: invalid token"));
            }
            (state.lifetime, state.garbage_next)
        };
        let csr = Service::check_csr(&identity, &certificate_signing_request)?;

        let not_after = unix_secs(SystemTime::now() + lifetime);
        let leaf = if garbage > 0 {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.garbage_next = state.garbage_next.saturating_sub(1);
            random_bytes(512)
        } else {
            let leaf = self
                .ca
                .leaf(&identity, &csr.public_key, not_after)
                .map_err(|e| Status::internal(format!("mock identity: cannot sign: {e}")))?;
            self.state.lock().unwrap_or_else(|e| e.into_inner()).issued += 1;
            leaf.der().to_vec()
        };
        Ok(Response::new(pb::CertifyResponse {
            leaf_certificate: leaf,
            intermediate_certificates: vec![self.ca.issuer_der.clone()],
            valid_until: Some(prost_types::Timestamp {
                seconds: not_after,
                nanos: 0,
            }),
        }))
    }
}
