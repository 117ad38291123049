//! Tests of the outbound policy model.
