//! Request authorities (`host[:port]`) and the destination names derived from them.
//!
//! - [`parse_authority`]: `host[:port]` to a host and a port, port 80 by default, with IPv6
//!   literals in brackets.
//! - [`name_of`]: the destination name a host and port resolve under, `None` for an IP
//!   literal (which is dialed as it is).

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

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
