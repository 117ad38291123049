//! A minimal Destination service for the `ringlink-monoio-balanced` row and the mesh test:
//! every `Get` is answered with one `add` of one endpoint (the bench backend, or a peer
//! proxy), and the stream then stays open, as a controller's does. It runs on its own thread (a tokio current-thread runtime) and is
//! idle once the proxy has its answer, so it costs the measurement nothing.

use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::{Context, Result};
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The name the balanced row's requests carry (under the default profile suffixes).
pub const NAME: &str = "bench.ringlink.svc.cluster.local";

/// A running mock; it stops with the bench process.
pub struct MockDestination {
    pub addr: SocketAddr,
}

struct Service {
    endpoint: pb::WeightedAddr,
}

type Updates = Pin<Box<dyn Stream<Item = Result<pb::Update, Status>> + Send>>;

/// Starts the mock on a free loopback port, answering every name with `endpoint`, weight 1,
/// with no TLS identity and no protocol hint.
pub fn start(endpoint: SocketAddr) -> Result<MockDestination> {
    start_with(pb::WeightedAddr {
        addr: Some(endpoint.into()),
        weight: 1,
        ..Default::default()
    })
}

/// Starts the mock on a free loopback port, answering every name with `endpoint` as given
/// (identity, protocol hint, transport header port).
pub fn start_with(endpoint: pb::WeightedAddr) -> Result<MockDestination> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the mock")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("mock-destination".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the mock Destination service");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let service = DestinationServer::new(Service { endpoint });
                if let Err(error) = tonic::transport::Server::builder()
                    .serve_with_incoming(service, incoming)
                    .await
                {
                    eprintln!("mock Destination service stopped: {error}");
                }
            });
        })?;
    Ok(MockDestination { addr })
}

#[tonic::async_trait]
impl Destination for Service {
    type GetStream = Updates;
    type GetProfileStream =
        Pin<Box<dyn Stream<Item = Result<pb::DestinationProfile, Status>> + Send>>;

    async fn get(
        &self,
        _: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let add = pb::Update {
            update: Some(pb::update::Update::Add(pb::WeightedAddrSet {
                addrs: vec![self.endpoint.clone()],
                metric_labels: Default::default(),
            })),
        };
        let updates = tokio_stream::iter([Ok(add)]).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(updates)))
    }

    async fn get_profile(
        &self,
        _: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        Err(Status::unimplemented("no profiles in the bench"))
    }
}
