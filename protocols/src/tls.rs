//! rustls configuration for Linkerd's mesh TLS, as linkerd2-proxy sets it up
//! (`linkerd/rustls/src/crypto.rs`, `linkerd/meshtls/src/creds.rs` and `creds/store.rs`).
//!
//! - [`TrustAnchors`]: the CA certificates peers' chains must lead to (the PEM bundle in
//!   `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`).
//! - [`Credentials`]: this proxy's certificate chain and key, for its identity.
//! - [`MeshTls`]: the four rustls configurations the proxy needs: terminating mesh TLS on
//!   the inbound port and on the direct (gateway) port, and originating it with and without
//!   the transport header's ALPN protocol.
//! - [`peer_identity`]: a peer's identity from its leaf certificate.
//!
//! All of it is TLS 1.3 only, on the *ring* provider: cipher suites AES-128-GCM,
//! AES-256-GCM and ChaCha20-Poly1305; key exchange X25519, P-256 and P-384; this proxy signs
//! with ECDSA P-256/SHA-256 only, and accepts the signature algorithms linkerd2-proxy
//! accepts. linkerd2-proxy (on aws-lc) also offers X25519MLKEM768 first, which *ring* does
//! not have: a linkerd2-proxy peer then agrees on X25519 with us.
//!
//! ALPN, as linkerd2-proxy sets it:
//! - the inbound server offers none (`linkerd/app/inbound/src/detect.rs` terminates with
//!   `rt.identity.server()`, whose config has no ALPN protocols);
//! - the direct server offers [`transport_header::ALPN`] only
//!   (`linkerd/app/inbound/src/direct.rs`: `spawn_with_alpn(vec![transport_header::PROTOCOL
//!   .into()])`), and refuses a connection that did not negotiate it;
//! - clients offer nothing, or [`transport_header::ALPN`] alone when they will send a
//!   transport header (opaque or gateway endpoints: `linkerd/app/outbound/src/{http,opaq,
//!   tls}/concrete.rs` and `tcp/tagged_transport.rs` set `AlpnProtocols(vec![PROTOCOL])`).
//!
//! [`transport_header::ALPN`]: crate::transport_header::ALPN

mod identity;

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

use crate::authority::is_dns_name;
use crate::transport_header;

pub use identity::peer_identity;

/// The one signature scheme this proxy signs handshakes with (its key is ECDSA P-256).
pub const SIGNATURE_SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

/// The protocol versions: TLS 1.3 only.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The signature algorithms peers' certificates and handshakes may use: linkerd2-proxy's
/// `SUPPORTED_SIG_ALGS` (`linkerd/rustls/src/crypto.rs`) less what *ring* cannot verify
/// (ECDSA P-521, and P-256/P-384 with SHA-512). Notably no RSA-PSS.
static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384,
        webpki::ring::RSA_PKCS1_2048_8192_SHA512,
        webpki::ring::RSA_PKCS1_3072_8192_SHA384,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[
                webpki::ring::ECDSA_P384_SHA384,
                webpki::ring::ECDSA_P256_SHA384,
            ],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[
                webpki::ring::ECDSA_P256_SHA256,
                webpki::ring::ECDSA_P384_SHA256,
            ],
        ),
        (SignatureScheme::ED25519, &[webpki::ring::ED25519]),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[webpki::ring::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[webpki::ring::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[webpki::ring::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

// === types ===

/// The CA certificates that peers' (and our own) chains must lead to.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
}

/// This proxy's identity and what proves it.
#[derive(Clone)]
pub struct Credentials {
    /// The identity: a DNS name the leaf certificate is valid for, such as
    /// `web.emojivoto.serviceaccount.identity.linkerd.cluster.local`.
    pub name: String,
    /// The leaf's ECDSA P-256 private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// DER certificates: the leaf first, then the intermediates up to (not including) a
    /// trust anchor.
    pub chain: Vec<Vec<u8>>,
}

/// The rustls configurations for mesh TLS with one set of credentials.
///
/// Servers ask for a client certificate but accept a client without one (the caller tells
/// meshed from unmeshed clients by [`peer_identity`] of the peer's leaf, if any); a client
/// certificate that does not lead to the trust anchors fails the handshake. Servers send no
/// session tickets and keep no session cache; clients do not resume (as linkerd2-proxy's do
/// not). Clients present the chain, and check that the server's chain leads to the trust
/// anchors and that its leaf is valid for the name they connect with (the server's
/// identity, which is also the SNI they send).
#[derive(Clone, Debug)]
pub struct MeshTls {
    /// The identity, as in [`Credentials::name`].
    pub name: String,
    /// Terminates mesh TLS on the inbound port: no ALPN.
    pub server: Arc<ServerConfig>,
    /// Terminates mesh TLS on the direct (gateway) port: ALPN `transport.l5d.io/v1` only.
    pub server_direct: Arc<ServerConfig>,
    /// Originates mesh TLS: no ALPN.
    pub client: Arc<ClientConfig>,
    /// Originates mesh TLS to send a transport header: ALPN `transport.l5d.io/v1` only.
    pub client_transport_header: Arc<ClientConfig>,
}

/// Why trust anchors or credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("trust anchors are not valid PEM: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("no certificate in the trust anchors")]
    NoTrustAnchors,
    #[error("trust anchor {index} is not a usable CA certificate: {source}")]
    TrustAnchor {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("identity {0:?} is not a DNS name")]
    InvalidName(String),
    #[error("no certificate in the chain")]
    EmptyChain,
    #[error("the private key cannot be used with the leaf certificate: {0}")]
    Key(#[source] rustls::Error),
    #[error("the private key is not an ECDSA P-256 key")]
    UnsupportedKey,
    #[error("the certificate chain is not valid for {name:?} under the trust anchors: {source}")]
    Chain {
        name: String,
        #[source]
        source: rustls::Error,
    },
    #[error("invalid TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    #[error("invalid certificate verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// Presents our certificate only to peers that accept [`SIGNATURE_SCHEME`], as
/// linkerd2-proxy's `CertResolver` does.
#[derive(Debug)]
struct CertResolver(Arc<CertifiedKey>);

// === impl TrustAnchors ===

impl TrustAnchors {
    /// The CA certificates in a PEM bundle: at least one, each of which must be usable as a
    /// trust anchor. Sections other than `CERTIFICATE` are ignored.
    ///
    /// Stricter than linkerd2-proxy, which skips certificates it cannot use (with a
    /// warning) as long as one is left.
    pub fn from_pem(pem: &str) -> Result<TrustAnchors, TlsError> {
        let mut roots = RootCertStore::empty();
        for (index, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let cert = cert.map_err(TlsError::Pem)?;
            roots
                .add(cert)
                .map_err(|source| TlsError::TrustAnchor { index, source })?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoTrustAnchors);
        }
        Ok(TrustAnchors {
            roots: Arc::new(roots),
        })
    }

    /// How many trust anchors there are (at least one).
    pub fn count(&self) -> usize {
        self.roots.len()
    }
}

// === impl Credentials ===

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field(
                "key_pkcs8",
                &format_args!("<{} bytes>", self.key_pkcs8.len()),
            )
            .field(
                "chain",
                &format_args!("<{} certificates>", self.chain.len()),
            )
            .finish()
    }
}

// === impl MeshTls ===

impl MeshTls {
    /// The configurations for `creds` under `anchors`.
    ///
    /// Checks the credentials as linkerd2-proxy checks a new certificate before it uses it
    /// (`Store::set_certificate`): the name is a DNS name; the key is an ECDSA P-256 key and
    /// matches the leaf; the chain leads to the trust anchors and is valid now for the name.
    pub fn new(creds: &Credentials, anchors: &TrustAnchors) -> Result<MeshTls, TlsError> {
        let name = creds.name.clone();
        let server_name = match ServerName::try_from(name.clone()) {
            Ok(server_name @ ServerName::DnsName(_))
                if is_dns_name(&name) && !name.ends_with('.') =>
            {
                server_name
            }
            _ => return Err(TlsError::InvalidName(name)),
        };
        if creds.chain.is_empty() {
            return Err(TlsError::EmptyChain);
        }
        let chain: Vec<CertificateDer<'static>> = creds
            .chain
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let provider = Arc::new(provider());

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(creds.key_pkcs8.clone()));
        let certified =
            CertifiedKey::from_der(chain.clone(), key, &provider).map_err(TlsError::Key)?;
        if certified.key.choose_scheme(&[SIGNATURE_SCHEME]).is_none() {
            return Err(TlsError::UnsupportedKey);
        }
        let resolver = Arc::new(CertResolver(Arc::new(certified)));

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(anchors.roots.clone(), provider.clone())
                .build()
                .map_err(TlsError::Verifier)?;
        server_verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
            .map_err(|source| TlsError::Chain {
                name: name.clone(),
                source,
            })?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(anchors.roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(TlsError::Verifier)?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(resolver.clone());
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        let mut server_direct = server.clone();
        server_direct.alpn_protocols = vec![transport_header::ALPN.to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(TlsError::Config)?
            .with_webpki_verifier(server_verifier)
            .with_client_cert_resolver(resolver);
        client.resumption = Resumption::disabled();
        let mut client_transport_header = client.clone();
        client_transport_header.alpn_protocols = vec![transport_header::ALPN.to_vec()];

        Ok(MeshTls {
            name,
            server: Arc::new(server),
            server_direct: Arc::new(server_direct),
            client: Arc::new(client),
            client_transport_header: Arc::new(client_transport_header),
        })
    }
}

// === impl CertResolver ===

impl CertResolver {
    fn resolve(&self, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        schemes.contains(&SIGNATURE_SCHEME).then(|| self.0.clone())
    }
}

impl rustls::server::ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        CertResolver::resolve(self, hello.signature_schemes())
    }
}

impl rustls::client::ResolvesClientCert for CertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        CertResolver::resolve(self, schemes)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// === functions ===

/// *ring* with linkerd2-proxy's choices (`linkerd/rustls/src/crypto.rs`, less FIPS and
/// post-quantum key exchange).
fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            ring::kx_group::X25519,
            ring::kx_group::SECP256R1,
            ring::kx_group::SECP384R1,
        ],
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        ..ring::default_provider()
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
