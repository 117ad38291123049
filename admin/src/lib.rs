//! The admin server (`/metrics`, `/ready`, `/live`, `/proxy-log-level`, `/env.json`,
//! `/shutdown`) and metrics exposition: lands with the metrics issue. Nothing here yet.
#![forbid(unsafe_code)]
