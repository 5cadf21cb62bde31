//! Accept loops: TLS handshakes (bounded by `header_read_timeout`), connection limits, the
//! HTTP/1.1 + h2 server per connection, the redirect-only plain listener, graceful drain.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::body::{self, Body};
use crate::problem::Problem;
use crate::request::conn::ConnInfo;
use crate::runtime::{Limits, ListenerKind};
use crate::serve::gateway::Gateway;
use crate::serve::tunnel;
use crate::telemetry::metrics::{handshake_reason, metrics};
use crate::tls::ClientCertInfo;

/// Serves one listener until `stopped` turns true.
pub async fn serve(
    tcp: TcpListener,
    name: Arc<str>,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
) {
    let max_connections = gateway.runtime().listener(&name).map_or(1, |l| l.limits.max_connections);
    let slots = Arc::new(Semaphore::new(max_connections));
    let per_client = Arc::new(PerClient::default());
    loop {
        // At the limit, stop accepting: new clients wait in the kernel backlog.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stopped.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener.name = %name, error = %e, "accept failed");
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let runtime = gateway.runtime();
        let Some(spec) = runtime.listener(&name) else {
            return;
        };
        let limits = spec.limits;
        // Behind a trusted proxy or load balancer, many clients share one address.
        let per_ip = if runtime.trusted_proxies.contains(peer.ip().to_canonical()) {
            usize::MAX
        } else {
            limits.max_connections_per_ip
        };
        let Some(client_slot) = per_client.take(peer.ip(), per_ip) else {
            metrics().connections_refused.with_label_values(&[&name, "per_ip_limit"]).inc();
            tracing::debug!(listener.name = %name, client.addr = %peer, "too many connections from this address");
            continue;
        };
        let permit = (permit, client_slot);
        match &spec.kind {
            ListenerKind::Tls(config) => {
                let acceptor = TlsAcceptor::from(config.clone());
                let gateway = gateway.clone();
                let name = name.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    serve_tls(stream, peer, acceptor, name, gateway, limits, watcher).await;
                });
            }
            ListenerKind::Redirect(base) => {
                let base = base.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    let svc = service_fn(move |req| std::future::ready(Ok::<_, Infallible>(redirect(&base, &req))));
                    let conn = http1_builder(&limits).serve_connection(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
}

/// h2 streams a client may reset before they are served, at once.
const MAX_PENDING_RESETS: usize = 20;
/// h2 streams the gateway may reset for a client's protocol errors, per connection.
const MAX_LOCAL_RESETS: usize = 256;

/// Open connections per client address (an IPv4 address, an IPv6 /64), so one client
/// cannot take every slot of `max_connections`. Only the accept loop and connection ends
/// touch it, never a request.
#[derive(Default)]
struct PerClient {
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// A connection's place in [`PerClient`], given back when the connection ends.
struct ClientSlot {
    key: IpAddr,
    owner: Arc<PerClient>,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientSlot { key, owner: self.clone() })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// An IPv4 address as it is; an IPv6 address by its /64, which one client usually holds whole.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// The HTTP/1.1 server settings every connection of a listener gets.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when the request head outgrows its buffer or has too many fields.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
}

/// The same HTTP/1.1 server settings on a connection that hands its stream over after a
/// `101` (hyper-util's graceful shutdown watches upgradable connections through its `auto`
/// server only; `http1_only` never reads an h2 preface).
fn http1_upgradable(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
}

/// The h2 server settings, for connections whose client chose h2 by ALPN.
fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Rapid reset (CVE-2023-44487): streams the client opens and cancels before they are
        // served; past this many pending at once the connection is closed (GOAWAY).
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        // Streams the gateway itself had to reset (protocol errors) before it gives up.
        .max_local_error_reset_streams(MAX_LOCAL_RESETS)
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(limits.header_read_timeout)
        // SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): WebSockets over h2, always offered.
        // A route that did not opt in refuses the handshake (403) the way it refuses one over
        // HTTP/1.1, and the setting cannot go stale when a reload changes the routes.
        .enable_connect_protocol();
    builder
}

async fn serve_tls(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    name: Arc<str>,
    gateway: Arc<Gateway>,
    limits: Limits,
    watcher: Watcher,
) {
    let _open = OpenConnection::new(&name);
    // A client that does not finish its handshake in time holds no slot for long.
    let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = handshake_reason(&e);
            metrics().tls_handshake_failures.with_label_values(&[&name, reason]).inc();
            tracing::debug!(listener.name = %name, client.addr = %peer, error = %e, reason, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics().tls_handshake_failures.with_label_values(&[&name, "timeout"]).inc();
            tracing::debug!(listener.name = %name, client.addr = %peer, "TLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let client_cert = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| ClientCertInfo::parse(der).ok())
        .map(Arc::new);
    let conn = Arc::new(ConnInfo {
        listener: name,
        peer,
        tls_version: session.protocol_version().and_then(|v| v.as_str()),
        sni: session.server_name().map(str::to_owned),
        client_cert,
    });
    let (tunnels, opened) = tunnel::tunnels(&gateway.tunnels);
    let svc = service_fn(move |req: Request<Incoming>| {
        let runtime = gateway.runtime();
        let conn = conn.clone();
        let tunnels = if h2 && req.method() == Method::CONNECT {
            // An h2 WebSocket is one stream of a connection that goes on serving others, and
            // its bytes travel through that connection: its tunnel runs beside it, at once.
            // The connection lasts (and keeps its slot) while a stream is open, and a stream
            // ends with it; `max_concurrent_streams` bounds the tunnels of one connection.
            let (tunnels, opened) = tunnel::tunnels(&gateway.tunnels);
            tokio::spawn(opened.run());
            tunnels
        } else {
            tunnels.clone()
        };
        async move { Ok::<_, Infallible>(crate::serve::pipeline::handle(&runtime, req, &conn, limits, &tunnels).await) }
    });
    // The protocol is the one ALPN chose; without ALPN it is HTTP/1.1.
    let io = TokioIo::new(tls);
    let served = if h2 {
        watcher.watch(http2_builder(&limits).serve_connection(io, svc)).await.map_err(Into::into)
    } else {
        // A WebSocket handshake answered 101 ends the HTTP/1.1 exchange and hands the stream over.
        let builder = http1_upgradable(&limits);
        watcher.watch(builder.serve_connection_with_upgrades(io, svc)).await
    };
    if let Err(e) = served {
        tracing::debug!(client.addr = %peer, error = %e, "connection ended with an error");
    }
    // The connection (its slot, its per-client count, its gauge) lasts until its tunnel ends.
    opened.run().await;
}

/// Counts a connection in `portcullis_active_connections` while it lives.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(listener: &str) -> Self {
        let gauge = metrics().active_connections.with_label_values(&[listener]);
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Plain HTTP only ever redirects (308 keeps the method and body) to the same path over HTTPS.
fn redirect(base: &str, req: &Request<Incoming>) -> Response<Body> {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("{base}{target}");
    match HeaderValue::try_from(location) {
        Ok(location) if target.starts_with('/') => {
            let mut rsp = Response::new(body::empty());
            *rsp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            rsp.headers_mut().insert(header::LOCATION, location);
            rsp
        }
        _ => Problem::bad_request("invalid request target").into_response("-"),
    }
}
