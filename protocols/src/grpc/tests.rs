use super::*;

#[test]
fn grpc_content_types() {
    for content_type in [
        &b"application/grpc"[..],
        b"application/grpc+proto",
        b"application/grpc+json",
        b"application/grpc;charset=utf-8",
        b"application/grpc; charset=x",
        b"Application/GRPC",
        b"APPLICATION/GRPC+PROTO",
    ] {
        assert!(
            is_grpc(content_type),
            "{:?}",
            String::from_utf8_lossy(content_type)
        );
    }
}

#[test]
fn other_content_types() {
    for content_type in [
        &b""[..],
        b"application/grpc-web",
        b"application/grpc-web+proto",
        b"application/grpc-web-text",
        b"application/grpcx",
        b"application/grp",
        b"application/grpc ",
        b" application/grpc",
        b"application/json",
        b"text/plain",
        b"application/\xffgrpc",
    ] {
        assert!(
            !is_grpc(content_type),
            "{:?}",
            String::from_utf8_lossy(content_type)
        );
    }
}

#[test]
fn grpc_statuses() {
    assert_eq!(parse_grpc_status(b"0"), Some(0));
    assert_eq!(parse_grpc_status(b"14"), Some(14));
    assert_eq!(parse_grpc_status(b" 14 "), Some(14));
    assert_eq!(parse_grpc_status(b"\t2\r\n"), Some(2));
    assert_eq!(parse_grpc_status(b"4294967295"), Some(u32::MAX));
}

#[test]
fn bad_grpc_statuses() {
    for value in [
        &b""[..],
        b" ",
        b"x",
        b"-1",
        b"1.0",
        b"1 2",
        b"4294967296",
        b"\xff1",
        b"0x1",
        b"+14",
        b"\xc2\xa014",
        b"14\xe3\x80\x80",
    ] {
        assert_eq!(
            parse_grpc_status(value),
            None,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
}
