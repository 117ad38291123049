//! The soak's output: a Markdown table of the samples per runtime with its summary line,
//! the churn's counts per kind, and the CSV of every sample.

use std::fmt::Write as _;

use super::{Open, Outcome, Phase, Sample, Verdict, FD_TOLERANCE, RSS_GROWTH_KIB};
use crate::report::markdown;

/// How many seconds apart the table's rows are: at most about 30 rows for the load.
fn row_every(load_secs: i64) -> i64 {
    match load_secs {
        ..=60 => 5,
        61..=300 => 10,
        301..=1800 => 60,
        _ => 300,
    }
}

/// The samples table (every few seconds, the end of the warm-up, the end of the load and
/// the settling), the summary line, the per-kind table, the errors and notes.
pub fn render(name: &str, outcome: &Outcome, verdict: &Verdict) -> String {
    let every = row_every(outcome.load_secs);
    let last_t = outcome.samples.last().map_or(0, |s| s.t);
    let shown: Vec<&Sample> = (outcome.samples.iter())
        .filter(|s| match s.phase {
            Phase::Baseline => s.t == -1,
            Phase::WarmUp | Phase::Soak => {
                s.t % every == 0 || s.t == outcome.warm_up_secs || s.t == outcome.load_secs
            }
            Phase::Settle => (s.t - outcome.load_secs) % 5 == 0 || s.t == last_t,
        })
        .collect();
    let header: Vec<String> = [
        "t s", "phase", "RSS KiB", "fds", "open src", "open dst", "requests", "req/s", "aborted",
        "errors",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    let mut previous: Option<&Sample> = None;
    for s in shown {
        let rate = match previous {
            Some(p) if s.t > p.t && p.phase != Phase::Baseline => {
                format!(
                    "{:.0}",
                    (s.requests - p.requests) as f64 / (s.t - p.t) as f64
                )
            }
            _ => "-".to_string(),
        };
        let phase = if s.t == outcome.warm_up_secs {
            "warm-up end".to_string()
        } else if s.t == outcome.load_secs {
            "load end".to_string()
        } else {
            s.phase.name().to_string()
        };
        rows.push(vec![
            s.t.to_string(),
            phase,
            s.rss_kib.to_string(),
            s.fds.to_string(),
            s.open.map_or("-".to_string(), |o| o.src.to_string()),
            s.open.map_or("-".to_string(), |o| o.dst.to_string()),
            s.requests.to_string(),
            rate,
            s.aborted.to_string(),
            s.errors.to_string(),
        ]);
        previous = Some(s);
    }
    let mut out = markdown(&header, &rows);
    let end_of_load = (outcome.samples.iter()).find(|s| s.t == outcome.load_secs);
    let (requests, aborted, errors) =
        end_of_load.map_or((0, 0, 0), |s| (s.requests, s.aborted, s.errors));
    let _ = write!(
        out,
        "\n**{name}: {}**: RSS {} KiB before the load, {} KiB at the end of the warm-up \
         (t={} s), max {} KiB after it (growth {:+} KiB, limit +{RSS_GROWTH_KIB}), {} KiB at \
         the end; fds {} before the load, {} at the end (±{FD_TOLERANCE}); open connections \
         at the end {} ({} s after the load); {requests} requests ({:.0}/s), {aborted} aborted \
         by the client, {errors} unexpected errors during the load\n",
        if verdict.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        },
        verdict.rss_start_kib,
        verdict.rss_warm_kib,
        outcome.warm_up_secs,
        verdict.rss_max_kib,
        verdict.growth_kib,
        verdict.rss_end_kib,
        verdict.fds_baseline,
        verdict.fds_end,
        verdict.open_end.map_or("unknown".to_string(), |o| format!(
            "{} (src {}, dst {})",
            o.src + o.dst,
            o.src,
            o.dst
        )),
        verdict.settled_secs,
        requests as f64 / outcome.load_secs.max(1) as f64,
    );
    for failure in &verdict.failures {
        let _ = writeln!(out, "\n- FAIL: {failure}");
    }
    let kind_rows: Vec<Vec<String>> = (outcome.kinds.iter())
        .map(|(kind, c)| {
            vec![
                kind.name().to_string(),
                c.done.to_string(),
                c.aborted.to_string(),
                c.errors.to_string(),
            ]
        })
        .collect();
    let kind_header = ["kind", "done", "aborted by the client", "unexpected errors"]
        .map(String::from)
        .to_vec();
    out.push('\n');
    out.push_str(&markdown(&kind_header, &kind_rows));
    for (kind, counts) in &outcome.kinds {
        for (message, n) in &counts.by_message {
            let _ = writeln!(out, "\n- {} error ×{n}: {message}", kind.name());
        }
    }
    for note in &outcome.notes {
        let _ = writeln!(out, "\n- {note}");
    }
    out
}

pub fn open_cell(open: Option<Open>) -> String {
    open.map_or("-".to_string(), |o| format!("{}+{}", o.src, o.dst))
}

pub fn csv_header() -> String {
    "proxy,t_s,phase,rss_kib,fds,open_src,open_dst,requests,aborted,errors\n".to_string()
}

pub fn csv_rows(name: &str, samples: &[Sample]) -> String {
    let mut out = String::new();
    for s in samples {
        let (src, dst) = s.open.map_or((String::new(), String::new()), |o| {
            (o.src.to_string(), o.dst.to_string())
        });
        let _ = writeln!(
            out,
            "{name},{},{},{},{},{src},{dst},{},{},{}",
            s.t,
            s.phase.name(),
            s.rss_kib,
            s.fds,
            s.requests,
            s.aborted,
            s.errors
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::super::{verdict, Kind};
    use super::*;
    use crate::soak::load::KindCounts;

    #[test]
    fn report_and_csv() {
        let samples = run(10000, 18, 0);
        let outcome = Outcome {
            samples: samples.clone(),
            warm_up_secs: 2,
            load_secs: 10,
            kinds: vec![(
                Kind::H2,
                KindCounts {
                    done: 10,
                    aborted: 2,
                    errors: 1,
                    by_message: [("outbound: status 502".to_string(), 1)].into(),
                },
            )],
            notes: vec!["a note".to_string()],
        };
        let text = render("ringlink-monoio", &outcome, &verdict(&samples, 2, 10));
        assert!(
            text.contains("| -1 | before | 9000 | 18 | 0 | 0 | 0 | - | 0 | 0 |"),
            "{text}"
        );
        assert!(text.contains("| 2 | warm-up end | 10000 |"), "{text}");
        assert!(text.contains("| 10 | load end |"), "{text}");
        assert!(text.contains("| 13 | after | 9900 | 18 |"), "{text}");
        assert!(text.contains("**ringlink-monoio: PASS**"), "{text}");
        assert!(text.contains("| h2 | 10 | 2 | 1 |"), "{text}");
        assert!(
            text.contains("- h2 error ×1: outbound: status 502"),
            "{text}"
        );
        let csv = csv_header() + &csv_rows("ringlink-monoio", &samples);
        assert_eq!(csv.lines().count(), samples.len() + 1);
        assert!(
            csv.contains("\nringlink-monoio,-1,before,9000,18,0,0,0,0,0\n"),
            "{csv}"
        );
    }
}
