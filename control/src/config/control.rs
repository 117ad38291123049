//! Limits on control-plane response streams (linkerd2-proxy's `env/control.rs`).
//!
//! `LINKERD2_PROXY_CONTROL_STREAM_{INITIAL_TIMEOUT,IDLE_TIMEOUT,LIFETIME}` bound the
//! Destination and policy streams: how long to wait for the first update, for the next one,
//! and how long a stream may live before it is re-opened. As in linkerd2-proxy:
//! - each is unset by default (no limit); the injector writes `3s`, `5m` and `1h`;
//! - an empty value means unset (the injector writes `""` when the value is not configured);
//! - they must be ordered, initial ≤ idle ≤ lifetime, where an unset lower bound counts as 0
//!   and an unset upper bound as infinite;
//! - linkerd2-proxy does not apply them to a control plane on loopback (a proxy inside the
//!   control plane); that is for the client to honour, the values are kept as read.

use std::time::Duration;

use super::{parse_duration, read, ConfigError, Env};

pub(super) const CONTROL_STREAM_INITIAL_TIMEOUT: &str =
    "LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT";
pub(super) const CONTROL_STREAM_IDLE_TIMEOUT: &str = "LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT";
pub(super) const CONTROL_STREAM_LIFETIME: &str = "LINKERD2_PROXY_CONTROL_STREAM_LIFETIME";

/// Limits on each control-plane response stream; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlStreamLimits {
    /// `LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT`: the first update must arrive within
    /// this long.
    pub initial_timeout: Option<Duration>,
    /// `LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT`: and each later one within this long of
    /// the previous.
    pub idle_timeout: Option<Duration>,
    /// `LINKERD2_PROXY_CONTROL_STREAM_LIFETIME`: the stream is re-opened after this long.
    pub lifetime: Option<Duration>,
}

impl ControlStreamLimits {
    pub(super) fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let opt = |var| Ok::<_, ConfigError>(read(env, var, parse_duration_opt)?.flatten());
        let limits = ControlStreamLimits {
            initial_timeout: opt(CONTROL_STREAM_INITIAL_TIMEOUT)?,
            idle_timeout: opt(CONTROL_STREAM_IDLE_TIMEOUT)?,
            lifetime: opt(CONTROL_STREAM_LIFETIME)?,
        };
        // linkerd2-proxy's three checks, in its order.
        let lower = |d: Option<Duration>| d.unwrap_or(Duration::ZERO);
        let upper = |d: Option<Duration>| d.unwrap_or(Duration::MAX);
        let checks = [
            (
                CONTROL_STREAM_INITIAL_TIMEOUT,
                limits.initial_timeout,
                CONTROL_STREAM_IDLE_TIMEOUT,
                limits.idle_timeout,
            ),
            (
                CONTROL_STREAM_INITIAL_TIMEOUT,
                limits.initial_timeout,
                CONTROL_STREAM_LIFETIME,
                limits.lifetime,
            ),
            (
                CONTROL_STREAM_IDLE_TIMEOUT,
                limits.idle_timeout,
                CONTROL_STREAM_LIFETIME,
                limits.lifetime,
            ),
        ];
        for (var, value, bound_var, bound) in checks {
            if lower(value) > upper(bound) {
                return Err(ConfigError {
                    var,
                    value: env.var(var)?.unwrap_or_default(),
                    reason: format!(
                        "must not be greater than {bound_var}={:?}",
                        env.var(bound_var)?.unwrap_or_default()
                    ),
                });
            }
        }
        Ok(limits)
    }
}

/// A duration, or `None` for the empty string (what the injector writes when unset).
fn parse_duration_opt(s: &str) -> Result<Option<Duration>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}
