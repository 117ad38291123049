//! The identity variables: where the Identity service is, the local identity name, the trust
//! anchors, the token file and the refresh bounds (linkerd2-proxy's `env/identity.rs`).
//!
//! Identity is all or nothing. When none of `_DIR`, `_TRUST_ANCHORS`, `_TOKEN_FILE`,
//! `_SVC_ADDR` and `_LOCAL_NAME` (or `_SERVER_ID`/`_SERVER_NAME`) is set, ringlink runs
//! without identity (plaintext, its default); once one is set, all must be. The rest follows
//! linkerd2-proxy:
//! - `_LOCAL_NAME`, when set (even to an invalid value), is both the identity and the TLS
//!   server name. Otherwise `_SERVER_ID` and `_SERVER_NAME` must both be set, to the same
//!   DNS-like name.
//! - `_SVC_NAME` (the Identity service's own identity) may be omitted only when `_SVC_ADDR`
//!   is loopback (`localhost`, `127.0.0.0/8`, `::1`); the service is then reached in
//!   plaintext.
//! - `_TRUST_ANCHORS` is the PEM bundle itself, not a path, and must hold a certificate.
//! - `_MIN_REFRESH`/`_MAX_REFRESH` default to 10s/24h.
//!
//! One deliberate difference: linkerd2-proxy refuses to start when
//! `LINKERD2_PROXY_IDENTITY_DISABLED` is set (identity can no longer be switched off); ringlink
//! takes it as "no identity" and ignores the other identity variables.
//!
//! Parsing stays pure: the token file and the identity directory are not read here (the
//! identity client reads the token on every `Certify`, and generates a key when the
//! directory has none).

use std::path::PathBuf;
use std::time::Duration;

use super::{parse_duration, parse_host_port, read, ConfigError, Env};

#[cfg(test)]
mod tests;

// Variable names, in the order `from_env` reads them.
pub(super) const IDENTITY_DISABLED: &str = "LINKERD2_PROXY_IDENTITY_DISABLED";
pub(super) const IDENTITY_DIR: &str = "LINKERD2_PROXY_IDENTITY_DIR";
pub(super) const IDENTITY_TRUST_ANCHORS: &str = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS";
pub(super) const IDENTITY_TOKEN_FILE: &str = "LINKERD2_PROXY_IDENTITY_TOKEN_FILE";
pub(super) const IDENTITY_SVC_ADDR: &str = "LINKERD2_PROXY_IDENTITY_SVC_ADDR";
pub(super) const IDENTITY_SVC_NAME: &str = "LINKERD2_PROXY_IDENTITY_SVC_NAME";
pub(super) const IDENTITY_LOCAL_NAME: &str = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME";
pub(super) const IDENTITY_SERVER_ID: &str = "LINKERD2_PROXY_IDENTITY_SERVER_ID";
pub(super) const IDENTITY_SERVER_NAME: &str = "LINKERD2_PROXY_IDENTITY_SERVER_NAME";
pub(super) const IDENTITY_MIN_REFRESH: &str = "LINKERD2_PROXY_IDENTITY_MIN_REFRESH";
pub(super) const IDENTITY_MAX_REFRESH: &str = "LINKERD2_PROXY_IDENTITY_MAX_REFRESH";

// Defaults, as in linkerd2-proxy.
const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(10);
const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);

const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

// === types ===

/// The local identity and how to get it certified (`LINKERD2_PROXY_IDENTITY_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `_DIR`: where Linkerd's `proxy-identity` wrapper leaves `key.p8` and `csr.der`.
    pub dir: PathBuf,
    /// `_TRUST_ANCHORS`: the roots, a PEM bundle given inline.
    pub trust_anchors_pem: String,
    /// `_TOKEN_FILE`: the service-account token sent with every `Certify`, re-read each time.
    pub token_file: PathBuf,
    /// `_SVC_ADDR`: the Identity service, `host:port`.
    pub svc_addr: String,
    /// `_SVC_NAME`: the Identity service's identity (its TLS server name); `None` only when
    /// `svc_addr` is loopback.
    pub svc_name: Option<String>,
    /// `_LOCAL_NAME` (or `_SERVER_ID` = `_SERVER_NAME`): this proxy's identity, a DNS-like
    /// name such as `web.ns.serviceaccount.identity.linkerd.cluster.local`.
    pub local_name: String,
    /// `_MIN_REFRESH`, default 10s: the shortest wait between two `Certify` calls.
    pub min_refresh: Duration,
    /// `_MAX_REFRESH`, default 24h: the longest wait before a refresh.
    pub max_refresh: Duration,
}

// === impl IdentityConfig ===

impl IdentityConfig {
    /// Whether the Identity service is on loopback, and so reached in plaintext.
    pub fn svc_is_loopback(&self) -> bool {
        is_loopback_host_port(&self.svc_addr)
    }

    /// Reads the identity variables: `Ok(None)` when identity is not configured (or
    /// `LINKERD2_PROXY_IDENTITY_DISABLED` is set), an error naming the first invalid or
    /// missing variable when it is only partly configured.
    pub(super) fn from_env(env: &dyn Env) -> Result<Option<IdentityConfig>, ConfigError> {
        if env.var(IDENTITY_DISABLED)?.is_some_and(|v| !v.is_empty()) {
            return Ok(None);
        }

        // First every value that is set must be valid...
        let dir = read(env, IDENTITY_DIR, parse_path)?;
        let trust_anchors_pem = read(env, IDENTITY_TRUST_ANCHORS, parse_trust_anchors)?;
        let token_file = read(env, IDENTITY_TOKEN_FILE, parse_path)?;
        let svc_addr = read(env, IDENTITY_SVC_ADDR, parse_host_port)?;
        let svc_name = read(env, IDENTITY_SVC_NAME, parse_dns_name)?;
        let local_name = LocalName::from_env(env)?;
        let min_refresh = read(env, IDENTITY_MIN_REFRESH, parse_duration)?;
        let max_refresh = read(env, IDENTITY_MAX_REFRESH, parse_duration)?;

        // ...then, once any of the required ones is set, all of them must be.
        let required: [(&'static str, bool); 5] = [
            (IDENTITY_DIR, dir.is_some()),
            (IDENTITY_TRUST_ANCHORS, trust_anchors_pem.is_some()),
            (IDENTITY_TOKEN_FILE, token_file.is_some()),
            (IDENTITY_SVC_ADDR, svc_addr.is_some()),
            (local_name.var(), local_name.is_set()),
        ];
        let Some(first_set) = required
            .iter()
            .find(|(_, set)| *set)
            .map(|(var, _)| *var)
            .or_else(|| local_name.partly_set())
        else {
            return Ok(None);
        };
        if let Some((missing, _)) = required.iter().find(|(_, set)| !*set) {
            return Err(missing_error(missing, first_set));
        }
        let (
            Some(dir),
            Some(trust_anchors_pem),
            Some(token_file),
            Some(svc_addr),
            LocalName::Set(local_name, _),
        ) = (dir, trust_anchors_pem, token_file, svc_addr, local_name)
        else {
            unreachable!("every required identity variable was checked to be set");
        };
        if svc_name.is_none() && !is_loopback_host_port(&svc_addr) {
            return Err(ConfigError {
                var: IDENTITY_SVC_NAME,
                value: String::new(),
                reason: format!(
                    "must be set unless {IDENTITY_SVC_ADDR} is loopback (it is {svc_addr:?})"
                ),
            });
        }

        Ok(Some(IdentityConfig {
            dir,
            trust_anchors_pem,
            token_file,
            svc_addr,
            svc_name,
            local_name,
            min_refresh: min_refresh.unwrap_or(DEFAULT_MIN_REFRESH),
            max_refresh: max_refresh.unwrap_or(DEFAULT_MAX_REFRESH),
        }))
    }
}

/// Leaves the trust anchors out: they are long and not secret, but they drown the rest.
impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("dir", &self.dir)
            .field(
                "trust_anchors_pem",
                &format_args!("<{} bytes>", self.trust_anchors_pem.len()),
            )
            .field("token_file", &self.token_file)
            .field("svc_addr", &self.svc_addr)
            .field("svc_name", &self.svc_name)
            .field("local_name", &self.local_name)
            .field("min_refresh", &self.min_refresh)
            .field("max_refresh", &self.max_refresh)
            .finish()
    }
}

// === impl LocalName ===

/// The local identity as the variables give it.
enum LocalName {
    /// `_LOCAL_NAME`, or `_SERVER_ID` = `_SERVER_NAME`; and the variable that set it (named
    /// when another identity variable is missing).
    Set(String, &'static str),
    /// None of the three is set.
    Unset,
    /// Only one of `_SERVER_ID` and `_SERVER_NAME` is set: the other is missing.
    Missing {
        set: &'static str,
        missing: &'static str,
    },
}

impl LocalName {
    fn from_env(env: &dyn Env) -> Result<LocalName, ConfigError> {
        // As in linkerd2-proxy: `_LOCAL_NAME`, if set at all, is the identity and the server
        // name, and `_SERVER_ID`/`_SERVER_NAME` are then ignored.
        if let Some(name) = read(env, IDENTITY_LOCAL_NAME, parse_dns_name)? {
            return Ok(LocalName::Set(name, IDENTITY_LOCAL_NAME));
        }
        let id = read(env, IDENTITY_SERVER_ID, parse_server_id)?;
        let name = read(env, IDENTITY_SERVER_NAME, parse_dns_name)?;
        match (id, name) {
            (None, None) => Ok(LocalName::Unset),
            (Some(_), None) => Ok(LocalName::Missing {
                set: IDENTITY_SERVER_ID,
                missing: IDENTITY_SERVER_NAME,
            }),
            (None, Some(_)) => Ok(LocalName::Missing {
                set: IDENTITY_SERVER_NAME,
                missing: IDENTITY_SERVER_ID,
            }),
            (Some(id), Some(name)) if id == name => Ok(LocalName::Set(name, IDENTITY_SERVER_NAME)),
            (Some(id), Some(name)) => Err(ConfigError {
                var: IDENTITY_SERVER_ID,
                value: id,
                reason: format!("must be the same name as {IDENTITY_SERVER_NAME}={name:?}"),
            }),
        }
    }

    /// The variable to name when the local name is missing.
    fn var(&self) -> &'static str {
        match self {
            LocalName::Set(_, var) => var,
            LocalName::Unset => IDENTITY_LOCAL_NAME,
            LocalName::Missing { missing, .. } => missing,
        }
    }

    fn is_set(&self) -> bool {
        matches!(self, LocalName::Set(..))
    }

    /// The variable that is set when only half of `_SERVER_ID`/`_SERVER_NAME` is.
    fn partly_set(&self) -> Option<&'static str> {
        match self {
            LocalName::Missing { set, .. } => Some(set),
            _ => None,
        }
    }
}

// === functions ===

/// Whether the host of `host:port` is loopback: `localhost` (with or without the final dot,
/// in any case), an address in `127.0.0.0/8`, or `::1` (bracketed or not).
///
/// linkerd2-proxy counts only the absolute `localhost.` as loopback; ringlink also accepts
/// `localhost`.
pub fn is_loopback_host_port(addr: &str) -> bool {
    let addr = addr.trim();
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return sa.ip().is_loopback();
    }
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `name` is a DNS-like name as Linkerd identities are (webpki's reference-name
/// rules, plus `_`): ASCII labels of 1 to 63 letters, digits, `-` and `_`, not starting or
/// ending with `-`, at most 253 characters with an optional final dot, the last label not
/// all digits. Wildcards and IP addresses are not names.
pub fn is_dns_like_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    labels.iter().all(label_ok)
        && !labels
            .last()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

fn missing_error(var: &'static str, first_set: &'static str) -> ConfigError {
    ConfigError {
        var,
        value: String::new(),
        reason: format!("must be set with the other identity variables ({first_set} is set)"),
    }
}

fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("expected a path".to_string());
    }
    Ok(PathBuf::from(s))
}

fn parse_trust_anchors(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("empty trust anchors".to_string());
    }
    if !s.contains(PEM_CERTIFICATE) {
        return Err("expected PEM certificates (-----BEGIN CERTIFICATE-----)".to_string());
    }
    Ok(s.to_string())
}

pub(super) fn parse_dns_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !is_dns_like_name(s) {
        return Err("expected a DNS-like identity name".to_string());
    }
    Ok(s.to_string())
}

fn parse_server_id(s: &str) -> Result<String, String> {
    if s.contains("://") {
        return Err(
            "URI (SPIFFE) identities are not supported, expected a DNS-like name".to_string(),
        );
    }
    parse_dns_name(s)
}
