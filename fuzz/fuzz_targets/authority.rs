//! `parse_authority` on arbitrary UTF-8: no panics; a returned host is non-empty and made of
//! the allowed bytes; `name_of` on it does not panic; and the pair written back as
//! `host:port` (hosts without `:`) or `[host]:port` (any host) parses to the same pair.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::authority::{name_of, parse_authority};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((host, port)) = parse_authority(text) else {
        return;
    };
    assert!(!host.is_empty(), "empty host from {text:?}");
    assert!(
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)),
        "{host:?} from {text:?}"
    );

    if let Some(name) = name_of(&host, port) {
        assert!(name.ends_with(&format!(":{port}")), "{name:?}");
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    }

    let pair = Some((host.clone(), port));
    if !host.contains(':') {
        assert_eq!(parse_authority(&format!("{host}:{port}")), pair, "{text:?}");
    }
    assert_eq!(
        parse_authority(&format!("[{host}]:{port}")),
        pair,
        "{text:?}"
    );
});
