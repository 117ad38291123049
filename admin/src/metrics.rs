//! `/metrics`: every shard's registry merged into one Prometheus text page (one `# HELP` and
//! `# TYPE` per family; each series already carries its shard's `shard` label), followed by
//! the process's own `process_*` series and `proxy_build_info`.

use std::collections::btree_map::{BTreeMap, Entry};

use prometheus::{Encoder, Registry, TextEncoder};

/// `/proc` reports CPU times in USER_HZ, which the kernel fixes at 100 for user space.
const USER_HZ: f64 = 100.0;

// === types ===

/// Renders the metrics page; cheap to clone the registries into (they are shared handles).
pub struct Exposition {
    registries: Vec<Registry>,
    version: &'static str,
    /// Families kept outside the registries (the control thread's), each rendered as text.
    sections: Vec<Section>,
}

/// A piece of the page rendered by its owner, in Prometheus text format.
pub type Section = Box<dyn Fn() -> String + Send + Sync>;

// === impl Exposition ===

impl Exposition {
    pub fn new(registries: Vec<Registry>, version: &'static str) -> Self {
        Exposition {
            registries,
            version,
            sections: Vec::new(),
        }
    }

    /// Adds `section` to every page, after the registries' families.
    pub fn with_section(mut self, section: Section) -> Self {
        self.sections.push(section);
        self
    }

    /// The page, in Prometheus text format 0.0.4.
    pub fn render(&self) -> Vec<u8> {
        let mut families: BTreeMap<String, prometheus::proto::MetricFamily> = BTreeMap::new();
        for registry in &self.registries {
            for mut family in registry.gather() {
                match families.entry(family.name().to_string()) {
                    Entry::Vacant(slot) => {
                        slot.insert(family);
                    }
                    Entry::Occupied(mut slot) => {
                        let metrics = family.take_metric();
                        slot.get_mut().mut_metric().extend(metrics);
                    }
                }
            }
        }
        let families: Vec<_> = families.into_values().collect();
        let mut out = Vec::with_capacity(16 << 10);
        // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug here.
        if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(%error, "Metrics encoding failed");
        }
        for section in &self.sections {
            out.extend_from_slice(section().as_bytes());
        }
        out.extend_from_slice(process_metrics(self.version).as_bytes());
        out
    }
}

fn process_metrics(version: &str) -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is parenthesised and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> f64 {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let cpu = (field(14) + field(15)) / USER_HZ;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0);
    let start = boot_time + field(22) / USER_HZ;
    let rss_kib: f64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    format!(
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total {cpu}\n\
         # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
         # TYPE process_resident_memory_bytes gauge\n\
         process_resident_memory_bytes {rss}\n\
         # HELP process_open_fds Number of open file descriptors.\n\
         # TYPE process_open_fds gauge\n\
         process_open_fds {fds}\n\
         # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
         # TYPE process_start_time_seconds gauge\n\
         process_start_time_seconds {start}\n\
         # HELP proxy_build_info Proxy build info.\n\
         # TYPE proxy_build_info gauge\n\
         proxy_build_info{{version=\"{version}\",vendor=\"ringlink\"}} 1\n",
        rss = rss_kib * 1024.0,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prometheus::{IntCounterVec, Opts};

    use super::*;

    fn shard_registry(shard: &str, count: u64) -> Registry {
        let labels = HashMap::from([("shard".to_string(), shard.to_string())]);
        let registry = Registry::new_custom(None, Some(labels)).unwrap();
        let family =
            IntCounterVec::new(Opts::new("tcp_open_total", "Opened."), &["direction"]).unwrap();
        registry.register(Box::new(family.clone())).unwrap();
        family.with_label_values(&["inbound"]).inc_by(count);
        registry
    }

    #[test]
    fn shards_merge_into_one_family() {
        let page = Exposition::new(
            vec![shard_registry("0", 3), shard_registry("1", 4)],
            "9.9.9",
        )
        .render();
        let page = String::from_utf8(page).unwrap();
        assert_eq!(
            page.matches("# TYPE tcp_open_total counter").count(),
            1,
            "{page}"
        );
        assert!(
            page.contains("tcp_open_total{direction=\"inbound\",shard=\"0\"} 3"),
            "{page}"
        );
        assert!(
            page.contains("tcp_open_total{direction=\"inbound\",shard=\"1\"} 4"),
            "{page}"
        );
        assert!(page.contains("proxy_build_info{version=\"9.9.9\",vendor=\"ringlink\"} 1"));
        let rss: f64 = page
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1e6, "{rss}");
    }
}
