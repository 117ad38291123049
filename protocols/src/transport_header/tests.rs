use super::*;

// === helpers ===

fn header(port: u16, name: Option<&str>, protocol: Option<SessionProtocol>) -> TransportHeader {
    TransportHeader {
        port,
        name: name.map(str::to_string),
        protocol,
    }
}

/// PREFACE, the length of `message`, then `message`.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Decodes a framed `message`, which must be a whole header.
fn decode_message(message: &[u8]) -> Result<TransportHeader, HeaderError> {
    let bytes = framed(message);
    match decode(&bytes)? {
        Decoded::Header { header, consumed } => {
            assert_eq!(consumed, bytes.len());
            Ok(header)
        }
        other => panic!("{other:?} for {message:02x?}"),
    }
}

fn invalid(message: &[u8]) -> HeaderError {
    match decode_message(message) {
        Err(error) => error,
        Ok(header) => panic!("{header:?} from {message:02x?}"),
    }
}

/// `port: 80` and then `rest`.
fn port_80_and(rest: &[u8]) -> Vec<u8> {
    let mut message = vec![0x08, 80];
    message.extend_from_slice(rest);
    message
}

/// Asserts that every proper prefix of `bytes` needs more.
fn prefixes_need_more(bytes: &[u8]) {
    for end in 0..bytes.len() {
        assert_eq!(decode(&bytes[..end]), Ok(Decoded::NeedMore), "{end} bytes");
    }
}

// === constants ===

#[test]
fn constants() {
    assert_eq!(PREFACE, [ALPN, b"\r\n\r\n"].concat());
    assert_eq!(PREFACE.len(), 23);
    assert_eq!(MAX_HEADER_LEN, 65_536);
}

// === encode: exact bytes ===

#[test]
fn encodes_port_and_http2() {
    // 4143 = 0x102f: varint 0xaf 0x20. Field 3 holds field 2 (http2) as an empty message.
    let bytes = encode(&header(4143, None, Some(SessionProtocol::Http2)));
    let expected = [
        PREFACE,
        &[0, 0, 0, 7],
        &[0x08, 0xaf, 0x20, 0x1a, 0x02, 0x12, 0x00],
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[test]
fn encodes_port_name_and_http1() {
    let name = "web.ns.svc.cluster.local"; // 24 bytes
    let bytes = encode(&header(4143, Some(name), Some(SessionProtocol::Http1)));
    let mut message = vec![0x08, 0xaf, 0x20, 0x12, 24];
    message.extend_from_slice(name.as_bytes());
    message.extend_from_slice(&[0x1a, 0x02, 0x0a, 0x00]);
    assert_eq!(bytes, framed(&message));
    assert_eq!(bytes[23..27], [0, 0, 0, 33]);
}

#[test]
fn encodes_opaque_port() {
    assert_eq!(encode(&header(80, None, None)), framed(&[0x08, 0x50]));
    assert_eq!(encode(&header(127, None, None)), framed(&[0x08, 0x7f]));
    assert_eq!(
        encode(&header(128, None, None)),
        framed(&[0x08, 0x80, 0x01])
    );
    assert_eq!(
        encode(&header(65535, None, None)),
        framed(&[0x08, 0xff, 0xff, 0x03])
    );
}

#[test]
fn leaves_defaults_out() {
    // proto3: port 0 and the empty name are not written; nor is an absent message.
    assert_eq!(encode(&header(0, None, None)), framed(&[]));
    assert_eq!(encode(&header(0, Some(""), None)), framed(&[]));
    assert_eq!(
        encode(&header(8080, Some(""), None)),
        encode(&header(8080, None, None))
    );
    assert_eq!(
        encode(&header(0, None, Some(SessionProtocol::Http1))),
        framed(&[0x1a, 0x02, 0x0a, 0x00])
    );
}

#[test]
fn encodes_long_name_lengths_as_varints() {
    let name = format!("{}.example", "a".repeat(63)); // 71 bytes
    let long = [name.as_str(); 3].join("."); // 215 bytes = 0xd7: varint 0xd7 0x01
    let bytes = encode(&header(1, Some(&long), None));
    let mut message = vec![0x08, 0x01, 0x12, 0xd7, 0x01];
    message.extend_from_slice(long.as_bytes());
    assert_eq!(bytes, framed(&message));
}

// === decode ===

#[test]
fn decodes_what_it_encodes() {
    let headers = [
        header(4143, None, Some(SessionProtocol::Http2)),
        header(4143, None, Some(SessionProtocol::Http1)),
        header(1, None, None),
        header(65535, Some("web.ns.svc.cluster.local"), None),
        header(
            8080,
            Some("foo.bar.example.com"),
            Some(SessionProtocol::Http2),
        ),
    ];
    for h in headers {
        let bytes = encode(&h);
        let expected = Decoded::Header {
            header: h.clone(),
            consumed: bytes.len(),
        };
        assert_eq!(decode(&bytes), Ok(expected.clone()));
        // Application data after the header is left alone.
        let mut with_data = bytes.clone();
        with_data.extend_from_slice(b"12345");
        assert_eq!(decode(&with_data), Ok(expected));
    }
}

#[test]
fn linkerd_roundtrip_prefaced() {
    // linkerd2-proxy's `roundtrip_prefaced` test: a header, then "12345".
    let h = header(
        4040,
        Some("foo.bar.example.com"),
        Some(SessionProtocol::Http2),
    );
    let mut bytes = encode(&h);
    let len = bytes.len();
    bytes.extend_from_slice(b"12345");
    assert_eq!(
        decode(&bytes),
        Ok(Decoded::Header {
            header: h,
            consumed: len
        })
    );
    assert_eq!(&bytes[len..], b"12345");
}

#[test]
fn not_a_header() {
    assert_eq!(
        decode(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        Ok(Decoded::NotHeader)
    );
    assert_eq!(decode(&[0x16, 3, 1, 0, 5]), Ok(Decoded::NotHeader));
    assert_eq!(decode(b"transport.l5d.io/v2"), Ok(Decoded::NotHeader));
    assert_eq!(decode(b"transport.l5d.io/v1\r\n\n"), Ok(Decoded::NotHeader));
    assert_eq!(decode(b"x"), Ok(Decoded::NotHeader));
    // Decided at the first byte that differs, however much follows.
    assert_eq!(decode(b"transport.l5d.io/v1\n"), Ok(Decoded::NotHeader));
}

#[test]
fn needs_more_for_every_proper_prefix() {
    assert_eq!(decode(b""), Ok(Decoded::NeedMore));
    for h in [
        header(4143, None, Some(SessionProtocol::Http2)),
        header(80, Some("a.b"), Some(SessionProtocol::Http1)),
        header(9, None, None),
    ] {
        prefixes_need_more(&encode(&h));
    }
    // An empty message is complete (and invalid: no port) only once its length is read.
    prefixes_need_more(&framed(&[]));
    assert_eq!(
        decode(&framed(&[])),
        Err(HeaderError::Invalid("port out of range"))
    );
}

#[test]
fn too_large() {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&(MAX_HEADER_LEN as u32 + 1).to_be_bytes());
    assert_eq!(
        decode(&bytes),
        Err(HeaderError::TooLarge(MAX_HEADER_LEN + 1))
    );
    bytes[23..27].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode(&bytes),
        Err(HeaderError::TooLarge(u32::MAX as usize))
    );
    // At the limit the decoder waits for the message.
    bytes[23..27].copy_from_slice(&(MAX_HEADER_LEN as u32).to_be_bytes());
    assert_eq!(decode(&bytes), Ok(Decoded::NeedMore));
    // And decodes it: a port and one unknown field filling the rest.
    let filler = MAX_HEADER_LEN - 2 - 4;
    let mut message = vec![0x08, 80, 0x22];
    put_varint(&mut message, filler as u64);
    message.resize(MAX_HEADER_LEN, 0);
    assert_eq!(decode_message(&message), Ok(header(80, None, None)));
}

#[test]
fn ports_out_of_range() {
    let out_of_range = HeaderError::Invalid("port out of range");
    // No port at all, or 0 written out: linkerd2-proxy refuses port 0.
    assert_eq!(invalid(&[]), out_of_range);
    assert_eq!(invalid(&[0x08, 0x00]), out_of_range);
    assert_eq!(invalid(&[0x12, 0x01, b'a']), out_of_range);
    // 65536.
    assert_eq!(invalid(&[0x08, 0x80, 0x80, 0x04]), out_of_range);
    // -1, as int32 is written: ten bytes.
    assert_eq!(
        invalid(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        out_of_range
    );
    // i32::MAX.
    assert_eq!(invalid(&[0x08, 0xff, 0xff, 0xff, 0xff, 0x07]), out_of_range);
}

#[test]
fn ports_are_int32() {
    // A varint over 32 bits is cut to its low 32 bits, as protobuf's int32 (and prost) do:
    // 2^32 + 8080 is 8080.
    let mut message = vec![0x08];
    put_varint(&mut message, (1 << 32) + 8080);
    assert_eq!(decode_message(&message), Ok(header(8080, None, None)));
    // Redundant zero groups are accepted: 80 in three bytes.
    assert_eq!(
        decode_message(&[0x08, 0xd0, 0x80, 0x00]),
        Ok(header(80, None, None))
    );
    // The largest varint: u64::MAX, whose low 32 bits are -1.
    assert_eq!(
        invalid(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        HeaderError::Invalid("port out of range")
    );
}

#[test]
fn bad_varints() {
    let bad = HeaderError::Invalid("invalid varint");
    // Eleven bytes.
    assert_eq!(
        invalid(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        bad
    );
    // Ten bytes, over 64 bits.
    assert_eq!(
        invalid(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
        bad
    );
    assert_eq!(
        invalid(&[0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f]),
        bad
    );
    // Cut off by the end of the message: in a value, in a key, in a length.
    assert_eq!(invalid(&[0x08, 0x80]), bad);
    assert_eq!(invalid(&[0x08]), bad);
    assert_eq!(invalid(&port_80_and(&[0x80])), bad);
    assert_eq!(invalid(&port_80_and(&[0x12])), bad);
    assert_eq!(invalid(&port_80_and(&[0x12, 0x80])), bad);
    // In a nested message.
    assert_eq!(invalid(&port_80_and(&[0x1a, 0x01, 0x80])), bad);
}

#[test]
fn truncated_fields() {
    let truncated = HeaderError::Invalid("truncated field");
    assert_eq!(invalid(&port_80_and(&[0x12, 0x05, b'a', b'b'])), truncated);
    assert_eq!(invalid(&port_80_and(&[0x1a, 0x02, 0x12])), truncated);
    // A nested field that runs past its message's end.
    assert_eq!(
        invalid(&port_80_and(&[0x1a, 0x02, 0x12, 0x01, 0x00])),
        truncated
    );
    // Unknown fields: length-delimited, fixed64, fixed32.
    assert_eq!(invalid(&port_80_and(&[0x22, 0x03, 0x00])), truncated);
    assert_eq!(
        invalid(&port_80_and(&[0x21, 0, 0, 0, 0, 0, 0, 0])),
        truncated
    );
    assert_eq!(invalid(&port_80_and(&[0x25, 0, 0, 0])), truncated);
    // A length over what a usize holds.
    assert_eq!(
        invalid(&port_80_and(&[
            0x22, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])),
        truncated
    );
}

#[test]
fn wrong_wire_types_for_known_fields() {
    let wrong = HeaderError::Invalid("wrong wire type");
    // port as fixed32, as length-delimited (packed), as a group.
    assert_eq!(invalid(&[0x0d, 80, 0, 0, 0]), wrong);
    assert_eq!(invalid(&[0x0a, 0x01, 80]), wrong);
    assert_eq!(invalid(&[0x0b, 0x0c]), wrong);
    // name as a varint.
    assert_eq!(invalid(&port_80_and(&[0x10, 0x01])), wrong);
    // session_protocol as a varint, a fixed64.
    assert_eq!(invalid(&port_80_and(&[0x18, 0x01])), wrong);
    assert_eq!(
        invalid(&port_80_and(&[0x19, 0, 0, 0, 0, 0, 0, 0, 0])),
        wrong
    );
    // http1 / http2 as varints.
    assert_eq!(invalid(&port_80_and(&[0x1a, 0x02, 0x08, 0x00])), wrong);
    assert_eq!(invalid(&port_80_and(&[0x1a, 0x02, 0x10, 0x00])), wrong);
}

#[test]
fn bad_keys() {
    // Field number 0.
    assert_eq!(
        invalid(&port_80_and(&[0x00, 0x00])),
        HeaderError::Invalid("invalid field number 0")
    );
    // Wire types 6 and 7 do not exist.
    assert_eq!(
        invalid(&port_80_and(&[0x26, 0x00])),
        HeaderError::Invalid("invalid wire type")
    );
    assert_eq!(
        invalid(&port_80_and(&[0x27, 0x00])),
        HeaderError::Invalid("invalid wire type")
    );
    // A key over 32 bits.
    assert_eq!(
        invalid(&port_80_and(&[0x80, 0x80, 0x80, 0x80, 0x10, 0x00])),
        HeaderError::Invalid("invalid key")
    );
    // The largest field number, 2^29 - 1, is fine (and unknown).
    assert_eq!(
        decode_message(&port_80_and(&[0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00])),
        Ok(header(80, None, None))
    );
}

#[test]
fn bad_groups() {
    // An end of group with no start.
    assert_eq!(
        invalid(&port_80_and(&[0x2c])),
        HeaderError::Invalid("unexpected end of group")
    );
    // A group of field 5 ended as field 6.
    assert_eq!(
        invalid(&port_80_and(&[0x2b, 0x34])),
        HeaderError::Invalid("unmatched end of group")
    );
    // A group never ended.
    assert_eq!(
        invalid(&port_80_and(&[0x2b, 0x08, 0x01])),
        HeaderError::Invalid("invalid varint")
    );
}

#[test]
fn groups_nest_as_deep_as_prost_allows() {
    /// Groups of field 7 nested `depth` deep.
    fn groups(depth: usize) -> Vec<u8> {
        [vec![0x3b; depth], vec![0x3c; depth]].concat()
    }
    let too_deep = HeaderError::Invalid("nested too deep");
    // At the top level, 100 levels.
    assert_eq!(
        decode_message(&port_80_and(&groups(100))),
        Ok(header(80, None, None))
    );
    assert_eq!(invalid(&port_80_and(&groups(101))), too_deep);
    // In session_protocol, one less.
    let nested = |depth: usize| {
        let inner = groups(depth);
        let mut message = port_80_and(&[0x1a]);
        put_varint(&mut message, inner.len() as u64);
        message.extend_from_slice(&inner);
        message
    };
    assert_eq!(decode_message(&nested(99)), Ok(header(80, None, None)));
    assert_eq!(invalid(&nested(100)), too_deep);
    // In http2 {}, one less again.
    let in_http2 = |depth: usize| {
        let inner = groups(depth);
        let mut http2 = vec![0x12];
        put_varint(&mut http2, inner.len() as u64);
        http2.extend_from_slice(&inner);
        let mut message = port_80_and(&[0x1a]);
        put_varint(&mut message, http2.len() as u64);
        message.extend_from_slice(&http2);
        message
    };
    assert_eq!(
        decode_message(&in_http2(98)),
        Ok(header(80, None, Some(SessionProtocol::Http2)))
    );
    assert_eq!(invalid(&in_http2(99)), too_deep);
}

#[test]
fn names() {
    let with_name = |name: &[u8]| {
        let mut message = port_80_and(&[0x12]);
        put_varint(&mut message, name.len() as u64);
        message.extend_from_slice(name);
        decode_message(&message)
    };
    assert_eq!(with_name(b""), Ok(header(80, None, None)));
    assert_eq!(with_name(b"a.b.c"), Ok(header(80, Some("a.b.c"), None)));
    // Lowercased, as linkerd2-proxy's `Name` is; a trailing dot stays.
    assert_eq!(
        with_name(b"Web.NS.svc.cluster.local."),
        Ok(header(80, Some("web.ns.svc.cluster.local."), None))
    );
    assert_eq!(
        with_name(&[0xff, 0xfe]),
        Err(HeaderError::Invalid("name is not UTF-8"))
    );
    for name in [
        "foo bar",
        "*.example.com",
        "1.2.3.4",
        "::1",
        "a..b",
        "é.com",
        "-a",
    ] {
        assert_eq!(
            with_name(name.as_bytes()),
            Err(HeaderError::Invalid("name is not a DNS name")),
            "{name:?}"
        );
    }
}

#[test]
fn unknown_fields_are_skipped() {
    let mut message = vec![
        0x20, 0x96, 0x01, // field 4, varint 150
        0x29, 1, 2, 3, 4, 5, 6, 7, 8, // field 5, fixed64
        0x32, 0x03, b'a', b'b', b'c', // field 6, length-delimited
        0x3b, 0x08, 0x01, 0x43, 0x44, 0x3c, // field 7, a group with a group inside
        0x45, 1, 2, 3, 4, // field 8, fixed32
        0x08, 0xaf, 0x20, // port 4143
        0x80, 0x01, 0x00, // field 16, varint 0
        0x12, 0x03, b'a', b'.', b'b', // name
    ];
    // session_protocol with unknown fields around and inside http2 {}.
    message.extend_from_slice(&[
        0x1a, 0x0f, // session_protocol, 15 bytes:
        0x18, 0x05, // field 3, varint
        0x12, 0x09, // http2, 9 bytes:
        0x08, 0x01, // field 1, varint
        0x15, 0, 0, 0, 0, // field 2, fixed32
        0x0a, 0x00, // field 1 again, length-delimited
        0x23, 0x24, // field 4, an empty group
    ]);
    assert_eq!(
        decode_message(&message),
        Ok(header(4143, Some("a.b"), Some(SessionProtocol::Http2)))
    );
}

#[test]
fn repeated_fields() {
    // The last port and the last name win.
    assert_eq!(
        decode_message(&[0x08, 0x01, 0x12, 0x01, b'a', 0x08, 0x02, 0x12, 0x01, b'b']),
        Ok(header(2, Some("b"), None))
    );
    // A name that is not UTF-8 fails even when a later one replaces it (prost checks each).
    assert_eq!(
        invalid(&[0x08, 0x01, 0x12, 0x01, 0xff, 0x12, 0x01, b'b']),
        HeaderError::Invalid("name is not UTF-8")
    );
    // A name that is not a DNS name is fine if a later one replaces it (checked at the end).
    assert_eq!(
        decode_message(&[0x08, 0x01, 0x12, 0x01, b'*', 0x12, 0x01, b'b']),
        Ok(header(1, Some("b"), None))
    );
    // An empty name replaces a name.
    assert_eq!(
        decode_message(&[0x08, 0x01, 0x12, 0x01, b'a', 0x12, 0x00]),
        Ok(header(1, None, None))
    );
}

#[test]
fn session_protocols_merge() {
    let http1 = [0x1a, 0x02, 0x0a, 0x00];
    let http2 = [0x1a, 0x02, 0x12, 0x00];
    let none = [0x1a, 0x00];
    let with = |parts: &[&[u8]]| decode_message(&port_80_and(&parts.concat())).map(|h| h.protocol);
    // A session_protocol without a kind is no protocol.
    assert_eq!(with(&[&none]), Ok(None));
    // The last kind wins, across messages and within one.
    assert_eq!(with(&[&http1, &http2]), Ok(Some(SessionProtocol::Http2)));
    assert_eq!(with(&[&http2, &http1]), Ok(Some(SessionProtocol::Http1)));
    assert_eq!(
        with(&[&[0x1a, 0x04, 0x12, 0x00, 0x0a, 0x00]]),
        Ok(Some(SessionProtocol::Http1))
    );
    // A later message without a kind merges in: the kind stays.
    assert_eq!(with(&[&http2, &none]), Ok(Some(SessionProtocol::Http2)));
    assert_eq!(
        with(&[&http1, &[0x1a, 0x02, 0x20, 0x01]]),
        Ok(Some(SessionProtocol::Http1))
    );
}

#[test]
fn answers_are_final() {
    let mut cases = vec![
        framed(&[0x08, 0x50]),
        framed(&[]),
        framed(&[0x08]),
        framed(&[0x08, 0x50, 0x12, 0x01, 0xff]),
        b"GET /".to_vec(),
        b"transport.l5d.io/v1\r\n\r\n\xff\xff\xff\xff".to_vec(),
    ];
    cases.push(encode(&header(
        4143,
        Some("a.b"),
        Some(SessionProtocol::Http1),
    )));
    for bytes in cases {
        let answer = decode(&bytes);
        assert_ne!(answer, Ok(Decoded::NeedMore));
        for tail in [&b"x"[..], b"\0\0\0\0", PREFACE] {
            let longer = [bytes.as_slice(), tail].concat();
            assert_eq!(decode(&longer), answer, "{bytes:02x?} + {tail:02x?}");
        }
    }
}
