//! Property tests: [`peer_identity`] never panics, on any bytes or on a real certificate
//! with bytes changed, cut or added, and what it returns is always a lowercase Linkerd DNS
//! identity.

use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// A real leaf certificate with a DNS, an IP and a URI name.
fn leaf() -> &'static [u8] {
    static LEAF: OnceLock<Vec<u8>> = OnceLock::new();
    LEAF.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![
            "10.0.0.1".to_string(),
            "foo.ns.serviceaccount.identity.linkerd.cluster.local".to_string(),
        ])
        .unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/ns/sa/foo".try_into().unwrap(),
        ));
        params.self_signed(&key).unwrap().der().to_vec()
    })
}

fn check(result: Option<String>) -> Result<(), TestCaseError> {
    if let Some(name) = result {
        prop_assert!(is_dns_name(&name) && !name.ends_with('.'), "{:?}", name);
        prop_assert_eq!(name.to_ascii_lowercase(), name);
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_bytes(bytes in vec(any::<u8>(), 0..512)) {
        check(peer_identity(&bytes))?;
    }

    #[test]
    fn mutated_certificate(
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        extra in vec(any::<u8>(), 0..4),
    ) {
        let mut cert = leaf().to_vec();
        for (at, byte) in edits {
            let i = at.index(cert.len());
            cert[i] = byte;
        }
        check(peer_identity(&cert))?;
        check(peer_identity(&cert[..cut.index(cert.len())]))?;
        cert.extend(extra);
        check(peer_identity(&cert))?;
    }
}
