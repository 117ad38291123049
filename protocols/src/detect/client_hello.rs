//! Just enough of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3) to find its server name.
//! Every length is checked against what is there; nothing here can index out of bounds.

// === types ===

pub(super) enum Parsed {
    /// A ClientHello; `sni` is its host name, if it sent one.
    Hello { sni: Option<String> },
    /// Valid so far; more bytes are needed.
    Incomplete,
    /// Not a ClientHello.
    Invalid,
}

/// A cursor over bytes whose every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

// === impl Reader ===

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<usize> {
        Some(usize::from(self.u8()?) << 8 | usize::from(self.u8()?))
    }

    fn u24(&mut self) -> Option<usize> {
        Some(usize::from(self.u8()?) << 16 | self.u16()?)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A block prefixed by a 1- or 2-byte length.
    fn block8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    fn block16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

// === functions ===

/// Parses the first TLS record of a connection.
pub(super) fn parse(buf: &[u8]) -> Parsed {
    let mut record = Reader(buf);
    let header = (record.u8(), record.u8(), record.u8(), record.u16());
    let (Some(content_type), Some(major), Some(_minor), Some(len)) = header else {
        return if buf.len() < 5 && plausible_prefix(buf) {
            Parsed::Incomplete
        } else {
            Parsed::Invalid
        };
    };
    if content_type != 0x16 || major != 3 || len == 0 || len > 16 << 10 {
        return Parsed::Invalid;
    }
    let Some(fragment) = record.take(len) else {
        return Parsed::Incomplete;
    };
    // A ClientHello larger than one record is valid TLS but rare; without its extensions in
    // this record we cannot see the name.
    match client_hello(fragment) {
        Some(sni) => Parsed::Hello { sni },
        None => Parsed::Invalid,
    }
}

/// What a record header can start with: handshake type, TLS major version 3.
fn plausible_prefix(buf: &[u8]) -> bool {
    buf.first().is_none_or(|b| *b == 0x16) && buf.get(1).is_none_or(|b| *b == 3)
}

/// The server name of a ClientHello handshake message: `Some(None)` for a valid hello
/// without one, `None` if it is not a ClientHello.
fn client_hello(fragment: &[u8]) -> Option<Option<String>> {
    let mut msg = Reader(fragment);
    if msg.u8()? != 1 {
        return None; // not client_hello
    }
    let body_len = msg.u24()?;
    let mut body = Reader(msg.take(body_len.min(msg.0.len()))?);
    let _legacy_version = body.u16()?;
    body.take(32)?; // random
    body.block8()?; // legacy_session_id
    body.block16()?; // cipher_suites
    body.block8()?; // legacy_compression_methods
    if body.0.is_empty() {
        return Some(None); // no extensions
    }
    let mut extensions = Reader(body.block16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.block16()?;
        if kind == 0 {
            return Some(server_name(data));
        }
    }
    Some(None)
}

/// The host name in a `server_name` extension's data, if valid (RFC 6066 §3: one
/// `host_name` entry, ASCII, no trailing dot).
pub fn server_name(data: &[u8]) -> Option<String> {
    let mut ext = Reader(data);
    let mut list = Reader(ext.block16()?);
    while !list.0.is_empty() {
        let name_type = list.u8()?;
        let name = list.block16()?;
        if name_type == 0 {
            let name = std::str::from_utf8(name).ok()?;
            let valid = !name.is_empty()
                && name.len() <= 253
                && !name.ends_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            return valid.then(|| name.to_ascii_lowercase());
        }
    }
    None
}
