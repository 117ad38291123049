//! Request authorities (`host[:port]`) and the destination names derived from them.
//!
//! - [`parse_authority`]: `host[:port]` to a host and a port, port 80 by default, with IPv6
//!   literals in brackets.
//! - [`name_of`]: the destination name a host and port resolve under, `None` for an IP
//!   literal (which is dialed as it is).
//! - [`is_dns_name`]: whether a name is a DNS name as Linkerd's `linkerd-dns-name` crate
//!   accepts it (transport header names, identities).

// === functions ===

/// `host[:port]` (port 80 by default), with IPv6 literals in brackets: `[::1]:8080` is
/// `("::1", 8080)`, `[::1]` is `("::1", 80)`.
///
/// Surrounding whitespace is trimmed. `None` when the host is empty or holds a byte other than
/// an ASCII letter or digit, `-`, `.`, `_` or `:`; when the port is not a `u16`; or when
/// anything but `:port` follows a bracketed host. Without brackets the port is what follows
/// the last `:`.
pub fn parse_authority(authority: &str) -> Option<(String, u16)> {
    let authority = authority.trim();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, 80),
        }
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    valid.then(|| (host.to_string(), port))
}

/// The destination name for an authority's `host` and `port`: the host without trailing dots,
/// lowercased, then `:port`. `None` for an empty host or an IP literal.
pub fn name_of(host: &str, port: u16) -> Option<String> {
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// Whether `name` is a DNS name as linkerd2-proxy's `linkerd_dns_name::Name` accepts it
/// (`linkerd/dns/name/src/name.rs`, after webpki): at most 253 bytes; dot-separated labels
/// of 1 to 63 ASCII letters, digits, `-` and `_`, none starting or ending with `-`; the last
/// label not all digits; one trailing dot allowed. So no IP literals, no wildcards, no empty
/// labels.
pub fn is_dns_name(name: &str) -> bool {
    const MAX_LABEL: usize = 63;
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut last_all_digits = false;
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_LABEL
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if !valid {
            return false;
        }
        last_all_digits = bytes.iter().all(u8::is_ascii_digit);
    }
    !last_all_digits
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
