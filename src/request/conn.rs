//! What is known about one client connection, shared by all its requests.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::tls::ClientCertInfo;

/// The facts of one accepted connection: where it came from and what its handshake said.
#[derive(Debug)]
pub struct ConnInfo {
    /// The listener that accepted it.
    pub listener: Arc<str>,
    /// The TCP peer (a client, or a proxy in front of it).
    pub peer: SocketAddr,
    /// `TLSv1_3`, `TLSv1_2`; `None` on a plain listener.
    pub tls_version: Option<&'static str>,
    /// The server name the client asked for.
    pub sni: Option<String>,
    /// The verified client certificate, parsed once per connection.
    pub client_cert: Option<Arc<ClientCertInfo>>,
}
