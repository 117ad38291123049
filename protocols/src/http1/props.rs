//! Property tests: generated heads survive encode -> parse unchanged and frame their bodies as
//! their headers say; any bytes at any entry point never panic; chunked coding of any data
//! decodes back to it under any split; hop-by-hop stripping removes exactly what it should;
//! the proxy's own error responses parse as one head and body whatever their message.

use proptest::collection::vec;
use proptest::prelude::*;

use super::head::trim;
use super::*;

/// How a generated message frames its body.
#[derive(Clone, Debug)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

// === strategies ===

const TCHARS: &str = "[!#$%&'*+.^_`|~0-9A-Za-z-]";

fn token(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{TCHARS}{{1,{max}}}")).unwrap()
}

/// Header names, any token but the framing ones (added separately).
fn header_name() -> impl Strategy<Value = String> {
    token(16).prop_map(|name| {
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            format!("x-{name}")
        } else {
            name
        }
    })
}

/// A field value (RFC 9110 §5.5): visible ASCII, obs-text, and spaces or tabs inside.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => 0x21u8..=0x7e,
        1 => 0x80u8..=0xff,
        1 => Just(b' '),
        1 => Just(b'\t'),
    ];
    vec(byte, 0..40).prop_map(|value| trim(&value).to_vec())
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    vec((header_name(), header_value()), 0..12)
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::None),
        Just(Framing::Length(0)),
        any::<u64>().prop_map(Framing::Length),
        (0u64..100_000).prop_map(Framing::Length),
        Just(Framing::Chunked),
    ]
}

/// Any spelling of a field name.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// Headers with the framing field inserted somewhere.
fn framed_headers(framing: Framing) -> impl Strategy<Value = Headers> {
    let field = match framing {
        Framing::None => Just(None).boxed(),
        Framing::Length(n) => spelled("content-length")
            .prop_map(move |name| Some((name, n.to_string().into_bytes())))
            .boxed(),
        Framing::Chunked => (spelled("transfer-encoding"), spelled("chunked"))
            .prop_map(|(name, value)| Some((name, value.into_bytes())))
            .boxed(),
    };
    (headers(), field, any::<prop::sample::Index>()).prop_map(|(mut fields, field, at)| {
        if let Some(field) = field {
            let at = at.index(fields.len() + 1);
            fields.insert(at, field);
        }
        let mut headers = Headers::default();
        for (name, value) in fields {
            headers.append(name, value);
        }
        headers
    })
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::Http10), Just(Version::Http11)]
}

/// Any request target httparse takes: visible ASCII and non-ASCII UTF-8, no spaces.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[!-~]{0,40}",
        "https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[!-~]{0,20})?",
        "[!-~é€\u{1F600}]{1,40}",
        Just("*".to_string()),
    ]
}

fn request() -> impl Strategy<Value = (RequestHead, Framing)> {
    (token(12), target(), version(), framing()).prop_flat_map(
        |(method, target, version, framing)| {
            framed_headers(framing.clone()).prop_map(move |headers| {
                let head = RequestHead {
                    method: method.clone(),
                    target: target.clone(),
                    version,
                    headers,
                };
                (head, framing.clone())
            })
        },
    )
}

fn response() -> impl Strategy<Value = (ResponseHead, Framing)> {
    (100u16..=999, "[\t -~]{0,30}", version(), framing()).prop_flat_map(
        |(status, reason, version, framing)| {
            framed_headers(framing.clone()).prop_map(move |headers| {
                let head = ResponseHead {
                    version,
                    status,
                    reason: reason.clone(),
                    headers,
                };
                (head, framing.clone())
            })
        },
    )
}

/// Bytes that often look like a message head, a chunked body or parts of them.
fn messy_bytes() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(&b""[..]),
        Just(&b"GET / HTTP/1.1\r\n"[..]),
        Just(&b"POST http://a/b HTTP/1.0\r\nContent-Length: 3\r\n"[..]),
        Just(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"[..]),
        Just(&b"5\r\nhello\r\n0\r\n"[..]),
    ];
    let piece = prop_oneof![
        3 => any::<u8>().prop_map(|b| vec![b]),
        1 => prop::sample::select(vec![
            &b"\r\n"[..], b"\n", b": ", b"\r\n\r\n", b"Connection: ", b"Host: ",
            b"Content-Length: ", b"Transfer-Encoding: chunked", b"HTTP/1.1", b" ", b"0", b";",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    (start, vec(piece, 0..60)).prop_map(|(start, pieces)| {
        let mut out = start.to_vec();
        out.extend(pieces.concat());
        out
    })
}

/// A chunked body carrying `chunks`: sizes in either hex case with leading zeros, optional
/// whitespace and extensions on size lines, optional trailers.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        vec(any::<u8>(), 1..200),
        prop::bool::ANY,
        0usize..3,
        prop::option::of("[ \t]{0,2};[a-z]{1,5}(=[!-~]{0,8})?"),
    );
    let trailer = (header_name(), header_value());
    (vec(chunk, 0..8), vec(trailer, 0..3)).prop_map(|(chunks, trailers)| {
        let mut body = Vec::new();
        let mut data = Vec::new();
        for (bytes, upper, zeros, extension) in chunks {
            let size = if upper {
                format!("{:X}", bytes.len())
            } else {
                format!("{:x}", bytes.len())
            };
            body.extend_from_slice("0".repeat(zeros).as_bytes());
            body.extend_from_slice(size.as_bytes());
            body.extend_from_slice(extension.unwrap_or_default().as_bytes());
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(&bytes);
            body.extend_from_slice(b"\r\n");
            data.extend(bytes);
        }
        body.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(b": ");
            body.extend_from_slice(&value);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"\r\n");
        (body, data)
    })
}

// === helpers ===

fn encoded_request(head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(head, &mut out);
    out
}

fn encoded_response(head: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(head, &mut out);
    out
}

/// What framing the headers declare, as `request_body`/`response_body` should report it.
fn expected_kind(version: Version, framing: &Framing, none: BodyKind) -> Result<BodyKind, Error> {
    match framing {
        Framing::None => Ok(none),
        Framing::Length(0) => Ok(BodyKind::Empty),
        Framing::Length(n) if *n < 10_000_000_000_000_000_000 => Ok(BodyKind::Length(*n)),
        // 20 digits: over the 19 that are accepted.
        Framing::Length(_) => Err(Error::BadContentLength),
        Framing::Chunked if version == Version::Http10 => Err(Error::TransferEncodingInHttp10),
        Framing::Chunked => Ok(BodyKind::Chunked),
    }
}

/// Sorted cut points into `len` bytes.
fn cuts(indices: &[prop::sample::Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = indices.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Feeds `body` split at `cuts`; returns the data, the framing byte count and where the body
/// ended.
fn decode(body: &[u8], cuts: &[usize], limits: &Limits) -> Result<(Vec<u8>, usize, usize), Error> {
    let mut decoder = ChunkedDecoder::new(limits);
    let (mut data, mut framing) = (Vec::new(), 0);
    let mut start = 0;
    for &cut in cuts.iter().chain([&body.len()]) {
        let mut rest = &body[start..cut];
        start = cut;
        loop {
            match decoder.feed(rest)? {
                Piece::Data(n) => {
                    assert!(n > 0);
                    data.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                Piece::Framing(n) => {
                    assert!(n > 0);
                    framing += n;
                    rest = &rest[n..];
                }
                Piece::End(n) => {
                    assert!(decoder.is_done());
                    return Ok((data, framing + n, cut - rest.len() + n));
                }
                Piece::NeedMore(n) => {
                    assert_eq!(n, rest.len());
                    framing += n;
                    break;
                }
            }
        }
    }
    Ok((data, framing, usize::MAX))
}

// === properties ===

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A generated request encodes to bytes that parse back to it, in exactly those bytes,
    /// whatever follows; every shorter read is `Partial`; its body is framed as declared.
    #[test]
    fn requests_round_trip(
        (head, framing) in request(),
        body in vec(any::<u8>(), 0..16),
        at in vec(any::<prop::sample::Index>(), 4),
    ) {
        let encoded = encoded_request(&head);
        let mut bytes = encoded.clone();
        bytes.extend(&body);
        prop_assert_eq!(
            parse_request(&bytes, &Limits::default()),
            Ok(Parsed::Complete(head.clone(), encoded.len()))
        );
        for cut in cuts(&at, encoded.len() - 1) {
            prop_assert_eq!(parse_request(&encoded[..cut], &Limits::default()), Ok(Parsed::Partial));
        }
        prop_assert_eq!(
            request_body(&head),
            expected_kind(head.version, &framing, BodyKind::Empty)
        );
    }

    /// The same for responses, framed for a GET.
    #[test]
    fn responses_round_trip(
        (head, framing) in response(),
        body in vec(any::<u8>(), 0..16),
        at in vec(any::<prop::sample::Index>(), 4),
    ) {
        let encoded = encoded_response(&head);
        let mut bytes = encoded.clone();
        bytes.extend(&body);
        prop_assert_eq!(
            parse_response(&bytes, &Limits::default()),
            Ok(Parsed::Complete(head.clone(), encoded.len()))
        );
        for cut in cuts(&at, encoded.len() - 1) {
            prop_assert_eq!(
                parse_response(&encoded[..cut], &Limits::default()),
                Ok(Parsed::Partial)
            );
        }
        let expected = if (100..200).contains(&head.status) || matches!(head.status, 204 | 304) {
            Ok(BodyKind::Empty)
        } else {
            expected_kind(head.version, &framing, BodyKind::UntilClose)
        };
        prop_assert_eq!(response_body("GET", &head), expected);
        prop_assert_eq!(response_body("HEAD", &head), Ok(BodyKind::Empty));
    }

    /// An absolute-form target names its authority and rewrites to its path.
    #[test]
    fn absolute_form_targets(
        scheme in "[hH][tT][tT][pP][sS]?",
        authority in "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
        path in "(/[!-~]{0,20})?",
    ) {
        let mut head = RequestHead {
            method: "GET".into(),
            target: format!("{scheme}://{authority}{path}"),
            version: Version::Http11,
            headers: Headers::default(),
        };
        head.headers.append("Host", "elsewhere");
        prop_assert!(head.is_absolute_form());
        prop_assert_eq!(head.authority(), Some(authority.as_str()));
        head.to_origin_form();
        let expected = if path.is_empty() { "/" } else { path.as_str() };
        prop_assert_eq!(head.target.as_str(), expected);
        prop_assert_eq!(head.authority(), Some("elsewhere"));
    }

    /// Any bytes through every entry point: no panic, and the outcomes keep their limits.
    #[test]
    fn any_bytes_never_panic(bytes in messy_bytes()) {
        let small = Limits { max_head_bytes: 48, max_headers: 3 };
        let tight = Limits { max_head_bytes: bytes.len(), max_headers: 100 };
        for limits in [small, tight, Limits::default()] {
            match parse_request(&bytes, &limits) {
                Ok(Parsed::Complete(mut head, n)) => {
                    prop_assert!(n <= bytes.len().min(limits.max_head_bytes));
                    prop_assert!(head.headers.len() <= limits.max_headers);
                    let _ = request_body(&head);
                    let _ = head.authority();
                    let _ = keep_alive(head.version, &head.headers);
                    head.to_origin_form();
                    strip_hop_by_hop(&mut head.headers);
                    let _ = encoded_request(&head);
                }
                Ok(Parsed::Partial) => prop_assert!(bytes.len() < limits.max_head_bytes),
                Err(_) => {}
            }
            match parse_response(&bytes, &limits) {
                Ok(Parsed::Complete(mut head, n)) => {
                    prop_assert!(n <= bytes.len().min(limits.max_head_bytes));
                    for method in ["GET", "HEAD", "CONNECT"] {
                        let _ = response_body(method, &head);
                    }
                    strip_hop_by_hop(&mut head.headers);
                    let _ = encoded_response(&head);
                }
                Ok(Parsed::Partial) => prop_assert!(bytes.len() < limits.max_head_bytes),
                Err(_) => {}
            }
            let mut decoder = ChunkedDecoder::new(&limits);
            let mut rest = &bytes[..];
            while let Ok(piece) = decoder.feed(rest) {
                match piece {
                    Piece::Data(n) | Piece::Framing(n) | Piece::End(n) => {
                        prop_assert!(n > 0 && n <= rest.len());
                        rest = &rest[n..];
                    }
                    Piece::NeedMore(n) => {
                        prop_assert_eq!(n, rest.len());
                        break;
                    }
                }
            }
        }
    }

    /// A chunked body decodes to its data under any split, every byte counted once, ending
    /// exactly at its last byte; a byte after the end is refused.
    #[test]
    fn chunked_bodies_decode_under_any_split(
        (body, data) in chunked_body(),
        at in vec(any::<prop::sample::Index>(), 0..12),
        after in any::<u8>(),
    ) {
        let limits = Limits::default();
        let cuts = cuts(&at, body.len());
        let (decoded, framing, end) = decode(&body, &cuts, &limits).unwrap();
        prop_assert_eq!(&decoded, &data);
        prop_assert_eq!(end, body.len());
        prop_assert_eq!(decoded.len() + framing, body.len());

        let mut decoder = ChunkedDecoder::new(&limits);
        let mut rest = &body[..];
        while !decoder.is_done() {
            match decoder.feed(rest).unwrap() {
                Piece::Data(n) | Piece::Framing(n) | Piece::End(n) => rest = &rest[n..],
                Piece::NeedMore(_) => unreachable!("the whole body was given"),
            }
        }
        prop_assert!(decoder.feed(&[after]).is_err());
    }

    /// Stripping keeps, in order, exactly the fields that are neither hop-by-hop nor named
    /// by a `Connection` field.
    #[test]
    fn hop_by_hop_stripping(
        fields in vec(
            (
                prop_oneof![
                    prop::sample::select(vec![
                        "Connection", "connection", "Keep-Alive", "TE", "Transfer-Encoding",
                        "Upgrade", "Proxy-Connection", "HTTP2-Settings", "X-A", "x-b", "Host",
                    ])
                    .prop_map(str::to_string),
                    header_name(),
                ],
                vec(prop::sample::select(vec!["x-a", "X-B", "close", "keep-alive", " "]), 0..3),
            ),
            0..10,
        ),
    ) {
        let mut headers = Headers::default();
        for (name, tokens) in &fields {
            headers.append(name.clone(), tokens.join(", "));
        }
        let named: Vec<String> = fields
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, tokens)| tokens.iter().map(|t| t.trim().to_ascii_lowercase()))
            .collect();
        let hop_by_hop = [
            "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
            "http2-settings",
        ];
        let expected: Vec<&str> = fields
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| {
                !hop_by_hop.iter().any(|h| name.eq_ignore_ascii_case(h))
                    && !named.iter().any(|n| name.eq_ignore_ascii_case(n))
            })
            .collect();
        strip_hop_by_hop(&mut headers);
        let kept: Vec<&str> = headers.iter().map(|h| h.name.as_str()).collect();
        prop_assert_eq!(kept, expected);
    }

    /// An error response with any message parses as exactly one head, with the status, the
    /// phrase, the sanitized message and a `Content-Length` that frames exactly its body.
    #[test]
    fn error_responses_parse(
        status in 400u16..600,
        message in any::<String>(),
        close in any::<bool>(),
        head_request in any::<bool>(),
    ) {
        let out = error_response(status, &message, close, head_request);
        let Ok(Parsed::Complete(head, n)) = parse_response(&out, &Limits::default()) else {
            panic!("{:?}", String::from_utf8_lossy(&out));
        };
        let sanitized = sanitize_header_value(&message);
        prop_assert!(!sanitized.chars().any(char::is_control));
        prop_assert_eq!(head.status, status);
        prop_assert_eq!(&head.reason, reason(status));
        prop_assert_eq!(head.headers.len(), if close { 4 } else { 3 });
        prop_assert_eq!(
            head.headers.get("l5d-proxy-error").map(trim),
            Some(trim(sanitized.as_bytes()))
        );
        prop_assert_eq!(keep_alive(head.version, &head.headers), !close);
        let body = format!("{sanitized}\n");
        prop_assert_eq!(response_body("GET", &head), Ok(BodyKind::Length(body.len() as u64)));
        let rest: &[u8] = if head_request { b"" } else { body.as_bytes() };
        prop_assert_eq!(&out[n..], rest);
    }
}
