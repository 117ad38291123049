//! Message heads to bytes.

use super::head::{Headers, RequestHead, ResponseHead};

// === functions ===

/// Appends `head` to `out`, as the caller left its headers.
pub fn encode_request(head: &RequestHead, out: &mut Vec<u8>) {
    out.reserve(head.method.len() + head.target.len() + 12 + estimate(&head.headers));
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    fields(&head.headers, out);
}

/// Appends `head` to `out`, as the caller left its headers.
pub fn encode_response(head: &ResponseHead, out: &mut Vec<u8>) {
    out.reserve(head.reason.len() + 16 + estimate(&head.headers));
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.push(b' ');
    let status = head.status.min(999);
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    fields(&head.headers, out);
}

/// Appends the last chunk and an empty trailer section.
pub fn write_chunked_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

fn fields(headers: &Headers, out: &mut Vec<u8>) {
    for header in headers {
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn estimate(headers: &Headers) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum::<usize>()
        + 2
}
