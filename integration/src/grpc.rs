//! A gRPC test service, `ringlink.test.Echo`, and its client, on tonic over plaintext h2c.
//!
//! There is no `.proto` and no build script: the messages are prost structs derived by hand,
//! and the service glue is written against tonic's generic pieces (`tonic::server::Grpc`,
//! `tonic::client::Grpc`, the prost codec) the way generated code would be.
//!
//! ```proto
//! package ringlink.test;
//! service Echo {
//!   rpc Echo(EchoRequest) returns (EchoReply);
//!   rpc Chat(stream EchoRequest) returns (stream EchoReply);
//! }
//! message EchoRequest { string message = 1; int32 fail_code = 2; string fail_message = 3; }
//! message EchoReply { string message = 1; }
//! ```
//!
//! What goes on the wire, so that proxy tests know what to expect:
//! - `Echo` that succeeds: headers, one message, trailers `grpc-status: 0` and
//!   `x-test-trailer: ok`.
//! - `Echo` with `fail_code`: a trailers-only response (one HEADERS frame with END_STREAM)
//!   carrying `grpc-status`, `grpc-message` and `x-test-trailer: <fail_message>`.
//! - `Chat`: headers at once, one reply per request as each arrives, then trailers: `grpc-status:
//!   0` and `x-test-trailer: ok` when the client has finished sending, or the `fail_code` of the
//!   first request that asks for one with `x-test-trailer: <fail_message>` (real trailers,
//!   after any replies already sent).

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use http_body::Frame;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

pub const SERVICE: &str = "ringlink.test.Echo";
const ECHO_PATH: &str = "/ringlink.test.Echo/Echo";
const CHAT_PATH: &str = "/ringlink.test.Echo/Chat";
/// The custom metadata the server adds to its trailers.
pub const TRAILER: &str = "x-test-trailer";

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Non-zero: answer with this gRPC status instead of echoing.
    #[prost(int32, tag = "2")]
    pub fail_code: i32,
    #[prost(string, tag = "3")]
    pub fail_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

impl EchoRequest {
    /// A request the server echoes.
    pub fn ok(message: impl Into<String>) -> Self {
        EchoRequest {
            message: message.into(),
            ..Default::default()
        }
    }

    /// A request the server answers with status `code` and `message`.
    pub fn fail(code: Code, message: impl Into<String>) -> Self {
        EchoRequest {
            message: String::new(),
            fail_code: code as i32,
            fail_message: message.into(),
        }
    }
}

/// Each request the server received, for tests to check what the proxy forwarded.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The request's `:authority`.
    pub authority: Option<String>,
    /// The TCP peer the request came over (tells connections apart).
    pub peer: Option<SocketAddr>,
    pub headers: http::HeaderMap,
}

/// A running server; it stops when the test's runtime does, or on [`Handle::abort`].
#[derive(Debug)]
pub struct Handle {
    pub requests: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Handle {
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Serves `ringlink.test.Echo` on `addr` (port 0 for any), HTTP/2 prior knowledge only.
pub async fn serve(addr: SocketAddr) -> (SocketAddr, Handle) {
    serve_on(TcpListener::bind(addr).await.expect("bind gRPC server")).await
}

pub async fn serve_on(listener: TcpListener) -> (SocketAddr, Handle) {
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .serve_with_incoming(EchoServer { seen: tx }, TcpIncoming::from(listener))
            .await;
        if let Err(e) = result {
            eprintln!("gRPC test server on {addr} stopped: {e}");
        }
    });
    (addr, Handle { requests, task })
}

/// The service: routes by path to the two methods, as generated code would.
#[derive(Clone)]
struct EchoServer {
    seen: mpsc::UnboundedSender<Seen>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let _ = self.seen.send(Seen {
            path: req.uri().path().to_string(),
            authority: req.uri().authority().map(|a| a.to_string()),
            peer: req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|info| info.remote_addr()),
            headers: req.headers().clone(),
        });
        match req.uri().path() {
            ECHO_PATH => Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
                Ok(grpc.unary(EchoMethod, req).await.map(trailer_ok))
            }),
            CHAT_PATH => Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
                Ok(grpc.streaming(ChatMethod, req).await.map(trailer_ok))
            }),
            path => {
                let status = Status::unimplemented(format!("no method {path}"));
                Box::pin(ready(Ok(status.into_http())))
            }
        }
    }
}

/// The status a request asks for, with its message also in `x-test-trailer`.
fn requested_failure(req: &EchoRequest) -> Option<Status> {
    if req.fail_code == 0 {
        return None;
    }
    let mut status = Status::new(Code::from_i32(req.fail_code), req.fail_message.clone());
    let value = MetadataValue::try_from(req.fail_message.as_str())
        .unwrap_or_else(|_| MetadataValue::from_static("(not ascii)"));
    status.metadata_mut().insert(TRAILER, value);
    Some(status)
}

struct EchoMethod;

impl tonic::server::UnaryService<EchoRequest> for EchoMethod {
    type Response = EchoReply;
    type Future = Ready<Result<Response<EchoReply>, Status>>;

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let req = req.into_inner();
        ready(match requested_failure(&req) {
            Some(status) => Err(status),
            None => Ok(Response::new(EchoReply {
                message: req.message,
            })),
        })
    }
}

struct ChatMethod;

impl tonic::server::StreamingService<EchoRequest> for ChatMethod {
    type Response = EchoReply;
    type ResponseStream = ChatReplies;
    type Future = Ready<Result<Response<ChatReplies>, Status>>;

    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        ready(Ok(Response::new(ChatReplies {
            requests: req.into_inner(),
            done: false,
        })))
    }
}

/// One reply per request, produced as each request is read; ends after a failure.
struct ChatReplies {
    requests: Streaming<EchoRequest>,
    done: bool,
}

impl Stream for ChatReplies {
    type Item = Result<EchoReply, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match Pin::new(&mut self.requests).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        Poll::Ready(match next {
            None => None,
            Some(Err(status)) => {
                self.done = true;
                Some(Err(status))
            }
            Some(Ok(req)) => match requested_failure(&req) {
                Some(status) => {
                    self.done = true;
                    Some(Err(status))
                }
                None => Some(Ok(EchoReply {
                    message: req.message,
                })),
            },
        })
    }
}

/// Adds `x-test-trailer: ok` to trailers that carry `grpc-status: 0`.
fn trailer_ok(body: Body) -> Body {
    Body::new(TrailerOk(body))
}

struct TrailerOk(Body);

impl http_body::Body for TrailerOk {
    type Data = <Body as http_body::Body>::Data;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Status>>> {
        let frame = match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        Poll::Ready(Some(Ok(match frame.into_trailers() {
            Ok(mut trailers) => {
                if trailers.get("grpc-status").is_some_and(|s| s == "0") {
                    trailers.insert(TRAILER, http::HeaderValue::from_static("ok"));
                }
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// A client of `ringlink.test.Echo` over one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    /// Connects to `target`: a socket address (`127.0.0.1:8080`) or an `http://` URI, whose
    /// authority is also the requests' `:authority`.
    pub async fn connect(target: impl std::fmt::Display) -> Result<Self, tonic::transport::Error> {
        let target = target.to_string();
        let uri = if target.contains("://") {
            target
        } else {
            format!("http://{target}")
        };
        Self::connect_endpoint(Endpoint::from_shared(uri)?).await
    }

    /// Connects to `addr` (a proxy, say) but sends `authority` as every request's `:authority`.
    pub async fn connect_via(
        addr: SocketAddr,
        authority: &str,
    ) -> Result<Self, tonic::transport::Error> {
        let origin = format!("http://{authority}")
            .parse()
            .expect("authority is a valid URI authority");
        Self::connect_endpoint(Endpoint::from_shared(format!("http://{addr}"))?.origin(origin))
            .await
    }

    async fn connect_endpoint(endpoint: Endpoint) -> Result<Self, tonic::transport::Error> {
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(EchoClient {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))
    }

    /// Calls `Echo`; returns the reply and the response's trailers (`grpc-status`,
    /// `x-test-trailer`, ...). A failure's `Status` carries the other trailers in `metadata()`.
    pub async fn echo(&mut self, req: EchoRequest) -> Result<(EchoReply, MetadataMap), Status> {
        self.ready().await?;
        // The request is the same as a unary call's on the wire; reading the response as a
        // stream keeps its trailers apart from its headers.
        let response = self
            .grpc
            .server_streaming(
                Request::new(req),
                PathAndQuery::from_static(ECHO_PATH),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await?;
        let mut replies = response.into_inner();
        let reply = replies
            .message()
            .await?
            .ok_or_else(|| Status::internal("Echo answered no message"))?;
        if let Some(extra) = replies.message().await? {
            return Err(Status::internal(format!("Echo answered twice: {extra:?}")));
        }
        let trailers = replies.trailers().await?.unwrap_or_default();
        Ok((reply, trailers))
    }

    /// Calls `Echo` with a message to echo.
    pub async fn say(&mut self, message: &str) -> Result<String, Status> {
        Ok(self.echo(EchoRequest::ok(message)).await?.0.message)
    }

    /// Opens a `Chat` stream; send and receive with the returned [`Chat`].
    pub async fn chat(&mut self) -> Result<Chat, Status> {
        self.ready().await?;
        let (tx, rx) = mpsc::channel(16);
        let response = self
            .grpc
            .streaming(
                Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(CHAT_PATH),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await?;
        let (headers, replies, _) = response.into_parts();
        Ok(Chat {
            headers,
            requests: Some(tx),
            replies,
        })
    }

    /// A whole `Chat` in lock step: sends each request only after the previous one's reply.
    /// Returns the replies and the trailers, or the status the stream ended with.
    pub async fn chat_all(
        &mut self,
        reqs: impl IntoIterator<Item = EchoRequest>,
    ) -> Result<(Vec<EchoReply>, MetadataMap), Status> {
        let mut chat = self.chat().await?;
        let mut replies = Vec::new();
        for req in reqs {
            chat.send(req).await?;
            replies.push(
                chat.recv()
                    .await?
                    .ok_or_else(|| Status::internal("Chat ended before answering a request"))?,
            );
        }
        let (extra, trailers) = chat.finish().await?;
        replies.extend(extra);
        Ok((replies, trailers))
    }
}

/// An open `Chat` stream.
#[derive(Debug)]
pub struct Chat {
    /// The response headers.
    pub headers: MetadataMap,
    requests: Option<mpsc::Sender<EchoRequest>>,
    replies: Streaming<EchoReply>,
}

impl Chat {
    pub async fn send(&mut self, req: EchoRequest) -> Result<(), Status> {
        let requests = self
            .requests
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("Chat: sending already finished"))?;
        requests
            .send(req)
            .await
            .map_err(|_| Status::cancelled("Chat: request stream closed"))
    }

    /// The next reply; `None` once the server has ended the stream with OK. An error is the
    /// status the stream ended with, its trailers in `metadata()`.
    pub async fn recv(&mut self) -> Result<Option<EchoReply>, Status> {
        self.replies.message().await
    }

    /// Sends `message` and waits for its echo.
    pub async fn say(&mut self, message: &str) -> Result<String, Status> {
        self.send(EchoRequest::ok(message)).await?;
        match self.recv().await? {
            Some(reply) => Ok(reply.message),
            None => Err(Status::internal("Chat ended before answering")),
        }
    }

    /// Ends the sending side (END_STREAM), then reads what is left: replies still in flight
    /// and the trailers.
    pub async fn finish(mut self) -> Result<(Vec<EchoReply>, MetadataMap), Status> {
        self.requests = None;
        let mut replies = Vec::new();
        while let Some(reply) = self.replies.message().await? {
            replies.push(reply);
        }
        let trailers = self.replies.trailers().await?.unwrap_or_default();
        Ok((replies, trailers))
    }
}
