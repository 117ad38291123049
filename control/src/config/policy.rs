//! The policy controller and inbound policy variables (linkerd2-proxy's `env.rs`):
//! `LINKERD2_PROXY_POLICY_SVC_{ADDR,NAME}`, `_POLICY_WORKLOAD`, `_POLICY_CLUSTER_NETWORKS`,
//! `_INBOUND_DEFAULT_POLICY` and `_INBOUND_PORTS`.
//!
//! linkerd2-proxy refuses to start without a policy controller. ringlink runs without any
//! control plane by default, so policy is all or nothing, as identity is:
//! - a **meshed** proxy (Destination or identity configured) must have the policy
//!   controller: `_SVC_ADDR` and `_WORKLOAD` are then required, and `_SVC_NAME` too unless
//!   the address is loopback (then the controller is reached in plaintext);
//! - setting any of `_SVC_ADDR`, `_SVC_NAME`, `_WORKLOAD` asks for policy, so the same
//!   variables are required;
//! - otherwise policy is off (`Config::policy` is `None`).
//!
//! The other variables are always validated, whether policy is on or not, with
//! linkerd2-proxy's rules:
//! - `_INBOUND_DEFAULT_POLICY` is one of `all-unauthenticated` (the default when unset),
//!   `all-authenticated`, `cluster-unauthenticated`, `cluster-authenticated`, `deny`,
//!   `audit`;
//! - every value but `deny`, `all-authenticated` and `all-unauthenticated` needs a non-empty
//!   `_POLICY_CLUSTER_NETWORKS`. linkerd2-proxy rejects `cluster-*` without cluster networks,
//!   and because of the order of its match arms `audit` too; ringlink mirrors both
//!   (`InvalidPortPolicy`, fatal);
//! - `_POLICY_CLUSTER_NETWORKS` and `_INBOUND_PORTS` may be empty (none); `_INBOUND_PORTS`
//!   takes ports and `a-b` ranges, like the opaque ports.
//!
//! `_WORKLOAD` is opaque to linkerd2-proxy, which passes it to the policy controller
//! unchanged; ringlink keeps it verbatim ([`Workload::raw`]) and checks that the controller
//! would parse it (`policy-controller/grpc/src/workload.rs`): JSON when it starts with `{`
//! (`{"ns":"…","pod":"…"}` or `{"ns":"…","external_workload":"…"}`, other keys ignored),
//! else the legacy `ns:pod`.

use super::identity::{is_loopback_host_port, parse_dns_name};
use super::{parse_host_port, parse_networks, read, Cidr, ConfigError, Env, PortSet};

#[cfg(test)]
mod tests;

// Variable names, in the order `from_env` reads them.
pub(super) const POLICY_SVC_ADDR: &str = "LINKERD2_PROXY_POLICY_SVC_ADDR";
pub(super) const POLICY_SVC_NAME: &str = "LINKERD2_PROXY_POLICY_SVC_NAME";
pub(super) const POLICY_WORKLOAD: &str = "LINKERD2_PROXY_POLICY_WORKLOAD";
pub(super) const POLICY_CLUSTER_NETWORKS: &str = "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS";
pub(super) const INBOUND_DEFAULT_POLICY: &str = "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY";
pub(super) const INBOUND_PORTS: &str = "LINKERD2_PROXY_INBOUND_PORTS";

/// How deep the JSON workload may nest (in keys the controller ignores).
const MAX_JSON_DEPTH: usize = 32;

// === types ===

/// Where the policy controller is and what this proxy asks it about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `_POLICY_SVC_ADDR`, `host:port`.
    pub addr: String,
    /// `_POLICY_SVC_NAME`: the controller's identity (TLS server name); `None` only when
    /// `addr` is loopback.
    pub name: Option<String>,
    /// `_POLICY_WORKLOAD`: sent as `workload` in every `WatchPort` and as `source_workload`
    /// in every outbound `Watch`.
    pub workload: Workload,
    /// `_POLICY_CLUSTER_NETWORKS` (comma-separated CIDRs), default none: the networks the
    /// `cluster-*` default policies admit.
    pub cluster_networks: Vec<Cidr>,
    /// `_INBOUND_DEFAULT_POLICY`, default `all-unauthenticated`: the policy of a port the
    /// controller has not (yet) described.
    pub default_policy: DefaultPolicy,
    /// `_INBOUND_PORTS`, default none: the ports whose policy is watched from startup (see
    /// [`super::Config::policy_watch_ports`], which adds the admin port).
    pub inbound_ports: PortSet,
}

/// The workload this proxy runs for, as `_POLICY_WORKLOAD` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The value exactly as set (with the injector's trailing newline): what the policy API
    /// receives.
    pub raw: String,
    /// `ns`.
    pub namespace: String,
    pub kind: WorkloadKind,
}

/// A pod or an external workload, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `pod` (or the legacy `ns:pod` form).
    Pod(String),
    /// `external_workload`.
    External(String),
}

/// The inbound policy of a port the controller has not described
/// (`_INBOUND_DEFAULT_POLICY`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// `all-unauthenticated`: any client.
    #[default]
    AllUnauthenticated,
    /// `all-authenticated`: any meshed (mTLS) client.
    AllAuthenticated,
    /// `cluster-unauthenticated`: any client from the cluster networks.
    ClusterUnauthenticated,
    /// `cluster-authenticated`: any meshed client from the cluster networks.
    ClusterAuthenticated,
    /// `deny`: nobody.
    Deny,
    /// `audit`: any client, with would-be denials only reported.
    Audit,
}

// === impl PolicyConfig ===

impl PolicyConfig {
    /// Whether the controller is on loopback, and so reached in plaintext.
    pub fn svc_is_loopback(&self) -> bool {
        is_loopback_host_port(&self.addr)
    }

    /// Reads the policy variables. `meshed_by` names the variable that makes this proxy
    /// meshed (Destination or identity configured), which makes the policy controller
    /// required; `Ok(None)` when policy is neither required nor asked for.
    pub(super) fn from_env(
        env: &dyn Env,
        meshed_by: Option<&'static str>,
    ) -> Result<Option<PolicyConfig>, ConfigError> {
        // First every value that is set must be valid...
        let addr = read(env, POLICY_SVC_ADDR, parse_host_port)?;
        let name = read(env, POLICY_SVC_NAME, parse_dns_name)?;
        let workload = read(env, POLICY_WORKLOAD, Workload::parse)?;
        let cluster_networks = read(env, POLICY_CLUSTER_NETWORKS, parse_networks)?;
        let cluster_networks = cluster_networks.unwrap_or_default();
        let default_policy = read(env, INBOUND_DEFAULT_POLICY, |s| {
            DefaultPolicy::parse(s, !cluster_networks.is_empty())
        })?
        .unwrap_or_default();
        let inbound_ports = read(env, INBOUND_PORTS, |s| s.parse())?.unwrap_or_default();

        // ...then, if the proxy is meshed or one of the controller's variables is set, the
        // controller must be fully configured.
        let asked_by = [
            (POLICY_SVC_ADDR, addr.is_some()),
            (POLICY_SVC_NAME, name.is_some()),
            (POLICY_WORKLOAD, workload.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(var, _)| var);
        let Some(required_by) = meshed_by.or(asked_by) else {
            return Ok(None);
        };
        let Some(addr) = addr else {
            return Err(missing(POLICY_SVC_ADDR, required_by));
        };
        if name.is_none() && !is_loopback_host_port(&addr) {
            return Err(ConfigError {
                var: POLICY_SVC_NAME,
                value: String::new(),
                reason: format!(
                    "must be set unless {POLICY_SVC_ADDR} is loopback (it is {addr:?})"
                ),
            });
        }
        let Some(workload) = workload else {
            return Err(missing(POLICY_WORKLOAD, required_by));
        };
        Ok(Some(PolicyConfig {
            addr,
            name,
            workload,
            cluster_networks,
            default_policy,
            inbound_ports,
        }))
    }
}

fn missing(var: &'static str, required_by: &'static str) -> ConfigError {
    ConfigError {
        var,
        value: String::new(),
        reason: format!(
            "must be set with {required_by}: a meshed proxy needs the policy controller"
        ),
    }
}

// === impl DefaultPolicy ===

impl DefaultPolicy {
    /// The value's name as written in `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`.
    pub fn name(&self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::Audit => "audit",
        }
    }

    /// linkerd2-proxy's `parse_default_policy`: exact names (surrounding whitespace aside);
    /// without cluster networks only `deny` and `all-*` are accepted.
    fn parse(s: &str, have_cluster_networks: bool) -> Result<Self, String> {
        let policy = match s.trim() {
            "deny" => return Ok(DefaultPolicy::Deny),
            "all-authenticated" => return Ok(DefaultPolicy::AllAuthenticated),
            "all-unauthenticated" => return Ok(DefaultPolicy::AllUnauthenticated),
            "cluster-authenticated" => DefaultPolicy::ClusterAuthenticated,
            "cluster-unauthenticated" => DefaultPolicy::ClusterUnauthenticated,
            "audit" => DefaultPolicy::Audit,
            _ => {
                return Err("expected all-unauthenticated, all-authenticated, \
                     cluster-unauthenticated, cluster-authenticated, deny or audit"
                    .to_string())
            }
        };
        if !have_cluster_networks {
            return Err(format!(
                "{} needs {POLICY_CLUSTER_NETWORKS} to be set to at least one network",
                policy.name()
            ));
        }
        Ok(policy)
    }
}

// === impl Workload ===

impl Workload {
    /// The pod or external workload's name.
    pub fn name(&self) -> &str {
        match &self.kind {
            WorkloadKind::Pod(name) | WorkloadKind::External(name) => name,
        }
    }

    fn parse(s: &str) -> Result<Workload, String> {
        let (namespace, kind) = if s.starts_with('{') {
            parse_json_workload(s)?
        } else {
            let (ns, pod) = s
                .split_once(':')
                .ok_or("expected JSON like {\"ns\":\"NS\",\"pod\":\"POD\"} or NS:POD")?;
            (
                check_name("namespace", ns)?,
                WorkloadKind::Pod(check_name("pod", pod)?),
            )
        };
        Ok(Workload {
            raw: s.to_string(),
            namespace,
            kind,
        })
    }
}

/// A Kubernetes name as the controller will look it up: non-empty, without whitespace,
/// control characters or JSON/legacy-form punctuation.
fn check_name(what: &str, s: &str) -> Result<String, String> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '"' | '{' | '}');
    if s.is_empty() || s.contains(bad) {
        return Err(format!("{s:?} is not a valid {what} name"));
    }
    Ok(s.to_string())
}

/// `{"ns":"…","pod":"…"}` or `{"ns":"…","external_workload":"…"}`; other keys are ignored,
/// as the controller's serde does; surrounding whitespace is allowed.
fn parse_json_workload(s: &str) -> Result<(String, WorkloadKind), String> {
    let invalid = |e: String| format!("invalid JSON workload: {e}");
    let mut json = Json { s, at: 0 };
    let entries = json.object(0).map_err(invalid)?;
    json.skip_ws();
    if json.at != s.len() {
        return Err(invalid("trailing characters after the object".to_string()));
    }
    let mut ns = None;
    let mut kind = None;
    for (key, value) in entries {
        let slot_kind = match key.as_str() {
            "ns" => None,
            "pod" => Some(true),
            "external_workload" => Some(false),
            _ => continue,
        };
        let Some(value) = value else {
            return Err(invalid(format!("{key:?} must be a string")));
        };
        match slot_kind {
            None if ns.is_some() => return Err(invalid("duplicate \"ns\"".to_string())),
            None => ns = Some(check_name("namespace", &value)?),
            Some(_) if kind.is_some() => {
                return Err(invalid(
                    "expected one of \"pod\" and \"external_workload\"".to_string(),
                ))
            }
            Some(true) => kind = Some(WorkloadKind::Pod(check_name("pod", &value)?)),
            Some(false) => {
                kind = Some(WorkloadKind::External(check_name(
                    "external workload",
                    &value,
                )?))
            }
        }
    }
    let ns = ns.ok_or_else(|| invalid("missing \"ns\"".to_string()))?;
    let kind =
        kind.ok_or_else(|| invalid("missing \"pod\" or \"external_workload\"".to_string()))?;
    Ok((ns, kind))
}

// === Json ===

/// Just enough of a JSON reader for the workload: an object whose string values are kept
/// and whose other values are checked and skipped.
struct Json<'a> {
    s: &'a str,
    at: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_ws();
        if self.peek() != Some(byte) {
            return Err(format!(
                "expected {:?} at byte {}",
                char::from(byte),
                self.at
            ));
        }
        self.at += 1;
        Ok(())
    }

    /// An object: its keys, each with its value if that is a string.
    fn object(&mut self, depth: usize) -> Result<Vec<(String, Option<String>)>, String> {
        if depth > MAX_JSON_DEPTH {
            return Err("nested too deeply".to_string());
        }
        self.expect(b'{')?;
        let mut entries = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(entries);
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.expect(b':')?;
            self.skip_ws();
            let value = if self.peek() == Some(b'"') {
                Some(self.string()?)
            } else {
                self.skip_value(depth + 1)?;
                None
            };
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(entries);
                }
                _ => return Err(format!("expected ',' or '}}' at byte {}", self.at)),
            }
        }
    }

    /// Any value other than a string, checked and skipped.
    fn skip_value(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_JSON_DEPTH {
            return Err("nested too deeply".to_string());
        }
        self.skip_ws();
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.object(depth).map(drop),
            Some(b'[') => {
                self.at += 1;
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return Err(format!("expected ',' or ']' at byte {}", self.at)),
                    }
                }
            }
            _ => {
                let rest = &self.s[self.at..];
                for literal in ["true", "false", "null"] {
                    if rest.starts_with(literal) {
                        self.at += literal.len();
                        return Ok(());
                    }
                }
                self.number()
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), String> {
        let start = self.at;
        let digits = |json: &mut Self| {
            let from = json.at;
            while json.peek().is_some_and(|b| b.is_ascii_digit()) {
                json.at += 1;
            }
            json.at - from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int_at = self.at;
        let int = digits(self);
        if int == 0 || (int > 1 && self.s.as_bytes()[int_at] == b'0') {
            return Err(format!("expected a value at byte {start}"));
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return Err(format!("bad number at byte {start}"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(format!("bad number at byte {start}"));
            }
        }
        Ok(())
    }

    /// A string, unescaped.
    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let rest = &self.s[self.at..];
            let Some(c) = rest.chars().next() else {
                return Err(format!("unterminated string at byte {start}"));
            };
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => out.push(self.escape()?),
                c if u32::from(c) < 0x20 => {
                    return Err(format!("control character in string at byte {start}"))
                }
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        let at = self.at;
        let byte = self.peek().ok_or("unterminated escape")?;
        self.at += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    // A surrogate pair: `\uD83D\uDE00`.
                    if !self.s[self.at..].starts_with("\\u") {
                        return Err(format!("lone surrogate at byte {at}"));
                    }
                    self.at += 2;
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(format!("bad surrogate pair at byte {at}"));
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                char::from_u32(code).ok_or_else(|| format!("lone surrogate at byte {at}"))?
            }
            _ => return Err(format!("bad escape at byte {at}")),
        })
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let hex = self
            .s
            .get(self.at..self.at + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("bad \\u escape at byte {}", self.at))?;
        self.at += 4;
        u32::from_str_radix(hex, 16).map_err(|e| e.to_string())
    }
}
