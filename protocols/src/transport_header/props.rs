//! Property tests: any header round-trips through [`encode`] and [`decode`] with any data
//! after it; every proper prefix of an encoding needs more; [`decode`] never panics, never
//! consumes more than it was given, and its answers are final.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

// === strategies ===

/// DNS names as linkerd2-proxy accepts them, in any case, some with a trailing dot.
fn name() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z_]([a-zA-Z0-9_-]{0,10}[a-zA-Z0-9_])?";
    (vec(label, 1..6), any::<bool>()).prop_map(|(labels, dot)| {
        let mut name = labels.join(".");
        if dot {
            name.push('.');
        }
        name
    })
}

fn protocol() -> impl Strategy<Value = Option<SessionProtocol>> {
    prop_oneof![
        Just(None),
        Just(Some(SessionProtocol::Http1)),
        Just(Some(SessionProtocol::Http2)),
    ]
}

/// Headers that [`decode`] accepts (port 1 and up), names in any case.
fn header() -> impl Strategy<Value = TransportHeader> {
    (1..=u16::MAX, prop::option::of(name()), protocol()).prop_map(|(port, name, protocol)| {
        TransportHeader {
            port,
            name,
            protocol,
        }
    })
}

/// Bytes that mostly start like a header, then anything.
fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(Vec::new()),
        Just(PREFACE[..10].to_vec()),
        Just(PREFACE.to_vec()),
        Just([PREFACE, &[0, 0, 0]].concat()),
        (0u8..64).prop_map(|len| [PREFACE, &[0, 0, 0, len]].concat()),
        header().prop_map(|h| encode(&h)),
    ];
    (start, vec(any::<u8>(), 0..80)).prop_map(|(mut start, rest)| {
        start.extend(rest);
        start
    })
}

// === properties ===

proptest! {
    #[test]
    fn round_trips(h in header(), data in vec(any::<u8>(), 0..32)) {
        let encoded = encode(&h);
        let mut bytes = encoded.clone();
        bytes.extend_from_slice(&data);
        let expected = TransportHeader {
            name: h.name.as_ref().map(|n| n.to_ascii_lowercase()),
            ..h.clone()
        };
        prop_assert_eq!(
            decode(&bytes),
            Ok(Decoded::Header { header: expected.clone(), consumed: encoded.len() })
        );
        // And the decoded header encodes to the same bytes, up to the name's case.
        prop_assert_eq!(encode(&expected), encode(&TransportHeader { name: expected.name.clone(), ..h }));
    }

    #[test]
    fn proper_prefixes_need_more(h in header()) {
        let bytes = encode(&h);
        for end in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..end]), Ok(Decoded::NeedMore));
        }
    }

    #[test]
    fn encoded_length_is_the_message_length(h in header()) {
        let bytes = encode(&h);
        let len = u32::from_be_bytes([bytes[23], bytes[24], bytes[25], bytes[26]]) as usize;
        prop_assert_eq!(len, bytes.len() - 27);
        prop_assert!(bytes.starts_with(PREFACE));
    }

    #[test]
    fn decisions_are_final(bytes in any_bytes(), more in vec(any::<u8>(), 1..16)) {
        let answer = decode(&bytes);
        if let Ok(Decoded::Header { consumed, header }) = &answer {
            prop_assert!(*consumed <= bytes.len());
            prop_assert!(header.port != 0);
            // The header alone decodes the same, and re-encodes to an equal header.
            prop_assert_eq!(decode(&bytes[..*consumed]), answer.clone());
            let again = encode(header);
            prop_assert_eq!(
                decode(&again),
                Ok(Decoded::Header { header: header.clone(), consumed: again.len() })
            );
        }
        if answer != Ok(Decoded::NeedMore) {
            let mut longer = bytes.clone();
            longer.extend_from_slice(&more);
            prop_assert_eq!(decode(&longer), answer);
        }
    }

    #[test]
    fn any_message_decodes_or_fails_without_panicking(message in vec(any::<u8>(), 0..64)) {
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&message);
        match decode(&bytes) {
            Ok(Decoded::Header { consumed, .. }) => prop_assert_eq!(consumed, bytes.len()),
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(error) => prop_assert!(matches!(error, HeaderError::Invalid(_))),
        }
    }
}
