//! HTTP route matching and selection: the cases of `linkerd/http/route/src/http/tests.rs`,
//! `http/match/tests.rs` and the tests in `http/match/{host,path,header,query_param}.rs`,
//! plus a precedence table.

use super::*;

fn re(s: &str) -> regex::Regex {
    s.parse().expect("test regex")
}

fn hdr(name: &'static str, value: &'static str) -> MatchHeader {
    MatchHeader::Exact(
        http::HeaderName::from_static(name),
        http::HeaderValue::from_static(value),
    )
}

fn hdr_re(name: &'static str, value: &str) -> MatchHeader {
    MatchHeader::Regex(http::HeaderName::from_static(name), re(value))
}

fn path(p: MatchPath) -> MatchRequest {
    MatchRequest {
        path: Some(p),
        ..MatchRequest::default()
    }
}

fn exact(p: &str) -> MatchPath {
    MatchPath::Exact(p.to_string())
}

fn prefix(p: &str) -> MatchPath {
    MatchPath::Prefix(p.to_string())
}

fn rule(name: &str, matches: Vec<MatchRequest>) -> HttpRule {
    HttpRule {
        matches,
        policy: policy(name),
    }
}

fn route(hosts: &[&str], rules: Vec<HttpRule>) -> HttpRoute {
    HttpRoute {
        hosts: hosts
            .iter()
            .map(|h| h.parse().expect("test host"))
            .collect(),
        rules,
    }
}

fn server(routes: Vec<HttpRoute>) -> ServerPolicy {
    ServerPolicy {
        meta: Meta::new_default("srv"),
        protocol: Protocol::Http2(routes.into()),
        local_rate_limit: Default::default(),
    }
}

/// The name of the rule `req` selects; the path index must select the same.
fn select(routes: &[HttpRoute], req: &TestReq) -> Option<String> {
    let linear = find(routes, &req.view()).map(|(_, p)| p.meta.name().to_string());
    let indexed = PathIndex::new(routes)
        .find(routes, &req.view())
        .map(|(_, p)| p.meta.name().to_string());
    assert_eq!(
        linear,
        indexed,
        "the index selects another route for {}",
        req.view().path_and_query
    );
    linear
}

fn summary(m: &MatchRequest, req: &TestReq) -> Option<RequestMatch> {
    m.match_request(&req.view())
}

// === linkerd/http/route/src/http/tests.rs ===

#[test]
fn hostname_precedence() {
    let rts = vec![
        route(
            &["*.example.com"],
            vec![rule("unexpected", vec![path(exact("/foo"))])],
        ),
        route(
            &["foo.example.com"],
            vec![rule("expected", vec![path(exact("/foo"))])],
        ),
    ];
    let req = TestReq::get("http://foo.example.com/foo");
    assert_eq!(select(&rts, &req).as_deref(), Some("expected"));
}

#[test]
fn path_length_precedence() {
    let rts = vec![
        route(&[], vec![rule("unexpected", vec![path(prefix("/foo"))])]),
        route(&[], vec![rule("expected", vec![path(exact("/foo/bar"))])]),
    ];
    let req = TestReq::get("http://foo.example.com/foo/bar");
    assert_eq!(select(&rts, &req).as_deref(), Some("expected"));
}

#[test]
fn header_count_precedence() {
    let rts = vec![
        route(
            &[],
            vec![rule(
                "unexpected",
                vec![MatchRequest {
                    headers: vec![hdr("x-foo", "bar"), hdr("x-baz", "qux")],
                    ..MatchRequest::default()
                }],
            )],
        ),
        route(
            &[],
            vec![rule(
                "expected",
                vec![MatchRequest {
                    headers: vec![
                        hdr("x-foo", "bar"),
                        hdr("x-baz", "qux"),
                        hdr("x-biz", "qyx"),
                    ],
                    ..MatchRequest::default()
                }],
            )],
        ),
    ];
    let req = TestReq::get("http://www.example.com")
        .header("x-foo", "bar")
        .header("x-baz", "qux")
        .header("x-biz", "qyx");
    assert_eq!(select(&rts, &req).as_deref(), Some("expected"));
}

#[test]
fn first_identical_wins() {
    let rts = vec![
        route(
            &[],
            vec![rule("expected", vec![]), rule("redundant-rule", vec![])],
        ),
        route(&[], vec![rule("redundant-route", vec![])]),
    ];
    assert_eq!(select(&rts, &TestReq::new()).as_deref(), Some("expected"));
}

// === linkerd/http/route/src/http/match/tests.rs ===

#[test]
fn empty_match() {
    let m = MatchRequest::default();
    assert_eq!(summary(&m, &TestReq::new()), Some(RequestMatch::default()));
    assert_eq!(
        summary(&m, &TestReq::new().method(http::Method::HEAD)),
        Some(RequestMatch::default())
    );
}

#[test]
fn method() {
    let m = MatchRequest {
        method: Some(http::Method::GET),
        ..MatchRequest::default()
    };
    assert_eq!(
        summary(&m, &TestReq::get("http://example.com/foo")),
        Some(RequestMatch {
            method: true,
            ..RequestMatch::default()
        })
    );
    assert_eq!(
        summary(
            &m,
            &TestReq::get("https://example.org/").method(http::Method::HEAD)
        ),
        None
    );
}

#[test]
fn headers() {
    let m = MatchRequest {
        headers: vec![hdr("x-foo", "bar"), hdr_re("x-baz", "qu+x")],
        ..MatchRequest::default()
    };
    assert_eq!(summary(&m, &TestReq::get("http://example.com/foo")), None);
    let req = TestReq::get("https://example.org/")
        .header("x-foo", "bar")
        .header("x-baz", "zab");
    assert_eq!(summary(&m, &req), None);
    let req = TestReq::get("https://example.org/")
        .header("x-foo", "bar")
        .header("x-baz", "quuuux");
    assert_eq!(
        summary(&m, &req),
        Some(RequestMatch {
            headers: 2,
            ..RequestMatch::default()
        })
    );
    // Regex must be anchored.
    let req = TestReq::get("https://example.org/")
        .header("x-foo", "bar")
        .header("x-baz", "quxa");
    assert_eq!(summary(&m, &req), None);
}

#[test]
fn path_summary() {
    let m = path(exact("/foo/bar"));
    assert_eq!(summary(&m, &TestReq::get("http://example.com/foo")), None);
    assert_eq!(
        summary(&m, &TestReq::get("https://example.org/foo/bar")),
        Some(RequestMatch {
            path_match: PathMatch::Exact("/foo/bar".len()),
            ..RequestMatch::default()
        })
    );
}

#[test]
fn multiple() {
    let m = MatchRequest {
        path: Some(exact("/foo/bar")),
        headers: vec![hdr("x-foo", "bar")],
        query_params: vec![MatchQueryParam::Exact("foo".into(), "bar".into())],
        method: Some(http::Method::GET),
    };
    let req = TestReq::get("https://example.org/foo/bar?foo=bar").header("x-foo", "bar");
    assert_eq!(
        summary(&m, &req),
        Some(RequestMatch {
            path_match: PathMatch::Exact("/foo/bar".len()),
            headers: 1,
            query_params: 1,
            method: true,
        })
    );
    let req = TestReq::get("https://example.org/foo/bar?foo=bar")
        .method(http::Method::HEAD)
        .header("x-foo", "bar");
    assert_eq!(summary(&m, &req), None);
    // No query at all.
    let req = TestReq::get("https://example.org/foo/bar").header("x-foo", "bar");
    assert_eq!(summary(&m, &req), None);
}

// === linkerd/http/route/src/http/match/host.rs ===

fn host_match(m: &str, host: &str) -> Option<HostMatch> {
    m.parse::<MatchHost>().unwrap().summarize_match(host)
}

#[test]
fn host_exact() {
    let m: MatchHost = "example.com".parse().unwrap();
    assert_eq!(m, MatchHost::Exact("example.com".into()));
    assert_eq!(
        host_match("example.com", "example.com"),
        Some(HostMatch::Exact(11))
    );
    assert_eq!(
        host_match("example.com", "example.com."),
        Some(HostMatch::Exact(11))
    );
    assert_eq!(host_match("example.com", "foo.example.com"), None);
    assert_eq!(host_match("example.com.", "example.com"), None);
    assert_eq!(
        host_match("example.com.", "example.com."),
        Some(HostMatch::Exact(12))
    );
}

#[test]
fn host_suffix() {
    let m: MatchHost = "*.example.com".parse().unwrap();
    assert_eq!(m, MatchHost::Suffix(vec!["com".into(), "example".into()]));
    let sfx = ".example.com".len();
    assert_eq!(host_match("*.example.com", "example.com"), None);
    assert_eq!(
        host_match("*.example.com", "foo.example.com"),
        Some(HostMatch::Suffix(sfx))
    );
    assert_eq!(
        host_match("*.example.com", "foo.example.com."),
        Some(HostMatch::Suffix(sfx))
    );
    assert_eq!(
        host_match("*.example.com", "bar.foo.example.com"),
        Some(HostMatch::Suffix(sfx))
    );
    let m: MatchHost = "*.example.com.".parse().unwrap();
    assert_eq!(
        m,
        MatchHost::Suffix(vec!["".into(), "com".into(), "example".into()])
    );
    assert_eq!(host_match("*.example.com.", "bar.foo.example.com"), None);
    assert_eq!(
        host_match("*.example.com.", "bar.foo.example.com."),
        Some(HostMatch::Suffix(".example.com.".len()))
    );
}

#[test]
fn host_case_insensitive() {
    assert_eq!(
        host_match("Example.COM", "example.com"),
        Some(HostMatch::Exact(11))
    );
    assert_eq!(
        host_match("Example.COM", "EXAMPLE.com"),
        Some(HostMatch::Exact(11))
    );
    assert_eq!(
        host_match("example.com", "ExAmPlE.CoM"),
        Some(HostMatch::Exact(11))
    );
    assert_eq!(
        host_match("example.com", "ExAmPlE.CoM."),
        Some(HostMatch::Exact(11))
    );
    assert_eq!(host_match("example.com", "foo.EXAMPLE.com"), None);
    let sfx = Some(HostMatch::Suffix(".example.com".len()));
    assert_eq!(host_match("*.Example.COM", "foo.example.com"), sfx);
    assert_eq!(host_match("*.example.com", "FOO.ExAmPlE.CoM"), sfx);
    assert_eq!(host_match("*.example.com", "BAR.foo.EXAMPLE.COM."), sfx);
    assert_eq!(host_match("*.example.com", "EXAMPLE.COM"), None);
    // Not on a char boundary: no match, no panic.
    assert_eq!(host_match("*.a", "xé"), None);
    assert_eq!(host_match("*.éa", "x.éa"), Some(HostMatch::Suffix(4)));
}

#[test]
fn host_ordering_and_parsing() {
    assert!(HostMatch::Exact("example.com".len()) > HostMatch::Suffix(".example.com".len()));
    assert!(HostMatch::Exact("foo.example.com".len()) > HostMatch::Exact("example.com".len()));
    assert!(HostMatch::Suffix(".foo.example.com".len()) > HostMatch::Suffix(".example.com".len()));
    assert_eq!(
        HostMatch::Suffix(".foo.example.com".len()),
        HostMatch::Suffix(".bar.example.com".len())
    );
    assert!("10.0.0.1".parse::<MatchHost>().is_err());
    assert!("[::1]".parse::<MatchHost>().is_err());
}

#[test]
fn routes_with_hosts_need_a_matching_host() {
    let rts = vec![route(&["example.com"], vec![rule("r", vec![])])];
    assert_eq!(
        select(&rts, &TestReq::get("http://example.com:8080/x")).as_deref(),
        Some("r")
    );
    assert_eq!(select(&rts, &TestReq::get("http://example.org/x")), None);
    // No authority at all.
    assert_eq!(select(&rts, &TestReq::get("/x")), None);
    // A route without hosts matches anything, but a host match ranks higher.
    let rts = vec![
        route(&[], vec![rule("any-host", vec![path(exact("/x"))])]),
        route(&["*.com"], vec![rule("host", vec![])]),
    ];
    assert_eq!(
        select(&rts, &TestReq::get("http://example.com/x")).as_deref(),
        Some("host")
    );
    assert_eq!(
        select(&rts, &TestReq::get("http://example.org/x")).as_deref(),
        Some("any-host")
    );
    // The best of a route's hosts counts.
    let rts = vec![
        route(&["*.example.com"], vec![rule("suffix", vec![])]),
        route(&["*.com", "foo.example.com"], vec![rule("exact", vec![])]),
    ];
    assert_eq!(
        select(&rts, &TestReq::get("http://foo.example.com/")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        select(&rts, &TestReq::get("http://bar.example.com/")).as_deref(),
        Some("suffix")
    );
}

// === linkerd/http/route/src/http/match/path.rs ===

#[test]
fn path_exact() {
    let m = exact("/foo/bar");
    assert_eq!(m.match_length("/foo/bar"), Some(PathMatch::Exact(8)));
    assert_eq!(m.match_length("/foo"), None);
    assert_eq!(m.match_length("/foo/bah"), None);
    assert_eq!(m.match_length("/foo/bar/qux"), None);
}

#[test]
fn path_prefix() {
    for (pfx, len) in [("/", 1), ("/foo", 4), ("/foo/", 4)] {
        let m = prefix(pfx);
        for p in ["/foo", "/foo/", "/foo/bar", "/foo/bar/qux"] {
            assert_eq!(m.match_length(p), Some(PathMatch::Prefix(len)), "{pfx} {p}");
        }
        let expected = (len == 1).then_some(PathMatch::Prefix(1));
        assert_eq!(m.match_length("/foobar"), expected, "{pfx}");
    }
}

#[test]
fn path_regex() {
    let m = MatchPath::Regex(re(r"/foo/\d+"));
    assert_eq!(m.match_length("/foo/4"), Some(PathMatch::Regex(6)));
    assert_eq!(m.match_length("/foo/4321"), Some(PathMatch::Regex(9)));
    assert_eq!(m.match_length("/bar/foo/4"), None);
    assert_eq!(m.match_length("/foo/4abc"), None);
    assert_eq!(m.match_length("/foo/4/bar"), None);
    assert_eq!(m.match_length("/foo/bar"), None);
    // Leftmost-first, then checked for the whole path: an alternation whose first branch
    // matches a prefix does not match.
    let m = MatchPath::Regex(re("/a|/ab"));
    assert_eq!(m.match_length("/ab"), None);
    assert_eq!(m.match_length("/a"), Some(PathMatch::Regex(2)));
}

// === linkerd/http/route/src/http/match/header.rs ===

fn header_matches(m: &MatchHeader, values: &[&'static str]) -> bool {
    let mut req = TestReq::new();
    for v in values {
        req = req.header("foo", v);
    }
    m.is_match(&req.headers)
}

#[test]
fn headers_exact() {
    let m = hdr("foo", "bar");
    assert!(header_matches(&m, &["bar"]));
    assert!(header_matches(&m, &["bah", "bar", "baz"]));
    assert!(!header_matches(&m, &["bah"]));
    assert!(!header_matches(&m, &[]));
    // Pair lists compare names case-insensitively.
    let pairs = vec![("Foo".to_string(), b"bar".to_vec())];
    assert!(m.is_match(&pairs));
}

#[test]
fn headers_regex() {
    let m = hdr_re("foo", "bar*");
    assert!(header_matches(&m, &["bar"]));
    assert!(header_matches(&m, &["bahh", "barr", "bazz"]));
    assert!(!header_matches(&m, &["bah"]));
    assert!(!header_matches(&m, &["barro"]));
    // Values that are not visible ASCII are skipped by regexes (`HeaderValue::to_str`).
    let m = hdr_re("foo", ".*");
    let pairs = vec![("foo".to_string(), "é".as_bytes().to_vec())];
    assert!(!m.is_match(&pairs));
    let pairs = vec![("foo".to_string(), b"a\tb".to_vec())];
    assert!(m.is_match(&pairs));
}

// === linkerd/http/route/src/http/match/query_param.rs ===

fn query_matches(m: &MatchQueryParam, uri: &str) -> bool {
    let req = TestReq::get(uri);
    req.view().query().is_some_and(|q| m.is_match(q))
}

#[test]
fn query_param_exact() {
    let m = MatchQueryParam::Exact("foo".into(), "bar".into());
    assert!(query_matches(&m, "/?foo=bar"));
    assert!(query_matches(&m, "/?foo=bar&fah=bah"));
    assert!(query_matches(&m, "/?fah=bah&foo=bar"));
    assert!(!query_matches(&m, "/?foo=bah"));
    let m = MatchQueryParam::Exact("foo".into(), "".into());
    assert!(query_matches(&m, "/?foo"));
    assert!(!query_matches(&m, "/?foo=bah"));
    assert!(!query_matches(&m, "/?bar=foo"));
}

#[test]
fn query_param_regex() {
    let m = MatchQueryParam::Regex("foo".into(), re("bar*"));
    assert!(query_matches(&m, "/?foo=bar"));
    assert!(query_matches(&m, "/?foo=ba&fah=bah"));
    assert!(query_matches(&m, "/?foo=barr&fah=bah"));
    assert!(query_matches(&m, "/?bar=foo&foo=bar"));
    assert!(query_matches(&m, "/?foo=bah&foo=bar"));
    assert!(!query_matches(&m, "/?foo=bah"));
    assert!(!query_matches(&m, "/?bar=foo"));
    assert!(!query_matches(&m, "/?foo=barro"));
    let m = MatchQueryParam::Regex("foo".into(), re("bar/.+"));
    assert!(query_matches(&m, "/?foo=bar%2Fhi"));
    assert!(!query_matches(&m, "/?foo=bah%20hi"));
    let m = MatchQueryParam::Regex("foo".into(), re(".*"));
    assert!(query_matches(&m, "/?foo"));
}

#[test]
fn query_param_form_decoding() {
    let m = MatchQueryParam::Exact("a b".into(), "c d".into());
    assert!(query_matches(&m, "/?a+b=c%20d"));
    assert!(query_matches(&m, "/?a%20b=c+d"));
    assert!(!query_matches(&m, "/?a_b=c+d"));
    // Invalid escapes are kept; empty pairs are skipped; only the first `=` splits.
    let m = MatchQueryParam::Exact("x".into(), "%zz=1".into());
    assert!(query_matches(&m, "/?&&x=%zz=1&"));
    let m = MatchQueryParam::Exact("x".into(), "100%".into());
    assert!(query_matches(&m, "/?x=100%"));
    // Invalid UTF-8 is replaced.
    let m = MatchQueryParam::Exact("x".into(), "\u{fffd}".into());
    assert!(query_matches(&m, "/?x=%ff"));
    // Long values decode on the heap.
    let long = "a".repeat(300);
    let m = MatchQueryParam::Exact("x".into(), format!("{long} "));
    assert!(query_matches(&m, &format!("/?x={long}+")));
    assert!(!query_matches(&m, &format!("/?x={long}")));
}

// === precedence ===

/// Each case: routes (hosts, rules as (name, matches)), a request, the rule expected.
#[test]
fn precedence_table() {
    let q = |n: &str, v: &str| MatchQueryParam::Exact(n.into(), v.into());
    let get = || Some(http::Method::GET);
    type Case = (&'static str, Vec<HttpRoute>, TestReq, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "exact and prefix of the same length tie: the first wins",
            vec![
                route(&[], vec![rule("prefix", vec![path(prefix("/foo"))])]),
                route(&[], vec![rule("exact", vec![path(exact("/foo"))])]),
            ],
            TestReq::get("/foo"),
            Some("prefix"),
        ),
        (
            "exact and regex of the same length tie: the first wins",
            vec![
                route(
                    &[],
                    vec![rule("regex", vec![path(MatchPath::Regex(re("/f.o")))])],
                ),
                route(&[], vec![rule("exact", vec![path(exact("/foo"))])]),
            ],
            TestReq::get("/foo"),
            Some("regex"),
        ),
        (
            "a regex matching a longer path beats a shorter prefix",
            vec![
                route(&[], vec![rule("prefix", vec![path(prefix("/foo"))])]),
                route(
                    &[],
                    vec![rule("regex", vec![path(MatchPath::Regex(re("/foo/.*")))])],
                ),
            ],
            TestReq::get("/foo/bar"),
            Some("regex"),
        ),
        (
            "longer prefix wins",
            vec![
                route(&[], vec![rule("short", vec![path(prefix("/foo"))])]),
                route(&[], vec![rule("long", vec![path(prefix("/foo/bar"))])]),
            ],
            TestReq::get("/foo/bar/baz"),
            Some("long"),
        ),
        (
            "path length beats header count",
            vec![
                route(
                    &[],
                    vec![rule(
                        "headers",
                        vec![MatchRequest {
                            headers: vec![hdr("x-a", "1"), hdr("x-b", "2")],
                            ..MatchRequest::default()
                        }],
                    )],
                ),
                route(&[], vec![rule("path", vec![path(prefix("/foo"))])]),
            ],
            TestReq::get("/foo").header("x-a", "1").header("x-b", "2"),
            Some("path"),
        ),
        (
            "header count beats query count",
            vec![
                route(
                    &[],
                    vec![rule(
                        "query",
                        vec![MatchRequest {
                            query_params: vec![q("a", "1"), q("b", "2")],
                            ..MatchRequest::default()
                        }],
                    )],
                ),
                route(
                    &[],
                    vec![rule(
                        "header",
                        vec![MatchRequest {
                            headers: vec![hdr("x-a", "1")],
                            ..MatchRequest::default()
                        }],
                    )],
                ),
            ],
            TestReq::get("/?a=1&b=2").header("x-a", "1"),
            Some("header"),
        ),
        (
            "query count beats method",
            vec![
                route(
                    &[],
                    vec![rule(
                        "method",
                        vec![MatchRequest {
                            method: get(),
                            ..MatchRequest::default()
                        }],
                    )],
                ),
                route(
                    &[],
                    vec![rule(
                        "query",
                        vec![MatchRequest {
                            query_params: vec![q("a", "1")],
                            ..MatchRequest::default()
                        }],
                    )],
                ),
            ],
            TestReq::get("/?a=1"),
            Some("query"),
        ),
        (
            "a method match beats none",
            vec![
                route(&[], vec![rule("none", vec![MatchRequest::default()])]),
                route(
                    &[],
                    vec![rule(
                        "method",
                        vec![MatchRequest {
                            method: get(),
                            ..MatchRequest::default()
                        }],
                    )],
                ),
            ],
            TestReq::get("/"),
            Some("method"),
        ),
        (
            "a host match beats a longer path",
            vec![
                route(&[], vec![rule("path", vec![path(exact("/foo/bar/baz"))])]),
                route(&["*.example.com"], vec![rule("host", vec![])]),
            ],
            TestReq::get("http://a.example.com/foo/bar/baz"),
            Some("host"),
        ),
        (
            "a longer suffix beats a shorter one",
            vec![
                route(&["*.com"], vec![rule("short", vec![])]),
                route(&["*.example.com"], vec![rule("long", vec![])]),
            ],
            TestReq::get("http://a.example.com/"),
            Some("long"),
        ),
        (
            "rules of one route: the best rule, then the first",
            vec![route(
                &[],
                vec![
                    rule("root", vec![path(prefix("/"))]),
                    rule("foo", vec![path(prefix("/foo"))]),
                    rule("foo-again", vec![path(prefix("/foo"))]),
                ],
            )],
            TestReq::get("/foo/x"),
            Some("foo"),
        ),
        (
            "a rule scores its best match",
            vec![
                route(&[], vec![rule("one", vec![path(prefix("/foo"))])]),
                route(
                    &[],
                    vec![rule(
                        "any",
                        vec![
                            path(prefix("/nope")),
                            path(prefix("/foo/bar")),
                            path(prefix("/")),
                        ],
                    )],
                ),
            ],
            TestReq::get("/foo/bar"),
            Some("any"),
        ),
        (
            "a rule without matches scores a prefix match on /",
            vec![
                route(&[], vec![rule("slash", vec![path(prefix("/"))])]),
                route(&[], vec![rule("implicit", vec![])]),
            ],
            TestReq::get("/foo"),
            Some("slash"),
        ),
        (
            "methods are case-sensitive",
            vec![route(
                &[],
                vec![rule(
                    "get",
                    vec![MatchRequest {
                        method: get(),
                        ..MatchRequest::default()
                    }],
                )],
            )],
            TestReq::get("/").method(http::Method::from_bytes(b"get").unwrap()),
            None,
        ),
        (
            "no rule matches: not found",
            vec![route(&[], vec![rule("foo", vec![path(exact("/foo"))])])],
            TestReq::get("/bar"),
            None,
        ),
        (
            "a route without rules never matches",
            vec![route(&[], vec![])],
            TestReq::get("/"),
            None,
        ),
    ];
    for (what, routes, req, expected) in cases {
        assert_eq!(select(&routes, &req).as_deref(), expected, "{what}");
        let server = server(routes);
        let decision = server.route_request(&req.view());
        assert_eq!(matched(&decision).as_deref(), expected, "{what}");
    }
}

#[test]
fn summary_of_a_rule_is_the_last_of_equal_matches() {
    // As `Iterator::max`: the redirect filter sees the prefix match here.
    let rts = vec![route(
        &[],
        vec![rule("r", vec![path(exact("/foo")), path(prefix("/foo"))])],
    )];
    let req = TestReq::get("/foo");
    let (m, _) = find(&rts, &req.view()).expect("matches");
    assert_eq!(m.route.path_match, PathMatch::Prefix(4));
    assert_eq!(m.host, None);
}

#[test]
fn detect_and_http1_route_with_http_routes() {
    let routes: Arc<[HttpRoute]> =
        vec![route(&[], vec![rule("r", vec![path(prefix("/api"))])])].into();
    for protocol in [
        Protocol::Detect {
            timeout: Duration::from_secs(1),
            http: routes.clone(),
            tcp_authorizations: Arc::new([]),
        },
        Protocol::Http1(routes.clone()),
        Protocol::Http2(routes.clone()),
    ] {
        let p = ServerPolicy {
            meta: Meta::new_default("srv"),
            protocol,
            local_rate_limit: Default::default(),
        };
        let req = TestReq::get("/api/v1");
        assert_eq!(matched(&p.route_request(&req.view())).as_deref(), Some("r"));
        let req = TestReq::get("/other");
        assert_eq!(p.route_request(&req.view()), RouteDecision::NotFound);
    }
}

/// The path index selects what the linear search selects, over many routes of every kind
/// (exact, prefix, `/`, nested prefixes, regex, header-only, catch-all rules, hosts) and
/// paths at their edges (trailing and doubled slashes, no leading slash, queries).
#[test]
fn the_path_index_agrees_with_the_linear_search() {
    let mut routes = Vec::new();
    for (i, p) in ["/a", "/a/", "/ab", "/a/b/c", "/b", "/r1", "/r10", "/r1/x"]
        .iter()
        .enumerate()
    {
        routes.push(route(
            &[],
            vec![rule(&format!("prefix{i}"), vec![path(prefix(p))])],
        ));
    }
    for (i, p) in ["/", "/a/b", "/ab", "//a", "/b/"].iter().enumerate() {
        routes.push(route(
            &[],
            vec![rule(&format!("exact{i}"), vec![path(exact(p))])],
        ));
    }
    routes.push(route(
        &[],
        vec![rule("regex", vec![path(MatchPath::Regex(re("/a.*z")))])],
    ));
    routes.push(route(
        &[],
        vec![rule(
            "header",
            vec![MatchRequest {
                headers: vec![hdr("x-route", "h")],
                ..MatchRequest::default()
            }],
        )],
    ));
    routes.push(route(
        &["example.com"],
        vec![rule("host", vec![path(prefix("/b"))])],
    ));
    routes.push(route(
        &[],
        vec![
            rule("mixed-a", vec![path(prefix("/c")), path(exact("/d/e"))]),
            rule("mixed-b", vec![path(prefix("/e"))]),
        ],
    ));
    let catch_all = route(&[], vec![rule("slash", vec![path(prefix("/"))])]);
    for with_catch_all in [false, true] {
        let mut routes = routes.clone();
        if with_catch_all {
            routes.push(catch_all.clone());
        }
        for uri in [
            "/",
            "/a",
            "/a/",
            "/a/b",
            "/a/b/c",
            "/a/b/c/d",
            "/ab",
            "/abc",
            "/az",
            "/a/xyz",
            "//a",
            "/b",
            "/b/",
            "/c",
            "/c/1",
            "/d/e",
            "/e",
            "/r1",
            "/r10",
            "/r1/x",
            "/r100",
            "/zzz",
            "/a?x=1",
            "/ab?q",
            "http://example.com/b/x",
            "http://other/b",
        ] {
            for req in [TestReq::get(uri), TestReq::get(uri).header("x-route", "h")] {
                // `select` asserts that both searches agree.
                let _ = select(&routes, &req);
            }
        }
    }
}
