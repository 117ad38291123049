//! Decoding `OutboundPolicies` updates into [`super::ClientPolicy`].

/// Why an update could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPolicy {
    #[error("missing {0}")]
    Missing(&'static str),
}
