//! ringlink's configuration and control thread.
//!
//! [`config`] turns the Linkerd proxy environment (`LINKERD2_PROXY_*`, plus ringlink's own
//! `RINGLINK_*`) into a typed [`Config`], read through the [`Env`] seam so tests need no
//! process environment.

#![forbid(unsafe_code)]

pub mod config;
pub mod discovery;
pub mod dns;
pub mod dst;
pub mod identity;
pub mod policy;
pub mod profile;
pub mod tap;
pub mod thread;

pub use config::{
    Config, ConfigError, Cores, Env, IdentityConfig, LogFormat, PortSet, RuntimeKind, SystemEnv,
};
