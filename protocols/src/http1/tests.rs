use super::*;

fn req(raw: &str) -> Result<RequestHead, Error> {
    match parse_request(raw.as_bytes(), &Limits::default())? {
        Parsed::Complete(head, n) => {
            assert_eq!(n, raw.find("\r\n\r\n").unwrap() + 4);
            Ok(head)
        }
        Parsed::Partial => panic!("partial: {raw:?}"),
    }
}

fn framing(raw: &str) -> Result<BodyKind, Error> {
    request_body(&req(raw)?)
}

/// Feeds `body` to a decoder in pieces of `step` bytes; returns (data, framing bytes, done).
fn dechunk(body: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), Error> {
    let mut decoder = ChunkedDecoder::new(&Limits::default());
    let mut data = Vec::new();
    let mut framing = 0;
    for part in body.chunks(step) {
        let mut rest = part;
        loop {
            match decoder.feed(rest)? {
                Piece::Data(n) => {
                    data.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                Piece::Framing(n) => {
                    framing += n;
                    rest = &rest[n..];
                }
                Piece::End(n) => {
                    framing += n;
                    assert_eq!(n, rest.len(), "bytes after the end in this test");
                    return Ok((data, framing, true));
                }
                Piece::NeedMore(n) => {
                    framing += n;
                    break;
                }
            }
        }
    }
    Ok((data, framing, decoder.is_done()))
}

#[test]
fn parses_a_request_head() {
    let head = req("GET /a?b HTTP/1.1\r\nHost: example.com\r\nX-Y: z\r\n\r\n").unwrap();
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/a?b");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.headers.get("host"), Some(&b"example.com"[..]));
    assert_eq!(head.headers.get("x-y"), Some(&b"z"[..]));
    assert_eq!(head.authority(), Some("example.com"));
}

#[test]
fn partial_heads_wait_and_oversized_ones_fail() {
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 4,
    };
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &limits),
        Ok(Parsed::Partial)
    );
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
    assert_eq!(
        parse_request(long.as_bytes(), &limits),
        Err(Error::HeadTooLarge(64))
    );
    let many = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
    assert_eq!(
        parse_request(many.as_bytes(), &limits),
        Err(Error::TooManyHeaders(4))
    );
    assert_eq!(Error::HeadTooLarge(1).status(), 431);
    assert_eq!(Error::TooManyHeaders(1).status(), 431);
    assert_eq!(Error::BadContentLength.status(), 400);
}

#[test]
fn malformed_heads_are_refused() {
    for raw in [
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",     // space before colon
        "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",     // invalid name
        "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",   // obs-fold
        "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",      // NUL
        "GET / HTTP/2.0\r\n\r\n",                 // not HTTP/1
        "GET  / HTTP/1.1\r\n\r\n",                // two spaces
        "G(ET / HTTP/1.1\r\n\r\n",                // bad method
        "GET / HTTP/1.1\r\n: empty-name\r\n\r\n", // empty name
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",   // space in target
        "GET / HTTP/1.1\r\nHost: a\r\rX: b\r\n\r\n", // bare CR
    ] {
        let result = parse_request(raw.as_bytes(), &Limits::default());
        assert!(
            matches!(result, Err(Error::Malformed(_))),
            "{raw:?}: {result:?}"
        );
    }
}

#[test]
fn request_framing() {
    assert_eq!(framing("GET / HTTP/1.1\r\n\r\n"), Ok(BodyKind::Empty));
    assert_eq!(
        framing("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        Ok(BodyKind::Empty)
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
        Ok(BodyKind::Length(12))
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n"),
        Ok(BodyKind::Chunked)
    );
}

#[test]
fn smuggling_framings_are_refused() {
    use Error::*;
    for (raw, error) in [
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            LengthAndTransferEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3 3\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            BadContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
            UnsupportedTransferEncoding,
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            TransferEncodingInHttp10,
        ),
    ] {
        assert_eq!(framing(raw), Err(error), "{raw:?}");
        assert_eq!(framing(raw).unwrap_err().status(), 400);
    }
}

#[test]
fn response_framing() {
    let res = |raw: &str| match parse_response(raw.as_bytes(), &Limits::default()).unwrap() {
        Parsed::Complete(head, _) => head,
        Parsed::Partial => panic!("partial"),
    };
    let ok = res("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.reason, "OK");
    assert_eq!(response_body("GET", &ok), Ok(BodyKind::Length(5)));
    assert_eq!(response_body("HEAD", &ok), Ok(BodyKind::Empty));
    for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
        let head = res(&format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n"));
        assert_eq!(response_body("GET", &head), Ok(BodyKind::Empty), "{status}");
    }
    assert_eq!(
        response_body("GET", &res("HTTP/1.1 200 OK\r\n\r\n")),
        Ok(BodyKind::UntilClose)
    );
    assert_eq!(
        response_body(
            "GET",
            &res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        ),
        Ok(BodyKind::Chunked)
    );
    assert_eq!(
        response_body("CONNECT", &res("HTTP/1.1 200 OK\r\n\r\n")),
        Ok(BodyKind::Empty)
    );
    assert_eq!(
        response_body(
            "GET",
            &res("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        ),
        Err(Error::BadContentLength)
    );
}

#[test]
fn chunked_bodies_decode_in_any_split() {
    let body = b"5\r\nhello\r\n6;ext=1;q=\"x\"\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n";
    for step in 1..=body.len() {
        let (data, framing, done) = dechunk(body, step).unwrap();
        assert_eq!(data, b"hello world", "step {step}");
        assert_eq!(framing + data.len(), body.len());
        assert!(done);
    }
    let (data, _, done) = dechunk(b"A\r\n0123456789\r\n0\r\n\r\n", 3).unwrap();
    assert_eq!(data, b"0123456789");
    assert!(done);
    let (_, _, done) = dechunk(b"5\r\nhel", 100).unwrap();
    assert!(!done);
}

#[test]
fn bad_chunks_are_refused() {
    for body in [
        &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after size
        b"5\r\nhello\n0\r\n\r\n",      // bare LF after data
        b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than size
        b"g\r\n",                      // not hex
        b"\r\n",                       // no size
        b"-5\r\n",                     // sign
        b"5 5\r\nhello\r\n",           // whitespace inside the size
        b"11111111111111111\r\n",      // 17 hex digits
        b"0\r\nX: a\n\r\n",            // bare LF in trailers
        b"0\r\n b\r\n\r\n",            // obs-fold trailer
    ] {
        let result = dechunk(body, body.len());
        assert!(
            result.is_err(),
            "{:?}: {result:?}",
            String::from_utf8_lossy(body)
        );
    }
    let long_line = format!("5;{}\r\n", "x".repeat(5000));
    assert!(dechunk(long_line.as_bytes(), 7).is_err());
    let big_trailers = format!("0\r\nX: {}\r\n\r\n", "y".repeat(70_000));
    assert!(dechunk(big_trailers.as_bytes(), 1000).is_err());
}

#[test]
fn hop_by_hop_headers_are_stripped() {
    let mut head = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nKeep-Alive: 5\r\nX-Secret: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\nProxy-Connection: x\r\nX-Kept: 1\r\n\r\n").unwrap();
    strip_hop_by_hop(&mut head.headers);
    let names: Vec<&str> = head.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["Host", "X-Kept"]);
    // `Connection` cannot strip the framing: the next hop would lose the body's length.
    let mut head = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: content-length, host\r\n\r\n").unwrap();
    strip_hop_by_hop(&mut head.headers);
    assert_eq!(head.headers.get("content-length"), Some(&b"3"[..]));
    assert_eq!(head.headers.get("host"), Some(&b"a"[..]));
}

#[test]
fn keep_alive_follows_version_and_connection() {
    let h11 = req("GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(keep_alive(h11.version, &h11.headers));
    let close = req("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
    assert!(!keep_alive(close.version, &close.headers));
    let h10 = req("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!keep_alive(h10.version, &h10.headers));
    let h10ka = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(keep_alive(h10ka.version, &h10ka.headers));
}

#[test]
fn authority_and_origin_form() {
    let mut abs = req("GET http://user@svc.ns:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
    assert!(abs.is_absolute_form());
    assert_eq!(abs.authority(), Some("svc.ns:8080"));
    abs.to_origin_form();
    assert_eq!(abs.target, "/p?q");
    let mut bare = req("GET http://svc?x HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(bare.authority(), Some("svc"));
    bare.to_origin_form();
    assert_eq!(bare.target, "/?x");
    let connect = req("CONNECT db:5432 HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(connect.authority(), Some("db:5432"));
    let none = req("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(none.authority(), None);
}

#[test]
fn heads_round_trip() {
    let raw = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    let head = req(raw).unwrap();
    let mut out = Vec::new();
    encode_request(&head, &mut out);
    assert_eq!(out, raw.as_bytes());
    let raw = "HTTP/1.0 404 Not Found\r\nX: y\r\n\r\n";
    let Parsed::Complete(head, _) = parse_response(raw.as_bytes(), &Limits::default()).unwrap()
    else {
        panic!()
    };
    let mut out = Vec::new();
    encode_response(&head, &mut out);
    assert_eq!(out, raw.as_bytes());
}

#[test]
fn upgrade_protocols() {
    let upgrade = |raw: &str| upgrade_protocol(&req(raw).unwrap());
    assert_eq!(
        upgrade("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").as_deref(),
        Some("websocket")
    );
    assert_eq!(
        upgrade(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade:  WebSocket \r\n\r\n"
        )
        .as_deref(),
        Some("WebSocket")
    );
    // The token may be in any `Connection` field.
    assert_eq!(
        upgrade(
            "GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: upgrade\r\nUpgrade: x\r\n\r\n"
        )
        .as_deref(),
        Some("x")
    );
    // h2c is stripped, in any case.
    for value in ["h2c", "H2C", " h2c "] {
        let raw = format!("GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {value}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
        assert_eq!(upgrade(&raw), None, "{value:?}");
    }
    // No `upgrade` token in `Connection`, no `Connection`, no or an empty `Upgrade`.
    for raw in [
        "GET / HTTP/1.1\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: upgraded\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade:\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade:   \r\n\r\n",
    ] {
        assert_eq!(upgrade(raw), None, "{raw:?}");
    }
    // A value that is not UTF-8.
    let mut head = req("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n").unwrap();
    head.headers.append("Upgrade", &b"\xffws"[..]);
    assert_eq!(upgrade_protocol(&head), None);
}

#[test]
fn error_responses() {
    assert_eq!(
        String::from_utf8(error_response(502, "connection refused", true, false)).unwrap(),
        "HTTP/1.1 502 Bad Gateway\r\n\
         content-type: text/plain\r\n\
         content-length: 19\r\n\
         l5d-proxy-error: connection refused\r\n\
         connection: close\r\n\
         \r\n\
         connection refused\n"
    );
    assert_eq!(
        String::from_utf8(error_response(502, "connection refused", false, false)).unwrap(),
        "HTTP/1.1 502 Bad Gateway\r\n\
         content-type: text/plain\r\n\
         content-length: 19\r\n\
         l5d-proxy-error: connection refused\r\n\
         \r\n\
         connection refused\n"
    );
    // An empty message still has a one-byte body; a status without a phrase keeps its space.
    assert_eq!(
        String::from_utf8(error_response(599, "", false, false)).unwrap(),
        "HTTP/1.1 599 \r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\
         l5d-proxy-error: \r\n\r\n\n"
    );
}

#[test]
fn error_responses_to_head_leave_the_body_out() {
    let head = error_response(504, "timed out", false, true);
    let get = error_response(504, "timed out", false, false);
    assert_eq!(get, [&head[..], b"timed out\n"].concat());
    assert!(String::from_utf8(head)
        .unwrap()
        .ends_with("content-length: 10\r\nl5d-proxy-error: timed out\r\n\r\n"));
    let close = error_response(400, "bad", true, true);
    assert!(close.ends_with(b"connection: close\r\n\r\n"));
}

#[test]
fn error_messages_are_sanitized() {
    let out = error_response(400, "bad\r\nx-injected: 1\0\x7f\u{85}é", true, false);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.contains("l5d-proxy-error: bad  x-injected: 1   é\r\n"),
        "{text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\nbad  x-injected: 1   é\n"),
        "{text:?}"
    );
    assert!(!text.contains("\r\nx-injected"));
    // The body length counts bytes, not chars.
    let body = "bad  x-injected: 1   é\n";
    assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    // And the response parses as exactly one head with the message as its header.
    let Parsed::Complete(head, n) = parse_response(&out, &Limits::default()).unwrap() else {
        panic!("partial");
    };
    assert_eq!(head.status, 400);
    assert_eq!(head.reason, "Bad Request");
    assert_eq!(head.headers.count("x-injected"), 0);
    assert_eq!(&out[n..], body.as_bytes());
    assert_eq!(
        response_body("GET", &head),
        Ok(BodyKind::Length(body.len() as u64))
    );
}

#[test]
fn header_values_are_sanitized() {
    assert_eq!(sanitize_header_value(""), "");
    assert_eq!(sanitize_header_value("plain text: ok"), "plain text: ok");
    assert_eq!(
        sanitize_header_value("a\rb\nc\0d\te\x1bf\x7fg"),
        "a b c d e f g"
    );
    assert_eq!(
        sanitize_header_value("\u{80}\u{9f}ü\u{2028}"),
        "  ü\u{2028}"
    );
}

#[test]
fn reason_phrases() {
    for (status, phrase) in [
        (100, "Continue"),
        (101, "Switching Protocols"),
        (200, "OK"),
        (201, "Created"),
        (204, "No Content"),
        (301, "Moved Permanently"),
        (302, "Found"),
        (304, "Not Modified"),
        (307, "Temporary Redirect"),
        (308, "Permanent Redirect"),
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (408, "Request Timeout"),
        (413, "Content Too Large"),
        (414, "URI Too Long"),
        (415, "Unsupported Media Type"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (504, "Gateway Timeout"),
    ] {
        assert_eq!(reason(status), phrase, "{status}");
    }
    for status in [0, 99, 299, 418, 599, 600, 999, u16::MAX] {
        assert_eq!(reason(status), "", "{status}");
    }
}
