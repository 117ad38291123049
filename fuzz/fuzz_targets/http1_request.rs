//! `parse_request` on arbitrary bytes with small and default limits. A complete head must
//! respect the limits, be what a shorter read of the same bytes would also have given, frame
//! its body without panicking, and survive encode -> parse unchanged (as parsed, in origin
//! form, and with hop-by-hop fields stripped). An `Upgrade` it asks for is a trimmed,
//! non-empty protocol other than `h2c`, and none is left once hop-by-hop fields are gone.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::http1::{
    encode_request, keep_alive, parse_request, request_body, strip_hop_by_hop, upgrade_protocol,
    BodyKind, Limits, Parsed, RequestHead,
};

const SMALL: Limits = Limits {
    max_head_bytes: 64,
    max_headers: 4,
};

/// `head` encoded and parsed again (with limits that just fit) gives `head` back.
fn round_trip(head: &RequestHead) -> Vec<u8> {
    let mut encoded = Vec::new();
    encode_request(head, &mut encoded);
    let limits = Limits {
        max_head_bytes: encoded.len(),
        max_headers: head.headers.len(),
    };
    match parse_request(&encoded, &limits) {
        Ok(Parsed::Complete(again, n)) => {
            assert_eq!(
                n,
                encoded.len(),
                "encoding {:?}",
                String::from_utf8_lossy(&encoded)
            );
            assert_eq!(
                &again,
                head,
                "encoding {:?}",
                String::from_utf8_lossy(&encoded)
            );
        }
        other => panic!(
            "encoding {:?} of {head:?} parsed as {other:?}",
            String::from_utf8_lossy(&encoded)
        ),
    }
    encoded
}

fuzz_target!(|data: &[u8]| {
    for limits in [SMALL, Limits::default()] {
        match parse_request(data, &limits) {
            Ok(Parsed::Complete(head, n)) => {
                assert!(n <= data.len() && n <= limits.max_head_bytes);
                assert!(head.headers.len() <= limits.max_headers);
                // The head alone parses the same: nothing after it mattered.
                assert_eq!(
                    parse_request(&data[..n], &limits),
                    Ok(Parsed::Complete(head.clone(), n))
                );
                // A shorter read of it is only ever "wait for more".
                for cut in [n - 1, n / 2] {
                    assert_eq!(parse_request(&data[..cut], &limits), Ok(Parsed::Partial));
                }

                match request_body(&head) {
                    Ok(BodyKind::Length(0)) => panic!("Length(0) instead of Empty"),
                    Ok(BodyKind::UntilClose) => panic!("a request body until close"),
                    Ok(_) => {}
                    Err(error) => assert_eq!(error.status(), 400),
                }
                let _ = keep_alive(head.version, &head.headers);
                let _ = head.authority();
                if let Some(protocol) = upgrade_protocol(&head) {
                    assert!(!protocol.is_empty() && !protocol.eq_ignore_ascii_case("h2c"));
                    assert_eq!(protocol.trim(), protocol);
                    assert!(head.headers.has_token("connection", "upgrade"));
                }

                round_trip(&head);

                let mut origin = head.clone();
                origin.to_origin_form();
                if head.is_absolute_form() {
                    assert!(origin.target.starts_with('/'), "{:?}", origin.target);
                    assert!(!origin.is_absolute_form(), "{:?}", origin.target);
                } else {
                    assert_eq!(origin, head);
                }
                round_trip(&origin);

                let mut stripped = head.clone();
                strip_hop_by_hop(&mut stripped.headers);
                for name in [
                    "connection",
                    "keep-alive",
                    "proxy-connection",
                    "te",
                    "transfer-encoding",
                    "upgrade",
                ] {
                    assert_eq!(stripped.headers.count(name), 0, "{name} left");
                }
                assert_eq!(upgrade_protocol(&stripped), None);
                round_trip(&stripped);
            }
            Ok(Parsed::Partial) => assert!(data.len() < limits.max_head_bytes),
            Err(error) => assert!(matches!(error.status(), 400 | 431)),
        }
    }
});
