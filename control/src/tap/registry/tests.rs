//! The live-tap registry: matching, the limit, event contents, and the bounded channel.

use super::*;
use crate::tap::Match;
use linkerd2_proxy_api::tap::observe_request;
use linkerd2_proxy_api::tap::observe_request::r#match as pb;
use linkerd2_proxy_api::tap::tap_event;

fn path_prefix(prefix: &str) -> Match {
    let m = pb::Match::Http(pb::Http {
        r#match: Some(pb::http::Match::Path(pb::http::StringMatch {
            r#match: Some(pb::http::string_match::Match::Prefix(prefix.into())),
        })),
    });
    Match::try_new(Some(observe_request::Match { r#match: Some(m) })).expect("valid match")
}

fn request<'a>(path: &'a str, headers: &'a http::HeaderMap) -> TapRequest<'a> {
    TapRequest {
        observed: Observed {
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:8080".parse().unwrap(),
            dst_labels: &(),
            route_labels: &(),
            scheme: Some("http"),
            method: "GET",
            authority: Some("web.ns:8080"),
            path,
        },
        outbound: false,
        src_tls: TapTls::Established {
            peer: Some("client.ns.serviceaccount.identity.linkerd.cluster.local"),
        },
        dst_meta: None,
        http2: true,
        path_and_query: path,
        headers,
    }
}

type TestTap = (Arc<Tap>, mpsc::Receiver<api::TapEvent>, Arc<TapMetrics>);

fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, http::HeaderValue::from_static(value));
    }
    map
}

fn tap(limit: usize, capacity: usize, headers: bool) -> TestTap {
    let (tx, rx) = mpsc::channel(capacity);
    let metrics = Arc::new(TapMetrics::default());
    let tap = Tap::new(7, limit, path_prefix("/api"), headers, tx, metrics.clone());
    (Arc::new(tap), rx, metrics)
}

fn http_event(event: &api::TapEvent) -> &pb_http::Event {
    match &event.event {
        Some(tap_event::Event::Http(tap_event::Http { event: Some(e) })) => e,
        other => panic!("not an HTTP event: {other:?}"),
    }
}

#[test]
fn takes_matching_requests_up_to_the_limit_with_sequential_ids() {
    let (tap, mut rx, metrics) = tap(2, 10, false);
    assert!(
        tap.tap(&request("/other", &http::HeaderMap::new()))
            .is_none(),
        "not matched"
    );
    let a = tap
        .tap(&request("/api/a", &http::HeaderMap::new()))
        .expect("first");
    let b = tap
        .tap(&request("/api/b", &http::HeaderMap::new()))
        .expect("second");
    assert!(
        tap.tap(&request("/api/c", &http::HeaderMap::new()))
            .is_none(),
        "over the limit"
    );
    assert!(!tap.is_under_limit());
    assert_eq!((a.id.base, a.id.stream), (7, 0));
    assert_eq!((b.id.base, b.id.stream), (7, 1));
    let first = rx.try_recv().expect("request_init");
    let pb_http::Event::RequestInit(init) = http_event(&first) else {
        panic!("expected request_init");
    };
    assert_eq!(init.path, "/api/a");
    assert_eq!(init.authority, "web.ns:8080");
    assert!(init.headers.is_none(), "headers not asked for");
    assert_eq!(
        first.proxy_direction,
        tap_event::ProxyDirection::Inbound as i32
    );
    let labels = &first.source_meta.as_ref().unwrap().labels;
    assert_eq!(labels.get("tls").map(String::as_str), Some("true"));
    assert_eq!(
        labels.get("client_id").map(String::as_str),
        Some("client.ns.serviceaccount.identity.linkerd.cluster.local")
    );
    assert!(
        first.destination_meta.is_none(),
        "inbound has no destination metadata"
    );
    assert_eq!(metrics.sent.load(Ordering::Relaxed), 2);
}

#[test]
fn http2_headers_lead_with_pseudo_headers() {
    let (tap, mut rx, _) = tap(1, 10, true);
    let headers = headers(&[("x-test", "1")]);
    let _tapped = tap.tap(&request("/api", &headers)).expect("tapped");
    let event = rx.try_recv().unwrap();
    let pb_http::Event::RequestInit(init) = http_event(&event) else {
        panic!("expected request_init");
    };
    let names: Vec<&str> = init
        .headers
        .as_ref()
        .unwrap()
        .headers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(
        names,
        [":method", ":scheme", ":authority", ":path", "x-test"]
    );
}

#[test]
fn response_events_carry_status_bytes_grpc_status_and_trailers() {
    let (tap, mut rx, _) = tap(1, 10, true);
    let mut tapped = tap
        .tap(&request("/api", &http::HeaderMap::new()))
        .expect("tapped");
    let head = headers(&[("content-type", "application/grpc")]);
    tapped.response_init(200, true, &head, None);
    tapped.response_bytes(10);
    tapped.response_bytes(5);
    tapped.grpc_status(14);
    let trailers = headers(&[("grpc-status", "14")]);
    tapped.end(Some(&trailers));
    let _init = rx.try_recv().unwrap();
    let rsp = rx.try_recv().unwrap();
    let pb_http::Event::ResponseInit(init) = http_event(&rsp) else {
        panic!("expected response_init");
    };
    assert_eq!(init.http_status, 200);
    assert_eq!(init.headers.as_ref().unwrap().headers[0].name, ":status");
    let end = rx.try_recv().unwrap();
    let pb_http::Event::ResponseEnd(end) = http_event(&end) else {
        panic!("expected response_end");
    };
    assert_eq!(end.response_bytes, 15);
    assert_eq!(
        end.eos.as_ref().unwrap().end,
        Some(api::eos::End::GrpcStatusCode(14))
    );
    assert!(end.since_response_init.is_some());
    assert_eq!(
        end.trailers.as_ref().unwrap().headers[0].name,
        "grpc-status"
    );
}

#[test]
fn a_failure_before_the_response_has_no_response_time_and_may_carry_a_reset() {
    let (tap, mut rx, _) = tap(1, 10, false);
    let tapped = tap
        .tap(&request("/api", &http::HeaderMap::new()))
        .expect("tapped");
    tapped.fail(Some(2));
    let _init = rx.try_recv().unwrap();
    let end = rx.try_recv().unwrap();
    let pb_http::Event::ResponseEnd(end) = http_event(&end) else {
        panic!("expected response_end");
    };
    assert!(end.since_response_init.is_none());
    assert_eq!(
        end.eos.as_ref().unwrap().end,
        Some(api::eos::End::ResetErrorCode(2))
    );
}

#[test]
fn a_full_channel_drops_and_counts_events_and_never_blocks() {
    let (tap, mut rx, metrics) = tap(100, 2, false);
    let mut tapped = Vec::new();
    for i in 0..5 {
        let path = format!("/api/{i}");
        if let Some(t) = tap.tap(&request(&path, &http::HeaderMap::new())) {
            tapped.push(t);
        }
    }
    // Two request_init events fit; the other requests are not tapped at all.
    assert_eq!(tapped.len(), 2);
    assert_eq!(metrics.sent.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.dropped.load(Ordering::Relaxed), 3);
    for t in tapped.drain(..) {
        t.end(None);
    }
    assert_eq!(metrics.dropped.load(Ordering::Relaxed), 5);
    assert!(rx.try_recv().is_ok());
    assert!(metrics
        .render()
        .contains("tap_events_total{result=\"dropped\"} 5"));
}

#[test]
fn the_channel_closes_when_the_tap_and_its_requests_are_gone() {
    let (tap, mut rx, _) = tap(1, 10, false);
    let set = TapSet::new(vec![Arc::downgrade(&tap)]);
    let tapped = set.tap(&request("/api", &http::HeaderMap::new()));
    assert_eq!(tapped.len(), 1);
    drop(tap);
    // The set no longer offers requests to the dropped tap.
    assert!(set
        .tap(&request("/api", &http::HeaderMap::new()))
        .is_empty());
    let _init = rx.try_recv().unwrap();
    assert!(matches!(
        rx.try_recv(),
        Err(mpsc::error::TryRecvError::Empty)
    ));
    tapped.into_iter().for_each(|t| t.end(None));
    let _end = rx.try_recv().unwrap();
    assert!(matches!(
        rx.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
}
