//! The results table.

use std::fmt::Write;
use std::time::Duration;

use crate::proxy::ProxyKind;

/// One proxy's results; the CPU and RSS fields are `None` for `direct`.
pub struct Row {
    pub kind: ProxyKind,
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub cpu_us_per_request: Option<f64>,
    pub rss_mib: Option<f64>,
    pub bulk_mib_per_sec: f64,
    pub cpu_us_per_mib: Option<f64>,
}

/// Renders `rows` as a Markdown table, with CPU per request relative to `ref-tokio`.
pub fn table(rows: &[Row]) -> String {
    let baseline = rows
        .iter()
        .find(|row| row.kind == ProxyKind::RefTokio)
        .and_then(|row| row.cpu_us_per_request);
    let mut out = String::from(
        "| proxy | rps | p50 | p99 | CPU µs/req | ratio vs ref-tokio CPU/req | RSS MiB \
         | bulk MiB/s | CPU µs/MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let ratio = row
            .cpu_us_per_request
            .zip(baseline)
            .map(|(cpu, base)| cpu / base);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {} |",
            row.kind.name(),
            row.requests_per_sec,
            latency(row.p50),
            latency(row.p99),
            opt(row.cpu_us_per_request, 1),
            ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}×")),
            opt(row.rss_mib, 1),
            row.bulk_mib_per_sec,
            opt(row.cpu_us_per_mib, 0),
        );
    }
    out
}

fn latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}
