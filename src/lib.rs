//! portcullis: a TLS-terminating reverse-proxy security gateway driven by YAML policy files.
//!
//! A configuration file is compiled once into an immutable [`runtime::Runtime`] (routes,
//! backends, policy chains, TLS settings); every request runs against one runtime, through
//! [`pipeline::handle`]: normalize, strip spoofable headers, route, run the policy chain,
//! forward, answer. See `DESIGN.md` for the product picture.

#![forbid(unsafe_code)]

pub mod admin;
pub mod apim;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod dryrun;
pub mod fixture;
pub mod gateway;
pub mod id;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod identity;
pub mod ipset;
pub mod limit;
pub mod listener;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod loadtest;
pub mod pipeline;
pub mod pki;
pub mod policy;
pub mod problem;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod proxy;
pub mod redact;
pub mod request;
pub mod route;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod store;
pub mod task;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod telemetry;
#[allow(missing_docs)] // not every public item is documented yet; the lint guards the other modules
pub mod tls;
