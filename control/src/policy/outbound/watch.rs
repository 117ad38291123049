//! Outbound policies from the policy controller.
//! (TEMPORARY STUB by the lead developer so that callers compile: replace this whole file.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ClientPolicy;

#[derive(Clone, Debug)]
pub enum OutboundState {
    Pending,
    Policy(Arc<ClientPolicy>),
    NotFound,
}

#[derive(Clone)]
pub struct OutboundPolicies {}

impl OutboundPolicies {
    pub fn new(
        _addr: impl std::fmt::Display,
        _workload: impl Into<String>,
        _limits: crate::policy::watch::StreamLimits,
        _detect_timeout: Duration,
    ) -> Self {
        OutboundPolicies {}
    }

    pub fn watch(&self, _target: SocketAddr) -> watch::Receiver<OutboundState> {
        watch::channel(OutboundState::NotFound).1
    }
}
