//! The results: one Markdown table per test.

use std::fmt::Write;
use std::time::Duration;

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
        // The mesh, policy and tap tests render their own tables (`mesh.rs`, `policy.rs`,
        // `tap.rs`); their load is HTTP/1.
        Test::Http1 | Test::Mesh | Test::Policy | Test::Tap => (
            &["rps", "p50", "p99"],
            "CPU µs/req",
            "CPU/req",
            &["RSS MiB"],
        ),
        Test::H2 => (
            &["rps", "req mean", "req sd", "req max"],
            "CPU µs/req",
            "CPU/req",
            &["RSS MiB"],
        ),
        Test::Bulk => (&["MiB/s"], "CPU µs/MiB", "CPU/MiB", &[]),
    }
}

/// Renders the rows of one test as a Markdown table, with the CPU cost relative to
/// `ref-tokio` (always, `-` if it was not measured) and to `nginx` (a column only if nginx
/// has a row).
pub fn table(test: Test, rows: &[Row]) -> String {
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
