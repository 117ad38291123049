//! HTTP/2 frame-level helpers for the bytes the proxy handles before the h2 crate takes a
//! connection over (RFC 9113).
//!
//! - [`check_preface`]: whether the client preface is followed by a SETTINGS frame, as
//!   RFC 9113 §3.4 requires (the h2 crate would accept other frames first).
//! - [`is_settings_header`]: whether a frame header is a well-formed SETTINGS header.
//! - [`goaway`]: the GOAWAY frame to send a client before closing on a connection error.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The length of a frame header (RFC 9113 §4.1).
pub const FRAME_HEADER_LEN: usize = 9;

/// The bytes [`check_preface`] needs to decide: the preface and one frame header.
pub const PREFACE_AND_FRAME_HEADER: usize = 24 + 9;

/// The `PROTOCOL_ERROR` error code (RFC 9113 §7).
pub const PROTOCOL_ERROR: u32 = 1;

/// Frame types (RFC 9113 §6).
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

/// The ACK flag of a SETTINGS frame.
const ACK: u8 = 0x1;

/// The length of one SETTINGS parameter.
const SETTING_LEN: u32 = 6;

// === types ===

/// What follows the client preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefaceCheck {
    /// Fewer than [`PREFACE_AND_FRAME_HEADER`] bytes so far, all consistent with the
    /// preface: read more and ask again.
    NeedMore,
    /// A SETTINGS frame without ACK: hand the connection to the HTTP/2 server.
    Settings,
    /// Anything else: a connection error of type `PROTOCOL_ERROR` (send [`goaway`] and close).
    /// `kind` is the frame type that came instead, or `0xff` when the bytes do not start with
    /// the preface at all (which a real frame type `0xff` also reports).
    NotSettings { kind: u8 },
}

// === functions ===

/// Whether `bytes`, which start with the client preface, go on with a SETTINGS frame without
/// the ACK flag (RFC 9113 §3.4). Only the first frame's type and flags are looked at; the
/// h2 crate checks the rest of the frame.
///
/// An answer other than `NeedMore` is final: more bytes never change it.
pub fn check_preface(bytes: &[u8]) -> PrefaceCheck {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        return PrefaceCheck::NotSettings { kind: 0xff };
    }
    if bytes.len() < PREFACE_AND_FRAME_HEADER {
        return PrefaceCheck::NeedMore;
    }
    let header = &bytes[PREFACE.len()..PREFACE_AND_FRAME_HEADER];
    let (kind, flags) = (header[3], header[4]);
    if kind == SETTINGS && flags & ACK == 0 {
        PrefaceCheck::Settings
    } else {
        PrefaceCheck::NotSettings { kind }
    }
}

/// Whether the first [`FRAME_HEADER_LEN`] bytes of `header` are the header of a SETTINGS
/// frame without ACK: type `0x4`, the ACK flag clear, stream 0 (all 32 bits, the reserved
/// bit included) and a length that is a whole number of parameters (a multiple of 6).
/// `false` for fewer than 9 bytes.
pub fn is_settings_header(header: &[u8]) -> bool {
    let Some(header) = header.get(..FRAME_HEADER_LEN) else {
        return false;
    };
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    header[3] == SETTINGS
        && header[4] & ACK == 0
        && header[5..9] == [0; 4]
        && length.is_multiple_of(SETTING_LEN)
}

/// A GOAWAY frame without debug data (RFC 9113 §6.8): the highest stream the sender
/// processed (its reserved bit cleared) and the error code.
pub fn goaway(last_stream: u32, error_code: u32) -> [u8; 17] {
    let mut frame = [0; 17];
    frame[..FRAME_HEADER_LEN].copy_from_slice(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
    frame[9..13].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    frame[13..].copy_from_slice(&error_code.to_be_bytes());
    frame
}

#[cfg(test)]
mod tests;
