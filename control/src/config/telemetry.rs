//! Observability variables: the access log (`LINKERD2_PROXY_ACCESS_LOG`, read by
//! linkerd2-proxy's `linkerd/tracing`), the trace collector (`LINKERD2_PROXY_TRACE_*`,
//! `env.rs` and `env/trace.rs`) and the tap client identity (`LINKERD2_PROXY_TAP_SVC_NAME`,
//! written by the viz tap injector).

use std::path::PathBuf;

use super::identity::{is_loopback_host_port, parse_dns_name};
use super::{parse_host_port, read, ConfigError, Env};

pub(super) const ACCESS_LOG: &str = "LINKERD2_PROXY_ACCESS_LOG";
pub(super) const TAP_SVC_NAME: &str = "LINKERD2_PROXY_TAP_SVC_NAME";
pub(super) const TRACE_COLLECTOR_SVC_ADDR: &str = "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR";
pub(super) const TRACE_COLLECTOR_SVC_NAME: &str = "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME";
pub(super) const TRACE_SERVICE_NAME: &str = "LINKERD2_PROXY_TRACE_SERVICE_NAME";
pub(super) const TRACE_ATTRIBUTES_PATH: &str = "LINKERD2_PROXY_TRACE_ATTRIBUTES_PATH";
pub(super) const TRACE_EXTRA_ATTRIBUTES: &str = "LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES";

/// The access log's format (`LINKERD2_PROXY_ACCESS_LOG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `apache`: Apache's common log format.
    Apache,
    /// `json`: one JSON object per request.
    Json,
}

impl AccessLogFormat {
    /// The value's name as written in `LINKERD2_PROXY_ACCESS_LOG`.
    pub fn name(&self) -> &'static str {
        match self {
            AccessLogFormat::Apache => "apache",
            AccessLogFormat::Json => "json",
        }
    }

    /// linkerd2-proxy's values, in any case. (linkerd2-proxy prints a warning and logs
    /// nothing for any other value; ringlink refuses it, as every invalid variable.)
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            s if s.eq_ignore_ascii_case("apache") => Ok(AccessLogFormat::Apache),
            s if s.eq_ignore_ascii_case("json") => Ok(AccessLogFormat::Json),
            _ => Err("expected apache or json".to_string()),
        }
    }
}

/// Where spans are exported (`LINKERD2_PROXY_TRACE_*`), and with which attributes.
///
/// Set when `_COLLECTOR_SVC_ADDR` is. As for every control-plane address, `_COLLECTOR_SVC_NAME`
/// (the collector's identity) is required unless the address is loopback, and may not be
/// set alone. The other three are opaque to linkerd2-proxy, which never rejects them, and
/// read only when a collector is configured; so they are here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceCollectorConfig {
    /// `_COLLECTOR_SVC_ADDR`, `host:port`.
    pub addr: String,
    /// `_COLLECTOR_SVC_NAME`; `None` only when `addr` is loopback.
    pub name: Option<String>,
    /// `_SERVICE_NAME` (the `service.name` attribute).
    pub service_name: Option<String>,
    /// `_ATTRIBUTES_PATH`: a downward-API file of `key="value"` lines (the pod's labels).
    pub attributes_path: Option<PathBuf>,
    /// `_EXTRA_ATTRIBUTES`: more `key=value` lines.
    pub extra_attributes: Option<String>,
}

impl TraceCollectorConfig {
    pub(super) fn from_env(env: &dyn Env) -> Result<Option<Self>, ConfigError> {
        let addr = read(env, TRACE_COLLECTOR_SVC_ADDR, parse_host_port)?;
        let name = read(env, TRACE_COLLECTOR_SVC_NAME, parse_dns_name)?;
        let Some(addr) = addr else {
            if name.is_some() {
                return Err(ConfigError {
                    var: TRACE_COLLECTOR_SVC_ADDR,
                    value: String::new(),
                    reason: format!("must be set with {TRACE_COLLECTOR_SVC_NAME}"),
                });
            }
            return Ok(None);
        };
        if name.is_none() && !is_loopback_host_port(&addr) {
            return Err(ConfigError {
                var: TRACE_COLLECTOR_SVC_NAME,
                value: String::new(),
                reason: format!(
                    "must be set unless {TRACE_COLLECTOR_SVC_ADDR} is loopback (it is {addr:?})"
                ),
            });
        }
        Ok(Some(TraceCollectorConfig {
            addr,
            name,
            service_name: env.var(TRACE_SERVICE_NAME)?,
            attributes_path: env.var(TRACE_ATTRIBUTES_PATH)?.map(PathBuf::from),
            extra_attributes: env.var(TRACE_EXTRA_ATTRIBUTES)?,
        }))
    }
}

/// The tap client's identity: a DNS-like name (linkerd2-proxy also takes a URI identity,
/// which ringlink's mesh TLS does not support).
pub(super) fn parse_tap_svc_name(s: &str) -> Result<String, String> {
    if s.contains("://") {
        return Err(
            "URI (SPIFFE) identities are not supported, expected a DNS-like name".to_string(),
        );
    }
    parse_dns_name(s)
}
