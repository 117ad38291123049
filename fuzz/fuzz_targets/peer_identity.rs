//! `tls::peer_identity` on arbitrary bytes, as a whole certificate and wrapped in the
//! outer SEQUENCE it expects. No panics; a returned identity is a lowercase DNS name
//! without a trailing dot.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_protocols::authority::is_dns_name;
use ringlink_protocols::tls::peer_identity;

fn check(bytes: &[u8]) {
    if let Some(name) = peer_identity(bytes) {
        assert!(is_dns_name(&name) && !name.ends_with('.'), "{name:?}");
        assert_eq!(name.to_ascii_lowercase(), name);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Behind a well-formed outer SEQUENCE header, so the walk gets past the first step.
    if let Ok(len) = u16::try_from(data.len()) {
        let mut wrapped = vec![0x30, 0x82];
        wrapped.extend_from_slice(&len.to_be_bytes());
        wrapped.extend_from_slice(data);
        check(&wrapped);
    }
});
