//! `transport_header::decode` on arbitrary bytes, on its own and behind the preface and a
//! length that fits them. No panics; `consumed` stays within the input and the header alone
//! decodes the same; a decoded header (port non-zero, name a lowercase DNS name) encodes to
//! bytes that decode to the same header; a decision other than `NeedMore` is final (more
//! bytes never change it); every proper prefix of an encoding is `NeedMore`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::authority::is_dns_name;
use ringlink_protocols::transport_header::{
    decode, encode, Decoded, HeaderError, MAX_HEADER_LEN, PREFACE,
};

fn check(bytes: &[u8]) {
    let answer = decode(bytes);
    match &answer {
        Ok(Decoded::Header { header, consumed }) => {
            assert!(*consumed <= bytes.len() && *consumed >= PREFACE.len() + 4);
            assert_eq!(decode(&bytes[..*consumed]), answer, "header alone");
            assert_ne!(header.port, 0);
            if let Some(name) = &header.name {
                assert!(is_dns_name(name), "{name:?}");
                assert_eq!(name.to_ascii_lowercase(), *name);
            }
            let encoded = encode(header);
            assert_eq!(
                decode(&encoded),
                Ok(Decoded::Header {
                    header: header.clone(),
                    consumed: encoded.len()
                }),
                "re-encoded {header:?}"
            );
            for end in [0, 1, PREFACE.len(), PREFACE.len() + 4, encoded.len() - 1] {
                assert_eq!(
                    decode(&encoded[..end]),
                    Ok(Decoded::NeedMore),
                    "cut at {end}"
                );
            }
        }
        Ok(Decoded::NeedMore) => assert!(bytes.len() < PREFACE.len() + 4 + MAX_HEADER_LEN),
        Ok(Decoded::NotHeader) => assert!(!bytes.starts_with(PREFACE)),
        Err(HeaderError::TooLarge(len)) => assert!(*len > MAX_HEADER_LEN),
        Err(HeaderError::Invalid(_)) => {}
    }
    if answer != Ok(Decoded::NeedMore) {
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"\x08\x01\0\xff");
        assert_eq!(decode(&longer), answer, "more bytes changed the answer");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The input as the message of a header.
    let mut framed = PREFACE.to_vec();
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(data);
    check(&framed);
});
