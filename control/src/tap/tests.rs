//! Tests of the tap match model against the behaviour of linkerd2-proxy's
//! `linkerd/proxy/tap/src/grpc/match_.rs` and `server.rs`.

use super::*;
use linkerd2_proxy_api::http_types::{self, http_method, HttpMethod};
use linkerd2_proxy_api::net::IpAddress;
use std::net::{Ipv4Addr, Ipv6Addr};

// === protobuf builders ===

fn wrap(m: pb::Match) -> observe_request::Match {
    observe_request::Match { r#match: Some(m) }
}

fn seq(ms: Vec<pb::Match>) -> pb::Seq {
    pb::Seq {
        matches: ms.into_iter().map(wrap).collect(),
    }
}

fn all(ms: Vec<pb::Match>) -> pb::Match {
    pb::Match::All(seq(ms))
}

fn any(ms: Vec<pb::Match>) -> pb::Match {
    pb::Match::Any(seq(ms))
}

fn not(m: pb::Match) -> pb::Match {
    pb::Match::Not(Box::new(wrap(m)))
}

fn ports(min: u32, max: u32) -> pb::Tcp {
    pb::Tcp {
        r#match: Some(pb::tcp::Match::Ports(pb::tcp::PortRange { min, max })),
    }
}

fn netmask(ip: IpAddr, mask: u32) -> pb::Tcp {
    pb::Tcp {
        r#match: Some(pb::tcp::Match::Netmask(pb::tcp::Netmask {
            ip: Some(IpAddress::from(ip)),
            mask,
        })),
    }
}

fn label(key: &str, value: &str) -> pb::Label {
    pb::Label {
        key: key.into(),
        value: value.into(),
    }
}

fn http(m: pb::http::Match) -> pb::Match {
    pb::Match::Http(pb::Http { r#match: Some(m) })
}

fn exact(s: &str) -> pb::http::StringMatch {
    pb::http::StringMatch {
        r#match: Some(pb::http::string_match::Match::Exact(s.into())),
    }
}

fn prefix(s: &str) -> pb::http::StringMatch {
    pb::http::StringMatch {
        r#match: Some(pb::http::string_match::Match::Prefix(s.into())),
    }
}

fn scheme_type(t: scheme::Type) -> pb::Match {
    http(pb::http::Match::Scheme(http_types::Scheme {
        r#type: Some(t),
    }))
}

fn method_type(t: http_method::Type) -> pb::Match {
    http(pb::http::Match::Method(HttpMethod { r#type: Some(t) }))
}

fn decode(m: pb::Match) -> Match {
    Match::try_from(m).expect("valid match")
}

fn reject(m: pb::Match) -> InvalidMatch {
    Match::try_from(m).expect_err("invalid match")
}

// === request builder ===

const DST_LABELS: &[(&str, &str)] = &[("namespace", "emojivoto"), ("pod", "web-0")];
const ROUTE_LABELS: &[(&str, &str)] = &[("route", "GET /api")];

fn req() -> Observed<'static> {
    Observed {
        src: "10.1.2.3:40000".parse().unwrap(),
        dst: "10.4.5.6:8080".parse().unwrap(),
        dst_labels: &DST_LABELS,
        route_labels: &ROUTE_LABELS,
        scheme: None,
        method: "GET",
        authority: Some("web.emojivoto.svc.cluster.local:8080"),
        path: "/api/list",
    }
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

// === limit ===

#[test]
fn tap_limit_must_be_positive() {
    assert_eq!(check_limit(0), Err("limit must be positive".to_string()));
    assert_eq!(check_limit(1), Ok(()));
    assert_eq!(check_limit(u32::MAX), Ok(()));
}

// === decoding: the tree ===

#[test]
fn tap_missing_match_is_empty() {
    assert_eq!(Match::try_new(None), Err(InvalidMatch::Empty));
    assert_eq!(
        Match::try_new(Some(observe_request::Match { r#match: None })),
        Err(InvalidMatch::Empty)
    );
    assert_eq!(
        Match::try_from(observe_request::Match { r#match: None }),
        Err(InvalidMatch::Empty)
    );
}

#[test]
fn tap_not_without_operand_is_empty() {
    let m = pb::Match::Not(Box::new(observe_request::Match { r#match: None }));
    assert_eq!(reject(m), InvalidMatch::Empty);
}

#[test]
fn tap_seq_skips_unset_entries() {
    let m = pb::Match::All(pb::Seq {
        matches: vec![
            observe_request::Match { r#match: None },
            wrap(pb::Match::Source(ports(40000, 0))),
        ],
    });
    assert_eq!(
        decode(m),
        Match::All(vec![Match::Source(TcpMatch::PortRange(40000, 40000))])
    );
}

#[test]
fn tap_seq_propagates_nested_errors() {
    let m = any(vec![
        pb::Match::Source(ports(1, 2)),
        not(all(vec![pb::Match::Destination(ports(9, 3))])),
    ]);
    assert_eq!(reject(m), InvalidMatch::InvalidPort);
}

#[test]
fn tap_error_messages_and_status() {
    assert_eq!(InvalidMatch::Empty.to_string(), "missing required field");
    assert_eq!(InvalidMatch::InvalidPort.to_string(), "invalid port number");
    assert_eq!(
        InvalidMatch::InvalidNetwork.to_string(),
        "invalid network address"
    );
    assert_eq!(
        InvalidMatch::InvalidHttpMethod.to_string(),
        "invalid http method"
    );
    assert_eq!(
        InvalidMatch::InvalidScheme.to_string(),
        "invalid request scheme"
    );
    let status = tonic::Status::from(InvalidMatch::InvalidPort);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "invalid port number");
}

// === decoding: TCP ===

#[test]
fn tap_tcp_without_match_is_empty() {
    assert_eq!(
        reject(pb::Match::Source(pb::Tcp { r#match: None })),
        InvalidMatch::Empty
    );
}

#[test]
fn tap_port_range_decoding() {
    let dec = |min, max| TcpMatch::try_from(ports(min, max));
    assert_eq!(dec(80, 90), Ok(TcpMatch::PortRange(80, 90)));
    // A missing bound makes the range the single other port.
    assert_eq!(dec(80, 0), Ok(TcpMatch::PortRange(80, 80)));
    assert_eq!(dec(0, 90), Ok(TcpMatch::PortRange(90, 90)));
    assert_eq!(dec(0, 0), Err(InvalidMatch::Empty));
    assert_eq!(dec(90, 80), Err(InvalidMatch::InvalidPort));
    assert_eq!(dec(1, 65_536), Err(InvalidMatch::InvalidPort));
    assert_eq!(dec(70_000, 0), Err(InvalidMatch::InvalidPort));
    assert_eq!(dec(1, 65_535), Ok(TcpMatch::PortRange(1, 65_535)));
}

#[test]
fn tap_netmask_decoding() {
    let dec = |t| TcpMatch::try_from(t);
    assert_eq!(
        dec(netmask(v4([10, 0, 0, 0]), 8)),
        Ok(TcpMatch::Net(NetMatch::Net4("10.0.0.0/8".parse().unwrap())))
    );
    assert_eq!(
        dec(netmask(IpAddr::V6(Ipv6Addr::LOCALHOST), 128)),
        Ok(TcpMatch::Net(NetMatch::Net6("::1/128".parse().unwrap())))
    );
    assert_eq!(dec(netmask(v4([10, 0, 0, 0]), 0)), Err(InvalidMatch::Empty));
    assert_eq!(
        dec(netmask(v4([10, 0, 0, 0]), 33)),
        Err(InvalidMatch::InvalidNetwork)
    );
    assert_eq!(
        dec(netmask(v4([10, 0, 0, 0]), 256)),
        Err(InvalidMatch::InvalidNetwork)
    );
    assert_eq!(
        dec(netmask(IpAddr::V6(Ipv6Addr::LOCALHOST), 129)),
        Err(InvalidMatch::InvalidNetwork)
    );
    let no_ip = |ip| pb::Tcp {
        r#match: Some(pb::tcp::Match::Netmask(pb::tcp::Netmask { ip, mask: 8 })),
    };
    assert_eq!(dec(no_ip(None)), Err(InvalidMatch::Empty));
    assert_eq!(
        dec(no_ip(Some(IpAddress { ip: None }))),
        Err(InvalidMatch::Empty)
    );
}

// === decoding: labels and HTTP ===

#[test]
fn tap_label_requires_key_and_value() {
    assert_eq!(
        reject(pb::Match::DestinationLabel(label("", "x"))),
        InvalidMatch::Empty
    );
    assert_eq!(
        reject(pb::Match::RouteLabel(label("k", ""))),
        InvalidMatch::Empty
    );
    let Match::DestinationLabel(l) = decode(pb::Match::DestinationLabel(label("pod", "web-0")))
    else {
        panic!("not a destination label match");
    };
    assert_eq!((l.key(), l.value()), ("pod", "web-0"));
}

#[test]
fn tap_http_decoding_rejects_missing_fields() {
    assert_eq!(
        reject(pb::Match::Http(pb::Http { r#match: None })),
        InvalidMatch::Empty
    );
    assert_eq!(
        reject(http(pb::http::Match::Scheme(http_types::Scheme {
            r#type: None
        }))),
        InvalidMatch::Empty
    );
    assert_eq!(
        reject(http(pb::http::Match::Method(HttpMethod { r#type: None }))),
        InvalidMatch::Empty
    );
    let unset = pb::http::StringMatch { r#match: None };
    assert_eq!(
        reject(http(pb::http::Match::Authority(unset.clone()))),
        InvalidMatch::Empty
    );
    assert_eq!(
        reject(http(pb::http::Match::Path(unset))),
        InvalidMatch::Empty
    );
}

#[test]
fn tap_scheme_decoding() {
    let reg = |r: scheme::Registered| scheme::Type::Registered(r.into());
    let dec = |t| decode(scheme_type(t));
    assert_eq!(
        dec(reg(scheme::Registered::Http)),
        Match::Http(HttpMatch::Scheme(Scheme::Http))
    );
    assert_eq!(
        dec(reg(scheme::Registered::Https)),
        Match::Http(HttpMatch::Scheme(Scheme::Https))
    );
    assert_eq!(
        dec(scheme::Type::Unregistered("https".into())),
        Match::Http(HttpMatch::Scheme(Scheme::Https))
    );
    assert_eq!(
        dec(scheme::Type::Unregistered("grpc".into())),
        Match::Http(HttpMatch::Scheme(Scheme::Other("grpc".into())))
    );
    assert_eq!(
        reject(scheme_type(scheme::Type::Registered(7))),
        InvalidMatch::InvalidScheme
    );
    assert_eq!(
        reject(scheme_type(scheme::Type::Unregistered("http://".into()))),
        InvalidMatch::InvalidScheme
    );
    assert_eq!(
        reject(scheme_type(scheme::Type::Unregistered("a".repeat(65)))),
        InvalidMatch::InvalidScheme
    );
}

#[test]
fn tap_method_decoding() {
    assert_eq!(
        decode(method_type(http_method::Type::Registered(
            http_method::Registered::Post.into()
        ))),
        Match::Http(HttpMatch::Method(http::Method::POST))
    );
    assert_eq!(
        decode(method_type(http_method::Type::Unregistered("PURGE".into()))),
        Match::Http(HttpMatch::Method(
            http::Method::from_bytes(b"PURGE").unwrap()
        ))
    );
    assert_eq!(
        reject(method_type(http_method::Type::Registered(9))),
        InvalidMatch::InvalidHttpMethod
    );
    assert_eq!(
        reject(method_type(http_method::Type::Unregistered(
            "BAD METHOD".into()
        ))),
        InvalidMatch::InvalidHttpMethod
    );
    assert_eq!(
        reject(method_type(http_method::Type::Unregistered(String::new()))),
        InvalidMatch::InvalidHttpMethod
    );
}

// === matching ===

#[test]
fn tap_matches_source_and_destination() {
    let r = req();
    let m = |t| decode(t).matches(&r);
    assert!(m(pb::Match::Source(netmask(v4([10, 1, 0, 0]), 16))));
    assert!(!m(pb::Match::Source(netmask(v4([10, 4, 0, 0]), 16))));
    assert!(m(pb::Match::Destination(netmask(v4([10, 4, 5, 6]), 32))));
    assert!(m(pb::Match::Source(ports(40000, 40010))));
    assert!(m(pb::Match::Destination(ports(8080, 0))));
    assert!(m(pb::Match::Destination(ports(0, 8080))));
    assert!(!m(pb::Match::Destination(ports(8081, 9000))));
    assert!(!m(pb::Match::Destination(ports(80, 8079))));
    // Address families never cross, even for ::/1 and IPv4-mapped addresses.
    assert!(!m(pb::Match::Source(netmask(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        1
    ))));
    let mut r6 = req();
    r6.src = "[::ffff:10.1.2.3]:40000".parse().unwrap();
    assert!(!decode(pb::Match::Source(netmask(v4([10, 0, 0, 0]), 8))).matches(&r6));
    assert!(decode(pb::Match::Source(netmask(
        "::ffff:0:0".parse().unwrap(),
        96
    )))
    .matches(&r6));
}

#[test]
fn tap_matches_labels() {
    let r = req();
    let m = |t| decode(t).matches(&r);
    assert!(m(pb::Match::DestinationLabel(label("pod", "web-0"))));
    assert!(!m(pb::Match::DestinationLabel(label("pod", "web-1"))));
    assert!(!m(pb::Match::DestinationLabel(label("route", "GET /api"))));
    assert!(m(pb::Match::RouteLabel(label("route", "GET /api"))));
    assert!(!m(pb::Match::RouteLabel(label("pod", "web-0"))));
    let mut none = req();
    none.dst_labels = &();
    none.route_labels = &();
    assert!(!decode(pb::Match::DestinationLabel(label("pod", "web-0"))).matches(&none));
    assert!(decode(not(pb::Match::RouteLabel(label("route", "GET /api")))).matches(&none));
}

#[test]
fn tap_label_sources() {
    let btree: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
    let hash: HashMap<String, String> = [("a".to_string(), "1".to_string())].into();
    let owned = vec![("a".to_string(), "1".to_string())];
    let arc = std::sync::Arc::new(btree.clone());
    let m = decode(pb::Match::DestinationLabel(label("a", "1")));
    let slice = owned.as_slice();
    let pairs = [("a", "1")];
    let sources: [&dyn Labels; 6] = [&btree, &hash, &owned, &slice, &arc, &pairs];
    for labels in sources {
        let mut r = req();
        r.dst_labels = labels;
        assert!(m.matches(&r));
    }
}

#[test]
fn tap_matches_scheme() {
    let reg = |r: scheme::Registered| scheme_type(scheme::Type::Registered(r.into()));
    let http_ = decode(reg(scheme::Registered::Http));
    let https = decode(reg(scheme::Registered::Https));
    let grpc = decode(scheme_type(scheme::Type::Unregistered("grpc".into())));
    let upper = decode(scheme_type(scheme::Type::Unregistered("HTTP".into())));
    let mut r = req();
    // A request without a scheme is taken as plain HTTP.
    assert!(http_.matches(&r) && !https.matches(&r) && !grpc.matches(&r));
    r.scheme = Some("https");
    assert!(!http_.matches(&r) && https.matches(&r));
    r.scheme = Some("HTTPS");
    assert!(https.matches(&r));
    r.scheme = Some("GRPC");
    assert!(grpc.matches(&r) && !http_.matches(&r));
    // An unregistered, non-lower-case `HTTP` is a non-standard scheme in linkerd.
    r.scheme = Some("http");
    assert!(!upper.matches(&r));
}

#[test]
fn tap_matches_method() {
    let get = decode(method_type(http_method::Type::Registered(
        http_method::Registered::Get.into(),
    )));
    let purge = decode(method_type(http_method::Type::Unregistered("PURGE".into())));
    let mut r = req();
    assert!(get.matches(&r) && !purge.matches(&r));
    r.method = "PURGE";
    assert!(!get.matches(&r) && purge.matches(&r));
    r.method = "get";
    assert!(!get.matches(&r));
}

#[test]
fn tap_matches_authority_and_path() {
    let mut r = req();
    let m = |t: pb::http::Match, r: &Observed<'_>| decode(http(t)).matches(r);
    let authority = "web.emojivoto.svc.cluster.local:8080";
    assert!(m(pb::http::Match::Authority(exact(authority)), &r));
    assert!(!m(pb::http::Match::Authority(exact("web")), &r));
    assert!(m(pb::http::Match::Authority(prefix("web.")), &r));
    assert!(!m(pb::http::Match::Authority(prefix("api.")), &r));
    assert!(m(pb::http::Match::Path(exact("/api/list")), &r));
    assert!(!m(pb::http::Match::Path(exact("/api")), &r));
    assert!(m(pb::http::Match::Path(prefix("/api")), &r));
    assert!(m(pb::http::Match::Path(prefix("")), &r));
    assert!(!m(pb::http::Match::Path(prefix("/apis")), &r));
    // Without an authority, no authority match matches, not even an empty prefix.
    r.authority = None;
    assert!(!m(pb::http::Match::Authority(prefix("")), &r));
}

#[test]
fn tap_matches_nested_trees() {
    let r = req();
    let m = |t| decode(t).matches(&r);
    let yes = || pb::Match::Destination(ports(8080, 0));
    let no = || pb::Match::Destination(ports(9090, 0));
    assert!(m(all(vec![])));
    assert!(!m(any(vec![])));
    assert!(m(all(vec![yes(), yes()])));
    assert!(!m(all(vec![yes(), no()])));
    assert!(m(any(vec![no(), yes()])));
    assert!(!m(any(vec![no(), no()])));
    assert!(m(not(no())));
    assert!(!m(not(yes())));
    assert!(m(not(not(yes()))));
    // (src in 10.1/16 and path /api*) and not (method POST or dst label pod=web-1)
    let tree = all(vec![
        pb::Match::Source(netmask(v4([10, 1, 0, 0]), 16)),
        http(pb::http::Match::Path(prefix("/api"))),
        not(any(vec![
            method_type(http_method::Type::Registered(
                http_method::Registered::Post.into(),
            )),
            pb::Match::DestinationLabel(label("pod", "web-1")),
        ])),
    ]);
    let tree = decode(tree);
    assert!(tree.matches(&r));
    let mut post = req();
    post.method = "POST";
    assert!(!tree.matches(&post));
    let mut other_path = req();
    other_path.path = "/metrics";
    assert!(!tree.matches(&other_path));
}

#[test]
fn tap_observed_debug_omits_labels() {
    let s = format!("{:?}", req());
    assert!(s.contains("10.1.2.3:40000") && s.contains("/api/list"));
}
