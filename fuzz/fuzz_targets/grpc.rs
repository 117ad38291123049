//! `grpc::is_grpc` and `grpc::parse_grpc_status` on arbitrary bytes (a `content-type` and a
//! `grpc-status` value from a peer). No panics; `is_grpc` ignores ASCII case, looks at the
//! first 17 bytes only, and is true after `application/grpc` exactly for nothing, `+…` or
//! `;…` (never for gRPC-Web); a status is only read from digits (after an optional `+`,
//! which `u32::from_str` takes) within whitespace, and every status reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::grpc::{is_grpc, parse_grpc_status};

const GRPC: &[u8] = b"application/grpc";

fn check_content_type(data: &[u8]) {
    let answer = is_grpc(data);
    assert_eq!(is_grpc(&data.to_ascii_lowercase()), answer, "case");
    assert_eq!(is_grpc(&data.to_ascii_uppercase()), answer, "case");
    if answer {
        assert!(data[..GRPC.len()].eq_ignore_ascii_case(GRPC));
        // Only the media type and the byte after it decide.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"+x;y=z");
        assert!(is_grpc(&longer));
        assert!(is_grpc(&data[..GRPC.len()]));
    }

    let mut after = GRPC.to_vec();
    after.extend_from_slice(data);
    let expected = matches!(data.first(), None | Some(b'+' | b';'));
    assert_eq!(
        is_grpc(&after),
        expected,
        "{:?}",
        String::from_utf8_lossy(&after)
    );

    let mut web = b"application/grpc-web".to_vec();
    web.extend_from_slice(data);
    assert!(
        !is_grpc(&web),
        "gRPC-Web {:?}",
        String::from_utf8_lossy(&web)
    );
}

fn check_status(data: &[u8]) {
    let Some(status) = parse_grpc_status(data) else {
        return;
    };
    let text = std::str::from_utf8(data).expect("a status from invalid UTF-8");
    let digits = text.trim_ascii();
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "status {status} from {text:?}"
    );
    for again in [
        status.to_string(),
        format!(" {status}\t"),
        format!("{digits}\r\n"),
    ] {
        assert_eq!(
            parse_grpc_status(again.as_bytes()),
            Some(status),
            "{again:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check_content_type(data);
    check_status(data);
});
