//! `server_name` on arbitrary extension data, checked against its documented rules, and the
//! same data inside a well-formed ClientHello record, where `detect` must report exactly
//! what `server_name` says.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::detect::{detect, server_name, Detected, Protocol};

/// A ClientHello record whose only extension is `server_name` (type 0) with `data`.
fn hello_with_sni_extension(data: &[u8]) -> Option<Vec<u8>> {
    let mut extensions = vec![0, 0];
    extensions.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
    extensions.extend_from_slice(data);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // legacy_session_id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher_suites
    body.extend_from_slice(&[1, 0]); // legacy_compression_methods
    body.extend_from_slice(&u16::try_from(extensions.len()).ok()?.to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&u32::try_from(body.len()).ok()?.to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    if handshake.len() > 16 << 10 {
        return None;
    }
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&u16::try_from(handshake.len()).ok()?.to_be_bytes());
    record.extend_from_slice(&handshake);
    Some(record)
}

fuzz_target!(|data: &[u8]| {
    let name = server_name(data);
    if let Some(name) = &name {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert!(!name.ends_with('.'), "{name:?}");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'-' | b'.' | b'_')),
            "{name:?}"
        );
    }

    if let Some(record) = hello_with_sni_extension(data) {
        assert_eq!(
            detect(&record),
            Detected::Protocol(Protocol::Tls { sni: name.clone() })
        );
        // Every strict prefix of a valid record waits for the rest.
        for cut in [0, 1, 4, 5, 6, record.len() / 2, record.len() - 1] {
            assert_eq!(detect(&record[..cut]), Detected::NeedMore, "cut at {cut}");
        }
    }

    // And the raw bytes behind a handshake record header.
    let mut raw = vec![0x16, 3, 1];
    raw.extend_from_slice(&(data.len().min(u16::MAX.into()) as u16).to_be_bytes());
    raw.extend_from_slice(data);
    let _ = detect(&raw);
});
