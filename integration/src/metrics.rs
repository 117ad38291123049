//! Reading a Prometheus text page back, for assertions.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a text-format page (comments skipped). Panics on a line it
/// cannot read, since the page is the proxy's output under test.
pub fn parse(page: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in page
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in split_labels(body) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?}"));
                    labels.insert(k.to_string(), v.trim_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        out.push(Series {
            name,
            labels,
            value,
        });
    }
    out
}

/// Splits `a="x",b="y,z"` on the commas between pairs.
fn split_labels(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        parts.push(&body[start..]);
    }
    parts
}

/// The sum of `name` over every series whose labels include all of `matching`.
pub fn sum(series: &[Series], name: &str, matching: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            matching
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The value of the one series `name` whose labels are exactly `labels` (in any order);
/// `None` if there is none. Panics if there are several, which a valid page never has.
pub fn exact(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = series.iter().filter(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    });
    let first = found.next()?;
    assert!(found.next().is_none(), "{name} {labels:?} appears twice");
    Some(first.value)
}

/// Checks every histogram of family `name` on the page: for each label set, buckets are
/// cumulative (monotone in `le`), the `+Inf` bucket equals `_count`, and `_sum` is there.
/// Returns the label sets checked with their `_count`.
pub fn check_histograms(series: &[Series], name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let counts: Vec<&Series> = series
        .iter()
        .filter(|s| s.name == format!("{name}_count"))
        .collect();
    let mut checked = Vec::new();
    for count in counts {
        let mut buckets: Vec<(f64, f64)> = series
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .filter_map(|s| {
                let mut labels = s.labels.clone();
                let le = labels.remove("le")?;
                (labels == count.labels).then(|| {
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    };
                    (le, s.value)
                })
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            !buckets.is_empty(),
            "{name}: no buckets for {:?}",
            count.labels
        );
        for pair in buckets.windows(2) {
            assert!(
                pair[0].1 <= pair[1].1,
                "{name} {:?}: bucket le={} holds {} > le={} holds {}",
                count.labels,
                pair[0].0,
                pair[0].1,
                pair[1].0,
                pair[1].1
            );
        }
        let inf = buckets.last().unwrap();
        assert_eq!(
            inf.0,
            f64::INFINITY,
            "{name} {:?}: no +Inf bucket",
            count.labels
        );
        assert_eq!(
            inf.1, count.value,
            "{name} {:?}: +Inf != _count",
            count.labels
        );
        assert!(
            series
                .iter()
                .any(|s| s.name == format!("{name}_sum") && s.labels == count.labels),
            "{name} {:?}: no _sum",
            count.labels
        );
        checked.push((count.labels.clone(), count.value));
    }
    checked
}
