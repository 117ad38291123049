//! gRPC route matches (`linkerd/http/route/src/grpc/match.rs`) and the filters of inbound gRPC
//! routes (`linkerd/proxy/server-policy/src/grpc.rs`).

use super::{
    filter::{GrpcFailureResponse, InjectFailure, ModifyHeader},
    http_route::MatchHeader,
    route::{Match, Prepared},
};

/// Matches a gRPC request: a `POST` whose path `/service/method` matches `rpc`, with all of
/// `headers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchGrpc {
    pub rpc: MatchRpc,
    pub headers: Vec<MatchHeader>,
}

/// The service and method to match, each exactly; `None` matches any (an empty string in the
/// API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MatchRpc {
    pub service: Option<String>,
    pub method: Option<String>,
}

/// How a gRPC request matched, ranked by the RPC match, then the number of header matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrpcMatch {
    pub rpc: RpcMatch,
    pub headers: usize,
}

/// The lengths of the service and method names matched (0 when not matched on), ranked by
/// service, then method.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RpcMatch {
    pub service: usize,
    pub method: usize,
}

/// A filter of an inbound gRPC route (`Filter` in `linkerd/proxy/server-policy/src/grpc.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcFilter {
    /// Fail a share of requests with a gRPC status and message.
    InjectFailure(InjectFailure<GrpcFailureResponse>),
    /// Add, set and remove request headers.
    RequestHeaders(ModifyHeader),
    /// Fail the request (`HttpInvalidPolicy`: 500, gRPC `INTERNAL`): an unknown filter.
    InternalError(&'static str),
}

// === impl MatchGrpc ===

impl Match for MatchGrpc {
    type Summary = GrpcMatch;

    fn match_prepared(&self, req: &Prepared<'_, '_>) -> Option<GrpcMatch> {
        if req.view.method != "POST" {
            return None;
        }
        let rpc = self.rpc.match_length(req.path)?;
        if !self.headers.iter().all(|h| h.is_match(req.view.headers)) {
            return None;
        }
        Some(GrpcMatch {
            rpc,
            headers: self.headers.len(),
        })
    }
}

// === impl MatchRpc ===

impl MatchRpc {
    /// How a request path matches: it must start with `/` and have a service and a method
    /// segment (anything after a third `/` is ignored, as in linkerd2-proxy).
    pub fn match_length(&self, path: &str) -> Option<RpcMatch> {
        let mut parts = path.split('/');
        if !parts.next()?.is_empty() {
            return None;
        }
        let mut summary = RpcMatch::default();

        let service = parts.next()?;
        if let Some(s) = &self.service {
            if s != service {
                return None;
            }
            summary.service = s.len();
        }

        let method = parts.next()?;
        if let Some(m) = &self.method {
            if m != method {
                return None;
            }
            summary.method = m.len();
        }

        Some(summary)
    }
}
