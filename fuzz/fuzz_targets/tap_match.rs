//! `tap::Match::try_new` on an `ObserveRequest.match` decoded (prost) from arbitrary bytes,
//! then `Match::matches` on fixed requests and on requests built to satisfy each leaf.
//!
//! Checked, besides "no panic": decoding is stable (the message encoded again decodes to the
//! same tree or the same error); a tree's leaves hold what `try_new` promises (port ranges
//! `1 ≤ min ≤ max`, non-empty label keys and values); each leaf matches a request made for
//! it (an address in its network or port range, its label, scheme, method, authority or
//! path) and its negation does not, except an unregistered `HTTP`-like scheme (any case
//! but lower), which as in linkerd matches no request at all; an
//! IPv4 network never matches an IPv6 address, nor the reverse; a label match never matches
//! a request without labels, an authority match one without authority.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use linkerd2_proxy_api::tap::observe_request;
use prost::Message;
use ringlink_control::tap::{HttpMatch, Match, NetMatch, Observed, Scheme, StringMatch, TcpMatch};

/// A request an `Observed` view borrows from.
#[derive(Clone)]
struct Request {
    src: SocketAddr,
    dst: SocketAddr,
    dst_labels: Vec<(String, String)>,
    route_labels: Vec<(String, String)>,
    scheme: Option<String>,
    method: String,
    authority: Option<String>,
    path: String,
}

// === impl Request ===

impl Request {
    fn base() -> Self {
        Request {
            src: SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 40000),
            dst: SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 8080),
            dst_labels: vec![("namespace".into(), "emojivoto".into())],
            route_labels: Vec::new(),
            scheme: None,
            method: "GET".into(),
            authority: Some("web.emojivoto.svc.cluster.local:80".into()),
            path: "/api/vote".into(),
        }
    }

    /// Requests with a bit of everything, for whole trees.
    fn fixed() -> Vec<Self> {
        let mut other = Request::base();
        other.src = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 1);
        other.dst = SocketAddr::new(Ipv4Addr::new(10, 1, 2, 3).into(), 65535);
        other.route_labels = vec![("route".into(), "vote".into())];
        other.scheme = Some("https".into());
        other.method = "POST".into();
        other.authority = None;
        other.path = String::new();
        vec![Request::base(), other]
    }

    fn view(&self) -> Observed<'_> {
        Observed {
            src: self.src,
            dst: self.dst,
            dst_labels: &self.dst_labels,
            route_labels: &self.route_labels,
            scheme: self.scheme.as_deref(),
            method: &self.method,
            authority: self.authority.as_deref(),
            path: &self.path,
        }
    }
}

fn leaves<'m>(m: &'m Match, out: &mut Vec<&'m Match>) {
    match m {
        Match::Any(ms) | Match::All(ms) => ms.iter().for_each(|m| leaves(m, out)),
        Match::Not(m) => leaves(m, out),
        leaf => out.push(leaf),
    }
}

/// An address that `tcp` matches, and one of the other family.
fn tcp_witness(tcp: &TcpMatch, like: SocketAddr) -> (SocketAddr, SocketAddr) {
    match tcp {
        TcpMatch::PortRange(min, max) => {
            assert!(1 <= *min && min <= max, "{tcp:?}");
            (
                SocketAddr::new(like.ip(), *max),
                SocketAddr::new(like.ip(), *min),
            )
        }
        TcpMatch::Net(NetMatch::Net4(net)) => (
            SocketAddr::new(net.broadcast().into(), like.port()),
            SocketAddr::new(IpAddr::V6(net.network().to_ipv6_mapped()), like.port()),
        ),
        TcpMatch::Net(NetMatch::Net6(net)) => (
            SocketAddr::new(net.network().into(), like.port()),
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), like.port()),
        ),
    }
}

/// Builds a request `leaf` matches and checks it does; checks the requests it must not match.
fn check_leaf(leaf: &Match) {
    let mut yes = Request::base();
    let mut no = None;
    match leaf {
        Match::Source(tcp) => {
            let (inside, other) = tcp_witness(tcp, yes.src);
            yes.src = inside;
            if matches!(tcp, TcpMatch::Net(_)) {
                let mut r = Request::base();
                r.src = other;
                no = Some(r);
            }
        }
        Match::Destination(tcp) => {
            let (inside, other) = tcp_witness(tcp, yes.dst);
            yes.dst = inside;
            if matches!(tcp, TcpMatch::Net(_)) {
                let mut r = Request::base();
                r.dst = other;
                no = Some(r);
            }
        }
        Match::DestinationLabel(label) | Match::RouteLabel(label) => {
            assert!(!label.key().is_empty() && !label.value().is_empty());
            let pair = vec![(label.key().to_string(), label.value().to_string())];
            if matches!(leaf, Match::DestinationLabel(_)) {
                yes.dst_labels = pair;
            } else {
                yes.route_labels = pair;
            }
            let mut r = Request::base();
            r.dst_labels.clear();
            r.route_labels.clear();
            no = Some(r);
        }
        Match::Http(HttpMatch::Scheme(scheme)) => match scheme {
            Scheme::Http => yes.scheme = None,
            Scheme::Https => yes.scheme = Some("HTTPS".into()),
            Scheme::Other(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
                // An unregistered spelling of `http`/`https` other than lower case stays
                // unregistered (`http::uri::Scheme::from_str` is exact), and linkerd's
                // equality never finds a standard scheme equal to another one: it matches
                // no request, with any scheme or none, and its negation matches them all.
                let not = Match::Not(Box::new(leaf.clone()));
                let spellings = [s.as_str(), "http", "HTTP", "https", "HTTPS"];
                for scheme in spellings.into_iter().map(Some).chain([None]) {
                    let mut r = Request::base();
                    r.scheme = scheme.map(str::to_string);
                    assert!(!leaf.matches(&r.view()), "{leaf:?} matches {:?}", r.view());
                    assert!(not.matches(&r.view()));
                }
                return;
            }
            Scheme::Other(s) => {
                yes.scheme = Some(s.to_ascii_uppercase());
                let mut r = Request::base();
                r.scheme = Some("http".into());
                no = Some(r);
            }
        },
        Match::Http(HttpMatch::Method(method)) => yes.method = method.as_str().to_string(),
        Match::Http(HttpMatch::Authority(m)) => {
            yes.authority = Some(witness_string(m));
            let mut r = Request::base();
            r.authority = None;
            no = Some(r);
        }
        Match::Http(HttpMatch::Path(m)) => yes.path = witness_string(m),
        Match::Any(_) | Match::All(_) | Match::Not(_) => unreachable!("not a leaf"),
    }
    assert!(
        leaf.matches(&yes.view()),
        "{leaf:?} does not match {:?}",
        yes.view()
    );
    let not = Match::Not(Box::new(leaf.clone()));
    assert!(!not.matches(&yes.view()));
    if let Some(no) = no {
        assert!(
            !leaf.matches(&no.view()),
            "{leaf:?} matches {:?}",
            no.view()
        );
    }
}

fn witness_string(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(s) => s.clone(),
        StringMatch::Prefix(p) => format!("{p}/more"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(pb) = observe_request::Match::decode(data) else {
        return;
    };
    let decoded = Match::try_new(Some(pb.clone()));
    let again = observe_request::Match::decode(pb.encode_to_vec().as_slice())
        .expect("an encoded match decodes");
    assert_eq!(
        Match::try_new(Some(again)),
        decoded,
        "decoded differently once encoded"
    );

    let tree = match decoded {
        Ok(tree) => tree,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    for request in Request::fixed() {
        let answer = tree.matches(&request.view());
        assert_eq!(
            Match::Not(Box::new(tree.clone())).matches(&request.view()),
            !answer
        );
    }
    let mut found = Vec::new();
    leaves(&tree, &mut found);
    for leaf in found {
        check_leaf(leaf);
    }
});
