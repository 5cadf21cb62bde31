//! Forwarding to backends (README: Architecture, a request's journey, step 4): pooled HTTP/1.1 and h2 connections (h2 via
//! ALPN on `https://` urls), round robin over healthy urls, passive and active health,
//! retries for idempotent requests without a body, timeouts, streamed bodies both ways.

mod connections;
pub mod echo;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri};

use crate::body::{self, Body};
use crate::problem::Problem;
use crate::task::OwnedTask;
use crate::telemetry::metrics::{count_error, metrics, Fault};
use connections::{Connections, Connector, SendError};

/// How long a url that refused a connection is skipped by round robin.
const PASSIVE_EJECTION: Duration = Duration::from_secs(5);

/// Why forwarding failed; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Opening a connection failed (DNS, TCP or TLS) or took longer than `connect_timeout` (502);
    /// the url is skipped for a while.
    #[error("could not connect to the backend")]
    Connect(#[source] std::io::Error),
    /// No response head within the backend's `timeout` (504); never retried.
    #[error("the backend did not answer in time")]
    Timeout,
    /// The path and query do not form a valid request target under the url's base path (400).
    #[error("the request target cannot be sent to this backend")]
    Target,
    /// The connection failed after the request was sent, or the response was malformed (502).
    #[error("the backend connection failed")]
    Upstream(#[source] hyper::Error),
}

impl ForwardError {
    /// The `kind` label of the error metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout => "timeout",
            Self::Target => "target",
            Self::Upstream(_) => "upstream",
        }
    }

    /// Whose fault it was: a target that cannot be sent is the client's, the rest the backend's.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Target => Fault::Client,
            Self::Connect(_) | Self::Timeout | Self::Upstream(_) => Fault::Backend,
        }
    }

    /// Logs and counts the failure (`portcullis_errors_total`, and
    /// `portcullis_upstream_errors_total` when the backend is to blame) and returns what the
    /// client is told.
    pub fn record(&self, request_id: &str, route: &str, backend: &str) -> Problem {
        tracing::warn!(request.id = %request_id, route.name = %route, backend.name = %backend, error = %self, "forwarding failed");
        let fault = self.fault();
        count_error(route, fault, self.kind());
        if fault == Fault::Backend {
            metrics().upstream_errors.with_label_values(&[backend, self.kind()]).inc();
        }
        self.problem()
    }

    /// What the client is told.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Timeout => Problem::gateway_timeout(),
            Self::Target => Problem::bad_request("the request target cannot be forwarded"),
            Self::Connect(_) | Self::Upstream(_) => Problem::bad_gateway(),
        }
    }
}

/// A configured backend.
pub struct Backend {
    /// The backend's name, as configured.
    pub name: Arc<str>,
    /// `portcullis_upstream_duration_seconds{backend}`, resolved once.
    pub upstream_duration: prometheus::Histogram,
    kind: BackendKind,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).finish_non_exhaustive()
    }
}

enum BackendKind {
    Echo,
    Local(Arc<dyn Responder>),
    Pool(Box<Pool>),
}

/// A built-in backend answered inside the gateway (the token issuer's endpoints).
pub trait Responder: Send + Sync + 'static {
    /// Answers one request routed to it.
    fn respond<'a>(&'a self, request: Outbound<'a>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;
}

/// A backend url that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("url {url:?}: {why}")]
pub struct UrlError {
    /// The url, as configured.
    pub url: String,
    /// What is wrong with it.
    pub why: UrlProblem,
}

/// What is wrong with a backend url.
#[derive(Debug, thiserror::Error)]
pub enum UrlProblem {
    /// The url does not parse as a URI.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The url has no scheme, like `127.0.0.1:8080`.
    #[error("needs http:// or https://")]
    NoScheme,
    /// The url's scheme is neither `http` nor `https`.
    #[error("only http:// and https:// are supported")]
    Scheme,
    /// The url names no host.
    #[error("has no host")]
    NoHost,
    /// The url has a query string; only a base path is allowed.
    #[error("a backend url cannot have a query")]
    Query,
}

/// One backend url.
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The url's path without a trailing `/`, prepended to every forwarded path.
    base_path: String,
    /// Milliseconds since `epoch` until which this url is skipped.
    ejected_until: AtomicU64,
    /// Set by the active health check.
    healthy: AtomicBool,
    connections: Connections,
}

impl Upstream {
    /// Parses a backend url (`http://` or `https://`, optional base path, no query).
    ///
    /// # Errors
    /// Another scheme, no host, or a query.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = |why| UrlError { url: url.to_owned(), why };
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(UrlProblem::Invalid(e.to_string())))?;
        let scheme = uri.scheme().cloned().ok_or(bad(UrlProblem::NoScheme))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad(UrlProblem::Scheme));
        }
        let authority = uri.authority().cloned().ok_or(bad(UrlProblem::NoHost))?;
        if uri.query().is_some() {
            return Err(bad(UrlProblem::Query));
        }
        Ok(Self {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            ejected_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            connections: Connections::default(),
        })
    }

    /// The origin-form target for `path` and `query` under the url's base path.
    fn target(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Ok(Uri::from(PathAndQuery::try_from(pq)?))
    }

    async fn send(&self, connector: &Connector, req: Request<Body>) -> Result<Response<Body>, SendError> {
        self.connections.send(connector, &self.scheme, &self.authority, req).await
    }

    /// The url's host and optional port (the `Host` of forwarded HTTP/1.1 requests).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// Settings of a pooled backend.
pub struct PoolSettings {
    /// Until the response head.
    pub timeout: Duration,
    /// Longest stall between response-body bytes (`None`: no limit).
    pub body_timeout: Option<Duration>,
    /// How long a connection attempt may take (default 2s).
    pub connect_timeout: Duration,
    /// How many more times an idempotent request without a body is sent after a failure (default 0).
    pub retries: u32,
    /// The TLS client configuration for `https://` urls.
    pub tls: Arc<rustls::ClientConfig>,
    /// The active health check, when configured.
    pub health_check: Option<HealthCheck>,
}

/// An active health check: every `interval`, a `GET path` to each url; a 2xx or 3xx answer within
/// `timeout` marks the url healthy, anything else unhealthy.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    /// The path probed, starting with `/`, under the url's base path.
    pub path: String,
    /// How often each url is probed.
    pub interval: Duration,
    /// How long one probe may take (default: the interval, at most 5s).
    pub timeout: Duration,
}

struct Pool {
    upstreams: Arc<[Upstream]>,
    next: AtomicUsize,
    connector: Arc<Connector>,
    settings: PoolSettings,
    epoch: Instant,
    health_task: OwnedTask,
}

/// A request ready to forward: the normalized upstream path and the original query.
pub struct Outbound<'a> {
    /// The request method.
    pub method: Method,
    /// The normalized path, after the route's `strip_prefix`; the url's base path is prepended later.
    pub path: &'a str,
    /// The original query string, without the `?`.
    pub query: Option<&'a str>,
    /// The client address the policies saw (built-in backends use it).
    pub client_ip: std::net::IpAddr,
    /// The headers to send: the client's, cleaned, plus `X-Forwarded-*` and `X-Request-Id`; no `Host`.
    pub headers: HeaderMap,
    /// The request body, streamed.
    pub body: Body,
    /// The body is known to be empty, so the request can be sent again.
    pub body_is_empty: bool,
}

impl Backend {
    /// The built-in `echo` backend, which answers with what it received.
    pub fn echo(name: &str) -> Self {
        Self { name: name.into(), upstream_duration: upstream_duration(name), kind: BackendKind::Echo }
    }

    /// A built-in backend, answered in-process.
    pub fn local(name: &str, responder: Arc<dyn Responder>) -> Self {
        Self { name: name.into(), upstream_duration: upstream_duration(name), kind: BackendKind::Local(responder) }
    }

    /// A pool over `upstreams`. Connections are built lazily; nothing is bound here.
    pub fn pool(name: &str, upstreams: Vec<Upstream>, settings: PoolSettings) -> Self {
        let connector = Arc::new(Connector::new(name, &settings.tls, settings.connect_timeout, settings.body_timeout));
        Self {
            name: name.into(),
            upstream_duration: upstream_duration(name),
            kind: BackendKind::Pool(Box::new(Pool {
                upstreams: upstreams.into(),
                next: AtomicUsize::new(0),
                connector,
                settings,
                epoch: Instant::now(),
                health_task: OwnedTask::default(),
            })),
        }
    }

    /// Starts the active health check, if configured. Needs a tokio runtime.
    pub fn start(&self) {
        let BackendKind::Pool(pool) = &self.kind else {
            return;
        };
        let Some(check) = pool.settings.health_check.clone() else {
            return;
        };
        let upstreams = pool.upstreams.clone();
        let connector = pool.connector.clone();
        let name = self.name.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(check.interval);
            loop {
                ticker.tick().await;
                for upstream in upstreams.iter() {
                    let ok = probe(&connector, upstream, &check).await;
                    if upstream.healthy.swap(ok, Ordering::Relaxed) != ok {
                        tracing::warn!(backend.name = %name, upstream = %upstream.authority, healthy = ok, "backend health changed");
                    }
                }
            }
        });
        pool.health_task.set(task);
    }

    /// Whether at least one url is healthy (always true for built-ins).
    pub fn is_ready(&self) -> bool {
        match &self.kind {
            BackendKind::Echo | BackendKind::Local(_) => true,
            BackendKind::Pool(pool) => pool.upstreams.iter().any(|u| u.healthy.load(Ordering::Relaxed)),
        }
    }

    /// Sends the request and returns the backend's response head with a streaming body,
    /// and the url that answered.
    ///
    /// # Errors
    /// See [`ForwardError`]; the caller maps it to 502 or 504.
    pub async fn forward(&self, out: Outbound<'_>) -> Result<(Response<Body>, Option<Authority>), ForwardError> {
        let pool = match &self.kind {
            BackendKind::Echo => return Ok((echo::answer(out).await, None)),
            BackendKind::Local(responder) => return Ok((responder.respond(out).await, None)),
            BackendKind::Pool(pool) => pool,
        };
        let idempotent = matches!(
            out.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
        );
        let attempts = if idempotent && out.body_is_empty { 1 + pool.settings.retries } else { 1 };
        let mut body = Some(out.body);
        let mut headers = Some(out.headers);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let upstream = pool.pick();
            let uri = upstream.target(out.path, out.query).map_err(|_| ForwardError::Target)?;
            let mut req = Request::new(body.take().unwrap_or_else(body::empty));
            *req.method_mut() = out.method.clone();
            *req.uri_mut() = uri;
            // Only an attempt that may be followed by a retry keeps a copy of the headers.
            *req.headers_mut() = match &headers {
                Some(h) if attempt < attempts => h.clone(),
                _ => headers.take().unwrap_or_default(),
            };
            let sent = tokio::time::timeout(pool.settings.timeout, upstream.send(&pool.connector, req)).await;
            let error = match sent {
                Ok(Ok(rsp)) => return Ok((rsp, Some(upstream.authority.clone()))),
                Err(_) => return Err(ForwardError::Timeout),
                Ok(Err(SendError::Connect(e))) => {
                    pool.eject(upstream);
                    ForwardError::Connect(e)
                }
                Ok(Err(SendError::Upstream(e))) => ForwardError::Upstream(e),
            };
            if attempt >= attempts {
                return Err(error);
            }
            tracing::debug!(backend.name = %self.name, upstream = %upstream.authority, error = %error, "retrying");
        }
    }
}

impl Backend {
    /// Sends a WebSocket handshake (its `Upgrade` and `Connection` fields set) on a new
    /// HTTP/1.1 connection of its own, never h2 and never a pooled one, and returns the
    /// backend's answer: on `101`, [`hyper::upgrade::on`] hands over the backend's stream.
    /// Never retried. Built-in backends answer it like any request.
    ///
    /// # Errors
    /// See [`ForwardError`].
    pub async fn upgrade(&self, out: Outbound<'_>) -> Result<(Response<Body>, Option<Authority>), ForwardError> {
        let BackendKind::Pool(pool) = &self.kind else {
            return self.forward(out).await;
        };
        let upstream = pool.pick();
        let uri = upstream.target(out.path, out.query).map_err(|_| ForwardError::Target)?;
        let mut req = Request::new(out.body);
        *req.method_mut() = out.method;
        *req.uri_mut() = uri;
        *req.headers_mut() = out.headers;
        let sent = connections::upgrade(&pool.connector, &upstream.scheme, &upstream.authority, req);
        match tokio::time::timeout(pool.settings.timeout, sent).await {
            Ok(Ok(rsp)) => Ok((rsp, Some(upstream.authority.clone()))),
            Err(_) => Err(ForwardError::Timeout),
            Ok(Err(SendError::Connect(e))) => {
                pool.eject(upstream);
                Err(ForwardError::Connect(e))
            }
            Ok(Err(SendError::Upstream(e))) => Err(ForwardError::Upstream(e)),
        }
    }
}

impl Pool {
    /// Round robin over urls that are neither ejected nor failing their health check;
    /// when every url is down, plain round robin (better a try than a certain 502).
    fn pick(&self) -> &Upstream {
        let now = self.epoch.elapsed().as_millis() as u64;
        let n = self.upstreams.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let upstream = &self.upstreams[(start + i) % n];
            if upstream.healthy.load(Ordering::Relaxed) && upstream.ejected_until.load(Ordering::Relaxed) <= now {
                return upstream;
            }
        }
        &self.upstreams[start % n]
    }

    fn eject(&self, upstream: &Upstream) {
        let until = (self.epoch.elapsed() + PASSIVE_EJECTION).as_millis() as u64;
        upstream.ejected_until.store(until, Ordering::Relaxed);
    }
}

fn upstream_duration(backend: &str) -> prometheus::Histogram {
    crate::telemetry::metrics().upstream_duration.with_label_values(&[backend])
}

async fn probe(connector: &Connector, upstream: &Upstream, check: &HealthCheck) -> bool {
    let Ok(uri) = upstream.target(&check.path, None) else {
        return false;
    };
    let mut req = Request::new(body::empty());
    *req.uri_mut() = uri;
    match tokio::time::timeout(check.timeout, upstream.send(connector, req)).await {
        Ok(Ok(rsp)) => rsp.status().is_success() || rsp.status().is_redirection(),
        _ => false,
    }
}
