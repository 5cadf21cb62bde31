//! The access log: one JSON line per request (target `access`), written when the response
//! body has been sent (or the client went away), so it carries the bytes really sent.
//! Header values are never logged; secret-looking query parameters are redacted.
//!
//! Cheap on the request path: a line is rendered straight into a reused buffer (no JSON tree,
//! no per-field allocation) and pushed onto a lock-free queue. One writer thread wakes once
//! [`WAKE_AT`] lines wait, or every [`FLUSH_EVERY`], writes them in one call and hands the
//! buffers back. Small batches keep the lines in the CPU's cache between their rendering and
//! their write. Requests never wait for the writer: a full queue drops and counts lines.

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http_body::{Frame, SizeHint};

use crate::body::{BodyStats, BoxError};
use crate::policy::{Claims, PolicyDecision};
use crate::redact;
use crate::tls::client_cert::ClientCertInfo;

/// What is known about a request when its response head is ready. Shared facts are held by
/// reference count; nothing is formatted until the line is written.
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
    pub client_ip: IpAddr,
    /// The negotiated TLS version, like `TLSv1_3`.
    pub tls_version: Option<&'static str>,
    /// The client certificate, when one was presented (its subject is logged).
    pub client_cert: Option<Arc<ClientCertInfo>>,
    /// The verified token's claims, when a `jwt` policy passed (its `sub` is logged).
    pub claims: Option<Arc<Claims>>,
    /// Each policy's decision, in chain order.
    pub decisions: Vec<PolicyDecision>,
    /// The backend address that answered, for pooled backends.
    pub upstream: Option<Authority>,
    /// Time from forwarding to the backend's response head.
    pub upstream_time: Option<Duration>,
    /// When the gateway began handling the request, for `total.ms`.
    pub started: Instant,
    /// What the request body did, when it was forwarded (gives `bytes.in`).
    pub request_body: Option<Arc<BodyStats>>,
}

impl AccessRecord {
    /// Appends the JSON line (without its newline) to `out`.
    pub fn render(&self, bytes_out: u64, complete: bool, out: &mut String) {
        let now = Instant::now();
        out.push_str("{\"timestamp\":\"");
        push_timestamp(out, now);
        out.push_str("\",\"log\":\"access\",\"request.id\":");
        push_str(out, &self.request_id);
        out.push_str(",\"listener\":");
        push_str(out, &self.listener);
        out.push_str(",\"route\":");
        push_opt_str(out, self.route.as_deref());
        out.push_str(",\"method\":");
        push_str(out, self.method.as_str());
        out.push_str(",\"path\":");
        push_str(out, &self.path);
        out.push_str(",\"query\":");
        push_opt_str(out, self.query.as_deref().map(redact::query).as_deref());
        out.push_str(",\"status\":");
        push_u64(out, self.status.into());
        out.push_str(",\"client.ip\":\"");
        match self.client_ip {
            IpAddr::V4(ip) => {
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    push_u64(out, octet.into());
                }
            }
            IpAddr::V6(ip) => {
                let _ = write!(out, "{ip}");
            }
        }
        out.push('"');
        out.push_str(",\"tls.version\":");
        push_opt_str(out, self.tls_version);
        out.push_str(",\"client_cert.subject\":");
        push_opt_str(out, self.client_cert.as_deref().map(|c| c.subject.as_str()));
        out.push_str(",\"jwt.sub\":");
        push_opt_str(out, self.claims.as_deref().and_then(|c| c.get("sub")).and_then(|s| s.as_str()));
        out.push_str(",\"decisions\":[");
        for (i, d) in self.decisions.iter().enumerate() {
            out.push_str(if i == 0 { "{\"policy\":" } else { ",{\"policy\":" });
            push_str(out, &d.policy);
            out.push_str(",\"outcome\":");
            push_str(out, d.outcome.label());
            if let Some(rule) = &d.rule {
                out.push_str(",\"rule\":");
                push_str(out, rule);
            }
            out.push_str(if d.outcome.report_only() { ",\"report_only\":true}" } else { ",\"report_only\":false}" });
        }
        out.push_str("],\"upstream.addr\":");
        match &self.upstream {
            Some(addr) => push_str(out, addr.as_str()),
            None => out.push_str("null"),
        }
        out.push_str(",\"upstream.ms\":");
        match self.upstream_time {
            Some(t) => push_millis(out, t),
            None => out.push_str("null"),
        }
        out.push_str(",\"total.ms\":");
        push_millis(out, now.saturating_duration_since(self.started));
        out.push_str(",\"bytes.in\":");
        push_u64(out, self.request_body.as_ref().map_or(0, |s| s.bytes()));
        out.push_str(",\"bytes.out\":");
        push_u64(out, bytes_out);
        out.push_str(if complete { ",\"complete\":true}" } else { ",\"complete\":false}" });
    }

    fn emit(&self, bytes_out: u64, complete: bool) {
        if let Some(writer) = sink() {
            writer.write(|line| self.render(bytes_out, complete, line));
        }
    }
}

/// What an upgraded connection did, logged once when it closes.
pub struct TunnelRecord<'a> {
    /// The handshake's request id.
    pub request_id: &'a str,
    /// The listener's name.
    pub listener: &'a str,
    /// The route's name.
    pub route: &'a str,
    /// The client's address, after trusted-proxy forwarding headers.
    pub client_ip: IpAddr,
    /// How long the connection was upgraded.
    pub duration: Duration,
    /// Bytes from the client, frame headers included.
    pub bytes_from_client: u64,
    /// Bytes from the backend, frame headers included.
    pub bytes_from_backend: u64,
    /// Data messages from the client.
    pub messages_from_client: u64,
    /// Data messages from the backend.
    pub messages_from_backend: u64,
    /// Why it closed (a `portcullis_websocket_closes_total` reason).
    pub reason: &'static str,
    /// The close code the gateway sent, when it closed the connection itself.
    pub close_code: Option<u16>,
}

impl TunnelRecord<'_> {
    /// Appends the JSON line (without its newline) to `out`.
    pub fn render(&self, out: &mut String) {
        out.push_str("{\"timestamp\":\"");
        push_timestamp(out, Instant::now());
        out.push_str("\",\"log\":\"access\",\"kind\":\"websocket\",\"request.id\":");
        push_str(out, self.request_id);
        out.push_str(",\"listener\":");
        push_str(out, self.listener);
        out.push_str(",\"route\":");
        push_str(out, self.route);
        let _ = write!(out, ",\"client.ip\":\"{}\"", self.client_ip);
        out.push_str(",\"duration.ms\":");
        push_millis(out, self.duration);
        for (key, n) in [
            (",\"bytes.from_client\":", self.bytes_from_client),
            (",\"bytes.from_backend\":", self.bytes_from_backend),
            (",\"messages.from_client\":", self.messages_from_client),
            (",\"messages.from_backend\":", self.messages_from_backend),
        ] {
            out.push_str(key);
            push_u64(out, n);
        }
        out.push_str(",\"close.reason\":");
        push_str(out, self.reason);
        out.push_str(",\"close.code\":");
        match self.close_code {
            Some(code) => push_u64(out, code.into()),
            None => out.push_str("null"),
        }
        out.push('}');
    }

    /// Writes the line to the access log, when there is one.
    pub fn emit(&self) {
        if let Some(writer) = sink() {
            writer.write(|line| self.render(line));
        }
    }
}

/// A JSON string: quoted, with `"`, `\` and control characters escaped.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

/// Milliseconds with microsecond precision, like `12.345`.
fn push_millis(out: &mut String, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    out.push('.');
    push_digits(out, micros % 1000, 3);
}

/// A number in decimal, without `core::fmt`.
fn push_u64(out: &mut String, n: u64) {
    let digits = n.checked_ilog10().map_or(1, |log| log as usize + 1);
    push_digits(out, n, digits);
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let width = width.min(buf.len());
    let mut rest = n;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend(buf[..width].iter().map(|&b| char::from(b)));
}

/// RFC 3339 UTC with microseconds, like `2026-12-06T15:38:14.123456Z`, for the monotonic
/// instant `now`. Each thread reads the wall clock once a second and counts from there, so a
/// line costs one clock read for its timestamp and its `total.ms` together; the date and time
/// of day are formatted once a second too.
fn push_timestamp(out: &mut String, now: Instant) {
    struct Wall {
        /// A monotonic instant and the wall-clock time (since the epoch) it was read at.
        anchor: Option<(Instant, Duration)>,
        /// The second `text` shows, like `2026-12-06T15:38:14`.
        second: u64,
        text: String,
    }
    thread_local! {
        static WALL: std::cell::RefCell<Wall> =
            const { std::cell::RefCell::new(Wall { anchor: None, second: u64::MAX, text: String::new() }) };
    }
    WALL.with_borrow_mut(|wall| {
        let (at, since_epoch) = match wall.anchor {
            Some((at, epoch)) if now.saturating_duration_since(at) < Duration::from_secs(1) => (at, epoch),
            _ => {
                let anchor = (now, SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default());
                wall.anchor = Some(anchor);
                anchor
            }
        };
        let since = since_epoch + now.saturating_duration_since(at);
        if wall.second != since.as_secs() {
            wall.second = since.as_secs();
            wall.text.clear();
            let t = i64::try_from(wall.second)
                .ok()
                .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let _ = write!(
                wall.text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        out.push_str(&wall.text);
        out.push('.');
        push_digits(out, since.subsec_micros().into(), 6);
        out.push('Z');
    });
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

/// How long a line may wait before it is written when traffic is light.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// The writer is woken once this many lines wait (≈ 40 KiB of a chain's lines).
pub const WAKE_AT: usize = 64;

/// Buffers kept for reuse: a few batches' worth, so a busy gateway allocates none.
const FREE_BUFFERS: usize = 4 * WAKE_AT;

/// At most one warning per this long about failing access-log writes.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A new line buffer's size; a reused one keeps what it grew to.
const LINE_CAPACITY: usize = 512;

/// The request path renders lines into buffers from `free` and pushes them onto `lines`; the
/// writer thread empties `lines` into `out` and returns the buffers to `free`.
struct Writer {
    lines: ArrayQueue<String>,
    free: ArrayQueue<String>,
    /// Locked by the writer thread, and by [`flush`] at shutdown; never on the request path.
    out: Mutex<Output>,
    thread: OnceLock<std::thread::Thread>,
}

struct Output {
    out: Box<dyn Write + Send>,
    batch: Vec<u8>,
    last_warning: Option<Instant>,
}

impl Writer {
    fn start(sink: AccessSink) -> Option<&'static Self> {
        let out: Box<dyn Write + Send> = match sink {
            AccessSink::Off => return None,
            AccessSink::Stdout => Box::new(std::io::stdout()),
            AccessSink::File(file) => Box::new(file),
        };
        let writer: &'static Self = Box::leak(Box::new(Self {
            lines: ArrayQueue::new(QUEUE_LINES),
            free: ArrayQueue::new(FREE_BUFFERS),
            out: Mutex::new(Output { out, batch: Vec::with_capacity(64 << 10), last_warning: None }),
            thread: OnceLock::new(),
        }));
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || loop {
            writer.drain();
            std::thread::park_timeout(FLUSH_EVERY);
        });
        let thread = spawned.ok()?.thread().clone();
        let _ = writer.thread.set(thread);
        Some(writer)
    }

    /// Renders one line into a reused buffer and queues it; never blocks.
    fn write(&self, render: impl FnOnce(&mut String)) {
        let mut line = self.free.pop().unwrap_or_else(|| String::with_capacity(LINE_CAPACITY));
        render(&mut line);
        if self.lines.push(line).is_err() {
            crate::telemetry::metrics().access_log_dropped.inc();
        } else if self.lines.len() >= WAKE_AT {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// Writes every queued line. A full disk or a closed pipe loses lines, counted and
    /// warned about once a minute; requests never wait for this.
    fn drain(&self) {
        let mut output = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Output { out, batch, last_warning } = &mut *output;
        loop {
            let mut count = 0;
            while let Some(mut line) = self.lines.pop() {
                // Off the request path: a configured secret never reaches the log, wherever
                // it turned up (a path, a query, a backend's answer).
                batch.extend_from_slice(crate::redact::scrub(&line).as_bytes());
                batch.push(b'\n');
                line.clear();
                let _ = self.free.push(line);
                count += 1;
                if batch.len() >= 64 << 10 {
                    break;
                }
            }
            if count == 0 {
                return;
            }
            if let Err(e) = out.write_all(batch).and_then(|()| out.flush()) {
                crate::telemetry::metrics().access_log_dropped.inc_by(count);
                if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(error = %e, "access log write failed; lines are dropped and counted");
                    *last_warning = Some(Instant::now());
                }
            }
            batch.clear();
        }
    }
}

static SINK: OnceLock<Option<&'static Writer>> = OnceLock::new();

/// Whether access-log lines are written at all (`--access-log off` skips building them).
pub fn enabled() -> bool {
    sink().is_some()
}

/// Chooses where access-log lines go; the first call wins (stdout when never called).
pub fn set_sink(sink: AccessSink) {
    let _ = SINK.set(Writer::start(sink));
}

/// Writes every line queued so far (at shutdown: nothing is lost), waiting at most `within`:
/// a stdout pipe nobody reads must not keep the gateway from exiting.
pub fn flush(within: Duration) {
    let Some(writer) = sink() else { return };
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("access-log-flush".into()).spawn(move || {
        writer.drain();
        let _ = done.send(());
    });
    if spawned.is_ok() {
        let _ = finished.recv_timeout(within);
    }
}

fn sink() -> Option<&'static Writer> {
    *SINK.get_or_init(|| Writer::start(AccessSink::Stdout))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Denial, Outcome};

    fn record() -> AccessRecord {
        AccessRecord {
            request_id: "id-1".into(),
            listener: "public".into(),
            route: None,
            method: http::Method::GET,
            path: "/a".into(),
            query: None,
            status: 404,
            client_ip: "::1".parse().unwrap(),
            tls_version: None,
            client_cert: None,
            claims: None,
            decisions: Vec::new(),
            upstream: None,
            upstream_time: None,
            started: Instant::now(),
            request_body: None,
        }
    }

    fn rendered(record: &AccessRecord) -> serde_json::Value {
        let mut line = String::new();
        record.render(7, false, &mut line);
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    #[test]
    fn a_bare_record_is_valid_json_with_nulls() {
        let line = rendered(&record());
        assert_eq!(line["log"], "access");
        assert_eq!(line["request.id"], "id-1");
        assert_eq!(line["route"], serde_json::Value::Null);
        assert_eq!(line["query"], serde_json::Value::Null);
        assert_eq!(line["client.ip"], "::1");
        assert_eq!(line["decisions"], serde_json::json!([]));
        assert_eq!(line["upstream.ms"], serde_json::Value::Null);
        assert_eq!((line["bytes.in"].as_u64(), line["bytes.out"].as_u64()), (Some(0), Some(7)));
        assert_eq!(line["complete"], false);
        let stamp = line["timestamp"].as_str().unwrap();
        assert!(time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).is_ok(), "{stamp}");
        assert_eq!(stamp.len(), "2026-12-06T15:38:14.123456Z".len(), "{stamp}");
    }

    #[test]
    fn every_field_is_escaped_and_the_query_redacted() {
        let mut claims = Claims::new();
        claims.insert("sub".into(), "user \"1\"\u{1}".into());
        let mut r = record();
        r.route = Some("api".into());
        r.path = "/caf\u{e9}/\\x\"y\n".into();
        r.query = Some("access_token=s3cr3t&page=2".into());
        r.request_id = "a\"b\\c\u{7f}".into();
        r.client_ip = "10.0.0.255".parse().unwrap();
        r.claims = Some(Arc::new(claims));
        r.upstream = Some("127.0.0.1:8080".parse().unwrap());
        r.upstream_time = Some(Duration::from_micros(12_345));
        r.decisions = vec![
            PolicyDecision { policy: "cors".into(), kind: "cors", outcome: Outcome::Allowed, rule: None },
            PolicyDecision {
                policy: "office".into(),
                kind: "ip_filter",
                outcome: Outcome::Reported(Denial::IpFilter(crate::policy::ip_filter::Refusal::NotAllowed)),
                rule: None,
            },
            PolicyDecision {
                policy: "partners".into(),
                kind: "authorize",
                outcome: Outcome::Allowed,
                rule: Some("own \"account\"".into()),
            },
        ];
        let line = rendered(&r);
        assert_eq!(line["path"], "/caf\u{e9}/\\x\"y\n");
        assert_eq!(line["request.id"], "a\"b\\c\u{7f}");
        assert_eq!(line["jwt.sub"], "user \"1\"\u{1}");
        assert_eq!(line["query"], "access_token=[redacted]&page=2");
        assert_eq!(line["upstream.addr"], "127.0.0.1:8080");
        assert_eq!(line["upstream.ms"].as_f64(), Some(12.345));
        assert_eq!(line["client.ip"], "10.0.0.255");
        assert_eq!(
            line["decisions"],
            serde_json::json!([
                { "policy": "cors", "outcome": "allowed", "report_only": false },
                { "policy": "office", "outcome": "ip_not_allowed", "report_only": true },
                { "policy": "partners", "outcome": "allowed", "rule": "own \"account\"", "report_only": false },
            ])
        );
    }

    #[test]
    fn the_client_certificate_subject_is_logged_as_rfc4514_escapes_it() {
        use rustls_pki_types::pem::PemObject as _;
        let ca = crate::tools::pki::Ca::new("log CA").unwrap();
        let kind = crate::tools::pki::LeafKind::Client { common_name: "svc, O=Contoso\n", organization: "Fabrikam" };
        let pem = ca.issue(&kind, 1).unwrap().cert_pem;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let mut r = record();
        r.client_cert = Some(Arc::new(ClientCertInfo::parse(&der).unwrap()));
        let line = rendered(&r);
        assert_eq!(line["client_cert.subject"], r"O=Fabrikam,CN=svc\, O=Contoso\0A");
    }

    #[test]
    fn numbers_are_written_in_full() {
        for n in [0, 7, 10, 99, 100, 65_535, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        push_millis(&mut out, Duration::from_micros(1_000_007));
        assert_eq!(out, "1000.007");
    }
}
