//! Upgraded connections (README: WebSockets): once the backend answered a WebSocket handshake
//! with `101` and the client got it, the two upgraded streams are joined by a frame-aware
//! relay until either side ends or the gateway closes the connection.
//!
//! The relay reads every frame header in both directions ([`FrameReader`]); payload bytes pass
//! through one read buffer per direction, never copied into messages nor unmasked. Knowing
//! where frames end, the gateway can write a close frame of its own between them: unmasked to
//! the client, masked toward the backend. It does so when
//! - no frame passed either way for the route's `idle_timeout` (`1001 idle`),
//! - the connection reached its `max_lifetime` (`1001 max lifetime`),
//! - a message outgrew `max_message_bytes` (`1009` to both sides),
//! - a side broke RFC 6455 (`1002` to that side, `1001` to the other),
//! - the server drains, on SIGTERM or a reload, once `drain_timeout` passed (`1001 going away`),
//! - the handshake's credential ends ([`crate::serve::credential`]): its token expires, the
//!   connection's client certificate expires or the issuer revokes the token's grant
//!   (`1008`), unless the route opted out.
//!
//! A tunnel belongs to the client connection that opened it: the listener runs it after the
//! HTTP/1.1 connection handed its stream over, so the connection keeps its place in
//! `max_connections`, `max_connections_per_ip` and `portcullis_active_connections` until the
//! tunnel ends.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::time::Instant;

use crate::route::TunnelLimits;
use crate::serve::access::TunnelRecord;
use crate::serve::credential::{later, Credential, Revocations};
use crate::serve::frames::{close_frame, FrameError, FrameReader, MAX_HEADER};
use crate::telemetry::metrics::metrics;

type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;
type Io = TokioIo<Upgraded>;

/// How long the other side may stay open once one side ended.
const HALF_CLOSED: Duration = Duration::from_secs(5);
/// One read buffer per direction.
const BUFFER: usize = 16 * 1024;
/// How long the gateway's close frame and the shutdown of a side may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where a connection's requests hand the tunnels they open.
#[derive(Clone)]
pub struct Tunnels {
    opened: mpsc::UnboundedSender<Tunnel>,
    registry: Registry,
}

/// The tunnels a connection opened, for the listener to run once the connection's HTTP
/// exchange is over.
pub struct Opened(mpsc::UnboundedReceiver<Tunnel>);

/// A connection's pair: requests open tunnels on the first, the listener runs them from the second.
pub fn tunnels(registry: &Registry) -> (Tunnels, Opened) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Tunnels { opened: tx, registry: registry.clone() }, Opened(rx))
}

/// What a tunnel needs to know of its handshake.
pub struct TunnelSpec {
    /// The route's name.
    pub route: Arc<str>,
    /// The handshake's request id.
    pub request_id: String,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address, after trusted-proxy forwarding headers.
    pub client_ip: IpAddr,
    /// The route's `websocket:` limits.
    pub limits: TunnelLimits,
    /// What the handshake proved, and until when.
    pub credential: Credential,
}

impl Tunnels {
    /// The server's registry of long-lived connections.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Joins the client's and the backend's upgraded streams once both are handed over.
    pub fn open(&self, client: OnUpgrade, backend: OnUpgrade, spec: TunnelSpec) {
        let tunnel = Box::pin(join(client, backend, spec, self.registry.clone()));
        // The receiver lives as long as the connection that owns the sender.
        let _ = self.opened.send(tunnel);
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

/// Every open tunnel of a server, for draining: tunnels opened before a drain order close
/// with `1001 going away` at its deadline. It also holds the issuer's recent revocations,
/// which end the tunnels and event streams whose token they revoke.
#[derive(Clone)]
pub struct Registry(Arc<RegistryInner>);

struct RegistryInner {
    /// The deadline of every drain order so far; a tunnel opened after `n` orders closes at
    /// the earliest deadline from the `n`th on.
    orders: watch::Sender<Vec<Instant>>,
    open: watch::Sender<usize>,
    revocations: Revocations,
}

impl Default for Registry {
    fn default() -> Self {
        Self(Arc::new(RegistryInner {
            orders: watch::Sender::new(Vec::new()),
            open: watch::Sender::new(0),
            revocations: Revocations::default(),
        }))
    }
}

impl Registry {
    /// Tunnels open now get `1001 going away` after `after` (on SIGTERM, on reload); tunnels
    /// opened later are not affected.
    pub fn drain(&self, after: Duration) {
        let close_at = later(Instant::now(), after);
        self.0.orders.send_modify(|o| o.push(close_at));
    }

    /// The issuer's revocations in force.
    pub fn revocations(&self) -> &Revocations {
        &self.0.revocations
    }

    /// Tunnels open now.
    pub fn open(&self) -> usize {
        *self.0.open.borrow()
    }

    /// Waits until no tunnel is open.
    pub async fn closed(&self) {
        let mut open = self.0.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// The epoch of a tunnel opening now: how many drain orders came before it.
    fn epoch(&self) -> usize {
        self.0.orders.borrow().len()
    }

    /// Resolves when a drain order given after a tunnel opened at `epoch` reaches its deadline.
    async fn drained(&self, epoch: usize) {
        let mut rx = self.0.orders.subscribe();
        loop {
            let at = rx.borrow_and_update().get(epoch..).and_then(|o| o.iter().min().copied());
            let changed = match at {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    changed = rx.changed() => changed,
                },
                None => rx.changed().await,
            };
            if changed.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Counts a tunnel in the registry and in `portcullis_websocket_connections` while it lives.
struct OpenTunnel {
    registry: Registry,
    gauge: prometheus::IntGauge,
}

impl OpenTunnel {
    fn new(registry: Registry, route: &str) -> Self {
        registry.0.open.send_modify(|n| *n += 1);
        let gauge = metrics().websocket_connections.with_label_values(&[route]);
        gauge.inc();
        Self { registry, gauge }
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.gauge.dec();
        self.registry.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One side's write half, with whether the bytes written so far end on a frame boundary.
struct Out {
    wr: WriteHalf<Io>,
    boundary: bool,
    shut: bool,
    /// Toward the backend, the gateway's frames are masked.
    masked: bool,
}

impl Out {
    fn new(wr: WriteHalf<Io>, masked: bool) -> Mutex<Self> {
        Mutex::new(Self { wr, boundary: true, shut: false, masked })
    }
}

/// Writes the gateway's close frame (when the side is between frames), then ends the side.
async fn close(out: &Mutex<Out>, frame: Option<(u16, &str)>) {
    let mut out = out.lock().await;
    if out.shut {
        return;
    }
    out.shut = true;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if let Some((code, reason)) = frame.filter(|_| out.boundary) {
            let bytes = close_frame(code, reason, out.masked.then(mask));
            let _ = out.wr.write_all(&bytes).await;
        }
        let _ = out.wr.shutdown().await;
    })
    .await;
}

/// A fresh masking key for a frame toward the backend (RFC 6455 §5.3).
fn mask() -> [u8; 4] {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut key = [0u8; 4];
    // Should the generator fail, a fixed key still makes a valid frame.
    let _ = SystemRandom::new().fill(&mut key);
    key
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

/// How one direction ended.
enum End {
    Eof,
    Frame(FrameError),
    Io,
}

/// What one direction relayed.
#[derive(Default)]
struct Count {
    bytes: AtomicU64,
    messages: AtomicU64,
}

/// A direction's shared state with the tunnel.
struct Pump<'a> {
    from: Side,
    out: &'a Mutex<Out>,
    count: &'a Count,
    /// Milliseconds since the tunnel opened at the last bytes either way.
    activity: &'a AtomicU64,
    /// The side whose close frame came first (0: none yet).
    first_close: &'a AtomicU8,
    /// The sides that sent a close frame (bits 1: client, 2: backend).
    closes: &'a AtomicU8,
    opened: Instant,
    max_message: u64,
    bytes_metric: prometheus::IntCounter,
    messages_metric: prometheus::IntCounter,
}

impl Pump<'_> {
    /// Relays frames from `rd` to `out` until `rd` ends or sends what may not pass.
    async fn run(self, mut rd: ReadHalf<Io>) -> End {
        let mut frames = FrameReader::new(self.from == Side::Client, self.max_message);
        let mut buf = vec![0u8; BUFFER];
        let mut filled = 0;
        loop {
            let n = match rd.read(&mut buf[filled..]).await {
                Ok(0) => {
                    let mut out = self.out.lock().await;
                    if !out.shut {
                        out.shut = true;
                        let _ = out.wr.shutdown().await;
                    }
                    return End::Eof;
                }
                Ok(n) => n,
                Err(_) => return End::Io,
            };
            filled += n;
            self.activity.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
            let messages = frames.messages;
            let (pass, parsed) = frames.advance(&buf[..filled]);
            if frames.closed {
                let side = if self.from == Side::Client { 1 } else { 2 };
                let _ = self.first_close.compare_exchange(0, side, Ordering::Relaxed, Ordering::Relaxed);
                self.closes.fetch_or(side, Ordering::Relaxed);
            }
            if pass > 0 {
                let mut out = self.out.lock().await;
                if out.shut {
                    return End::Eof;
                }
                out.boundary = false;
                if out.wr.write_all(&buf[..pass]).await.is_err() {
                    return End::Io;
                }
                out.boundary = frames.at_boundary();
                self.bytes_metric.inc_by(pass as u64);
                self.count.bytes.fetch_add(pass as u64, Ordering::Relaxed);
            }
            let completed = frames.messages - messages;
            if completed > 0 {
                self.messages_metric.inc_by(completed);
                self.count.messages.fetch_add(completed, Ordering::Relaxed);
            }
            if let Err(e) = parsed {
                return End::Frame(e);
            }
            // What is left is the start of a header: keep it for the next read.
            buf.copy_within(pass..filled, 0);
            filled -= pass;
            debug_assert!(filled < MAX_HEADER);
        }
    }
}

/// Why a tunnel closed: the `reason` label of `portcullis_websocket_closes_total`, and the
/// close frames the gateway sends to the client and to the backend.
#[derive(Clone, Copy)]
struct Closing {
    reason: &'static str,
    to_client: Option<(u16, &'static str)>,
    to_backend: Option<(u16, &'static str)>,
}

impl Closing {
    const fn both(reason: &'static str, code: u16, text: &'static str) -> Self {
        Self { reason, to_client: Some((code, text)), to_backend: Some((code, text)) }
    }
    const fn silent(reason: &'static str) -> Self {
        Self { reason, to_client: None, to_backend: None }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn join(client: OnUpgrade, backend: OnUpgrade, spec: TunnelSpec, registry: Registry) {
    let epoch = registry.epoch();
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(request.id = %spec.request_id, route.name = %spec.route, error = %e, "upgrade not completed");
            return;
        }
    };
    let _open = OpenTunnel::new(registry.clone(), &spec.route);
    let opened = Instant::now();
    let limits = spec.limits;
    let (client_rd, client_wr) = tokio::io::split(TokioIo::new(client));
    let (backend_rd, backend_wr) = tokio::io::split(TokioIo::new(backend));
    let (to_client, to_backend) = (Out::new(client_wr, false), Out::new(backend_wr, true));
    let (up, down) = (Count::default(), Count::default());
    let activity = AtomicU64::new(0);
    let first_close = AtomicU8::new(0);
    let closes = AtomicU8::new(0);
    let m = metrics();
    let route = &*spec.route;
    let pump = |from, out, count| Pump {
        from,
        out,
        count,
        activity: &activity,
        first_close: &first_close,
        closes: &closes,
        opened,
        max_message: limits.max_message_bytes,
        bytes_metric: m.websocket_bytes.with_label_values(&[route, direction(from)]),
        messages_metric: m.websocket_messages.with_label_values(&[route, direction(from)]),
    };
    let mut from_client = Box::pin(pump(Side::Client, &to_backend, &up).run(client_rd));
    let mut from_backend = Box::pin(pump(Side::Backend, &to_client, &down).run(backend_rd));

    let watches_credential = limits.close_on_credential_expiry && spec.credential.can_end();
    let mut credential_ended = std::pin::pin!(spec.credential.clone().ended(registry.revocations().clone()));
    let lifetime_ends = later(opened, limits.max_lifetime);
    let (mut client_ended, mut backend_ended) = (None::<bool>, None::<bool>);
    // Once one side ended, the other gets a moment to end too.
    let mut half_closed: Option<Instant> = None;
    let closing = loop {
        // A side ended after close frames went both ways: the close handshake is done.
        if (client_ended.is_some() || backend_ended.is_some()) && closes.load(Ordering::Relaxed) == 3 {
            let ended_first = if client_ended.is_some() { Side::Client } else { Side::Backend };
            break Closing::silent(peer_reason(&first_close, ended_first));
        }
        let idle_at = later(opened + Duration::from_millis(activity.load(Ordering::Relaxed)), limits.idle_timeout);
        tokio::select! {
            end = &mut from_client, if client_ended.is_none() => match end {
                End::Eof => {
                    client_ended = Some(true);
                    half_closed.get_or_insert(Instant::now() + HALF_CLOSED);
                    if backend_ended.is_some() { break Closing::silent(peer_reason(&first_close, Side::Backend)); }
                }
                End::Frame(FrameError::Protocol(why)) => {
                    tracing::debug!(request.id = %spec.request_id, route.name = %route, why, "protocol error from the client");
                    break Closing { reason: "protocol_error", to_client: Some((1002, "protocol error")), to_backend: Some((1001, "going away")) };
                }
                End::Frame(FrameError::TooBig) => break Closing::both("too_big", 1009, "message too big"),
                End::Io => break Closing::silent("error"),
            },
            end = &mut from_backend, if backend_ended.is_none() => match end {
                End::Eof => {
                    backend_ended = Some(true);
                    half_closed.get_or_insert(Instant::now() + HALF_CLOSED);
                    if client_ended.is_some() { break Closing::silent(peer_reason(&first_close, Side::Client)); }
                }
                End::Frame(FrameError::Protocol(why)) => {
                    tracing::debug!(request.id = %spec.request_id, route.name = %route, why, "protocol error from the backend");
                    break Closing { reason: "protocol_error", to_client: Some((1001, "going away")), to_backend: Some((1002, "protocol error")) };
                }
                End::Frame(FrameError::TooBig) => break Closing::both("too_big", 1009, "message too big"),
                End::Io => break Closing::silent("error"),
            },
            () = tokio::time::sleep_until(idle_at) => {
                let last = opened + Duration::from_millis(activity.load(Ordering::Relaxed));
                if later(last, limits.idle_timeout) <= Instant::now() {
                    break Closing::both("idle", 1001, "idle");
                }
            }
            () = tokio::time::sleep_until(lifetime_ends) => break Closing::both("lifetime", 1001, "max lifetime"),
            () = sleep_until_opt(half_closed) => {
                let ended_first = if client_ended.is_some() { Side::Client } else { Side::Backend };
                break Closing::silent(peer_reason(&first_close, ended_first));
            }
            () = registry.drained(epoch) => break Closing::both("drain", 1001, "going away"),
            end = &mut credential_ended, if watches_credential => {
                break Closing::both(end.reason(), 1008, end.close_text());
            }
        }
    };
    // The relays stop (a write they were in is abandoned, and that side is no longer between
    // frames); then each side gets the gateway's close frame and its end.
    drop(from_client);
    drop(from_backend);
    tokio::join!(close(&to_client, closing.to_client), close(&to_backend, closing.to_backend));
    m.websocket_closes.with_label_values(&[route, closing.reason]).inc();
    let record = TunnelRecord {
        request_id: &spec.request_id,
        listener: &spec.listener,
        route,
        client_ip: spec.client_ip,
        duration: opened.elapsed(),
        bytes_from_client: up.bytes.load(Ordering::Relaxed),
        bytes_from_backend: down.bytes.load(Ordering::Relaxed),
        messages_from_client: up.messages.load(Ordering::Relaxed),
        messages_from_backend: down.messages.load(Ordering::Relaxed),
        reason: closing.reason,
        close_code: closing.to_client.map(|(code, _)| code),
    };
    record.emit();
    tracing::debug!(request.id = %spec.request_id, route.name = %route, reason = closing.reason, "tunnel closed");
}

/// The `direction` label of the relay from `side`.
fn direction(side: Side) -> &'static str {
    match side {
        Side::Client => "from_client",
        Side::Backend => "from_backend",
    }
}

/// Both sides ended: the one whose close frame came first closed it, else the one that ended
/// first (`ended_first`).
fn peer_reason(first_close: &AtomicU8, ended_first: Side) -> &'static str {
    match first_close.load(Ordering::Relaxed) {
        1 => "client",
        2 => "backend",
        _ if ended_first == Side::Client => "client",
        _ => "backend",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_order_reaches_only_the_tunnels_open_when_it_was_given() {
        let registry = Registry::default();
        let before = registry.epoch();
        registry.drain(Duration::from_millis(30));
        let after = registry.epoch();
        let quick = Duration::from_millis(300);
        // Opened before the order: drained at its deadline.
        assert!(tokio::time::timeout(quick, registry.drained(before)).await.is_ok());
        // Opened after it: the passed deadline is not its.
        assert!(tokio::time::timeout(Duration::from_millis(60), registry.drained(after)).await.is_err());
        // A later order (SIGTERM after a reload) reaches both, at its own deadline.
        registry.drain(Duration::from_millis(20));
        let started = Instant::now();
        assert!(tokio::time::timeout(quick, registry.drained(after)).await.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(15));
    }
}
