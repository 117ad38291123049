//! Small programs a Linkerd-injected pod runs from the proxy image beside the proxy
//! (installed by the Dockerfile under `/usr/lib/linkerd/`): [`await_ready`]
//! (`linkerd-await`) and [`network_validator`] (`linkerd2-network-validator`). Standard
//! library only; no part of the engine.

pub mod await_ready;
pub mod network_validator;
