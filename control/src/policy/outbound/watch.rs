//! Outbound policies from the policy controller.
