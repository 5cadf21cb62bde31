//! What the gateway tells operators: Prometheus metrics and the access log.

pub mod access;
pub mod metrics;

pub use metrics::metrics;
