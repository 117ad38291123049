//! Message heads from bytes, on httparse, with limits.

use super::head::{Headers, RequestHead, ResponseHead, Version};
use super::{Error, Limits};

// === types ===

/// The outcome of parsing what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole head, and how many bytes it took.
    Complete(T, usize),
    /// Not all of the head is there yet (and it is still within the limit).
    Partial,
}

// === functions ===

/// Parses a request head from the start of `buf`.
///
/// httparse rejects what RFC 9112 forbids in a head: invalid tokens in the method or header
/// names, whitespace before a colon, obs-fold line continuations and control characters in
/// values. Those, and a head over [`Limits`], are errors, never guesses.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, Error> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = slots(&mut stack, &mut heap, limits.max_headers);
    let mut req = httparse::Request::new(slots);
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => {
            let version = version(req.version)?;
            let head = RequestHead {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                version,
                headers: headers(req.headers)?,
            };
            Ok(Parsed::Complete(head, n))
        }
        Ok(httparse::Status::Partial) => partial(buf, limits),
        Err(error) => Err(convert(error, limits)),
    }
}

/// Parses a response head from the start of `buf`.
pub fn parse_response(buf: &[u8], limits: &Limits) -> Result<Parsed<ResponseHead>, Error> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = slots(&mut stack, &mut heap, limits.max_headers);
    let mut res = httparse::Response::new(slots);
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    match res.parse(window) {
        Ok(httparse::Status::Complete(n)) => {
            let version = version(res.version)?;
            let head = ResponseHead {
                version,
                status: res.code.unwrap_or_default(),
                reason: res.reason.unwrap_or_default().to_string(),
                headers: headers(res.headers)?,
            };
            Ok(Parsed::Complete(head, n))
        }
        Ok(httparse::Status::Partial) => partial(buf, limits),
        Err(error) => Err(convert(error, limits)),
    }
}

/// Header slots on the stack for up to this many fields (the default limit), so parsing a
/// head allocates only for what it keeps.
const STACK_HEADERS: usize = 100;

fn slots<'s, 'h>(
    stack: &'s mut [httparse::Header<'h>; STACK_HEADERS],
    heap: &'s mut Vec<httparse::Header<'h>>,
    max: usize,
) -> &'s mut [httparse::Header<'h>] {
    if max <= STACK_HEADERS {
        &mut stack[..max]
    } else {
        heap.resize(max, httparse::EMPTY_HEADER);
        heap
    }
}

fn partial<T>(buf: &[u8], limits: &Limits) -> Result<Parsed<T>, Error> {
    if buf.len() >= limits.max_head_bytes {
        Err(Error::HeadTooLarge(limits.max_head_bytes))
    } else {
        Ok(Parsed::Partial)
    }
}

fn version(minor: Option<u8>) -> Result<Version, Error> {
    match minor {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(Error::Malformed("version")),
    }
}

fn headers(parsed: &[httparse::Header<'_>]) -> Result<Headers, Error> {
    let mut headers = Headers::with_capacity(parsed.len());
    for header in parsed {
        // httparse lets obs-text (bytes ≥ 0x80) through in values, as RFC 9110 allows; it
        // has already refused CR, LF and NUL.
        headers.append(header.name, header.value);
    }
    Ok(headers)
}

fn convert(error: httparse::Error, limits: &Limits) -> Error {
    match error {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders(limits.max_headers),
        httparse::Error::HeaderName => Error::Malformed("header name"),
        httparse::Error::HeaderValue => Error::Malformed("header value"),
        httparse::Error::NewLine => Error::Malformed("line ending"),
        httparse::Error::Status => Error::Malformed("status"),
        httparse::Error::Token => Error::Malformed("method or token"),
        httparse::Error::Version => Error::Malformed("version"),
    }
}
