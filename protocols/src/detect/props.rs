//! Property tests: detection on any bytes never panics and always decides at
//! [`MAX_DETECT_BYTES`]; a decision is final; and no prefix of an HTTP/1 request, the HTTP/2
//! preface or a TLS ClientHello is ever decided as something else.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

// === strategies ===

/// Bytes that often start like one of the protocols, then anything.
fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(Vec::new()),
        Just(b"GET /".to_vec()),
        Just(b"PRI * HTTP/2.0\r\n".to_vec()),
        Just(vec![0x16, 3, 1]),
        Just(vec![0x16, 3, 3, 0, 40, 1, 0, 0, 36, 3, 3]),
    ];
    (start, vec(any::<u8>(), 0..max)).prop_map(|(mut start, rest)| {
        start.extend(rest);
        start
    })
}

/// Methods detection recognises: uppercase letters, `-` and `_`, 1 to 24 of them.
fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI",
        ])
        .prop_map(str::to_string),
        "[A-Z_-]{1,24}",
    ]
}

/// Request targets in each of the four forms.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,40}(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,20})?",
        "https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]{0,20})?",
        "[a-z0-9.-]{1,20}:[0-9]{1,5}",
        Just("*".to_string()),
    ]
}

/// A whole HTTP/1 request head (with bare LF line ends sometimes) and some body bytes.
fn http1_request() -> impl Strategy<Value = Vec<u8>> {
    (
        method(),
        target(),
        prop::bool::ANY,
        prop::bool::ANY,
        vec(("[A-Za-z0-9-]{1,12}", "[ -~]{0,20}"), 0..6),
        vec(any::<u8>(), 0..32),
    )
        .prop_map(|(method, target, http10, bare_lf, headers, body)| {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
            let mut out = format!("{method} {target} {version}{eol}");
            for (name, value) in headers {
                out.push_str(&format!("{name}: {}{eol}", value.trim()));
            }
            out.push_str(eol);
            let mut out = out.into_bytes();
            out.extend(body);
            out
        })
}

/// A valid host name as sent: labels of letters, digits, `-` and `_`, any case.
fn host_name() -> impl Strategy<Value = String> {
    vec("[A-Za-z0-9_-]{1,20}", 1..6).prop_map(|labels| labels.join("."))
}

/// A ClientHello record with random session id, cipher suites, compression methods and
/// extensions around an optional server name; and the name detection must report.
fn client_hello() -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
    let extension = (1u16..=u16::MAX, vec(any::<u8>(), 0..40));
    (
        0u8..=4,
        vec(any::<u8>(), 0..=32),
        vec(any::<u8>(), 1..20),
        vec(any::<u8>(), 1..4),
        vec(extension.clone(), 0..4),
        prop::option::of(host_name()),
        vec(extension, 0..4),
    )
        .prop_map(
            |(minor, session, suites, compression, before, sni, after)| {
                let mut extensions = Vec::new();
                let mut push = |kind: u16, data: &[u8]| {
                    extensions.extend_from_slice(&kind.to_be_bytes());
                    extensions.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    extensions.extend_from_slice(data);
                };
                for (kind, data) in &before {
                    push(*kind, data);
                }
                if let Some(name) = &sni {
                    let mut list = vec![0];
                    list.extend_from_slice(&(name.len() as u16).to_be_bytes());
                    list.extend_from_slice(name.as_bytes());
                    let mut data = (list.len() as u16).to_be_bytes().to_vec();
                    data.extend(list);
                    push(0, &data);
                }
                for (kind, data) in &after {
                    push(*kind, data);
                }
                let mut body = vec![3, 3];
                body.extend_from_slice(&[0xab; 32]);
                body.push(session.len() as u8);
                body.extend(session);
                body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
                body.extend(suites.iter().flat_map(|s| [0x13, *s]));
                body.push(compression.len() as u8);
                body.extend(compression);
                body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
                body.extend(extensions);
                let mut handshake = vec![1];
                handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
                handshake.extend(body);
                let mut record = vec![0x16, 3, minor];
                record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
                record.extend(handshake);
                (record, sni.map(|name| name.to_ascii_lowercase()))
            },
        )
}

/// Mostly bytes a host name may hold, dots often, anything sometimes.
fn name_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => prop::sample::select(
            b"abcxyzABCXYZ0189-_".to_vec()
        ),
        2 => Just(b'.'),
        1 => any::<u8>(),
    ]
}

// === properties ===

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: no panic, and a decision on a prefix is the decision on the whole (for
    /// inputs shorter than the longest request line, where no length limit is reached).
    #[test]
    fn decisions_are_final(bytes in any_bytes(300)) {
        let whole = detect(&bytes);
        for cut in 0..bytes.len() {
            let prefix = detect(&bytes[..cut]);
            if prefix != Detected::NeedMore {
                prop_assert_eq!(&prefix, &whole, "prefix of {} bytes", cut);
            }
        }
        let _ = server_name(&bytes);
    }

    /// `MAX_DETECT_BYTES` of anything is always decided.
    #[test]
    fn decides_at_the_limit(start in any_bytes(64), filler in any::<u8>()) {
        let mut bytes = start;
        bytes.resize(MAX_DETECT_BYTES, filler);
        prop_assert_ne!(detect(&bytes), Detected::NeedMore);
    }

    /// Every prefix of an HTTP/1 request is undecided or HTTP/1, and it is HTTP/1 once the
    /// request line is there.
    #[test]
    fn http1_prefixes_are_never_misdetected(request in http1_request()) {
        let line_end = request.iter().position(|b| *b == b'\n').unwrap();
        for cut in 0..=request.len() {
            let detected = detect(&request[..cut]);
            if cut > line_end {
                prop_assert_eq!(detected, Detected::Protocol(Protocol::Http1), "cut {}", cut);
            } else {
                prop_assert_eq!(detected, Detected::NeedMore, "cut {}", cut);
            }
        }
    }

    /// Every prefix of the HTTP/2 preface is undecided, and the preface with anything after
    /// it is HTTP/2.
    #[test]
    fn h2_prefixes_are_never_misdetected(frames in vec(any::<u8>(), 0..64)) {
        let mut bytes = H2_PREFACE.to_vec();
        bytes.extend(frames);
        for cut in 0..=bytes.len() {
            let expected = if cut < H2_PREFACE.len() {
                Detected::NeedMore
            } else {
                Detected::Protocol(Protocol::Http2)
            };
            prop_assert_eq!(detect(&bytes[..cut]), expected, "cut {}", cut);
        }
    }

    /// Every strict prefix of a ClientHello record is undecided, and the whole record (with
    /// anything after it) is TLS with its server name, lowercased.
    #[test]
    fn tls_prefixes_are_never_misdetected(
        (record, sni) in client_hello(),
        after in vec(any::<u8>(), 0..16),
    ) {
        for cut in 0..record.len() {
            prop_assert_eq!(detect(&record[..cut]), Detected::NeedMore, "cut {}", cut);
        }
        let expected = Detected::Protocol(Protocol::Tls { sni });
        prop_assert_eq!(detect(&record), expected.clone());
        let mut longer = record;
        longer.extend(after);
        prop_assert_eq!(detect(&longer), expected);
    }

    /// A server name that is empty, ends in a dot or has a byte outside letters, digits,
    /// `-`, `_` and `.` is refused; any other comes back lowercased.
    #[test]
    fn server_names_follow_the_rules(name in vec(name_byte(), 0..64)) {
        let mut data = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(&(name.len() as u16).to_be_bytes());
        data.extend_from_slice(&name);
        let valid = !name.is_empty()
            && name.last() != Some(&b'.')
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        let expected = valid.then(|| String::from_utf8(name.to_ascii_lowercase()).unwrap());
        prop_assert_eq!(server_name(&data), expected);
    }
}
