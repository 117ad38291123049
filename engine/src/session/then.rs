//! How a connection's prelude (detection, TLS, connecting, policy) ends: done, or with the
//! part of the connection that lasts still to run. The prelude runs in a pooled block
//! (`crate::slot`) that is given back before the lasting part starts, so that an idle
//! connection's task is not the size of the largest prelude any connection can take.

use std::future::Future;
use std::io;

use crate::conn::Rest;

// === types ===

/// How a connection's prelude ends: done (the error the client failed with, if any), or
/// with the part of the connection that lasts — its HTTP server or its opaque relay — still
/// to run, boxed, for the connection's task to run after the prelude's block is back.
pub enum Then<'a> {
    Done(Option<io::Error>),
    Run(Rest<'a>),
}

// === impl Then ===

impl<'a> Then<'a> {
    /// The connection goes on with `rest`.
    pub fn run(rest: impl Future<Output = Option<io::Error>> + 'a) -> Self {
        Then::Run(Box::pin(rest))
    }

    /// Runs what is left of the connection: the error the client failed with, if any.
    pub async fn finish(self) -> Option<io::Error> {
        match self {
            Then::Done(error) => error,
            Then::Run(rest) => rest.await,
        }
    }
}
