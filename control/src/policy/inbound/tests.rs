//! Tests of the inbound policy model, mirroring linkerd2-proxy's own where there are some
//! (`linkerd/http/route/src/**/tests.rs`, `linkerd/app/inbound/src/policy{,/tcp,/http}/tests.rs`,
//! `linkerd/proxy/server-policy/src/meta.rs`).

use super::*;
use std::net::IpAddr;

mod authz;
mod decode;
mod default_policies;
mod filters;
mod grpc;
mod routes;

/// A request to build [`RequestView`]s from, as linkerd2-proxy's tests build
/// `http::Request`s.
pub(super) struct TestReq {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

impl TestReq {
    /// `GET /`, like `http::Request::builder()`.
    pub fn new() -> Self {
        Self {
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
        }
    }

    pub fn get(uri: &str) -> Self {
        Self::new().uri(uri)
    }

    pub fn post(uri: &str) -> Self {
        Self::new().method(http::Method::POST).uri(uri)
    }

    pub fn method(mut self, m: http::Method) -> Self {
        self.method = m;
        self
    }

    pub fn uri(mut self, uri: &str) -> Self {
        self.uri = uri.parse().expect("test URI");
        self
    }

    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
        self
    }

    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method.as_str(),
            scheme: self.uri.scheme_str(),
            authority: self.uri.authority().map(|a| a.as_str()),
            path_and_query: self.uri.path_and_query().map_or("", |pq| pq.as_str()),
            headers: &self.headers,
        }
    }
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

pub(super) fn resource(group: &str, kind: &str, name: &str) -> Arc<Meta> {
    Arc::new(Meta::Resource {
        group: group.into(),
        kind: kind.into(),
        name: name.into(),
        location: Default::default(),
    })
}

pub(super) fn authz(nets: &[&str], authentication: Authentication, name: &str) -> Authorization {
    Authorization {
        networks: nets.iter().map(|n| n.parse().expect("test net")).collect(),
        authentication,
        meta: resource("policy.linkerd.io", "authorizationpolicy", name),
    }
}

pub(super) fn tls(id: &str) -> ClientTls<'_> {
    ClientTls::Tls {
        client_id: Some(id),
    }
}

/// A route policy named `name` with no authorizations or filters.
pub(super) fn policy<F>(name: &str) -> RoutePolicy<F> {
    RoutePolicy {
        meta: Meta::new_default(name.to_string()),
        authorizations: Arc::new([]),
        filters: vec![],
    }
}

/// The name of the rule a request matched, if any.
pub(super) fn matched(decision: &RouteDecision<'_>) -> Option<String> {
    decision.meta().map(|m| m.name().to_string())
}

#[test]
fn types_are_send_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<ServerPolicy>();
    check::<Protocol>();
    check::<Authorization>();
    check::<HttpRoute>();
    check::<GrpcRoute>();
    check::<LocalRateLimit>();
    check::<BuiltinPolicy>();
}

#[test]
fn meta_equality_and_hash_ignore_representation() {
    use std::hash::{BuildHasher, RandomState};
    let hasher = RandomState::new();
    let default = Meta::Default { name: "foo".into() };
    for (other, equal) in [
        (Meta::Default { name: "foo".into() }, true),
        (Meta::Default { name: "bar".into() }, false),
        (
            Meta::Resource {
                group: "".into(),
                kind: "default".into(),
                name: "foo".into(),
                location: Default::default(),
            },
            true,
        ),
        (
            Meta::Resource {
                group: "".into(),
                kind: "default".into(),
                name: "bar".into(),
                location: Default::default(),
            },
            false,
        ),
        (
            Meta::Resource {
                group: "policy.linkerd.io".into(),
                kind: "default".into(),
                name: "foo".into(),
                location: Default::default(),
            },
            false,
        ),
    ] {
        assert_eq!(default == other, equal, "{other:?}");
        assert_eq!(hasher.hash_one(&default) == hasher.hash_one(&other), equal);
    }
    assert!(Meta::Default {
        name: "audit".into()
    }
    .is_audit());
    assert!(!Meta::Resource {
        group: "".into(),
        kind: "default".into(),
        name: "audit".into(),
        location: Default::default(),
    }
    .is_audit());
    assert_eq!(default.kind(), "default");
    assert_eq!(default.group(), "");
}

#[test]
fn invalid_policy_is_detect_with_an_unauthorized_internal_error_route() {
    let p = ServerPolicy::invalid(Duration::from_secs(3));
    assert_eq!(p.meta.name(), "invalid");
    assert_eq!(p.protocol.detect_timeout(), Some(Duration::from_secs(3)));

    // No TCP authorization: forwarded connections are denied.
    let denied = p
        .authorize_connection(ip("127.0.0.1"), ClientTls::None)
        .expect_err("denied");
    assert_eq!(
        denied.to_string(),
        "unauthorized connection on default/invalid"
    );

    // Every request matches the route, which no one is authorized on (403 before the 500
    // filter, as in linkerd2-proxy).
    let req = TestReq::get("http://example.com/foo");
    let decision = p.route_request(&req.view());
    let RouteDecision::Http(m) = &decision else {
        panic!("{decision:?}");
    };
    assert_eq!(
        m.policy.filters,
        vec![HttpFilter::InternalError("invalid server configuration")]
    );
    assert_eq!(
        decision.authorize(ip("127.0.0.1"), ClientTls::None),
        Err(RouteError::Unauthorized(Unauthorized))
    );
}

#[test]
fn opaque_and_tls_ports_route_nothing() {
    let a: Arc<[Authorization]> = Arc::new([authz(
        &["0.0.0.0/0"],
        Authentication::Unauthenticated,
        "all",
    )]);
    for protocol in [Protocol::Opaque(a.clone()), Protocol::Tls(a)] {
        let p = ServerPolicy {
            meta: Meta::new_default("srv"),
            protocol,
            local_rate_limit: Default::default(),
        };
        let req = TestReq::get("http://example.com/");
        let decision = p.route_request(&req.view());
        assert_eq!(decision, RouteDecision::NotFound);
        assert_eq!(
            decision.authorize(ip("10.0.0.1"), ClientTls::None),
            Err(RouteError::NotFound(RouteNotFound))
        );
        assert!(p
            .authorize_connection(ip("10.0.0.1"), ClientTls::None)
            .is_ok());
    }
}

#[test]
fn http_only_ports_deny_connections() {
    let routes: Arc<[HttpRoute]> = Arc::new([HttpRoute::catch_all(Arc::new([authz(
        &["0.0.0.0/0"],
        Authentication::Unauthenticated,
        "all",
    )]))]);
    for protocol in [
        Protocol::Http1(routes.clone()),
        Protocol::Http2(routes.clone()),
        Protocol::Grpc(Arc::new([GrpcRoute::catch_all(Arc::new([]))])),
    ] {
        let p = ServerPolicy {
            meta: resource("policy.linkerd.io", "server", "web"),
            protocol,
            local_rate_limit: Default::default(),
        };
        let e = p
            .authorize_connection(ip("10.0.0.1"), ClientTls::None)
            .expect_err("per-request authorization only");
        assert_eq!(e.to_string(), "unauthorized connection on server/web");
    }
}

#[test]
fn opaque_conversion_keeps_tcp_authorizations() {
    let p = defaults::all_authenticated(Duration::from_secs(10));
    let o = p.opaque();
    assert_eq!(o.meta, p.meta);
    assert_eq!(
        o.protocol,
        Protocol::Opaque(p.protocol.tcp_authorizations().unwrap().into())
    );
    // Already opaque (deny) stays so.
    assert_eq!(defaults::deny().opaque(), defaults::deny());
}

#[test]
fn request_view_parts() {
    let h = NoHeaders;
    let v = |authority, pq| RequestView {
        method: "GET",
        scheme: None,
        authority,
        path_and_query: pq,
        headers: &h,
    };
    assert_eq!(v(None, "/foo?a=b").path(), "/foo");
    assert_eq!(v(None, "/foo?a=b").query(), Some("a=b"));
    assert_eq!(v(None, "/foo?").query(), Some(""));
    assert_eq!(v(None, "/foo").query(), None);
    assert_eq!(v(None, "/foo#x?y").path(), "/foo");
    assert_eq!(v(None, "/foo#x?y").query(), None);
    assert_eq!(v(None, "").path(), "/");
    assert_eq!(v(None, "?a").path(), "/");
    assert_eq!(v(Some("example.com:8080"), "/").host(), Some("example.com"));
    assert_eq!(v(Some("user@example.com"), "/").host(), Some("example.com"));
    assert_eq!(v(Some("[::1]:80"), "/").host(), Some("[::1]"));
    assert_eq!(v(None, "/").host(), None);
    assert_eq!(
        v(Some("example.com"), "/a?b").uri().unwrap(),
        "http://example.com/a?b"
    );
}

#[test]
fn header_sources_agree() {
    let name = http::HeaderName::from_static("x-foo");
    let mut map = http::HeaderMap::new();
    map.append("x-foo", http::HeaderValue::from_static("a"));
    map.append("x-foo", http::HeaderValue::from_static("b"));
    let pairs: Vec<(String, Vec<u8>)> = vec![
        ("X-Foo".into(), b"a".to_vec()),
        ("x-bar".into(), b"b".to_vec()),
        ("x-FOO".into(), b"b".to_vec()),
    ];
    let slice: &[(&str, &[u8])] = &[("x-foo", b"a"), ("x-foo", b"b")];
    let f = FnHeaders(
        |n: &http::HeaderName, pred: &mut dyn FnMut(&[u8]) -> bool| {
            n == "x-foo" && (pred(b"a") || pred(b"b"))
        },
    );
    let sources: [&dyn HeaderSource; 4] = [&map, &pairs, &slice, &f];
    for s in sources {
        assert!(s.any_value(&name, &mut |v| v == b"b"));
        assert!(!s.any_value(&name, &mut |v| v == b"c"));
        assert!(!s.any_value(&http::HeaderName::from_static("x-baz"), &mut |_| true));
    }
    assert!(!NoHeaders.any_value(&name, &mut |_| true));
}
