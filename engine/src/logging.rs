//! `tracing` setup from `LINKERD2_PROXY_LOG` and `LINKERD2_PROXY_LOG_FORMAT`, with a filter
//! the admin server can replace at run time (`/proxy-log-level`).

use std::io::IsTerminal;

use ringlink_admin::LogLevel;
use ringlink_control::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The installed filter, replaceable while the proxy runs.
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

/// Installs the global subscriber, writing to stderr. `Err` names what is wrong with the
/// filter.
pub fn init(filter: &str, format: LogFormat) -> Result<LogHandle, String> {
    let filter = parse(filter)?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    let result = match format {
        LogFormat::Plain => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
        LogFormat::Json => registry.with(fmt.json().with_current_span(true)).try_init(),
    };
    result.map_err(|error| error.to_string())?;
    Ok(LogHandle(handle))
}

fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|error| error.to_string())
}

// === impl LogHandle ===

impl LogLevel for LogHandle {
    fn get(&self) -> String {
        self.0
            .with_current(|filter| filter.to_string())
            .unwrap_or_default()
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let filter = parse(filter)?;
        self.0.reload(filter).map_err(|error| error.to_string())
    }
}
