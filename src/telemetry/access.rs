//! The access log: one JSON line per request (target `access`), written when the response
//! body has been sent (or the client went away), so it carries the bytes really sent.
//! Header values are never logged; secret-looking query parameters are redacted.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::body::{BodyStats, BoxError};
use crate::policy::PolicyDecision;
use crate::redact;

/// What is known about a request when its response head is ready.
pub struct AccessRecord {
    /// The request's id (`request.id`): a trusted proxy's, or one the gateway made.
    pub request_id: String,
    /// The listener's name, as configured.
    pub listener: Arc<str>,
    /// The route's name, when the request was routed.
    pub route: Option<Arc<str>>,
    /// The request method.
    pub method: http::Method,
    /// The normalized path once routed, the request's path before.
    pub path: String,
    /// The raw query string, redacted when the line is written.
    pub query: Option<String>,
    /// The response status code.
    pub status: u16,
    /// The client's address, after trusted-proxy forwarding headers.
    pub client_ip: std::net::IpAddr,
    /// The negotiated TLS version, like `TLSv1_3`.
    pub tls_version: Option<&'static str>,
    /// The client certificate's subject, when one was presented.
    pub client_cert: Option<String>,
    /// The token's `sub` claim, when a `jwt` policy passed.
    pub subject: Option<String>,
    /// Each policy's decision, in chain order.
    pub decisions: Vec<PolicyDecision>,
    /// The backend address that answered, for pooled backends.
    pub upstream: Option<String>,
    /// Time from forwarding to the backend's response head.
    pub upstream_time: Option<Duration>,
    /// When the gateway began handling the request, for `total.ms`.
    pub started: Instant,
    /// What the request body did, when it was forwarded (gives `bytes.in`).
    pub request_body: Option<Arc<BodyStats>>,
}

impl AccessRecord {
    fn emit(&self, bytes_out: u64, complete: bool) {
        let decisions: Vec<serde_json::Value> = self
            .decisions
            .iter()
            .map(|d| {
                serde_json::json!({ "policy": &*d.policy, "outcome": d.outcome.label(), "report_only": d.outcome.report_only() })
            })
            .collect();
        let line = serde_json::json!({
            "timestamp": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "log": "access",
            "request.id": self.request_id,
            "listener": &*self.listener,
            "route": self.route.as_deref(),
            "method": self.method.as_str(),
            "path": self.path,
            "query": self.query.as_deref().map(redact::query),
            "status": self.status,
            "client.ip": self.client_ip.to_string(),
            "tls.version": self.tls_version,
            "client_cert.subject": self.client_cert,
            "jwt.sub": self.subject,
            "decisions": decisions,
            "upstream.addr": self.upstream,
            "upstream.ms": self.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
            "total.ms": self.started.elapsed().as_secs_f64() * 1000.0,
            "bytes.in": self.request_body.as_ref().map_or(0, |s| s.bytes()),
            "bytes.out": bytes_out,
            "complete": complete,
        });
        sink().write_line(line.to_string());
    }
}

/// Where access-log lines go: stdout (default), a file, or nowhere.
pub enum AccessSink {
    /// Write lines to standard output (the default).
    Stdout,
    /// Write lines to this open file (`--access-log PATH` opens it for appending).
    File(std::fs::File),
    /// Write no access log (`--access-log off`).
    Off,
}

/// Lines waiting for the writer thread; past this, lines are dropped (and counted) rather
/// than making requests wait for a slow disk or pipe.
const QUEUE_LINES: usize = 16_384;

/// At most one warning per this long about failing access-log writes.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The request path hands lines to one writer thread through a lock-free queue; the
/// writer batches them and flushes whenever the queue runs dry.
struct Writer {
    queue: Option<std::sync::mpsc::SyncSender<String>>,
}

impl Writer {
    fn start(sink: AccessSink) -> Self {
        let mut out: Box<dyn Write + Send> = match sink {
            AccessSink::Off => return Self { queue: None },
            AccessSink::Stdout => Box::new(std::io::stdout()),
            AccessSink::File(file) => Box::new(file),
        };
        let (queue, lines) = std::sync::mpsc::sync_channel::<String>(QUEUE_LINES);
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            let mut buf = Vec::with_capacity(64 << 10);
            let mut last_warning: Option<Instant> = None;
            while let Ok(line) = lines.recv() {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                let mut batch = 1;
                while let Ok(more) = lines.try_recv() {
                    buf.extend_from_slice(more.as_bytes());
                    buf.push(b'\n');
                    batch += 1;
                    if buf.len() >= 64 << 10 {
                        break;
                    }
                }
                // A full disk or a closed pipe loses lines, counted; requests never wait.
                if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                    crate::telemetry::metrics().access_log_dropped.inc_by(batch);
                    if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        tracing::warn!(error = %e, "access log write failed; lines are dropped and counted");
                        last_warning = Some(Instant::now());
                    }
                }
                buf.clear();
            }
        });
        Self { queue: spawned.ok().map(|_| queue) }
    }

    fn write_line(&self, line: String) {
        if let Some(queue) = &self.queue {
            if queue.try_send(line).is_err() {
                crate::telemetry::metrics().access_log_dropped.inc();
            }
        }
    }
}

static SINK: OnceLock<Writer> = OnceLock::new();

/// Whether access-log lines are written at all (`--access-log off` skips building them).
pub fn enabled() -> bool {
    sink().queue.is_some()
}

/// Chooses where access-log lines go; the first call wins (stdout when never called).
pub fn set_sink(sink: AccessSink) {
    let _ = SINK.set(Writer::start(sink));
}

fn sink() -> &'static Writer {
    SINK.get_or_init(|| Writer::start(AccessSink::Stdout))
}

/// A response body that counts what it sends and writes the access log line at its end.
pub struct LoggedBody<B> {
    inner: B,
    record: Option<Box<AccessRecord>>,
    sent: u64,
}

impl<B> LoggedBody<B> {
    /// Wraps a response body; the access line for `record` is written when it ends or is dropped.
    pub fn new(inner: B, record: AccessRecord) -> Self {
        Self { inner, record: Some(Box::new(record)), sent: 0 }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(record) = self.record.take() {
            record.emit(self.sent, complete);
        }
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        // The client left before the end (or the body errored): still one line.
        self.finish(false);
    }
}

impl<B> http_body::Body for LoggedBody<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
