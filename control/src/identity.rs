//! The identity client: gets this proxy's certificate from Linkerd's Identity service
//! (`io.linkerd.proxy.identity.Identity/Certify`) and keeps it fresh, on the control thread.
//!
//! [`run`] does what linkerd2-proxy's identity client does (LINKERD-CONTRACT.md §3):
//! - **Key and CSR.** `key.p8` (DER PKCS#8, ECDSA P-256) and `csr.der` (DER CSR) from the
//!   identity directory, where Linkerd's `proxy-identity` wrapper writes them. When they are
//!   missing, empty or do not belong together, a key and a CSR (CN and the only DNS SAN = the
//!   local name) are made in process instead; they are kept in memory only.
//! - **Certify.** `{identity: local name, token: the token file (re-read on every call),
//!   certificate_signing_request: the DER CSR}` (DER, whatever the proto comment says), over a
//!   new connection each time: plaintext HTTP/2 when the service is on loopback, otherwise TLS
//!   verified against the trust anchors for the server name `LINKERD2_PROXY_IDENTITY_SVC_NAME`.
//!   Each call, connecting included, is bounded by [`CERTIFY_TIMEOUT`].
//! - **Checks.** The answer must carry a `valid_until` in the future, and a leaf that, with the
//!   intermediates, verifies against the trust anchors for the local name (as a TLS server
//!   certificate, as linkerd2-proxy's credential store checks it), and whose public key is
//!   ours. Anything else is an error and the current credentials stay.
//! - **Refresh.** The next call is at 70% of the remaining lifetime, within
//!   `[min_refresh, max_refresh]` ([`refresh_after`]); until the first success every
//!   `min_refresh`; after a failure, the wait is computed from the current certificate's
//!   expiry again (so never sooner than `min_refresh`).
//!
//! Each success publishes a new [`Certified`] on the `watch` channel; a failure publishes
//! nothing. Outcomes are logged and counted in [`IdentityMetrics`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linkerd2_proxy_api::identity as pb;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use tokio::sync::watch;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::IdentityConfig;

#[cfg(test)]
mod tests;

/// A `Certify` call, connecting included, fails after this long.
pub const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The shortest wait between two calls, whatever `min_refresh` says (`0` would spin).
const MIN_WAIT: Duration = Duration::from_millis(100);
/// What Linkerd's `proxy-identity` wrapper writes into the identity directory.
const KEY_FILE: &str = "key.p8";
const CSR_FILE: &str = "csr.der";

// === types ===

/// This proxy's credentials, as issued by the Identity service. Immutable once published.
#[derive(Clone, PartialEq, Eq)]
pub struct Certified {
    /// The local identity, the leaf's DNS SAN.
    pub name: String,
    /// The private key, DER PKCS#8 (ECDSA P-256).
    pub key_pkcs8: Vec<u8>,
    /// The leaf first, then the intermediates, DER.
    pub chain: Vec<Vec<u8>>,
    /// `valid_until` from the Identity service.
    pub expiry: SystemTime,
    /// The roots peers are verified against (`LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`).
    pub trust_anchors_pem: String,
}

/// Counters for the admin server.
#[derive(Debug, Default)]
pub struct IdentityMetrics {
    /// `Certify` calls answered with valid credentials.
    pub certify_ok: AtomicU64,
    /// `Certify` calls that failed (connection, status, timeout, invalid answer).
    pub certify_failed: AtomicU64,
    /// The current certificate's expiry, milliseconds since the epoch; 0 before the first.
    expiry_unix_ms: AtomicU64,
    /// When the current certificate was received, milliseconds since the epoch.
    refresh_unix_ms: AtomicU64,
}

/// Errors of one `Certify` round, or of the setup before the first.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the token file {} is empty", .0.display())]
    EmptyToken(PathBuf),
    #[error("cannot make a key and CSR: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid trust anchors: {0}")]
    TrustAnchors(String),
    #[error("cannot use the Identity service address {addr:?}: {reason}")]
    Endpoint { addr: String, reason: String },
    #[error("cannot connect to the Identity service: {0}")]
    Connect(tonic::transport::Error),
    #[error("Certify failed: {:?}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    #[error("Certify took longer than {0:?}")]
    Timeout(Duration),
    #[error("invalid Certify response: {0}")]
    Response(String),
}

/// The key and the CSR sent with every `Certify`.
#[derive(Clone, PartialEq, Eq)]
struct Documents {
    key_pkcs8: Vec<u8>,
    csr_der: Vec<u8>,
    source: Source,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `key.p8` and `csr.der` from the identity directory.
    Dir,
    /// Made in process.
    Generated,
}

/// Checks issued chains against the trust anchors.
struct Verifier {
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

// === impl Certified ===

/// Leaves the key out.
impl fmt::Debug for Certified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certified")
            .field("name", &self.name)
            .field(
                "chain",
                &format_args!("<{} certificates>", self.chain.len()),
            )
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

// === impl IdentityMetrics ===

impl IdentityMetrics {
    /// When the current certificate expires; `None` before the first success.
    pub fn expiry(&self) -> Option<SystemTime> {
        match self.expiry_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    fn set_expiry(&self, expiry: SystemTime) {
        self.expiry_unix_ms
            .store(unix_ms(expiry), Ordering::Relaxed);
        self.refresh_unix_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// The families linkerd2-proxy exposes for its certificate (`linkerd/identity/src/
    /// metrics.rs`, under the `identity_cert` prefix), in Prometheus text format:
    /// `identity_cert_expiration_timestamp_seconds`, `identity_cert_refresh_timestamp_seconds`
    /// and `identity_cert_refreshes_total{result="ok"|"error"}` (here an error is a failed
    /// `Certify` round: the call, or credentials that could not be used).
    pub fn render(&self) -> String {
        let seconds = |ms: &AtomicU64| ms.load(Ordering::Relaxed) as f64 / 1000.0;
        format!(
            "# HELP identity_cert_expiration_timestamp_seconds Time when this proxy's current mTLS identity certificate will expire (in seconds since the UNIX epoch).\n\
             # TYPE identity_cert_expiration_timestamp_seconds gauge\n\
             identity_cert_expiration_timestamp_seconds {}\n\
             # HELP identity_cert_refresh_timestamp_seconds Time when this proxy's current mTLS identity certificate was last updated.\n\
             # TYPE identity_cert_refresh_timestamp_seconds gauge\n\
             identity_cert_refresh_timestamp_seconds {}\n\
             # HELP identity_cert_refreshes_total The total number of times this proxy's mTLS identity certificate has been refreshed by the Identity provider.\n\
             # TYPE identity_cert_refreshes_total counter\n\
             identity_cert_refreshes_total{{result=\"ok\"}} {}\n\
             identity_cert_refreshes_total{{result=\"error\"}} {}\n",
            seconds(&self.expiry_unix_ms),
            seconds(&self.refresh_unix_ms),
            self.certify_ok.load(Ordering::Relaxed),
            self.certify_failed.load(Ordering::Relaxed),
        )
    }
}

/// `at` in milliseconds since the epoch, at least 1 (0 means "never").
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(1, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

// === impl Documents ===

impl Documents {
    /// `key.p8` and `csr.der` from `dir` when both are there, non-empty, and the key is an
    /// ECDSA P-256 key whose public half is in the CSR; otherwise a new key and CSR for
    /// `name`. Blocking I/O (two small files, once).
    fn load_or_generate(dir: &Path, name: &str) -> Result<Documents, IdentityError> {
        match Documents::load(dir) {
            Ok(Some(docs)) => return Ok(docs),
            Ok(None) => {
                tracing::debug!(dir = %dir.display(), "No key and CSR in the identity directory; making them");
            }
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "Ignoring the identity directory's key and CSR; making new ones");
            }
        }
        Documents::generate(name)
    }

    /// `Ok(None)` when either file is missing or empty; an error when they are unusable.
    fn load(dir: &Path) -> Result<Option<Documents>, String> {
        let read = |file: &str| match std::fs::read(dir.join(file)) {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{file}: {e}")),
        };
        let (Some(key_pkcs8), Some(csr_der)) = (read(KEY_FILE)?, read(CSR_FILE)?) else {
            return Ok(None);
        };
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key_pkcs8.as_slice()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| format!("{KEY_FILE} is not a DER PKCS#8 ECDSA P-256 key: {e}"))?;
        // The CSR's SubjectPublicKeyInfo holds the raw public key: a cheap check that the two
        // files belong together, without parsing the CSR.
        let public = key.public_key_raw();
        if !csr_der.windows(public.len()).any(|w| w == public) {
            return Err(format!("{CSR_FILE} is not for the key in {KEY_FILE}"));
        }
        Ok(Some(Documents {
            key_pkcs8,
            csr_der,
            source: Source::Dir,
        }))
    }

    /// A new ECDSA P-256 key and a CSR for `name`: CN = `name`, one DNS SAN = `name`.
    fn generate(name: &str) -> Result<Documents, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.subject_alt_names = vec![rcgen::SanType::DnsName(name.try_into()?)];
        let csr = params.serialize_request(&key)?;
        Ok(Documents {
            key_pkcs8: key.serialize_der(),
            csr_der: csr.der().to_vec(),
            source: Source::Generated,
        })
    }
}

impl fmt::Debug for Documents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Documents")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

// === impl Verifier ===

impl Verifier {
    fn new(trust_anchors_pem: &str) -> Result<Verifier, IdentityError> {
        let anchors = |e: String| IdentityError::TrustAnchors(e);
        let certs = CertificateDer::pem_slice_iter(trust_anchors_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anchors(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        let (added, _skipped) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(anchors("no usable certificate".to_string()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| anchors(e.to_string()))?;
        Ok(Verifier { verifier, provider })
    }

    /// Whether `chain` (leaf first) is valid at `now` for `name` under the trust anchors, and
    /// its leaf is for `key_pkcs8`.
    fn check(
        &self,
        name: &str,
        chain: &[Vec<u8>],
        key_pkcs8: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        let chain: Vec<CertificateDer<'static>> = chain
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let (leaf, intermediates) = chain.split_first().ok_or("no leaf certificate")?;
        if leaf.is_empty() {
            return Err("empty leaf certificate".to_string());
        }
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("{name:?} is not a TLS name: {e}"))?;
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        self.verifier
            .verify_server_cert(leaf, intermediates, &server_name, &[], now)
            .map_err(|e| format!("the certificate does not verify for {name}: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
        CertifiedKey::from_der(chain, key, &self.provider)
            .map_err(|e| format!("the certificate is not for our key: {e}"))?;
        Ok(())
    }
}

// === functions ===

/// Certifies `config.local_name` now and then forever, publishing each new [`Certified`] on
/// `publish`. Runs on the control thread's runtime until it shuts down (or the task is
/// aborted); it returns early, having logged the error, only when it cannot start (trust
/// anchors that hold no certificate, an unusable service address, no key).
pub async fn run(config: IdentityConfig, publish: watch::Sender<Option<Arc<Certified>>>) {
    run_with_metrics(config, publish, Arc::default()).await
}

/// [`run`], counting outcomes in `metrics`.
pub async fn run_with_metrics(
    config: IdentityConfig,
    publish: watch::Sender<Option<Arc<Certified>>>,
    metrics: Arc<IdentityMetrics>,
) {
    let setup = (|| {
        let verifier = Verifier::new(&config.trust_anchors_pem)?;
        let endpoint = endpoint(&config)?;
        let docs = Documents::load_or_generate(&config.dir, &config.local_name)?;
        Ok::<_, IdentityError>((verifier, endpoint, docs))
    })();
    let (verifier, endpoint, docs) = match setup {
        Ok(setup) => setup,
        Err(error) => {
            tracing::error!(%error, "Identity cannot start; this proxy will never be certified");
            return;
        }
    };
    tracing::debug!(
        name = %config.local_name,
        addr = %config.svc_addr,
        tls = !config.svc_is_loopback(),
        source = ?docs.source,
        "Identity client running"
    );

    let mut expiry: Option<SystemTime> = None;
    loop {
        match certify(&config, &docs, &verifier, &endpoint).await {
            Ok(certified) => {
                metrics.certify_ok.fetch_add(1, Ordering::Relaxed);
                metrics.set_expiry(certified.expiry);
                tracing::info!(name = %certified.name, expiry = ?certified.expiry, "Certified identity");
                expiry = Some(certified.expiry);
                publish.send_replace(Some(Arc::new(certified)));
            }
            Err(error) => {
                metrics.certify_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    name = %config.local_name,
                    addr = %config.svc_addr,
                    %error,
                    certified = expiry.is_some(),
                    "Failed to certify identity"
                );
            }
        }
        let wait = match expiry {
            Some(expiry) => refresh_after(
                SystemTime::now(),
                expiry,
                config.min_refresh,
                config.max_refresh,
            ),
            None => config.min_refresh,
        }
        .max(MIN_WAIT);
        tracing::debug!(?wait, "Waiting to refresh identity");
        tokio::time::sleep(wait).await;
    }
}

/// How long to wait before refreshing a certificate valid until `valid_until`: 70% of what
/// is left of it, but at least `min` and at most `max` (`min` when it has expired).
pub fn refresh_after(
    now: SystemTime,
    valid_until: SystemTime,
    min: Duration,
    max: Duration,
) -> Duration {
    let Ok(left) = valid_until.duration_since(now) else {
        return min;
    };
    // As linkerd2-proxy's `refresh_in`: `min` wins over `max` if they are crossed.
    match left.checked_mul(7).map(|d| d / 10) {
        Some(wait) if wait < min => min,
        Some(wait) if wait <= max => wait,
        _ => max,
    }
}

/// One `Certify` round: the request, the call and the checks.
async fn certify(
    config: &IdentityConfig,
    docs: &Documents,
    verifier: &Verifier,
    endpoint: &Endpoint,
) -> Result<Certified, IdentityError> {
    let request = pb::CertifyRequest {
        identity: config.local_name.clone(),
        token: read_token(&config.token_file)?,
        certificate_signing_request: docs.csr_der.clone(),
    };
    let call = async {
        // A new connection each time, as linkerd2-proxy does: calls are hours apart, and the
        // service's address may have changed in between.
        let channel = endpoint.connect().await.map_err(IdentityError::Connect)?;
        IdentityClient::new(channel)
            .certify(request)
            .await
            .map_err(IdentityError::Status)
    };
    let response = tokio::time::timeout(CERTIFY_TIMEOUT, call)
        .await
        .map_err(|_| IdentityError::Timeout(CERTIFY_TIMEOUT))??
        .into_inner();
    certified(config, docs, verifier, response, SystemTime::now())
}

/// Checks a `Certify` answer and turns it into credentials.
fn certified(
    config: &IdentityConfig,
    docs: &Documents,
    verifier: &Verifier,
    response: pb::CertifyResponse,
    now: SystemTime,
) -> Result<Certified, IdentityError> {
    let invalid = IdentityError::Response;
    let pb::CertifyResponse {
        leaf_certificate,
        intermediate_certificates,
        valid_until,
    } = response;
    let valid_until = valid_until.ok_or_else(|| invalid("no valid_until".to_string()))?;
    let expiry = SystemTime::try_from(valid_until)
        .map_err(|e| invalid(format!("valid_until out of range: {e}")))?;
    if expiry <= now {
        return Err(invalid(format!("already expired at {expiry:?}")));
    }
    let mut chain = Vec::with_capacity(1 + intermediate_certificates.len());
    chain.push(leaf_certificate);
    chain.extend(intermediate_certificates);
    verifier
        .check(&config.local_name, &chain, &docs.key_pkcs8, now)
        .map_err(invalid)?;
    Ok(Certified {
        name: config.local_name.clone(),
        key_pkcs8: docs.key_pkcs8.clone(),
        chain,
        expiry,
        trust_anchors_pem: config.trust_anchors_pem.clone(),
    })
}

/// The token, read afresh (Kubernetes rotates projected tokens); empty is an error.
fn read_token(path: &Path) -> Result<Vec<u8>, IdentityError> {
    let token = std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if token.is_empty() {
        return Err(IdentityError::EmptyToken(path.to_path_buf()));
    }
    Ok(token)
}

/// Where and how to reach the Identity service: plaintext HTTP/2 on loopback, otherwise TLS
/// verified against the trust anchors for `svc_name`.
fn endpoint(config: &IdentityConfig) -> Result<Endpoint, IdentityError> {
    let addr = &config.svc_addr;
    let error = |reason: String| IdentityError::Endpoint {
        addr: addr.clone(),
        reason,
    };
    let endpoint = if config.svc_is_loopback() {
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| error(e.to_string()))?
    } else {
        let name = config.svc_name.as_deref().ok_or_else(|| {
            error("LINKERD2_PROXY_IDENTITY_SVC_NAME is needed off loopback".to_string())
        })?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&config.trust_anchors_pem))
            .domain_name(name)
            // A Linkerd proxy in front of the service terminates TLS without ALPN; HTTP/2 is
            // known, not negotiated.
            .assume_http2(true);
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| error(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| error(e.to_string()))?
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CERTIFY_TIMEOUT)
        .tcp_nodelay(true))
}
