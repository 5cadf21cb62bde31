//! Shared test helpers: real certificates (rcgen), a real recording HTTP backend, the real
//! gateway binary started on ephemeral loopback ports, and a real TLS client.
#![allow(dead_code)]

pub mod backend;
pub mod client;
pub mod faulty;
pub mod gateway;
pub mod h2raw;
pub mod pki;
pub mod tokens;

pub use backend::TestBackend;
pub use client::Client;
pub use gateway::TestGateway;
pub use pki::Pki;
