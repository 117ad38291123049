//! `check_preface` on the HTTP/2 client preface followed by arbitrary bytes, and on the
//! arbitrary bytes alone; `is_settings_header` on them. No panics; `NeedMore` exactly while
//! fewer than `PREFACE_AND_FRAME_HEADER` bytes are in; a decision is final (every longer
//! prefix decides the same); the decision matches the first frame header's type and flags.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::http2::{
    check_preface, goaway, is_settings_header, PrefaceCheck, FRAME_HEADER_LEN, PREFACE,
    PREFACE_AND_FRAME_HEADER, PROTOCOL_ERROR,
};

fuzz_target!(|data: &[u8]| {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(data);

    let whole = check_preface(&bytes);
    match bytes.get(PREFACE.len()..PREFACE_AND_FRAME_HEADER) {
        None => assert_eq!(whole, PrefaceCheck::NeedMore),
        Some(header) => {
            let expected = if header[3] == 0x4 && header[4] & 0x1 == 0 {
                PrefaceCheck::Settings
            } else {
                PrefaceCheck::NotSettings { kind: header[3] }
            };
            assert_eq!(whole, expected);
            // A well-formed SETTINGS header is always accepted after the preface.
            if is_settings_header(header) {
                assert_eq!(whole, PrefaceCheck::Settings);
            }
        }
    }
    for cut in 0..=bytes.len().min(PREFACE_AND_FRAME_HEADER + 2) {
        let prefix = check_preface(&bytes[..cut]);
        if cut < PREFACE_AND_FRAME_HEADER {
            assert_eq!(prefix, PrefaceCheck::NeedMore, "cut at {cut}");
        } else {
            assert_eq!(prefix, whole, "cut at {cut}");
        }
    }

    // Without the preface: a decision on a prefix is final too.
    let raw = check_preface(data);
    if raw != PrefaceCheck::NeedMore {
        for cut in 0..data.len().min(64) {
            let prefix = check_preface(&data[..cut]);
            if prefix != PrefaceCheck::NeedMore {
                assert_eq!(prefix, raw, "cut at {cut}");
            }
        }
    }
    if !data.starts_with(&PREFACE[..data.len().min(PREFACE.len())]) {
        assert_eq!(raw, PrefaceCheck::NotSettings { kind: 0xff });
    }

    // The frame header check looks at nine bytes and nothing after them.
    let settings = is_settings_header(data);
    assert_eq!(
        settings,
        data.len() >= FRAME_HEADER_LEN && is_settings_header(&data[..FRAME_HEADER_LEN])
    );
    if settings {
        let length = u32::from_be_bytes([0, data[0], data[1], data[2]]);
        assert!(data[3] == 0x4 && data[4] & 0x1 == 0 && data[5..9] == [0; 4]);
        assert_eq!(length % 6, 0);
    }

    // The GOAWAY frame for any stream is never read as SETTINGS.
    if let Some(four) = data.get(..4) {
        let last_stream = u32::from_be_bytes([four[0], four[1], four[2], four[3]]);
        let frame = goaway(last_stream, PROTOCOL_ERROR);
        assert!(!is_settings_header(&frame));
        assert_eq!(frame[9] & 0x80, 0);
    }
});
