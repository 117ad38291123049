use super::*;

/// The preface followed by `frame`.
fn after_preface(frame: &[u8]) -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(frame);
    bytes
}

/// An empty SETTINGS frame, as clients send it first.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

/// SETTINGS with SETTINGS_MAX_CONCURRENT_STREAMS = 100.
const ONE_SETTING: [u8; 15] = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];

#[test]
fn constants() {
    assert_eq!(PREFACE.len(), 24);
    assert_eq!(PREFACE_AND_FRAME_HEADER, PREFACE.len() + FRAME_HEADER_LEN);
    assert_eq!(&PREFACE[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
}

#[test]
fn settings_after_the_preface() {
    assert_eq!(
        check_preface(&after_preface(&EMPTY_SETTINGS)),
        PrefaceCheck::Settings
    );
    assert_eq!(
        check_preface(&after_preface(&ONE_SETTING)),
        PrefaceCheck::Settings
    );
    // Only the type and the ACK flag are checked: other flags, the length and the stream are
    // left to the h2 crate.
    assert_eq!(
        check_preface(&after_preface(&[0, 0, 5, 0x4, 0xfe, 0, 0, 0, 1])),
        PrefaceCheck::Settings
    );
}

#[test]
fn the_preface_waits_for_a_whole_frame_header() {
    let whole = after_preface(&ONE_SETTING);
    for cut in 0..PREFACE_AND_FRAME_HEADER {
        assert_eq!(
            check_preface(&whole[..cut]),
            PrefaceCheck::NeedMore,
            "cut at {cut}"
        );
    }
    for cut in PREFACE_AND_FRAME_HEADER..=whole.len() {
        assert_eq!(
            check_preface(&whole[..cut]),
            PrefaceCheck::Settings,
            "cut at {cut}"
        );
    }
}

#[test]
fn other_frames_after_the_preface() {
    // HEADERS on stream 1, PING, WINDOW_UPDATE, an unknown type.
    for (frame, kind) in [
        ([0, 0, 0, 0x1, 0x4, 0, 0, 0, 1], 0x1),
        ([0, 0, 8, 0x6, 0, 0, 0, 0, 0], 0x6),
        ([0, 0, 4, 0x8, 0, 0, 0, 0, 0], 0x8),
        ([0, 0, 0, 0xfa, 0, 0, 0, 0, 0], 0xfa),
    ] {
        assert_eq!(
            check_preface(&after_preface(&frame)),
            PrefaceCheck::NotSettings { kind }
        );
    }
}

#[test]
fn settings_ack_after_the_preface() {
    assert_eq!(
        check_preface(&after_preface(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0])),
        PrefaceCheck::NotSettings { kind: 0x4 }
    );
    assert_eq!(
        check_preface(&after_preface(&[0, 0, 0, 0x4, 0xff, 0, 0, 0, 0])),
        PrefaceCheck::NotSettings { kind: 0x4 }
    );
}

#[test]
fn no_preface() {
    let mut bytes = after_preface(&EMPTY_SETTINGS);
    bytes[0] = b'G';
    assert_eq!(
        check_preface(&bytes),
        PrefaceCheck::NotSettings { kind: 0xff }
    );
    assert_eq!(
        check_preface(b"GET"),
        PrefaceCheck::NotSettings { kind: 0xff }
    );
    let mut bytes = after_preface(&EMPTY_SETTINGS);
    bytes[23] = b'X';
    assert_eq!(
        check_preface(&bytes),
        PrefaceCheck::NotSettings { kind: 0xff }
    );
    assert_eq!(
        check_preface(&bytes[..24]),
        PrefaceCheck::NotSettings { kind: 0xff }
    );
}

#[test]
fn settings_headers() {
    assert!(is_settings_header(&EMPTY_SETTINGS));
    assert!(is_settings_header(&ONE_SETTING));
    assert!(is_settings_header(&[0, 0, 36, 0x4, 0, 0, 0, 0, 0]));
    // Other flags than ACK are ignored, as RFC 9113 §4.1 asks.
    assert!(is_settings_header(&[0, 0, 0, 0x4, 0xfe, 0, 0, 0, 0]));
    // The largest length that is a multiple of 6.
    assert!(is_settings_header(&[0xff, 0xff, 0xfc, 0x4, 0, 0, 0, 0, 0]));
}

#[test]
fn not_settings_headers() {
    for header in [
        &[][..],
        &EMPTY_SETTINGS[..8],
        // ACK.
        &[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0],
        // Other types.
        &[0, 0, 0, 0x0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0x1, 0, 0, 0, 0, 0],
        &[0, 0, 8, 0x7, 0, 0, 0, 0, 0],
        // Not stream 0, the reserved bit included.
        &[0, 0, 0, 0x4, 0, 0, 0, 0, 1],
        &[0, 0, 0, 0x4, 0, 0x80, 0, 0, 0],
        &[0, 0, 0, 0x4, 0, 0, 1, 0, 0],
        // Not a multiple of 6, in each length byte.
        &[0, 0, 5, 0x4, 0, 0, 0, 0, 0],
        &[0, 1, 0, 0x4, 0, 0, 0, 0, 0],
        &[1, 0, 0, 0x4, 0, 0, 0, 0, 0],
        &[0xff, 0xff, 0xff, 0x4, 0, 0, 0, 0, 0],
    ] {
        assert!(!is_settings_header(header), "{header:?}");
    }
}

#[test]
fn settings_header_ignores_what_follows() {
    let mut bytes = ONE_SETTING.to_vec();
    bytes.extend_from_slice(&[0xff; 20]);
    assert!(is_settings_header(&bytes));
}

#[test]
fn goaway_frames() {
    assert_eq!(
        goaway(0, PROTOCOL_ERROR),
        [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    );
    assert_eq!(goaway(0, 1), goaway(0, PROTOCOL_ERROR));
    assert_eq!(
        goaway(0x0102_0304, 0x0a0b_0c0d),
        [0, 0, 8, 7, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0xa, 0xb, 0xc, 0xd]
    );
    // The reserved bit of the last stream is cleared.
    assert_eq!(
        goaway(u32::MAX, 0),
        [0, 0, 8, 7, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]
    );
}

#[test]
fn goaway_header_is_a_frame_of_its_length() {
    let frame = goaway(3, 2);
    let length = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) as usize;
    assert_eq!(FRAME_HEADER_LEN + length, frame.len());
    assert!(!is_settings_header(&frame));
}
