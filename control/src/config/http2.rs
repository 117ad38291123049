//! The HTTP/2 server settings other than keepalive (linkerd2-proxy's `env/http2.rs`):
//! `LINKERD2_PROXY_{INBOUND,OUTBOUND}_SERVER_HTTP2_*`. The injector writes one variable per
//! value under `proxy.inbound.server.http2` / `proxy.outbound.server.http2` (by default only
//! the keepalive pair, which `Config::h2_keepalive_*` holds).
//!
//! As in linkerd2-proxy: every setting is unset by default (the HTTP/2 library's default);
//! `_ADAPTIVE_FLOW_CONTROL=true` wins over fixed windows; the two `_INITIAL_*_WINDOW_SIZE`
//! apply only when both are set, otherwise the proxy's defaults (64 KiB - 1 per stream,
//! 1 MiB per connection) do. Values the HTTP/2 library would refuse (a frame size outside
//! `16384..=16777215`, a window above `2^31 - 1`) are errors here, where linkerd2-proxy
//! would panic building the server.

use super::{parse_bool, parse_digits, read, ConfigError, Env};

const DEFAULT_INITIAL_STREAM_WINDOW_SIZE: u32 = 65_535;
const DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE: u32 = 1_048_576;
const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;
const MIN_FRAME_SIZE: u32 = 16_384;
const MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// `[inbound, outbound]` variable names for one setting.
type Vars = [&'static str; 2];

pub(super) const ADAPTIVE_FLOW_CONTROL: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_ADAPTIVE_FLOW_CONTROL",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_ADAPTIVE_FLOW_CONTROL",
];
pub(super) const INITIAL_STREAM_WINDOW_SIZE: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
];
pub(super) const INITIAL_CONNECTION_WINDOW_SIZE: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
];
pub(super) const MAX_CONCURRENT_STREAMS: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
];
pub(super) const MAX_FRAME_SIZE_VARS: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_FRAME_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_FRAME_SIZE",
];
pub(super) const MAX_HEADER_LIST_SIZE: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_HEADER_LIST_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_HEADER_LIST_SIZE",
];
pub(super) const MAX_PENDING_ACCEPT_RESET_STREAMS: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS",
];
pub(super) const MAX_SEND_BUF_SIZE: Vars = [
    "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_SEND_BUF_SIZE",
    "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_MAX_SEND_BUF_SIZE",
];

/// HTTP/2 server settings of one direction's listener; `None` is the library's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2ServerSettings {
    /// `_ADAPTIVE_FLOW_CONTROL` and `_INITIAL_{STREAM,CONNECTION}_WINDOW_SIZE`.
    pub flow_control: H2FlowControl,
    /// `_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: Option<u32>,
    /// `_MAX_FRAME_SIZE`, 16384..=16777215.
    pub max_frame_size: Option<u32>,
    /// `_MAX_HEADER_LIST_SIZE`.
    pub max_header_list_size: Option<u32>,
    /// `_MAX_PENDING_ACCEPT_RESET_STREAMS`.
    pub max_pending_accept_reset_streams: Option<usize>,
    /// `_MAX_SEND_BUF_SIZE`.
    pub max_send_buf_size: Option<usize>,
}

/// HTTP/2 flow control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2FlowControl {
    /// BDP-based window sizing.
    Adaptive,
    /// Fixed windows, each at most `2^31 - 1`.
    Fixed {
        initial_stream_window_size: u32,
        initial_connection_window_size: u32,
    },
}

impl Default for H2ServerSettings {
    fn default() -> Self {
        H2ServerSettings {
            flow_control: H2FlowControl::Fixed {
                initial_stream_window_size: DEFAULT_INITIAL_STREAM_WINDOW_SIZE,
                initial_connection_window_size: DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE,
            },
            max_concurrent_streams: None,
            max_frame_size: None,
            max_header_list_size: None,
            max_pending_accept_reset_streams: None,
            max_send_buf_size: None,
        }
    }
}

impl H2ServerSettings {
    /// Reads the settings of one direction (0 inbound, 1 outbound).
    pub(super) fn from_env(env: &dyn Env, d: usize) -> Result<Self, ConfigError> {
        let adaptive = read(env, ADAPTIVE_FLOW_CONTROL[d], parse_bool)?.unwrap_or(false);
        let window = |s: &str| parse_u32_max(s, MAX_WINDOW_SIZE);
        let stream_window = read(env, INITIAL_STREAM_WINDOW_SIZE[d], window)?;
        let connection_window = read(env, INITIAL_CONNECTION_WINDOW_SIZE[d], window)?;
        let flow_control = match (adaptive, stream_window, connection_window) {
            (true, _, _) => H2FlowControl::Adaptive,
            (false, Some(stream), Some(connection)) => H2FlowControl::Fixed {
                initial_stream_window_size: stream,
                initial_connection_window_size: connection,
            },
            _ => H2ServerSettings::default().flow_control,
        };
        let u32_any = |s: &str| parse_u32_max(s, u32::MAX);
        Ok(H2ServerSettings {
            flow_control,
            max_concurrent_streams: read(env, MAX_CONCURRENT_STREAMS[d], u32_any)?,
            max_frame_size: read(env, MAX_FRAME_SIZE_VARS[d], parse_frame_size)?,
            max_header_list_size: read(env, MAX_HEADER_LIST_SIZE[d], u32_any)?,
            max_pending_accept_reset_streams: read(
                env,
                MAX_PENDING_ACCEPT_RESET_STREAMS[d],
                parse_usize,
            )?,
            max_send_buf_size: read(env, MAX_SEND_BUF_SIZE[d], parse_usize)?,
        })
    }
}

fn parse_u32_max(s: &str, max: u32) -> Result<u32, String> {
    parse_digits(s.trim())
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= max)
        .ok_or_else(|| format!("expected an integer from 0 to {max}"))
}

fn parse_frame_size(s: &str) -> Result<u32, String> {
    parse_digits(s.trim())
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(n))
        .ok_or_else(|| format!("expected an integer from {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE}"))
}

fn parse_usize(s: &str) -> Result<usize, String> {
    parse_digits(s.trim())
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "expected a non-negative integer".to_string())
}
