//! Upgraded connections (README: WebSockets): once the backend answered a WebSocket handshake
//! with `101` and the client got it, the two upgraded streams are joined byte for byte until
//! either side ends.
//!
//! A tunnel belongs to the client connection that opened it: the listener runs it after the
//! HTTP/1.1 connection handed its stream over, so the connection keeps its place in
//! `max_connections`, `max_connections_per_ip` and `portcullis_active_connections` until the
//! tunnel ends. A backend that closes its end (after its close frame) closes the client's
//! (TLS `close_notify`, then TCP); a client that vanishes closes the backend connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a connection's requests hand the tunnels they open.
#[derive(Clone)]
pub struct Tunnels(mpsc::UnboundedSender<Tunnel>);

/// The tunnels a connection opened, for the listener to run once the connection's HTTP
/// exchange is over.
pub struct Opened(mpsc::UnboundedReceiver<Tunnel>);

/// A connection's pair: requests open tunnels on the first, the listener runs them from the second.
pub fn tunnels() -> (Tunnels, Opened) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Tunnels(tx), Opened(rx))
}

impl Tunnels {
    /// Joins the client's and the backend's upgraded streams once both are handed over.
    pub fn open(&self, client: OnUpgrade, backend: OnUpgrade, route: Arc<str>, request_id: String) {
        let tunnel = Box::pin(join(client, backend, route, request_id));
        // The receiver lives as long as the connection that owns the sender.
        let _ = self.0.send(tunnel);
    }
}

impl Opened {
    /// Runs every tunnel the connection opened, to its end. Returns at once when it opened none.
    pub async fn run(mut self) {
        while let Some(tunnel) = self.0.recv().await {
            tunnel.await;
        }
    }
}

async fn join(client: OnUpgrade, backend: OnUpgrade, route: Arc<str>, request_id: String) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(request.id = %request_id, route.name = %route, error = %e, "upgrade not completed");
            return;
        }
    };
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => {
            tracing::debug!(request.id = %request_id, route.name = %route, bytes.up = up, bytes.down = down, "tunnel closed");
        }
        Err(e) => {
            tracing::debug!(request.id = %request_id, route.name = %route, error = %e, "tunnel ended with an error");
        }
    }
}
