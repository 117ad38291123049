//! Filters: the redirect cases of `linkerd/http/route/src/http/filter/redirect.rs`, header
//! modification, and failure-injection sampling.

use super::*;

/// Applies `redirect` to `uri` on a single route with one rule matching `m`, as
/// linkerd2-proxy's `apply!` test macro does.
fn apply(
    uri: &str,
    m: MatchRequest,
    redirect: RedirectRequest,
) -> Result<Option<Redirection>, InvalidRedirect> {
    let routes = [HttpRoute {
        hosts: vec![],
        rules: vec![HttpRule {
            matches: vec![m],
            policy: HttpPolicy {
                meta: Meta::new_default("r"),
                authorizations: Arc::new([]),
                filters: vec![HttpFilter::Redirect(redirect)],
            },
        }],
    }];
    let req = TestReq::get(uri);
    let view = req.view();
    let (rm, policy) = find(&routes, &view).expect("request must match");
    let HttpFilter::Redirect(redirect) = &policy.filters[0] else {
        unreachable!()
    };
    redirect.apply(&view.uri().expect("uri"), &rm.route)
}

fn any() -> MatchRequest {
    MatchRequest::default()
}

fn prefix(p: &str) -> MatchRequest {
    MatchRequest {
        path: Some(MatchPath::Prefix(p.into())),
        ..MatchRequest::default()
    }
}

fn moved(location: &str) -> Option<Redirection> {
    Some(Redirection {
        status: http::StatusCode::MOVED_PERMANENTLY,
        location: location.parse().unwrap(),
    })
}

fn path(p: ModifyPath) -> RedirectRequest {
    RedirectRequest {
        path: Some(p),
        ..RedirectRequest::default()
    }
}

#[test]
fn redirect_default_noop() {
    assert_eq!(
        apply("http://example.com/foo", any(), RedirectRequest::default()).unwrap(),
        None
    );
}

#[test]
fn redirect_authority() {
    let r = RedirectRequest {
        authority: Some(AuthorityOverride::Exact("example.org".parse().unwrap())),
        ..RedirectRequest::default()
    };
    assert_eq!(
        apply("http://example.com/foo?a=b&c", any(), r).unwrap(),
        moved("http://example.org/foo?a=b&c")
    );

    let r = RedirectRequest {
        authority: Some(AuthorityOverride::Port(8080.try_into().unwrap())),
        ..RedirectRequest::default()
    };
    assert_eq!(
        apply("http://example.com/foo?a=b&c", any(), r).unwrap(),
        moved("http://example.com:8080/foo?a=b&c")
    );

    let r = RedirectRequest {
        authority: Some(AuthorityOverride::Port(80.try_into().unwrap())),
        ..RedirectRequest::default()
    };
    assert_eq!(
        apply("http://example.com:8080/foo?a=b&c", any(), r).unwrap(),
        moved("http://example.com/foo?a=b&c")
    );

    let r = RedirectRequest {
        scheme: Some(http::uri::Scheme::HTTPS),
        authority: Some(AuthorityOverride::Port(443.try_into().unwrap())),
        ..RedirectRequest::default()
    };
    assert_eq!(
        apply("http://example.com:8080/foo?a=b&c", any(), r).unwrap(),
        moved("https://example.com/foo?a=b&c")
    );

    // A host alone keeps a non-default port.
    let r = RedirectRequest {
        authority: Some(AuthorityOverride::Host("example.org".parse().unwrap())),
        ..RedirectRequest::default()
    };
    assert_eq!(
        apply("http://example.com:8080/foo", any(), r.clone()).unwrap(),
        moved("http://example.org:8080/foo")
    );
    assert_eq!(
        apply("http://example.com:80/foo", any(), r).unwrap(),
        moved("http://example.org/foo")
    );
}

#[test]
fn redirect_paths() {
    let full = |p: &str| path(ModifyPath::ReplaceFullPath(p.into()));
    let pfx = |p: &str| path(ModifyPath::ReplacePrefixMatch(p.into()));
    assert_eq!(
        apply("http://example.com/foo", any(), full("/bar")).unwrap(),
        moved("http://example.com/bar")
    );
    assert_eq!(
        apply("http://example.com/foo?a=b&c=d", any(), full("/bar")).unwrap(),
        moved("http://example.com/bar")
    );
    assert_eq!(
        apply("http://example.com/foo", any(), full("/bar?a=b&c")).unwrap(),
        moved("http://example.com/bar?a=b&c")
    );
    assert_eq!(
        apply("http://example.com/foo/bar", prefix("/foo"), pfx("/qux")).unwrap(),
        moved("http://example.com/qux/bar")
    );
    assert_eq!(
        apply(
            "http://example.com/foo/bar?a=b&c",
            prefix("/foo"),
            pfx("/qux")
        )
        .unwrap(),
        moved("http://example.com/qux/bar?a=b&c")
    );
    assert_eq!(
        apply("http://example.com/foo/bar", any(), pfx("/qux")).unwrap(),
        moved("http://example.com/qux/foo/bar")
    );
    assert_eq!(
        apply("http://example.com/foo/bar", prefix("/"), pfx("/qux")).unwrap(),
        moved("http://example.com/qux/foo/bar")
    );
    assert_eq!(
        apply("http://example.com/foo/bar", prefix("/foo/"), pfx("/qux")).unwrap(),
        moved("http://example.com/qux/bar")
    );
    let exact = MatchRequest {
        path: Some(MatchPath::Exact("/foo/bar".into())),
        ..MatchRequest::default()
    };
    assert!(matches!(
        apply("http://example.com/foo/bar", exact, pfx("/qux")),
        Err(InvalidRedirect::ReplacePrefix)
    ));
}

#[test]
fn redirect_scheme_and_status() {
    let r = RedirectRequest {
        scheme: Some(http::uri::Scheme::HTTPS),
        ..RedirectRequest::default()
    };
    assert_eq!(
        apply("http://example.com/foo?a=b&c", any(), r).unwrap(),
        moved("https://example.com/foo?a=b&c")
    );
    let r = RedirectRequest {
        status: Some(http::StatusCode::TEMPORARY_REDIRECT),
        scheme: Some(http::uri::Scheme::HTTPS),
        ..RedirectRequest::default()
    };
    assert_eq!(
        apply("http://example.com/foo?a=b&c", any(), r).unwrap(),
        Some(Redirection {
            status: http::StatusCode::TEMPORARY_REDIRECT,
            location: "https://example.com/foo?a=b&c".parse().unwrap()
        })
    );
}

#[test]
fn modify_headers() {
    let name = http::HeaderName::from_static;
    let value = http::HeaderValue::from_static;
    let m = ModifyHeader {
        add: vec![(name("x-add"), value("1"))],
        set: vec![(name("x-set"), value("2"))],
        remove: vec![name("x-remove")],
    };

    let mut map = http::HeaderMap::new();
    map.append("x-add", value("0"));
    map.append("x-set", value("a"));
    map.append("x-set", value("b"));
    map.append("x-remove", value("gone"));
    map.append("x-keep", value("k"));
    m.apply(&mut map);
    let all = |map: &http::HeaderMap, n: &str| -> Vec<String> {
        map.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all(&map, "x-add"), ["0", "1"]);
    assert_eq!(all(&map, "x-set"), ["2"]);
    assert!(all(&map, "x-remove").is_empty());
    assert_eq!(all(&map, "x-keep"), ["k"]);

    let mut pairs: Vec<(String, Vec<u8>)> = vec![
        ("X-Add".into(), b"0".to_vec()),
        ("x-set".into(), b"a".to_vec()),
        ("X-SET".into(), b"b".to_vec()),
        ("X-Remove".into(), b"gone".to_vec()),
        ("x-keep".into(), b"k".to_vec()),
    ];
    m.apply_to_pairs(&mut pairs);
    assert_eq!(
        pairs,
        vec![
            ("X-Add".to_string(), b"0".to_vec()),
            ("x-keep".to_string(), b"k".to_vec()),
            ("x-add".to_string(), b"1".to_vec()),
            ("x-set".to_string(), b"2".to_vec()),
        ]
    );
}

#[test]
fn failure_distribution() {
    let always = Distribution::default();
    assert_eq!(always.ratio(), (1, 1));
    assert!(always.sample(0) && always.sample(u64::MAX));

    let never = Distribution::from_ratio(0, 5).unwrap();
    assert!(!never.sample(0) && !never.sample(u64::MAX));

    let half = Distribution::from_ratio(1, 2).unwrap();
    assert!(half.sample(0));
    assert!(half.sample((1 << 63) - 1));
    assert!(!half.sample(1 << 63));
    assert!(!half.sample(u64::MAX));
    assert_eq!(half, Distribution::from_ratio(1, 2).unwrap());
    assert_ne!(half, Distribution::from_ratio(2, 4).unwrap());

    assert!(Distribution::from_ratio(3, 2).is_err());
    assert!(Distribution::from_ratio(0, 0).is_err());

    let f = InjectFailure {
        response: FailureResponse {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            message: "nope".into(),
        },
        distribution: half,
    };
    assert_eq!(
        f.apply(1).map(|r| r.status),
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(f.apply(u64::MAX), None);
}
