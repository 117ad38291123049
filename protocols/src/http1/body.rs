//! Body framing (RFC 9112 §6) and the chunked transfer coding (§7.1).

use super::head::{trim, Headers, RequestHead, ResponseHead, Version};
use super::{Error, Limits};

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4 << 10;

// === types ===

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (never 0: that is [`BodyKind::Empty`]).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// A run of bytes at the start of the input given to [`ChunkedDecoder::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// `n` bytes of body data.
    Data(usize),
    /// `n` bytes of chunked framing (sizes, extensions, CRLFs, trailers).
    Framing(usize),
    /// The last `n` bytes of the body's framing: the body is complete.
    End(usize),
    /// Nothing can be decided until more bytes arrive; all of the input was consumed as
    /// framing if `n > 0`.
    NeedMore(usize),
}

/// Walks a chunked body without copying it.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Data bytes left in the current chunk, or the size being read.
    size: u64,
    /// Bytes of the current size or trailer line so far.
    line: usize,
    /// Bytes of the trailer section so far.
    trailers: usize,
    max_trailers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    SizeStart,
    /// Within the hex digits.
    Size,
    /// Whitespace after the size: only more of it, `;` or CR may follow.
    SizeWs,
    /// Within `;extensions`, until CR.
    Extension,
    /// Expecting the LF of a size line.
    SizeLf,
    /// Within a chunk's data.
    Data,
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Within a trailer field line.
    Trailer,
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the LF of the final CRLF.
    EndLf,
    Done,
}

// === impl ChunkedDecoder ===

impl ChunkedDecoder {
    pub fn new(limits: &Limits) -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            line: 0,
            trailers: 0,
            max_trailers: limits.max_head_bytes,
        }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Classifies the bytes at the start of `input`. Call again with the rest of the input
    /// after the returned piece; [`Piece::NeedMore`] means the input is used up.
    ///
    /// Strict where leniency lets two parsers disagree: chunk lines must end in CRLF, sizes
    /// are 1–16 hex digits, the data must be followed by CRLF, and the size line and trailer
    /// section are bounded.
    pub fn feed(&mut self, input: &[u8]) -> Result<Piece, Error> {
        if self.state == State::Data {
            if input.is_empty() {
                return Ok(Piece::NeedMore(0));
            }
            let n = (input.len() as u64).min(self.size) as usize;
            self.size -= n as u64;
            if self.size == 0 {
                self.state = State::DataCr;
            }
            return Ok(Piece::Data(n));
        }
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            i += 1;
            match self.state {
                State::SizeStart => {
                    self.line = 1;
                    self.size = u64::from(hex(b).ok_or(Error::BadChunk("chunk size"))?);
                    self.state = State::Size;
                }
                State::Size => {
                    self.bump_line()?;
                    if let Some(digit) = hex(b) {
                        // At most 16 digits, leading zeros included, so that no parser
                        // with a digit limit reads this size differently.
                        if self.line > 16 || self.size >> 60 != 0 {
                            return Err(Error::BadChunk("chunk size too large"));
                        }
                        self.size = (self.size << 4) | u64::from(digit);
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b';' {
                        self.state = State::Extension;
                    } else if b == b' ' || b == b'\t' {
                        self.state = State::SizeWs;
                    } else {
                        return Err(Error::BadChunk("chunk size"));
                    }
                }
                State::SizeWs => {
                    self.bump_line()?;
                    match b {
                        b' ' | b'\t' => {}
                        b';' => self.state = State::Extension,
                        b'\r' => self.state = State::SizeLf,
                        _ => return Err(Error::BadChunk("chunk size")),
                    }
                }
                State::Extension => {
                    self.bump_line()?;
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(Error::BadChunk("bare LF")),
                        0..=8 | 10..=31 | 127 => {
                            return Err(Error::BadChunk("control character in extension"))
                        }
                        _ => {}
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Error::BadChunk("CR without LF"));
                    }
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data;
                        return Ok(Piece::Framing(i));
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(Error::BadChunk("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(Error::BadChunk("CR without LF"));
                    }
                    self.state = State::SizeStart;
                }
                State::TrailerStart => {
                    self.bump_trailers()?;
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if b == b' ' || b == b'\t' {
                        return Err(Error::BadChunk("obs-fold in trailers"));
                    } else if is_tchar(b) {
                        self.state = State::Trailer;
                    } else {
                        return Err(Error::BadChunk("trailer field name"));
                    }
                }
                State::Trailer => {
                    self.bump_trailers()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\n' => return Err(Error::BadChunk("bare LF")),
                        0 => return Err(Error::BadChunk("NUL in trailers")),
                        _ => {}
                    }
                }
                State::TrailerLf => {
                    self.bump_trailers()?;
                    if b != b'\n' {
                        return Err(Error::BadChunk("CR without LF"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(Error::BadChunk("CR without LF"));
                    }
                    self.state = State::Done;
                    return Ok(Piece::End(i));
                }
                State::Data => unreachable!("handled above"),
                State::Done => return Err(Error::BadChunk("bytes after the last chunk")),
            }
        }
        if self.state == State::Done {
            // Only reachable with empty input after the end.
            return Ok(Piece::NeedMore(0));
        }
        Ok(Piece::NeedMore(i))
    }

    fn bump_line(&mut self) -> Result<(), Error> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(Error::BadChunk("chunk-size line too long"));
        }
        Ok(())
    }

    fn bump_trailers(&mut self) -> Result<(), Error> {
        self.trailers += 1;
        if self.trailers > self.max_trailers {
            return Err(Error::BadChunk("trailer section too large"));
        }
        Ok(())
    }
}

// === functions ===

/// How a request's body is framed (RFC 9112 §6.3), or why the request must be refused.
///
/// Refused, because a downstream parser might read the framing differently: both
/// `Content-Length` and `Transfer-Encoding`; more than one `Content-Length` field or a list;
/// a length that is not plain digits; any transfer coding but a single `chunked`;
/// `Transfer-Encoding` in an HTTP/1.0 request.
pub fn request_body(head: &RequestHead) -> Result<BodyKind, Error> {
    match framing(head.version, &head.headers)? {
        // A request without framing headers has no body (§6.3 rule 7).
        None => Ok(BodyKind::Empty),
        Some(kind) => Ok(kind),
    }
}

/// How a response's body is framed, given the method of its request.
pub fn response_body(request_method: &str, head: &ResponseHead) -> Result<BodyKind, Error> {
    if request_method == "HEAD"
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Ok(BodyKind::Empty);
    }
    if request_method == "CONNECT" && (200..300).contains(&head.status) {
        // The connection becomes a tunnel; the caller handles it.
        return Ok(BodyKind::Empty);
    }
    match framing(head.version, &head.headers)? {
        None => Ok(BodyKind::UntilClose),
        Some(kind) => Ok(kind),
    }
}

fn framing(version: Version, headers: &Headers) -> Result<Option<BodyKind>, Error> {
    let te = headers.count("transfer-encoding");
    let cl = headers.count("content-length");
    if te > 0 {
        if cl > 0 {
            return Err(Error::LengthAndTransferEncoding);
        }
        if version == Version::Http10 {
            return Err(Error::TransferEncodingInHttp10);
        }
        let mut codings = headers
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim);
        return match (codings.next(), codings.next()) {
            (Some(coding), None) if coding.eq_ignore_ascii_case(b"chunked") => {
                Ok(Some(BodyKind::Chunked))
            }
            _ => Err(Error::UnsupportedTransferEncoding),
        };
    }
    match cl {
        0 => Ok(None),
        1 => {
            let value = headers.get("content-length").unwrap_or_default();
            match parse_length(value) {
                Some(0) => Ok(Some(BodyKind::Empty)),
                Some(n) => Ok(Some(BodyKind::Length(n))),
                None => Err(Error::BadContentLength),
            }
        }
        _ => Err(Error::BadContentLength),
    }
}

/// A Content-Length value: 1–19 ASCII digits, nothing else (no sign, no list).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
