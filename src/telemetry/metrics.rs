//! Prometheus metrics (`GET /metrics` on the admin listener). One registry for the process,
//! so counters survive reloads. Every label value comes from configuration names or fixed
//! vocabularies: never a raw path, address or certificate subject.

use std::sync::OnceLock;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process-wide Prometheus metrics, reached through [`metrics`]; each field lists its labels.
pub struct Metrics {
    registry: Registry,
    /// route, method class (read/write/other), status code.
    pub requests: IntCounterVec,
    /// route.
    pub request_duration: HistogramVec,
    /// policy, outcome (`allowed`, `answered`, or the denial reason).
    pub policy_decisions: IntCounterVec,
    /// Rate-limit decisions the shared store could not make (timeouts, connection errors),
    /// by policy; `on_store_error` decided them.
    pub rate_limit_store_errors: IntCounterVec,
    /// backend.
    pub upstream_duration: HistogramVec,
    /// backend, kind (`connect`, `timeout`, `upstream`, `response_body`): the backend's faults only.
    pub upstream_errors: IntCounterVec,
    /// route, fault ([`Fault`]), kind: every answer that is an error, by whose fault it was.
    pub errors: IntCounterVec,
    /// listener, reason (`per_ip_limit`): connections closed before their handshake.
    pub connections_refused: IntCounterVec,
    /// listener.
    pub active_connections: IntGaugeVec,
    /// listener, reason.
    pub tls_handshake_failures: IntCounterVec,
    /// policy, result (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    /// result (`issued` or the refusal: `invalid_client`, `invalid_grant`, `rate_limited`…).
    pub token_requests: IntCounterVec,
    /// result (`ok`, `error`).
    pub config_reloads: IntCounterVec,
    /// Open upgraded (WebSocket) connections, per route.
    pub websocket_connections: IntGaugeVec,
    /// WebSocket data messages relayed, per route and direction (`from_client`, `from_backend`).
    pub websocket_messages: IntCounterVec,
    /// WebSocket bytes relayed (frame headers included), per route and direction.
    pub websocket_bytes: IntCounterVec,
    /// Upgraded connections closed, per route and reason.
    pub websocket_closes: IntCounterVec,
    /// certificate (file name), usage.
    pub certificate_expiry: GaugeVec,
    /// Access-log lines dropped: the writer fell behind, or writing failed (a full disk).
    pub access_log_dropped: prometheus::IntCounter,
}

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Creates metrics and registers each once.
struct Register(Registry);

impl Register {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: Result<M, prometheus::Error>) -> M {
        let metric = metric.expect("valid metric");
        self.0.register(Box::new(metric.clone())).expect("registered once");
        metric
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.add(HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels))
    }
}

impl Metrics {
    fn new() -> Self {
        let r = Register(Registry::new());
        Self {
            access_log_dropped: r.add(prometheus::IntCounter::new(
                "portcullis_access_log_dropped_total",
                "Access-log lines dropped: the writer fell behind or could not write",
            )),
            requests: r.counter("portcullis_requests_total", "Requests answered", &["route", "method", "status"]),
            request_duration: r.histogram(
                "portcullis_request_duration_seconds",
                "Time to the response head",
                &["route"],
            ),
            policy_decisions: r.counter(
                "portcullis_policy_decisions_total",
                "Policy decisions",
                &["policy", "outcome"],
            ),
            rate_limit_store_errors: r.counter(
                "portcullis_rate_limit_store_errors_total",
                "Rate-limit decisions the shared store could not make; on_store_error decided them",
                &["policy"],
            ),
            upstream_duration: r.histogram(
                "portcullis_upstream_duration_seconds",
                "Backend time to the response head",
                &["backend"],
            ),
            upstream_errors: r.counter("portcullis_upstream_errors_total", "Backend failures", &["backend", "kind"]),
            errors: r.counter(
                "portcullis_errors_total",
                "Error answers, by whose fault they were (client, policy, gateway, backend)",
                &["route", "fault", "kind"],
            ),
            connections_refused: r.counter(
                "portcullis_connections_refused_total",
                "Connections closed before their TLS handshake",
                &["listener", "reason"],
            ),
            active_connections: r.add(IntGaugeVec::new(
                Opts::new("portcullis_active_connections", "Open client connections"),
                &["listener"],
            )),
            tls_handshake_failures: r.counter(
                "portcullis_tls_handshake_failures_total",
                "Failed TLS handshakes",
                &["listener", "reason"],
            ),
            jwks_fetches: r.counter("portcullis_jwks_fetches_total", "JWKS fetches", &["policy", "result"]),
            token_requests: r.counter(
                "portcullis_token_requests_total",
                "Token endpoint requests, by result and by which secret got the token",
                &["result", "secret"],
            ),
            config_reloads: r.counter("portcullis_config_reloads_total", "Configuration reloads", &["result"]),
            websocket_connections: r.add(IntGaugeVec::new(
                Opts::new("portcullis_websocket_connections", "Open upgraded (WebSocket) connections"),
                &["route"],
            )),
            websocket_messages: r.counter(
                "portcullis_websocket_messages_total",
                "WebSocket data messages relayed",
                &["route", "direction"],
            ),
            websocket_bytes: r.counter(
                "portcullis_websocket_bytes_total",
                "WebSocket bytes relayed, frame headers included",
                &["route", "direction"],
            ),
            websocket_closes: r.counter(
                "portcullis_websocket_closes_total",
                "Upgraded connections closed, by reason",
                &["route", "reason"],
            ),
            certificate_expiry: r.add(GaugeVec::new(
                Opts::new(
                    "portcullis_certificate_expiry_seconds",
                    "Seconds until a certificate in use expires, while a configuration that uses it is in use",
                ),
                &["certificate", "usage", "serial"],
            )),
            registry: r.0,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Whose fault an error answer was: the `fault` label of `portcullis_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request itself: framing, path, size, a stalled or malformed body, no route.
    Client,
    /// A policy refused it.
    Policy,
    /// The gateway could not serve it (keys not loaded yet, a store failure).
    Gateway,
    /// The backend failed: unreachable, too slow, a broken answer.
    Backend,
}

impl Fault {
    /// The label value: `client`, `policy`, `gateway` or `backend`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Policy => "policy",
            Self::Gateway => "gateway",
            Self::Backend => "backend",
        }
    }
}

/// Counts one error answer in `portcullis_errors_total`.
pub fn count_error(route: &str, fault: Fault, kind: &str) {
    metrics().errors.with_label_values(&[route, fault.label(), kind]).inc();
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// `read` (GET, HEAD, OPTIONS), `write` (POST, PUT, PATCH, DELETE) or `other`.
pub fn method_class(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => "read",
        http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE => "write",
        _ => "other",
    }
}

/// A bounded label for a TLS handshake error.
pub fn handshake_reason(error: &std::io::Error) -> &'static str {
    let text = error.to_string();
    if text.contains("ProtocolVersion") || text.contains("protocol version") || text.contains("no protocols in common")
    {
        "protocol_version"
    } else if text.contains("certificate") || text.contains("Certificate") {
        "bad_certificate"
    } else if error.kind() == std::io::ErrorKind::UnexpectedEof || text.contains("eof") {
        "closed"
    } else {
        "other"
    }
}

const METHOD_CLASSES: [&str; 3] = ["read", "write", "other"];
/// Statuses whose counters a route resolves once; others are looked up per answer.
const COMMON_STATUSES: [u16; 13] = [200, 201, 204, 304, 400, 401, 403, 404, 413, 429, 502, 503, 504];

/// A route's metric handles, resolved once, so answering takes no registry lock.
#[derive(Debug)]
pub struct RouteMetrics {
    route: std::sync::Arc<str>,
    /// The route's `portcullis_request_duration_seconds` histogram (time to the response head).
    pub duration: prometheus::Histogram,
    requests: [[OnceLock<prometheus::IntCounter>; COMMON_STATUSES.len()]; METHOD_CLASSES.len()],
}

impl RouteMetrics {
    /// Resolves the route's histogram; request counters are resolved on first use.
    pub fn new(route: std::sync::Arc<str>) -> Self {
        Self {
            duration: metrics().request_duration.with_label_values(&[&route]),
            route,
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// Counts one answer in `portcullis_requests_total`.
    pub fn count(&self, method: &http::Method, status: http::StatusCode) {
        let class = METHOD_CLASSES.iter().position(|c| *c == method_class(method)).unwrap_or(2);
        let labels = [&*self.route, METHOD_CLASSES[class], status.as_str()];
        match COMMON_STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(i) => self.requests[class][i].get_or_init(|| metrics().requests.with_label_values(&labels)).inc(),
            None => metrics().requests.with_label_values(&labels).inc(),
        }
    }
}

/// One `portcullis_certificate_expiry_seconds` series, shown while a configuration that uses
/// the certificate lives: after a reload that replaced a certificate, the old and the new one
/// are both shown until the last request of the old configuration has finished.
pub struct ExpirySeries {
    labels: [String; 3],
}

/// How many live configurations hold each series.
static EXPIRY_HOLDERS: std::sync::Mutex<Vec<([String; 3], usize)>> = std::sync::Mutex::new(Vec::new());

impl ExpirySeries {
    /// Shows (or updates) the series `certificate`, `usage`, `serial` with `seconds_left`.
    pub fn hold(certificate: &str, usage: &str, serial: &str, seconds_left: i64) -> Self {
        let labels = [certificate.to_owned(), usage.to_owned(), serial.to_owned()];
        let mut holders = EXPIRY_HOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match holders.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, count)) => *count += 1,
            None => holders.push((labels.clone(), 1)),
        }
        metrics().certificate_expiry.with_label_values(&labels.each_ref().map(String::as_str)).set(seconds_left as f64);
        Self { labels }
    }
}

impl Drop for ExpirySeries {
    fn drop(&mut self) {
        let mut holders = EXPIRY_HOLDERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(i) = holders.iter().position(|(l, _)| *l == self.labels) else { return };
        holders[i].1 -= 1;
        if holders[i].1 == 0 {
            holders.swap_remove(i);
            let _ = metrics().certificate_expiry.remove_label_values(&self.labels.each_ref().map(String::as_str));
        }
    }
}
