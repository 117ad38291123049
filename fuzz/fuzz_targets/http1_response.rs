//! `parse_response` on arbitrary bytes with small and default limits; a complete head frames
//! its body for any request method and survives encode -> parse unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::http1::{
    encode_response, parse_response, response_body, strip_hop_by_hop, BodyKind, Limits, Parsed,
    ResponseHead,
};

const SMALL: Limits = Limits {
    max_head_bytes: 64,
    max_headers: 4,
};

fn round_trip(head: &ResponseHead) {
    let mut encoded = Vec::new();
    encode_response(head, &mut encoded);
    let limits = Limits {
        max_head_bytes: encoded.len(),
        max_headers: head.headers.len(),
    };
    match parse_response(&encoded, &limits) {
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
}

fuzz_target!(|data: &[u8]| {
    for limits in [SMALL, Limits::default()] {
        match parse_response(data, &limits) {
            Ok(Parsed::Complete(head, n)) => {
                assert!(n <= data.len() && n <= limits.max_head_bytes);
                assert!(head.headers.len() <= limits.max_headers);
                assert!(head.status <= 999);
                assert_eq!(
                    parse_response(&data[..n], &limits),
                    Ok(Parsed::Complete(head.clone(), n))
                );
                for cut in [n - 1, n / 2] {
                    assert_eq!(parse_response(&data[..cut], &limits), Ok(Parsed::Partial));
                }

                for method in ["GET", "HEAD", "POST", "CONNECT"] {
                    match response_body(method, &head) {
                        Ok(BodyKind::Length(0)) => panic!("Length(0) instead of Empty"),
                        Ok(kind) if method == "HEAD" => assert_eq!(kind, BodyKind::Empty),
                        Ok(_) => {}
                        Err(error) => assert_eq!(error.status(), 400),
                    }
                }

                round_trip(&head);
                let mut stripped = head.clone();
                strip_hop_by_hop(&mut stripped.headers);
                round_trip(&stripped);
            }
            Ok(Parsed::Partial) => assert!(data.len() < limits.max_head_bytes),
            Err(error) => assert!(matches!(error.status(), 400 | 431)),
        }
    }
});
