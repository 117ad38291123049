//! Connection settings read per direction: the connect backoff
//! (`LINKERD2_PROXY_{INBOUND,OUTBOUND}_CONNECT_EXP_BACKOFF_{MIN,MAX,JITTER}`, linkerd2-proxy's
//! `parse_backoff`), the TCP keepalive and `TCP_USER_TIMEOUT` of accepted and opened sockets,
//! and the in-flight request limit.
//!
//! The backoff follows linkerd2-proxy exactly:
//! - none of the three set: the default, 100ms..10s inbound and 100ms..60s outbound, jitter
//!   0.1;
//! - `_MIN` and `_MAX` set: those, with `_JITTER` if set, else a jitter of **0** (not 0.1);
//! - anything else (`_JITTER` alone, or only one of `_MIN`/`_MAX`) is an error naming the
//!   missing variable;
//! - then `ExponentialBackoff::try_new`'s checks: min ≤ max, max > 0, jitter finite and in
//!   `[0, 100]`.

use std::time::Duration;

use super::{parse_digits, parse_duration, read, ConfigError, Env};

// Variable names, `[inbound, outbound]`.
pub(super) const CONNECT_BACKOFF_MIN: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_CONNECT_EXP_BACKOFF_MIN",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_EXP_BACKOFF_MIN",
];
pub(super) const CONNECT_BACKOFF_MAX: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_CONNECT_EXP_BACKOFF_MAX",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_EXP_BACKOFF_MAX",
];
pub(super) const CONNECT_BACKOFF_JITTER: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_CONNECT_EXP_BACKOFF_JITTER",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_EXP_BACKOFF_JITTER",
];
pub(super) const ACCEPT_KEEPALIVE: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_ACCEPT_KEEPALIVE",
    "LINKERD2_PROXY_OUTBOUND_ACCEPT_KEEPALIVE",
];
pub(super) const ACCEPT_USER_TIMEOUT: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_ACCEPT_USER_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_ACCEPT_USER_TIMEOUT",
];
pub(super) const CONNECT_KEEPALIVE: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_CONNECT_KEEPALIVE",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE",
];
pub(super) const CONNECT_USER_TIMEOUT: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_CONNECT_USER_TIMEOUT",
    "LINKERD2_PROXY_OUTBOUND_CONNECT_USER_TIMEOUT",
];
pub(super) const MAX_IN_FLIGHT: [&str; 2] = [
    "LINKERD2_PROXY_INBOUND_MAX_IN_FLIGHT",
    "LINKERD2_PROXY_OUTBOUND_MAX_IN_FLIGHT",
];

// Defaults, as in linkerd2-proxy.
pub(super) const DEFAULT_CONNECT_BACKOFF: [Backoff; 2] = [
    Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(10),
        jitter: 0.1,
    },
    Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(60),
        jitter: 0.1,
    },
];
pub(super) const DEFAULT_MAX_IN_FLIGHT: usize = 100_000;

/// linkerd2-proxy's bound on the jitter ratio.
const MAX_JITTER: f64 = 100.0;

/// A jittered exponential backoff: waits from `min` doubling up to `max`, each plus a random
/// extra of up to `jitter` times the wait.
///
/// From `LINKERD2_PROXY_{INBOUND,OUTBOUND}_CONNECT_EXP_BACKOFF_{MIN,MAX,JITTER}`: none set is
/// the default; `_MIN` and `_MAX` set, with `_JITTER` optional (then 0, as in linkerd2-proxy);
/// anything else names the missing variable. min ≤ max, max > 0, jitter finite in [0, 100].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    /// Finite, in `[0, 100]`.
    pub jitter: f64,
}

impl Backoff {
    /// Reads the backoff of one direction (0 inbound, 1 outbound).
    pub(super) fn from_env(env: &dyn Env, direction: usize) -> Result<Backoff, ConfigError> {
        let (min_var, max_var, jitter_var) = (
            CONNECT_BACKOFF_MIN[direction],
            CONNECT_BACKOFF_MAX[direction],
            CONNECT_BACKOFF_JITTER[direction],
        );
        let min = read(env, min_var, parse_duration)?;
        let max = read(env, max_var, parse_duration)?;
        let jitter = read(env, jitter_var, parse_jitter)?;
        let (min, max) = match (min, max, jitter) {
            (None, None, None) => return Ok(DEFAULT_CONNECT_BACKOFF[direction]),
            (Some(min), Some(max), _) => (min, max),
            (None, _, _) => {
                let set = if max.is_some() { max_var } else { jitter_var };
                return Err(missing(min_var, set));
            }
            (Some(_), None, _) => return Err(missing(max_var, min_var)),
        };
        if min > max {
            return Err(ConfigError {
                var: max_var,
                value: env.var(max_var)?.unwrap_or_default(),
                reason: format!(
                    "must not be less than {min_var}={:?}",
                    env.var(min_var)?.unwrap_or_default()
                ),
            });
        }
        if max.is_zero() {
            return Err(ConfigError {
                var: max_var,
                value: env.var(max_var)?.unwrap_or_default(),
                reason: "must not be zero".to_string(),
            });
        }
        Ok(Backoff {
            min,
            max,
            jitter: jitter.unwrap_or(0.0),
        })
    }
}

fn missing(var: &'static str, set: &'static str) -> ConfigError {
    ConfigError {
        var,
        value: String::new(),
        reason: format!(
            "must be set with {set} (set both the backoff's _MIN and _MAX, or none of the three)"
        ),
    }
}

fn parse_jitter(s: &str) -> Result<f64, String> {
    let jitter: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number like 0.1".to_string())?;
    if !jitter.is_finite() {
        return Err("must be finite".to_string());
    }
    if jitter < 0.0 {
        return Err("must not be negative".to_string());
    }
    if jitter > MAX_JITTER {
        return Err(format!("must not be greater than {MAX_JITTER}"));
    }
    Ok(jitter)
}

/// A request count for `_MAX_IN_FLIGHT` (0 is accepted, as by linkerd2-proxy).
pub(super) fn parse_max_in_flight(s: &str) -> Result<usize, String> {
    parse_digits(s.trim())
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "expected a number of requests".to_string())
}
