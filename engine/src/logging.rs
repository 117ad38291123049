//! `tracing` setup from `LINKERD2_PROXY_LOG` and `LINKERD2_PROXY_LOG_FORMAT`.

use std::io::IsTerminal;

use ringlink_control::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr. `Err` names what is wrong with the
/// filter.
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|error| error.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    let result = match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    result.map_err(|error| error.to_string())
}
