//! Connections to one backend url, without a lock on the request path.
//!
//! HTTP/1.1 connections wait in a lock-free queue while idle; a request takes one, and its
//! response body puts it back once read to its end (a body dropped early closes it). When the
//! backend chose h2 by ALPN, one h2 connection is shared by all requests to that url.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::{self, Body, BoxError, Stall};

/// At most this many idle HTTP/1.1 connections are kept per url; more are closed.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How a pool opens connections: the connect timeout and, for `https://` urls, the TLS
/// settings with ALPN offering h2 and HTTP/1.1.
pub(super) struct Connector {
    pub connect_timeout: Duration,
    pub tls: TlsConnector,
    /// The same TLS settings offering HTTP/1.1 only: for upgrades, which h2 cannot carry.
    tls_h1: TlsConnector,
    /// The longest a response body may stall between bytes (`None`: no limit).
    response_idle: Option<Duration>,
    /// `portcullis_upstream_errors_total{backend, kind="response_body"}`, resolved once.
    response_errors: prometheus::IntCounter,
}

impl Connector {
    pub(super) fn new(
        backend: &str,
        tls: &rustls::ClientConfig,
        connect_timeout: Duration,
        response_idle: Option<Duration>,
    ) -> Self {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls_h1 = TlsConnector::from(Arc::new(tls.clone()));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let response_errors =
            crate::telemetry::metrics().upstream_errors.with_label_values(&[backend, "response_body"]);
        Self { connect_timeout, tls: TlsConnector::from(Arc::new(tls)), tls_h1, response_idle, response_errors }
    }

    /// A backend's response body, cut off when it stalls and counted when it fails.
    fn watch<B>(&self, inner: B) -> Body
    where
        B: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static,
    {
        let stall = self.response_idle.map(Stall::new);
        body::boxed(WatchedBody { inner, stall, errors: self.response_errors.clone() })
    }
}

/// Why a request could not be answered by this url.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be opened; nothing was sent.
    Connect(io::Error),
    /// The request was (perhaps partly) sent and the exchange failed.
    Upstream(hyper::Error),
}

/// The idle and shared connections of one url.
pub(super) struct Connections {
    idle: Arc<ArrayQueue<Idle>>,
    h2: ArcSwapOption<http2::SendRequest<Body>>,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl Default for Connections {
    fn default() -> Self {
        Self { idle: Arc::new(ArrayQueue::new(MAX_IDLE)), h2: ArcSwapOption::empty() }
    }
}

enum Fresh {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Connections {
    /// Sends `req` (origin-form uri, no `Host`) to `scheme://authority`: on the shared h2
    /// connection, else on an idle HTTP/1.1 connection, else on a new one. A request that a
    /// reused connection gave back unsent goes on to the next connection.
    pub(super) async fn send(
        &self,
        connector: &Connector,
        scheme: &Scheme,
        authority: &Authority,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        if let Some(h2) = self.h2.load_full() {
            if !h2.is_closed() {
                return send_h2(connector, &h2, scheme, authority, req).await;
            }
            self.h2.compare_and_swap(&Some(h2), None);
        }
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
        while let Some(Idle { mut sender, since }) = self.idle.pop() {
            if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT || sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(rsp) => return Ok(self.keep_alive(connector, rsp, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Upstream(e.into_error())),
                },
            }
        }
        match connect(connector, scheme, authority).await.map_err(SendError::Connect)? {
            Fresh::H1(mut sender) => {
                let rsp = sender.send_request(req).await.map_err(SendError::Upstream)?;
                Ok(self.keep_alive(connector, rsp, sender))
            }
            Fresh::H2(sender) => {
                req.headers_mut().remove(header::HOST);
                let sender = Arc::new(sender);
                self.h2.store(Some(sender.clone()));
                send_h2(connector, &sender, scheme, authority, req).await
            }
        }
    }

    /// Wraps the response so that its connection returns to the idle queue after the body.
    fn keep_alive(
        &self,
        connector: &Connector,
        rsp: Response<Incoming>,
        sender: http1::SendRequest<Body>,
    ) -> Response<Body> {
        rsp.map(|inner| {
            let mut body = KeepAliveBody { inner, sender: Some(sender), idle: self.idle.clone() };
            if body.inner.is_end_stream() {
                body.release();
            }
            connector.watch(body)
        })
    }
}

/// Sends an upgrade request (origin-form uri, no `Host`) on a new HTTP/1.1 connection that
/// serves it alone: the connection is never pooled, and on `101` its stream is handed over
/// through the response's [`hyper::upgrade::OnUpgrade`].
pub(super) async fn upgrade(
    connector: &Connector,
    scheme: &Scheme,
    authority: &Authority,
    mut req: Request<Body>,
) -> Result<Response<Body>, SendError> {
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().insert(header::HOST, host);
    }
    let opened = tokio::time::timeout(connector.connect_timeout, async {
        let (host, port, https) = endpoint(scheme, authority);
        let tcp = tcp_connect(host, port).await?;
        if !https {
            return handshake_upgradable(TokioIo::new(tcp)).await;
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        handshake_upgradable(TokioIo::new(connector.tls_h1.connect(name, tcp).await?)).await
    });
    let mut sender = opened
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))
        .and_then(|opened| opened)
        .map_err(SendError::Connect)?;
    let rsp = sender.send_request(req).await.map_err(SendError::Upstream)?;
    Ok(rsp.map(|body| connector.watch(body)))
}

/// An HTTP/1.1 client connection that can hand its stream over after a `101`.
async fn handshake_upgradable<T>(io: TokioIo<T>) -> io::Result<http1::SendRequest<Body>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await.map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend upgrade connection ended");
        }
    });
    Ok(sender)
}

/// The host (without IPv6 brackets), the port and whether TLS is used.
fn endpoint<'a>(scheme: &Scheme, authority: &'a Authority) -> (&'a str, u16, bool) {
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let https = *scheme == Scheme::HTTPS;
    (host, authority.port_u16().unwrap_or(if https { 443 } else { 80 }), https)
}

async fn send_h2(
    connector: &Connector,
    h2: &http2::SendRequest<Body>,
    scheme: &Scheme,
    authority: &Authority,
    mut req: Request<Body>,
) -> Result<Response<Body>, SendError> {
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority.clone());
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    let mut sender = h2.clone();
    let rsp = sender.send_request(req).await.map_err(SendError::Upstream)?;
    Ok(rsp.map(|body| connector.watch(body)))
}

/// Opens a connection: DNS, TCP (no Nagle), TLS for `https://` with ALPN deciding h2 or
/// HTTP/1.1, all within the connect timeout. The connection runs in its own task.
async fn connect(connector: &Connector, scheme: &Scheme, authority: &Authority) -> io::Result<Fresh> {
    let opened = tokio::time::timeout(connector.connect_timeout, async {
        let (host, port, https) = endpoint(scheme, authority);
        let tcp = tcp_connect(host, port).await?;
        if !https {
            return handshake_h1(TokioIo::new(tcp)).await;
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = connector.tls.connect(name, tcp).await?;
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(tls))
                .await
                .map_err(io::Error::other)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "backend h2 connection ended");
                }
            });
            Ok(Fresh::H2(sender))
        } else {
            handshake_h1(TokioIo::new(tls)).await
        }
    });
    opened.await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))?
}

async fn tcp_connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn handshake_h1<T>(io: TokioIo<T>) -> io::Result<Fresh>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await.map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    Ok(Fresh::H1(sender))
}

/// A response body that returns its HTTP/1.1 connection to the idle queue when read to the
/// end; dropped earlier, the connection closes with it.
struct KeepAliveBody {
    inner: Incoming,
    sender: Option<http1::SendRequest<Body>>,
    idle: Arc<ArrayQueue<Idle>>,
}

impl KeepAliveBody {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            // A full queue closes the connection.
            let _ = self.idle.push(Idle { sender, since: Instant::now() });
        }
    }
}

impl http_body::Body for KeepAliveBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !self.inner.is_end_stream() => {}
            Some(Err(_)) => self.sender = None,
            _ => self.release(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The backend stopped sending its response body for longer than its `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the backend's response body stalled for {0:?}")]
struct ResponseStalled(Duration);

/// A backend's response body: fails when it stalls longer than the backend's `body_timeout`
/// between bytes (the client then sees its response cut off, not a hang), and counts
/// failures as the backend's.
struct WatchedBody<B> {
    inner: B,
    stall: Option<Stall>,
    errors: prometheus::IntCounter,
}

impl<B> http_body::Body for WatchedBody<B>
where
    B: http_body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(stall) = &mut this.stall {
            if stall.timed_out(&polled, cx) {
                this.errors.inc();
                return Poll::Ready(Some(Err(ResponseStalled(stall.idle()).into())));
            }
        }
        match ready!(polled) {
            Some(Err(e)) => {
                this.errors.inc();
                Poll::Ready(Some(Err(e.into())))
            }
            other => Poll::Ready(other.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
