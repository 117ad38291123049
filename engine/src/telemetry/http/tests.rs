use std::collections::BTreeMap;

use super::*;

// === helpers ===

fn target() -> SocketAddr {
    "10.1.2.3:8080".parse().unwrap()
}

fn metrics(recording: bool) -> (Registry, HttpMetrics) {
    let labels = HashMap::from([("shard".to_string(), "0".to_string())]);
    let registry = Registry::new_custom(None, Some(labels)).unwrap();
    let families = HttpFamilies::register(&registry).unwrap();
    (registry, HttpMetrics::new(families, recording))
}

fn page(registry: &Registry) -> String {
    let mut out = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

/// The sample lines of a page: (name, labels, value). Label values here hold no `,` or `"`.
fn samples(page: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = head.split_once('{').unwrap_or((head, "}"));
            let labels = labels
                .strip_suffix('}')
                .unwrap()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().unwrap())
        })
        .collect()
}

/// The value of the series `name` whose labels are exactly the outbound route's, `shard`
/// and `extra`.
fn value(page: &str, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut want: BTreeMap<String, String> = [
        ("direction", "outbound"),
        ("authority", "svc:80"),
        ("target_addr", "10.1.2.3:8080"),
        ("target_ip", "10.1.2.3"),
        ("target_port", "8080"),
        ("tls", "disabled"),
        ("shard", "0"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    want.retain(|_, v| !v.is_empty());
    samples(page)
        .into_iter()
        .find(|(n, labels, _)| n == name && *labels == want)
        .map(|(_, _, v)| v)
}

/// One outbound request to `target()` ending as `finish` says.
fn request(http: &HttpMetrics, cache: &mut RouteCache, finish: impl FnOnce(&mut RequestMetrics)) {
    let mut m = http.start(
        cache,
        Direction::Outbound,
        Some("svc:80"),
        Some(target()),
        None,
    );
    finish(&mut m);
}

// === tests ===

#[test]
fn classification() {
    let (registry, http) = metrics(true);
    let mut cache = RouteCache::default();
    request(&http, &mut cache, |m| m.response_head(200, false));
    request(&http, &mut cache, |m| m.response_head(404, false));
    request(&http, &mut cache, |m| m.response_head(503, false));
    request(&http, &mut cache, |m| {
        m.response_head(200, true);
        m.grpc_status(0);
    });
    request(&http, &mut cache, |m| {
        m.response_head(200, true);
        m.grpc_status(14);
    });
    request(&http, &mut cache, |m| m.response_head(200, true));
    request(&http, &mut cache, |m| {
        m.response_head(200, false);
        m.error("upstream");
    });
    request(&http, &mut cache, |m| m.fail(502, "connect"));
    request(&http, &mut cache, |_| {});
    let page = page(&registry);
    let cases: [&[(&str, &str)]; 9] = [
        &[("status_code", "200"), ("classification", "success")],
        &[("status_code", "404"), ("classification", "success")],
        &[("status_code", "503"), ("classification", "failure")],
        &[
            ("status_code", "200"),
            ("classification", "success"),
            ("grpc_status", "0"),
        ],
        &[
            ("status_code", "200"),
            ("classification", "failure"),
            ("grpc_status", "14"),
        ],
        // gRPC without a grpc-status.
        &[("status_code", "200"), ("classification", "failure")],
        &[
            ("status_code", "200"),
            ("classification", "failure"),
            ("error", "upstream"),
        ],
        &[
            ("status_code", "502"),
            ("classification", "failure"),
            ("error", "connect"),
        ],
        &[("classification", "failure"), ("error", "cancelled")],
    ];
    for labels in cases {
        assert_eq!(
            value(&page, "response_total", labels),
            Some(1.0),
            "{labels:?}\n{page}"
        );
    }
    assert_eq!(
        samples(&page)
            .iter()
            .filter(|s| s.0 == "response_total")
            .count(),
        9
    );
    assert_eq!(value(&page, "request_total", &[]), Some(9.0), "{page}");
    // Every response with a status has a latency; the cancelled one has none.
    let count = |status| {
        value(
            &page,
            "response_latency_ms_count",
            &[("status_code", status)],
        )
    };
    assert_eq!(count("200"), Some(5.0), "{page}");
    assert_eq!(count("404"), Some(1.0), "{page}");
    assert_eq!(count("502"), Some(1.0), "{page}");
    assert!(
        !page.contains("=\"\""),
        "empty labels are left out:\n{page}"
    );
}

#[test]
fn latency_is_taken_at_the_response_head() {
    let (registry, http) = metrics(true);
    let mut cache = RouteCache::default();
    let mut m = http.start(
        &mut cache,
        Direction::Outbound,
        Some("svc:80"),
        Some(target()),
        None,
    );
    m.response_head(200, false);
    std::thread::sleep(Duration::from_millis(30));
    m.end();
    let page = page(&registry);
    let bucket = |le| {
        value(
            &page,
            "response_latency_ms_bucket",
            &[("status_code", "200"), ("le", le)],
        )
    };
    assert_eq!(bucket("5"), Some(1.0), "{page}");
    assert_eq!(bucket("+Inf"), Some(1.0), "{page}");
    // Linkerd's 25 bounds, plus +Inf.
    assert_eq!(page.matches("response_latency_ms_bucket{").count(), 26);
}

#[test]
fn one_route_per_label_set() {
    let (registry, http) = metrics(true);
    let mut cache = RouteCache::default();
    let other: SocketAddr = "10.9.9.9:80".parse().unwrap();
    for (direction, authority, target) in [
        (Direction::Outbound, Some("svc:80"), Some(target())),
        (Direction::Outbound, Some("svc:80"), Some(target())),
        (Direction::Outbound, Some("b:80"), Some(target())),
        (Direction::Outbound, Some("svc:80"), Some(target())),
        (Direction::Outbound, Some("svc:80"), Some(other)),
        (Direction::Outbound, None, None),
        // Inbound has no authority label: one route for both.
        (Direction::Inbound, Some("svc:80"), Some(target())),
        (Direction::Inbound, Some("b:80"), Some(target())),
    ] {
        let mut m = http.start(&mut cache, direction, authority, target, None);
        m.response_head(200, false);
    }
    assert_eq!(http.routes.borrow().len(), 5);
    let page = page(&registry);
    let requests: Vec<_> = samples(&page)
        .into_iter()
        .filter(|s| s.0 == "request_total")
        .collect();
    assert_eq!(requests.len(), 5, "{page}");
    assert_eq!(value(&page, "request_total", &[]), Some(3.0), "{page}");
    let unrouted = [
        ("authority", ""),
        ("target_addr", ""),
        ("target_ip", ""),
        ("target_port", ""),
    ];
    assert_eq!(
        value(&page, "request_total", &unrouted),
        Some(1.0),
        "{page}"
    );
    let inbound = [("direction", "inbound"), ("authority", "")];
    assert_eq!(value(&page, "request_total", &inbound), Some(2.0), "{page}");
}

#[test]
fn idle_routes_are_evicted_and_come_back() {
    let (registry, http) = metrics(true);
    let mut cache = RouteCache::default();
    request(&http, &mut cache, |m| m.response_head(200, false));
    let mut busy = RouteCache::default();
    let mut in_flight = http.start(&mut busy, Direction::Outbound, Some("busy:80"), None, None);
    assert_eq!(http.evict(Duration::ZERO), 1);
    let text = page(&registry);
    assert!(!text.contains("svc:80"), "{text}");
    assert!(text.contains("busy:80"), "{text}");
    // The connection's cached route was evicted: its next request makes a new one.
    request(&http, &mut cache, |m| m.response_head(200, false));
    let text = page(&registry);
    assert_eq!(value(&text, "request_total", &[]), Some(1.0), "{text}");
    in_flight.fail(504, "connect_timeout");
    in_flight.end();
    assert_eq!(http.evict(Duration::from_secs(60)), 0);
    assert_eq!(http.evict(Duration::ZERO), 2);
    assert_eq!(page(&registry), "");
}

#[test]
fn recording_off_records_nothing() {
    let (registry, http) = metrics(false);
    let mut cache = RouteCache::default();
    request(&http, &mut cache, |m| m.response_head(200, false));
    request(&http, &mut cache, |m| m.fail(502, "connect"));
    assert!(http.routes.borrow().is_empty());
    assert_eq!(page(&registry), "");
}

#[test]
fn discovery_labels_become_dst_labels() {
    let (registry, http) = metrics(true);
    let mut cache = RouteCache::default();
    let labels = std::sync::Arc::new(BTreeMap::from([
        ("namespace".to_string(), "ns".to_string()),
        ("pod".to_string(), "web-1".to_string()),
        ("bad-name".to_string(), "dropped".to_string()),
    ]));
    for _ in 0..2 {
        let mut m = http.start(
            &mut cache,
            Direction::Outbound,
            Some("web.ns.svc.cluster.local:80"),
            Some(target()),
            Some(&labels),
        );
        m.response_head(200, false);
        m.end();
    }
    let page = page(&registry);
    let line = page
        .lines()
        .find(|l| l.starts_with("request_total{"))
        .expect("request_total series");
    assert!(line.contains("dst_namespace=\"ns\""), "{line}");
    assert!(line.contains("dst_pod=\"web-1\""), "{line}");
    assert!(line.ends_with(" 2"), "{line}");
    assert!(!page.contains("dst_labels"), "{page}");
    assert!(!page.contains("dropped"), "{page}");
}
