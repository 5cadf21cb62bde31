//! Shared test helpers: real certificates (rcgen), a real recording HTTP backend, the real
//! gateway binary started on ephemeral loopback ports, and a real TLS client.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod client;
pub mod faulty;
pub mod gateway;
pub mod h2raw;
pub mod pki;
pub mod postgres;
pub mod redis;
pub mod sse;
pub mod tokens;
pub mod ws;

pub use backend::TestBackend;
pub use client::Client;
pub use gateway::TestGateway;
pub use pki::Pki;

/// Polls `check` every 50 ms until it holds; fails the test after 15 s naming `what`.
pub async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
