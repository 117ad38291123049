//! A peer's identity from its leaf certificate: a small, strict DER walker down to the
//! subjectAltName extension (RFC 5280 §4.1, §4.2.1.6), with no X.509 parser behind it.

use crate::authority::is_dns_name;

/// DER tags (class, constructed bit and number in one byte) on the way down.
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version` in a TBSCertificate.
const VERSION: u8 = 0xa0;
/// `[1] IMPLICIT UniqueIdentifier` (issuer) and `[2]` (subject).
const ISSUER_UID: u8 = 0x81;
const SUBJECT_UID: u8 = 0x82;
/// `[3] EXPLICIT Extensions`.
const EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IMPLICIT IA5String` in a GeneralName.
const DNS_NAME: u8 = 0x82;
/// id-ce-subjectAltName, 2.5.29.17, as OID contents.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

// === functions ===

/// The identity of the peer whose end-entity certificate is `cert_der`: the first dNSName
/// in its subjectAltName extension that is a Linkerd DNS identity, lowercased (as
/// linkerd2-proxy's `client_identity` in `linkerd/meshtls/verifier` makes it, for DNS
/// names: a name that is not a DNS name, or ends with a dot, is passed over).
///
/// `None` when the certificate has no such name, or when what leads to it is not DER as
/// X.509 lays it out: a Certificate of a TBSCertificate, signature algorithm and signature
/// with nothing after it; a TBSCertificate whose fields come in order; Extensions with at
/// most one subjectAltName, whose GeneralNames all parse and whose dNSNames are ASCII.
/// Never panics, and looks at each byte at most a few times.
///
/// Unlike linkerd2-proxy this does not look at URI names (SPIFFE identities): a certificate
/// whose first name is a URI gives the first DNS name after it.
pub fn peer_identity(cert_der: &[u8]) -> Option<String> {
    let (certificate, rest) = expect(cert_der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (tbs, rest) = expect(certificate, SEQUENCE)?;
    let (_signature_algorithm, rest) = expect(rest, SEQUENCE)?;
    let (_signature, rest) = expect(rest, BIT_STRING)?;
    if !rest.is_empty() {
        return None;
    }
    let extensions = extensions(tbs)?;
    let names = subject_alt_name(extensions)?;
    first_dns_identity(names)
}

/// The contents of the Extensions of a TBSCertificate (a SEQUENCE OF Extension), or `None`
/// when there are none.
fn extensions(tbs: &[u8]) -> Option<&[u8]> {
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
    rest = expect(rest, INTEGER)?.1;
    for _ in 0..5 {
        rest = expect(rest, SEQUENCE)?.1;
    }
    for optional in [ISSUER_UID, SUBJECT_UID] {
        if rest.first() == Some(&optional) {
            rest = element(rest)?.2;
        }
    }
    if rest.is_empty() {
        return None;
    }
    let (explicit, rest) = expect(rest, EXTENSIONS)?;
    if !rest.is_empty() {
        return None;
    }
    let (extensions, rest) = expect(explicit, SEQUENCE)?;
    rest.is_empty().then_some(extensions)
}

/// The contents of the GeneralNames of the one subjectAltName extension.
fn subject_alt_name(mut extensions: &[u8]) -> Option<&[u8]> {
    let mut names = None;
    while !extensions.is_empty() {
        let (extension, rest) = expect(extensions, SEQUENCE)?;
        extensions = rest;
        let (oid, mut rest) = expect(extension, OID)?;
        if rest.first() == Some(&BOOLEAN) {
            let (critical, after) = expect(rest, BOOLEAN)?;
            if critical.len() != 1 {
                return None;
            }
            rest = after;
        }
        let (value, rest) = expect(rest, OCTET_STRING)?;
        if !rest.is_empty() {
            return None;
        }
        if oid == SUBJECT_ALT_NAME {
            if names.is_some() {
                return None; // RFC 5280 §4.2: an extension appears at most once.
            }
            let (general_names, rest) = expect(value, SEQUENCE)?;
            if !rest.is_empty() {
                return None;
            }
            names = Some(general_names);
        }
    }
    names
}

/// The first dNSName among GeneralNames that is a Linkerd DNS identity, once all of them
/// have been checked.
fn first_dns_identity(mut names: &[u8]) -> Option<String> {
    let mut first = None;
    while !names.is_empty() {
        let (tag, contents, rest) = element(names)?;
        names = rest;
        if tag != DNS_NAME {
            continue;
        }
        // IA5String: ASCII.
        let name = std::str::from_utf8(contents)
            .ok()
            .filter(|n| n.is_ascii())?;
        if first.is_none() && is_dns_name(name) && !name.ends_with('.') {
            first = Some(name.to_ascii_lowercase());
        }
    }
    first
}

/// The contents of the element at the start of `input`, which must have tag `tag`, and
/// what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (actual, contents, rest) = element(input)?;
    (actual == tag).then_some((contents, rest))
}

/// The DER element at the start of `input`: its tag, its contents and what follows it.
/// Only low tag numbers (all X.509 needs) and definite lengths in their shortest form.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: 1 to 4 length bytes, no leading zero, and only for lengths over 127.
        let count = usize::from(first & 0x7f);
        if !(1..=4).contains(&count) || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        if bytes[0] == 0 {
            return None;
        }
        let len = bytes
            .iter()
            .fold(0usize, |len, b| len << 8 | usize::from(*b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    if len > rest.len() {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}
