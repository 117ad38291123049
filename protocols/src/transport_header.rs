//! Linkerd's opaque transport header (`transport.l5d.io/v1`), as linkerd2-proxy writes and
//! reads it (`linkerd/transport-header/src/lib.rs`, `proto/header.proto`).
//!
//! A meshed client that negotiated the [`ALPN`] protocol on its mTLS connection to a peer's
//! inbound port starts the connection with:
//!
//! ```text
//! "transport.l5d.io/v1\r\n\r\n"   PREFACE (23 bytes)
//! u32, big-endian                 length of what follows
//! protobuf transport.l5d.io.Header {
//!     int32 port = 1;                            // target port
//!     string name = 2;                           // target name (gateways), "" for none
//!     SessionProtocol session_protocol = 3;      // absent when the protocol is not known
//! }
//! SessionProtocol { oneof kind { Http1 http1 = 1; Http2 http2 = 2; } }   // empty messages
//! ```
//!
//! - [`encode`]: the bytes prost writes for a header (fields in tag order, defaults left out).
//! - [`decode`]: an incremental decoder over the bytes read so far, with prost's proto3
//!   decoding rules and linkerd2-proxy's checks on the result.

use crate::authority::is_dns_name;

/// The ALPN protocol a client offers to say it will send a transport header.
pub const ALPN: &[u8] = b"transport.l5d.io/v1";

/// What a transport header starts with.
pub const PREFACE: &[u8] = b"transport.l5d.io/v1\r\n\r\n";

/// The largest message length [`decode`] accepts. linkerd2-proxy reads headers into a 64 KiB
/// buffer and fails the connection on a longer one.
pub const MAX_HEADER_LEN: usize = 64 << 10;

/// The preface and the length.
const PREFIX_LEN: usize = PREFACE.len() + 4;

/// How deep prost lets messages and groups nest before it gives up.
const RECURSION_LIMIT: u32 = 100;

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

// === types ===

/// A decoded transport header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// The target port. [`decode`] never returns 0 (linkerd2-proxy refuses it).
    pub port: u16,
    /// The target's name, for a gateway. [`decode`] gives `None` for an empty name, and
    /// lowercases names (linkerd2-proxy's `Name` does).
    pub name: Option<String>,
    /// The session protocol, when the client knows it; `None` means opaque.
    pub protocol: Option<SessionProtocol>,
}

/// The protocol a client says the connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProtocol {
    Http1,
    Http2,
}

/// What [`decode`] makes of the bytes read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// All of it matches a header so far: read more and ask again.
    NeedMore,
    /// A whole header, taking the first `consumed` bytes; what follows is application data.
    Header {
        header: TransportHeader,
        consumed: usize,
    },
    /// The bytes do not start with [`PREFACE`]: no header (all of them are application data).
    NotHeader,
}

/// A connection that starts with [`PREFACE`] but not with a header linkerd2-proxy accepts.
/// Either way the connection is to be refused; more bytes never change the answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The declared message length is over [`MAX_HEADER_LEN`].
    #[error("transport header of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The message is not a valid `Header`, or its values are out of range.
    #[error("invalid transport header: {0}")]
    Invalid(&'static str),
}

/// The fields of a `Header` message as prost decodes them, before linkerd2-proxy's checks.
#[derive(Default)]
struct Fields<'a> {
    port: i32,
    name: &'a str,
    protocol: Option<SessionProtocol>,
}

// === functions ===

/// The transport header for `header`: [`PREFACE`], the message length, then the message as
/// prost encodes it (port 0, an empty or absent name and an absent protocol are left out).
///
/// A port of 0 or a name that is not a DNS name encode, but [`decode`] (like
/// linkerd2-proxy) refuses the result.
///
/// # Panics
///
/// If the name is 4 GiB or more (the length would not fit the u32 length field).
pub fn encode(header: &TransportHeader) -> Vec<u8> {
    let mut message = Vec::new();
    if header.port != 0 {
        put_key(&mut message, 1, VARINT);
        put_varint(&mut message, u64::from(header.port));
    }
    if let Some(name) = header.name.as_deref().filter(|n| !n.is_empty()) {
        put_key(&mut message, 2, LEN);
        put_varint(&mut message, name.len() as u64);
        message.extend_from_slice(name.as_bytes());
    }
    if let Some(protocol) = header.protocol {
        let kind = match protocol {
            SessionProtocol::Http1 => 1,
            SessionProtocol::Http2 => 2,
        };
        // session_protocol { http1 {} } or { http2 {} }: two bytes, the inner key and len 0.
        put_key(&mut message, 3, LEN);
        put_varint(&mut message, 2);
        put_key(&mut message, kind, LEN);
        put_varint(&mut message, 0);
    }
    let len = u32::try_from(message.len()).expect("transport header under 4 GiB");
    let mut out = Vec::with_capacity(PREFIX_LEN + message.len());
    out.extend_from_slice(PREFACE);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&message);
    out
}

/// Decodes the transport header at the start of `buf`, the bytes read from a connection so
/// far.
///
/// `NotHeader` as soon as the bytes diverge from [`PREFACE`]; `NeedMore` until the preface,
/// the length and the whole message are there; then the header or an error. Any answer
/// other than `NeedMore` is final: more bytes never change it (or `consumed`).
///
/// The message is decoded as prost decodes a proto3 `Header` (unknown fields skipped, the
/// last of a repeated scalar field wins, a repeated message field merges), then checked as
/// linkerd2-proxy checks it: the port must be 1 to 65535 and a non-empty name a DNS name.
pub fn decode(buf: &[u8]) -> Result<Decoded, HeaderError> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return Ok(Decoded::NotHeader);
    }
    let Some(len) = buf.get(PREFACE.len()..PREFIX_LEN) else {
        return Ok(Decoded::NeedMore);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_HEADER_LEN {
        return Err(HeaderError::TooLarge(len));
    }
    let Some(message) = buf.get(PREFIX_LEN..PREFIX_LEN + len) else {
        return Ok(Decoded::NeedMore);
    };
    let header = header(message)?;
    Ok(Decoded::Header {
        header,
        consumed: PREFIX_LEN + len,
    })
}

/// A `Header` message, checked as linkerd2-proxy checks it.
fn header(message: &[u8]) -> Result<TransportHeader, HeaderError> {
    let fields = header_fields(message)?;
    let name = match fields.name {
        "" => None,
        name if is_dns_name(name) => Some(name.to_ascii_lowercase()),
        _ => return Err(HeaderError::Invalid("name is not a DNS name")),
    };
    let port = match u16::try_from(fields.port) {
        Ok(port) if port != 0 => port,
        _ => return Err(HeaderError::Invalid("port out of range")),
    };
    Ok(TransportHeader {
        port,
        name,
        protocol: fields.protocol,
    })
}

/// The fields of a `Header` message, as prost's generated `Header::decode` reads them.
fn header_fields(mut message: &[u8]) -> Result<Fields<'_>, HeaderError> {
    let mut fields = Fields::default();
    let depth = RECURSION_LIMIT;
    while !message.is_empty() {
        let (tag, wire_type) = key(&mut message)?;
        match tag {
            1 => {
                check_wire_type(wire_type, VARINT)?;
                // int32: the varint's low 32 bits, as protobuf (and prost) truncate.
                fields.port = varint(&mut message)? as i32;
            }
            2 => {
                check_wire_type(wire_type, LEN)?;
                // Each occurrence must be UTF-8, even one a later occurrence replaces.
                fields.name = std::str::from_utf8(length_delimited(&mut message)?)
                    .map_err(|_| HeaderError::Invalid("name is not UTF-8"))?;
            }
            3 => {
                check_wire_type(wire_type, LEN)?;
                let inner = length_delimited(&mut message)?;
                // A repeated message field merges into what came before: a later
                // `session_protocol` without a kind keeps the earlier kind.
                if let Some(kind) = session_protocol(inner, depth - 1)? {
                    fields.protocol = Some(kind);
                }
            }
            _ => skip_field(&mut message, tag, wire_type, depth)?,
        }
    }
    Ok(fields)
}

/// The kind in a `SessionProtocol` message, if it has one (the last one wins).
fn session_protocol(
    mut message: &[u8],
    depth: u32,
) -> Result<Option<SessionProtocol>, HeaderError> {
    let mut kind = None;
    while !message.is_empty() {
        let (tag, wire_type) = key(&mut message)?;
        let protocol = match tag {
            1 => SessionProtocol::Http1,
            2 => SessionProtocol::Http2,
            _ => {
                skip_field(&mut message, tag, wire_type, depth)?;
                continue;
            }
        };
        check_wire_type(wire_type, LEN)?;
        // `Http1 {}` and `Http2 {}` have no fields: all of theirs are unknown.
        let mut empty = length_delimited(&mut message)?;
        let inner_depth = depth - 1;
        while !empty.is_empty() {
            let (tag, wire_type) = key(&mut empty)?;
            skip_field(&mut empty, tag, wire_type, inner_depth)?;
        }
        kind = Some(protocol);
    }
    Ok(kind)
}

/// Skips an unknown field whose key was just read, as prost's `skip_field` does: groups
/// (deprecated, but valid) are skipped to their matching end, at most `depth` deep.
fn skip_field(buf: &mut &[u8], tag: u32, wire_type: u8, depth: u32) -> Result<(), HeaderError> {
    if depth == 0 {
        return Err(HeaderError::Invalid("nested too deep"));
    }
    let len = match wire_type {
        VARINT => {
            varint(buf)?;
            0
        }
        FIXED64 => 8,
        FIXED32 => 4,
        LEN => varint(buf)?,
        START_GROUP => loop {
            let (inner_tag, inner_wire_type) = key(buf)?;
            if inner_wire_type == END_GROUP {
                if inner_tag != tag {
                    return Err(HeaderError::Invalid("unmatched end of group"));
                }
                break 0;
            }
            skip_field(buf, inner_tag, inner_wire_type, depth - 1)?;
        },
        _ => return Err(HeaderError::Invalid("unexpected end of group")),
    };
    match usize::try_from(len).ok().filter(|len| *len <= buf.len()) {
        Some(len) => {
            *buf = &buf[len..];
            Ok(())
        }
        None => Err(HeaderError::Invalid("truncated field")),
    }
}

/// A field key: its tag (field number) and wire type.
fn key(buf: &mut &[u8]) -> Result<(u32, u8), HeaderError> {
    let key = u32::try_from(varint(buf)?).map_err(|_| HeaderError::Invalid("invalid key"))?;
    let wire_type = (key & 7) as u8;
    if wire_type > FIXED32 {
        return Err(HeaderError::Invalid("invalid wire type"));
    }
    let tag = key >> 3;
    if tag == 0 {
        return Err(HeaderError::Invalid("invalid field number 0"));
    }
    Ok((tag, wire_type))
}

fn check_wire_type(actual: u8, expected: u8) -> Result<(), HeaderError> {
    if actual == expected {
        Ok(())
    } else {
        Err(HeaderError::Invalid("wrong wire type"))
    }
}

/// A length-delimited value: its length, then that many bytes.
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], HeaderError> {
    let len = varint(buf)?;
    match usize::try_from(len).ok().filter(|len| *len <= buf.len()) {
        Some(len) => {
            let (value, rest) = buf.split_at(len);
            *buf = rest;
            Ok(value)
        }
        None => Err(HeaderError::Invalid("truncated field")),
    }
}

/// A base-128 varint of at most 10 bytes whose value fits in 64 bits (prost's rule);
/// redundant trailing zero groups are accepted, as prost accepts them.
fn varint(buf: &mut &[u8]) -> Result<u64, HeaderError> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if i == 9 && byte > 1 {
                break; // over 64 bits
            }
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(HeaderError::Invalid("invalid varint"))
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire_type: u8) {
    put_varint(out, u64::from(tag << 3 | u32::from(wire_type)));
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
