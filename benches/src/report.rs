//! The results: one Markdown table per test.

use std::fmt::Write;
use std::time::Duration;

use ringlink_benches::hdr::Summary;

use crate::args::Test;
use crate::h2load::RequestTime;
use crate::proxy::ProxyKind;

/// One proxy's results in one test. CPU and RSS are `None` for `direct`, which has no
/// proxy process.
pub enum Measured {
    Http1 {
        requests_per_sec: f64,
        p50: Duration,
        p99: Duration,
        cpu_us_per_request: Option<f64>,
        rss_mib: Option<f64>,
    },
    H2 {
        requests_per_sec: f64,
        request_time: RequestTime,
        cpu_us_per_request: Option<f64>,
        rss_mib: Option<f64>,
    },
    Bulk {
        mib_per_sec: f64,
        cpu_us_per_mib: Option<f64>,
    },
    Grpc {
        calls_per_sec: f64,
        /// Of the OK calls, from each call's start (closed loop).
        latency: Summary,
        /// `CODE: N` pairs; empty if every call was OK.
        errors: String,
        cpu_us_per_call: Option<f64>,
        rss_mib: Option<f64>,
    },
    Latency {
        requests_per_sec: f64,
        /// Of every response, from its request's due time (open loop).
        latency: Summary,
        /// From the due time until the request was written.
        send_lag: Summary,
        /// Failed exchanges and non-2xx responses.
        errors: u64,
        /// Proxy CPU time over the measured run's wall time.
        busy: Option<f64>,
    },
}

pub struct Row {
    pub kind: ProxyKind,
    pub measured: Measured,
}

// === impl Measured ===

impl Measured {
    /// The proxy's CPU cost per unit of work: the number the ratio columns divide.
    fn cost(&self) -> Option<f64> {
        match *self {
            Self::Http1 {
                cpu_us_per_request, ..
            }
            | Self::H2 {
                cpu_us_per_request, ..
            } => cpu_us_per_request,
            Self::Bulk { cpu_us_per_mib, .. } => cpu_us_per_mib,
            Self::Grpc {
                cpu_us_per_call, ..
            } => cpu_us_per_call,
            Self::Latency { .. } => None,
        }
    }

    /// Cells before the cost column, and after the ratio columns.
    fn cells(&self) -> (Vec<String>, Vec<String>) {
        match *self {
            Self::Http1 {
                requests_per_sec,
                p50,
                p99,
                rss_mib,
                ..
            } => (
                vec![format!("{requests_per_sec:.0}"), latency(p50), latency(p99)],
                vec![opt(rss_mib, 1)],
            ),
            Self::H2 {
                requests_per_sec,
                request_time,
                rss_mib,
                ..
            } => (
                vec![
                    format!("{requests_per_sec:.0}"),
                    latency(request_time.mean),
                    latency(request_time.sd),
                    latency(request_time.max),
                ],
                vec![opt(rss_mib, 1)],
            ),
            Self::Bulk { mib_per_sec, .. } => (vec![format!("{mib_per_sec:.0}")], vec![]),
            Self::Grpc { .. } | Self::Latency { .. } => {
                unreachable!("grpc and latency tables are rendered by their own functions")
            }
        }
    }
}

/// Column headers of `test`: (before the cost, the cost, the ratios' unit, after).
fn columns(
    test: Test,
) -> (
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match test {
        // The mesh, policy, outbound-policy and tap tests render their own tables
        // (`mesh.rs`, `policy.rs`, `outbound_policy.rs`, `tap.rs`); their load is HTTP/1.
        Test::Http1 | Test::Mesh | Test::Policy | Test::OutboundPolicy | Test::Tap | Test::Idle => {
            (
                &["rps", "p50", "p99"],
                "CPU µs/req",
                "CPU/req",
                &["RSS MiB"],
            )
        }
        Test::H2 => (
            &["rps", "req mean", "req sd", "req max"],
            "CPU µs/req",
            "CPU/req",
            &["RSS MiB"],
        ),
        Test::Bulk => (&["MiB/s"], "CPU µs/MiB", "CPU/MiB", &[]),
        Test::Grpc | Test::Latency => {
            unreachable!("grpc and latency tables are rendered by their own functions")
        }
    }
}

/// Renders the rows of one test as a Markdown table, with the CPU cost relative to
/// `ref-tokio` (always, `-` if it was not measured) and to `nginx` (a column only if nginx
/// has a row).
pub fn table(test: Test, rows: &[Row]) -> String {
    match test {
        Test::Grpc => return grpc_table(rows),
        Test::Latency => return latency_table(rows),
        _ => {}
    }
    let cost_of = |kind| {
        rows.iter()
            .find(|row| row.kind == kind)
            .and_then(|row| row.measured.cost())
    };
    let ref_tokio = cost_of(ProxyKind::RefTokio);
    let nginx = rows
        .iter()
        .any(|row| row.kind == ProxyKind::Nginx)
        .then(|| cost_of(ProxyKind::Nginx));
    let (before, cost, unit, after) = columns(test);

    let mut header = vec!["proxy".to_string()];
    header.extend(before.iter().map(|c| c.to_string()));
    header.push(cost.to_string());
    header.push(format!("ratio vs ref-tokio {unit}"));
    if nginx.is_some() {
        header.push(format!("ratio vs nginx {unit}"));
    }
    header.extend(after.iter().map(|c| c.to_string()));
    let mut lines = Vec::new();
    for row in rows {
        let (first, last) = row.measured.cells();
        let cost = row.measured.cost();
        let decimals = if test == Test::Bulk { 0 } else { 1 };
        let mut cells = vec![row.kind.name().to_string()];
        cells.extend(first);
        cells.push(opt(cost, decimals));
        cells.push(ratio(cost, ref_tokio));
        if let Some(nginx) = nginx {
            cells.push(ratio(cost, nginx));
        }
        cells.extend(last);
        lines.push(cells);
    }
    markdown(&header, &lines)
}

/// The grpc test: calls/s, latency percentiles, errors, and the proxy's CPU time per OK call
/// with its ratios to haproxy's and nginx's (`-` where either was not measured).
fn grpc_table(rows: &[Row]) -> String {
    let cost_of = |kind| {
        rows.iter()
            .find(|row| row.kind == kind)
            .and_then(|row| row.measured.cost())
    };
    let (haproxy, nginx) = (cost_of(ProxyKind::Haproxy), cost_of(ProxyKind::Nginx));
    let header: Vec<String> = [
        "proxy",
        "calls/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "errors",
        "CPU µs/call",
        "ratio vs haproxy CPU/call",
        "ratio vs nginx CPU/call",
        "RSS MiB",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    let mut lines = Vec::new();
    for row in rows {
        let Measured::Grpc {
            calls_per_sec,
            latency: l,
            ref errors,
            cpu_us_per_call: cost,
            rss_mib,
        } = row.measured
        else {
            continue;
        };
        lines.push(vec![
            row.kind.name().to_string(),
            format!("{calls_per_sec:.0}"),
            latency(l.p50),
            latency(l.p99),
            latency(l.p999),
            latency(l.max),
            if errors.is_empty() {
                "0".to_string()
            } else {
                errors.clone()
            },
            opt(cost, 1),
            ratio(cost, haproxy),
            ratio(cost, nginx),
            opt(rss_mib, 1),
        ]);
    }
    markdown(&header, &lines)
}

/// The latency test: percentiles, what each adds to `direct`'s (`-` for direct, or if
/// direct was not measured), the generator's send lag, the proxy's CPU busy share, errors.
fn latency_table(rows: &[Row]) -> String {
    let direct = rows.iter().find_map(|row| match row.measured {
        Measured::Latency { latency, .. } if row.kind == ProxyKind::Direct => Some(latency),
        _ => None,
    });
    let header: Vec<String> = [
        "proxy",
        "req/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "added p50",
        "added p99",
        "added p99.9",
        "added max",
        "send lag p99",
        "proxy CPU busy",
        "errors",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    let mut lines = Vec::new();
    for row in rows {
        let Measured::Latency {
            requests_per_sec,
            latency: l,
            send_lag,
            errors,
            busy,
        } = row.measured
        else {
            continue;
        };
        let added = |pick: fn(&Summary) -> Duration| match direct {
            Some(direct) if row.kind != ProxyKind::Direct => added(pick(&l), pick(&direct)),
            _ => "-".to_string(),
        };
        lines.push(vec![
            row.kind.name().to_string(),
            format!("{requests_per_sec:.0}"),
            latency(l.p50),
            latency(l.p99),
            latency(l.p999),
            latency(l.max),
            added(|s| s.p50),
            added(|s| s.p99),
            added(|s| s.p999),
            added(|s| s.max),
            latency(send_lag.p99),
            busy.map_or_else(|| "-".to_string(), |b| format!("{:.1} %", b * 100.0)),
            errors.to_string(),
        ]);
    }
    markdown(&header, &lines)
}

/// `row - base` as `+45 µs`, `−3 µs` or `+1.20 ms`.
fn added(row: Duration, base: Duration) -> String {
    let (sign, d) = if row >= base {
        ("+", row - base)
    } else {
        ("−", base - row)
    };
    format!("{sign}{}", latency(d))
}

/// A Markdown table: the first column left-aligned (names), the others right-aligned.
pub fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<_> = (0..header.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for cells in rows {
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// `cost / base` as `1.25×`; `-` if either is missing or the base is 0.
pub fn ratio(cost: Option<f64>, base: Option<f64>) -> String {
    match (cost, base) {
        (Some(cost), Some(base)) if base > 0.0 => format!("{:.2}×", cost / base),
        _ => "-".to_string(),
    }
}

/// `300 µs` under a millisecond, `1.50 ms` above.
pub fn latency(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// `value` with `decimals` decimals; `-` if missing.
pub fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http1(kind: ProxyKind, cpu: Option<f64>) -> Row {
        Row {
            kind,
            measured: Measured::Http1 {
                requests_per_sec: 1000.0,
                p50: Duration::from_micros(300),
                p99: Duration::from_micros(1500),
                cpu_us_per_request: cpu,
                rss_mib: cpu.map(|_| 4.0),
            },
        }
    }

    #[test]
    fn nginx_column_only_with_nginx() {
        let rows = [
            http1(ProxyKind::Direct, None),
            http1(ProxyKind::RefTokio, Some(8.0)),
            http1(ProxyKind::RinglinkMonoio, Some(10.0)),
        ];
        let t = table(Test::Http1, &rows);
        assert!(!t.contains("nginx"));
        assert!(t.contains("| ringlink-monoio | 1000 | 300 µs | 1.50 ms | 10.0 | 1.25× | 4.0 |"));

        let mut rows = Vec::from(rows);
        rows.push(http1(ProxyKind::Nginx, Some(20.0)));
        let t = table(Test::Http1, &rows);
        assert!(t.contains("ratio vs nginx CPU/req"));
        assert!(t.contains(
            "| ringlink-monoio | 1000 | 300 µs | 1.50 ms | 10.0 | 1.25× | 0.50× | 4.0 |"
        ));
        assert!(t.contains("| direct | 1000 | 300 µs | 1.50 ms | - | - | - | - |"));
        // Every line has the same number of cells as the header.
        let widths: Vec<_> = t.lines().map(|l| l.matches('|').count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
    }

    fn summary(p50_us: u64, max_us: u64) -> Summary {
        Summary {
            count: 100,
            mean: Duration::from_micros(p50_us),
            p50: Duration::from_micros(p50_us),
            p90: Duration::from_micros(p50_us * 2),
            p99: Duration::from_micros(p50_us * 3),
            p999: Duration::from_micros(p50_us * 4),
            max: Duration::from_micros(max_us),
        }
    }

    #[test]
    fn grpc_ratios_to_haproxy_and_nginx() {
        let grpc = |kind, cpu: Option<f64>, errors: &str| Row {
            kind,
            measured: Measured::Grpc {
                calls_per_sec: 30000.4,
                latency: summary(300, 2500),
                errors: errors.to_string(),
                cpu_us_per_call: cpu,
                rss_mib: cpu.map(|_| 9.0),
            },
        };
        let rows = [
            grpc(ProxyKind::Direct, None, ""),
            grpc(ProxyKind::RinglinkMonoio, Some(10.0), "UNAVAILABLE: 2"),
            grpc(ProxyKind::Nginx, Some(20.0), ""),
            grpc(ProxyKind::Haproxy, Some(8.0), ""),
        ];
        let t = table(Test::Grpc, &rows);
        assert!(t.starts_with(
            "| proxy | calls/s | p50 | p99 | p99.9 | max | errors | CPU µs/call | ratio vs \
             haproxy CPU/call | ratio vs nginx CPU/call | RSS MiB |"
        ));
        assert!(t.contains(
            "| ringlink-monoio | 30000 | 300 µs | 900 µs | 1.20 ms | 2.50 ms | UNAVAILABLE: 2 \
             | 10.0 | 1.25× | 0.50× | 9.0 |"
        ));
        assert!(t.contains(
            "| direct | 30000 | 300 µs | 900 µs | 1.20 ms | 2.50 ms | 0 | - | - | - | - |"
        ));
        let widths: Vec<_> = t.lines().map(|l| l.matches('|').count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
    }

    #[test]
    fn latency_added_over_direct() {
        let row = |kind, p50_us, max_us, busy: Option<f64>| Row {
            kind,
            measured: Measured::Latency {
                requests_per_sec: 5000.2,
                latency: summary(p50_us, max_us),
                send_lag: summary(5, 40),
                errors: 0,
                busy,
            },
        };
        let rows = [
            row(ProxyKind::Direct, 60, 900, None),
            row(ProxyKind::RinglinkMonoio, 100, 700, Some(0.0512)),
        ];
        let t = table(Test::Latency, &rows);
        assert!(t.contains(
            "| direct | 5000 | 60 µs | 180 µs | 240 µs | 900 µs | - | - | - | - | 15 µs | - | 0 |"
        ));
        assert!(t.contains(
            "| ringlink-monoio | 5000 | 100 µs | 300 µs | 400 µs | 700 µs | +40 µs | +120 µs \
             | +160 µs | −200 µs | 15 µs | 5.1 % | 0 |"
        ));
        // Without direct, nothing is added.
        let t = table(Test::Latency, &rows[1..]);
        assert!(t.contains("| 700 µs | - | - | - | - |"), "{t}");
    }

    #[test]
    fn bulk_ratios_per_mib() {
        let rows = [
            Row {
                kind: ProxyKind::Nginx,
                measured: Measured::Bulk {
                    mib_per_sec: 1500.4,
                    cpu_us_per_mib: Some(400.0),
                },
            },
            Row {
                kind: ProxyKind::Haproxy,
                measured: Measured::Bulk {
                    mib_per_sec: 1200.0,
                    cpu_us_per_mib: Some(600.0),
                },
            },
        ];
        let t = table(Test::Bulk, &rows);
        assert!(t.starts_with(
            "| proxy | MiB/s | CPU µs/MiB | ratio vs ref-tokio CPU/MiB | ratio vs nginx CPU/MiB |"
        ));
        assert!(t.contains("| haproxy | 1200 | 600 | - | 1.50× |"));
    }
}
