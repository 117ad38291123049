//! The test servers and clients themselves, client to server on loopback with no proxy, so
//! that a proxy test that fails is known to fail because of the proxy.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ringlink_integration::grpc::{self, EchoClient, EchoRequest};
use ringlink_integration::ws::{self, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test timed out")
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn text(map: &tonic::metadata::MetadataMap, key: &str) -> Option<String> {
    map.get(key).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn grpc_unary_echoes_with_ok_trailers() {
    within(async {
        let (addr, mut server) = grpc::serve(any_port()).await;
        let mut client = EchoClient::connect(addr).await.unwrap();
        let (reply, trailers) = client.echo(EchoRequest::ok("hello")).await.unwrap();
        assert_eq!(reply.message, "hello");
        assert_eq!(text(&trailers, "grpc-status").as_deref(), Some("0"));
        assert_eq!(text(&trailers, grpc::TRAILER).as_deref(), Some("ok"));
        assert_eq!(client.say("again").await.unwrap(), "again");

        let seen = server.requests.recv().await.unwrap();
        assert_eq!(seen.path, "/ringlink.test.Echo/Echo");
        assert_eq!(seen.authority, Some(addr.to_string()));
        assert_eq!(seen.headers["content-type"], "application/grpc");
        let again = server.requests.recv().await.unwrap();
        assert_eq!(again.peer, seen.peer, "one connection for both calls");
    })
    .await
}

#[tokio::test]
async fn grpc_unary_failure_carries_status_and_trailer() {
    within(async {
        let (addr, _server) = grpc::serve(any_port()).await;
        let mut client = EchoClient::connect(format!("http://{addr}")).await.unwrap();
        let status = client
            .echo(EchoRequest::fail(Code::PermissionDenied, "not you"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "not you");
        assert_eq!(
            text(status.metadata(), grpc::TRAILER).as_deref(),
            Some("not you")
        );
        // The stream failed, not the connection.
        assert_eq!(client.say("still here").await.unwrap(), "still here");
    })
    .await
}

#[tokio::test]
async fn grpc_client_sends_the_chosen_authority() {
    within(async {
        let (addr, mut server) = grpc::serve(any_port()).await;
        let mut client = EchoClient::connect_via(addr, "echo.test.svc.cluster.local:8080")
            .await
            .unwrap();
        assert_eq!(client.say("hi").await.unwrap(), "hi");
        let seen = server.requests.recv().await.unwrap();
        assert_eq!(
            seen.authority.as_deref(),
            Some("echo.test.svc.cluster.local:8080")
        );
    })
    .await
}

#[tokio::test]
async fn grpc_chat_answers_each_message_before_the_next_is_sent() {
    within(async {
        let (addr, _server) = grpc::serve(any_port()).await;
        let mut client = EchoClient::connect(addr).await.unwrap();
        let mut chat = client.chat().await.unwrap();
        // Each `say` waits for its echo before the next send: a server that buffered the
        // stream would time this test out.
        for word in ["one", "two", "three"] {
            assert_eq!(chat.say(word).await.unwrap(), word);
        }
        let (rest, trailers) = chat.finish().await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(text(&trailers, "grpc-status").as_deref(), Some("0"));
        assert_eq!(text(&trailers, grpc::TRAILER).as_deref(), Some("ok"));
    })
    .await
}

#[tokio::test]
async fn grpc_chat_ends_with_the_requested_failure() {
    within(async {
        let (addr, _server) = grpc::serve(any_port()).await;
        let mut client = EchoClient::connect(addr).await.unwrap();
        let mut chat = client.chat().await.unwrap();
        assert_eq!(chat.say("before").await.unwrap(), "before");
        chat.send(EchoRequest::fail(Code::ResourceExhausted, "too much"))
            .await
            .unwrap();
        let status = chat.recv().await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "too much");
        assert_eq!(
            text(status.metadata(), grpc::TRAILER).as_deref(),
            Some("too much")
        );

        let requests = (0..5).map(|i| EchoRequest::ok(format!("m{i}")));
        let (replies, trailers) = client.chat_all(requests).await.unwrap();
        let got: Vec<_> = replies.into_iter().map(|r| r.message).collect();
        assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
        assert_eq!(text(&trailers, "grpc-status").as_deref(), Some("0"));

        let failing = [
            EchoRequest::ok("a"),
            EchoRequest::fail(Code::Aborted, "stop"),
            EchoRequest::ok("never"),
        ];
        let status = client.chat_all(failing).await.unwrap_err();
        assert_eq!(status.code(), Code::Aborted);
    })
    .await
}

#[test]
fn ws_accept_key_and_base64_match_the_rfcs() {
    // RFC 6455 section 1.3.
    assert_eq!(
        ws::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    // RFC 4648 section 10.
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(ws::base64(plain.as_bytes()), encoded);
    }
}

#[tokio::test]
async fn ws_echoes_text_binary_and_ping_then_closes() {
    within(async {
        let mut server = ws::echo().await;
        let mut client = ws::Client::connect(server.addr, "ws.test:80")
            .await
            .unwrap();
        let head = server.requests.recv().await.unwrap();
        assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("host: ws.test:80\r\n"), "{head}");

        let messages = [
            Message::Text("hello".into()),
            Message::Text(String::new()),
            // 16-bit and 64-bit payload lengths.
            Message::Binary((0..300u32).map(|i| i as u8).collect()),
            Message::Binary((0..70_000u32).map(|i| (i * 7) as u8).collect()),
        ];
        for msg in &messages {
            assert_eq!(&client.roundtrip(msg).await.unwrap(), msg);
        }
        let ping = client
            .roundtrip(&Message::Ping(b"are you there".to_vec()))
            .await
            .unwrap();
        assert_eq!(ping, Message::Pong(b"are you there".to_vec()));

        let close = client.close(1000).await.unwrap();
        assert_eq!(close, Message::Close(Some((1000, String::new()))));
    })
    .await
}

#[tokio::test]
async fn ws_server_refuses_a_request_without_upgrade() {
    within(async {
        let server = ws::echo().await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: ws.test\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    })
    .await
}

#[tokio::test]
async fn ws_client_rejects_a_wrong_accept_key() {
    within(async {
        let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let reply = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                         connection: Upgrade\r\nsec-websocket-accept: d3Jvbmc=\r\n\r\n";
            let _ = stream.write_all(reply.as_bytes()).await;
        });
        let err = ws::Client::connect(addr, "ws.test").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    })
    .await
}
