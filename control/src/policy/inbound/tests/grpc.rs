//! gRPC matching and selection: `linkerd/http/route/src/grpc/{tests.rs,match/tests.rs}`.

use super::*;

fn rpc(service: Option<&str>, method: Option<&str>) -> MatchGrpc {
    MatchGrpc {
        rpc: MatchRpc {
            service: service.map(String::from),
            method: method.map(String::from),
        },
        headers: vec![],
    }
}

fn hdr(name: &'static str, value: &'static str) -> MatchHeader {
    MatchHeader::Exact(
        http::HeaderName::from_static(name),
        http::HeaderValue::from_static(value),
    )
}

fn rule(name: &str, matches: Vec<MatchGrpc>) -> GrpcRule {
    GrpcRule {
        matches,
        policy: policy(name),
    }
}

fn route(hosts: &[&str], rules: Vec<GrpcRule>) -> GrpcRoute {
    GrpcRoute {
        hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
        rules,
    }
}

fn select(routes: Vec<GrpcRoute>, req: &TestReq) -> Option<String> {
    let p = ServerPolicy {
        meta: Meta::new_default("srv"),
        protocol: Protocol::Grpc(routes.into()),
        local_rate_limit: Default::default(),
    };
    let d = p.route_request(&req.view());
    if !matches!(d, RouteDecision::NotFound) {
        assert!(d.is_grpc());
    }
    matched(&d)
}

// === match/tests.rs ===

#[test]
fn empty_match() {
    let m = MatchGrpc::default();
    let req = TestReq::post("http://example.com/foo/bar");
    assert_eq!(m.match_request(&req.view()), Some(GrpcMatch::default()));
    let req = TestReq::post("http://example.com/foo");
    assert_eq!(m.match_request(&req.view()), None);
}

#[test]
fn method() {
    let m = rpc(None, Some("bar"));
    let req = TestReq::post("http://example.com/foo/bar");
    assert_eq!(
        m.match_request(&req.view()),
        Some(GrpcMatch {
            rpc: RpcMatch {
                service: 0,
                method: 3
            },
            headers: 0
        })
    );
    let req = TestReq::post("https://example.org/foo/bah");
    assert_eq!(m.match_request(&req.view()), None);
}

#[test]
fn headers() {
    let m = MatchGrpc {
        headers: vec![
            hdr("x-foo", "bar"),
            MatchHeader::Regex(
                http::HeaderName::from_static("x-baz"),
                "qu+x".parse().unwrap(),
            ),
        ],
        ..MatchGrpc::default()
    };
    let req = TestReq::post("http://example.com/foo");
    assert_eq!(m.match_request(&req.view()), None);
    let req = TestReq::post("https://example.org/")
        .header("x-foo", "bar")
        .header("x-baz", "zab");
    assert_eq!(m.match_request(&req.view()), None);
    let req = TestReq::post("https://example.org/foo/bar")
        .header("x-foo", "bar")
        .header("x-baz", "quuuux");
    assert_eq!(
        m.match_request(&req.view()),
        Some(GrpcMatch {
            headers: 2,
            ..GrpcMatch::default()
        })
    );
    let req = TestReq::post("https://example.org/foo/bar")
        .header("x-foo", "bar")
        .header("x-baz", "quxa");
    assert_eq!(m.match_request(&req.view()), None);
}

#[test]
fn http_method() {
    let m = rpc(Some("foo"), Some("bar"));
    let req = TestReq::post("http://example.com/foo/bar");
    assert_eq!(
        m.match_request(&req.view()),
        Some(GrpcMatch {
            rpc: RpcMatch {
                service: 3,
                method: 3
            },
            headers: 0
        })
    );
    let req = TestReq::get("http://example.com/foo/bar");
    assert_eq!(m.match_request(&req.view()), None);
}

#[test]
fn multiple() {
    let m = MatchGrpc {
        headers: vec![hdr("x-foo", "bar")],
        ..rpc(Some("foo"), Some("bar"))
    };
    let req = TestReq::post("https://example.org/foo/bar").header("x-foo", "bar");
    assert_eq!(
        m.match_request(&req.view()),
        Some(GrpcMatch {
            rpc: RpcMatch {
                service: 3,
                method: 3
            },
            headers: 1
        })
    );
    let req = TestReq::post("https://example.org/foo/bar").header("x-foo", "bah");
    assert_eq!(m.match_request(&req.view()), None);
}

#[test]
fn rpc_paths() {
    let any = MatchRpc::default();
    assert_eq!(any.match_length("/svc/m"), Some(RpcMatch::default()));
    assert_eq!(any.match_length("/svc/"), Some(RpcMatch::default()));
    assert_eq!(any.match_length("/svc"), None);
    assert_eq!(any.match_length("svc/m"), None);
    let m = MatchRpc {
        service: Some("pkg.Svc".into()),
        method: Some("Get".into()),
    };
    assert_eq!(
        m.match_length("/pkg.Svc/Get"),
        Some(RpcMatch {
            service: 7,
            method: 3
        })
    );
    // Further segments are ignored, as in linkerd2-proxy.
    assert!(m.match_length("/pkg.Svc/Get/extra").is_some());
    assert_eq!(m.match_length("/pkg.Svc/get"), None);
    assert_eq!(m.match_length("/pkg.svc/Get"), None);
}

// === tests.rs ===

#[test]
fn default() {
    let rts = vec![route(
        &[],
        vec![rule("expected", vec![MatchGrpc::default()])],
    )];
    let req = TestReq::post("http://foo.example.com/foo/bar");
    assert_eq!(select(rts, &req).as_deref(), Some("expected"));
}

#[test]
fn hostname_precedence() {
    let rts = vec![
        route(
            &["*.example.com"],
            vec![rule("unexpected", vec![rpc(Some("foo"), Some("bar"))])],
        ),
        route(
            &["foo.example.com"],
            vec![rule("expected", vec![rpc(Some("foo"), Some("bar"))])],
        ),
    ];
    let req = TestReq::post("http://foo.example.com/foo/bar");
    assert_eq!(select(rts, &req).as_deref(), Some("expected"));
}

#[test]
fn method_precedence() {
    let rts = vec![
        route(&[], vec![rule("unexpected", vec![rpc(Some("foo"), None)])]),
        route(
            &[],
            vec![rule("expected", vec![rpc(Some("foo"), Some("bar"))])],
        ),
    ];
    let req = TestReq::post("http://foo.example.com/foo/bar");
    assert_eq!(select(rts, &req).as_deref(), Some("expected"));
}

#[test]
fn header_count_precedence() {
    let rts = vec![
        route(
            &[],
            vec![rule(
                "unexpected",
                vec![MatchGrpc {
                    headers: vec![hdr("x-foo", "bar"), hdr("x-baz", "qux")],
                    ..MatchGrpc::default()
                }],
            )],
        ),
        route(
            &[],
            vec![rule(
                "expected",
                vec![MatchGrpc {
                    headers: vec![
                        hdr("x-foo", "bar"),
                        hdr("x-baz", "qux"),
                        hdr("x-biz", "qyx"),
                    ],
                    ..MatchGrpc::default()
                }],
            )],
        ),
    ];
    let req = TestReq::post("http://www.example.com/foo/bar")
        .header("x-foo", "bar")
        .header("x-baz", "qux")
        .header("x-biz", "qyx");
    assert_eq!(select(rts, &req).as_deref(), Some("expected"));
}

#[test]
fn first_identical_wins() {
    let rts = vec![
        route(
            &[],
            vec![rule("expected", vec![]), rule("redundant", vec![])],
        ),
        route(&[], vec![rule("redundant-route", vec![])]),
    ];
    // A rule without matches applies to any request, even a GET.
    assert_eq!(select(rts, &TestReq::new()).as_deref(), Some("expected"));
}

#[test]
fn service_beats_method_and_rpc_beats_headers() {
    let rts = vec![
        route(
            &[],
            vec![rule("method", vec![rpc(None, Some("LongMethodName"))])],
        ),
        route(&[], vec![rule("service", vec![rpc(Some("s"), None)])]),
    ];
    let req = TestReq::post("/s/LongMethodName");
    assert_eq!(select(rts, &req).as_deref(), Some("service"));

    let rts = vec![
        route(
            &[],
            vec![rule(
                "headers",
                vec![MatchGrpc {
                    headers: vec![hdr("x-a", "1"), hdr("x-b", "2")],
                    ..MatchGrpc::default()
                }],
            )],
        ),
        route(&[], vec![rule("rpc", vec![rpc(None, Some("m"))])]),
    ];
    let req = TestReq::post("/s/m").header("x-a", "1").header("x-b", "2");
    assert_eq!(select(rts, &req).as_deref(), Some("rpc"));

    let rts = vec![route(&[], vec![rule("r", vec![rpc(Some("s"), None)])])];
    assert_eq!(select(rts, &TestReq::post("/t/m")), None);
}
