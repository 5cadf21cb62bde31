//! What the gateway tells operators: Prometheus metrics (the access log is written where
//! requests are served, in `crate::serve::access`).

pub mod metrics;

pub use metrics::metrics;
