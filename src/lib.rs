//! portcullis: a TLS-terminating reverse-proxy security gateway driven by YAML policy files.
//!
//! A configuration file is compiled once into an immutable [`runtime::Runtime`] (routes,
//! backends, policy chains, TLS settings); every request runs against one runtime, through
//! [`serve::pipeline::handle`]: normalize, strip spoofable headers, route, run the policy
//! chain, forward, answer. The modules are layers, each importing only from those below it
//! (`tests/layering.rs`); the README's Architecture section shows them bottom up.

#![forbid(unsafe_code)]

pub mod body;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod config;
pub mod id;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod identity;
pub mod ipset;
pub mod limit;
pub mod policy;
pub mod problem;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod proxy;
pub mod redact;
pub mod request;
pub mod route;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod subscription;
pub mod task;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod telemetry;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod tls;
pub mod tools;
