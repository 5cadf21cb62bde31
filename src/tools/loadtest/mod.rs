//! `portcullis bench`: a load generator for policy chains (README: `portcullis bench`). Weighted request kinds
//! over keep-alive or per-request TLS connections, HTTP/1.1 or h2, tokens minted from keys,
//! HDR latency histograms per kind, a progress line, and thresholds that decide the exit code.

pub mod scenario;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use scenario::Scenario;
use scenario::{HttpVersion, Thresholds, TokenSpec};

/// Where the load goes.
pub struct Target {
    /// The address every connection goes to (for a URL, the first its host resolves to).
    pub addr: SocketAddr,
    /// `host[:port]` for the Host header / `:authority`.
    pub authority: String,
    /// The TLS server name (SNI, and the name the certificate must match): the scenario's
    /// `tls.server_name`, else the URL's host (`localhost` for a gateway started in-process).
    pub server_name: ServerName<'static>,
}

impl Target {
    /// Resolves an `https://host:port` base URL.
    ///
    /// # Errors
    /// Not an https URL, or the host does not resolve.
    pub async fn resolve(url: &str, server_name: Option<&str>) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse().with_context(|| format!("invalid target {url:?}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("the target must be an https:// URL, like https://localhost:8443");
        }
        let host = uri.host().context("the target has no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let addr =
            tokio::net::lookup_host((host.as_str(), port)).await?.next().context("the target host does not resolve")?;
        let name = server_name.unwrap_or(host.trim_start_matches('[').trim_end_matches(']')).to_owned();
        Ok(Self { addr, authority: format!("{host}:{port}"), server_name: ServerName::try_from(name)? })
    }
}

/// A request kind ready to send.
struct Kind {
    name: String,
    method: Method,
    target: String,
    headers: Vec<(HeaderName, Value)>,
    body: Bytes,
    expect: u16,
}

enum Value {
    Fixed(HeaderValue),
    /// Minted per request: text before, token name, text after.
    Unique(String, String, String),
}

/// A token source for `${token:NAME}`.
struct Minter {
    key: jsonwebtoken::EncodingKey,
    header: jsonwebtoken::Header,
    claims: serde_json::Map<String, serde_json::Value>,
    ttl: i64,
}

impl Minter {
    fn new(spec: &TokenSpec) -> anyhow::Result<Self> {
        let alg: jsonwebtoken::Algorithm =
            spec.alg.parse().with_context(|| format!("unknown algorithm {}", spec.alg))?;
        let pem = std::fs::read(&spec.key).with_context(|| format!("cannot read {}", spec.key.display()))?;
        use jsonwebtoken::{Algorithm as A, EncodingKey as K};
        let key = match alg {
            A::HS256 | A::HS384 | A::HS512 => K::from_secret(String::from_utf8_lossy(&pem).trim_end().as_bytes()),
            A::ES256 | A::ES384 => K::from_ec_pem(&pem)?,
            A::EdDSA => K::from_ed_pem(&pem)?,
            _ => K::from_rsa_pem(&pem)?,
        };
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = spec.kid.clone();
        let (negative, ttl) = match spec.ttl.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, spec.ttl.as_str()),
        };
        let ttl =
            crate::config::values::ConfigDuration::try_from(ttl.to_owned()).map_err(anyhow::Error::msg)?.0.as_secs()
                as i64;
        Ok(Self { key, header, claims: spec.claims.clone(), ttl: if negative { -ttl } else { ttl } })
    }

    fn mint(&self, unique: bool) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
        let mut claims = self.claims.clone();
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + self.ttl).into());
        if unique {
            claims.insert("jti".into(), crate::id::uuid_v4().into());
        }
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.key)?)
    }
}

/// Everything a run needs, shared by the workers.
pub struct Plan {
    kinds: Vec<Kind>,
    /// Cumulative weights, for a weighted pick.
    cumulative: Vec<u32>,
    minters: BTreeMap<String, Minter>,
    tls: Arc<rustls::ClientConfig>,
    target: Target,
    keep_alive: bool,
    http: HttpVersion,
}

impl Plan {
    /// Mints fixed tokens, compiles headers and the TLS client.
    ///
    /// # Errors
    /// A key, certificate or header that cannot be used.
    pub fn new(scenario: &Scenario, target: Target) -> anyhow::Result<Self> {
        let mut minters = BTreeMap::new();
        let mut fixed = BTreeMap::new();
        for (name, spec) in &scenario.tokens {
            let minter = Minter::new(spec).with_context(|| format!("token {name}"))?;
            if !spec.unique {
                fixed.insert(name.clone(), minter.mint(false)?);
            }
            minters.insert(name.clone(), minter);
        }
        let mut kinds = Vec::new();
        let mut cumulative = Vec::new();
        let mut sum = 0;
        for r in &scenario.requests {
            let mut headers = Vec::new();
            for (name, value) in &r.headers {
                let name =
                    HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("{}: header {name:?}", r.name))?;
                headers.push((
                    name,
                    template(value, &fixed, &minters).with_context(|| format!("{}: header value", r.name))?,
                ));
            }
            sum += r.weight;
            cumulative.push(sum);
            kinds.push(Kind {
                name: r.name.clone(),
                method: Method::from_bytes(r.method.as_bytes())?,
                target: r.url.clone(),
                headers,
                body: Bytes::from(r.body.clone().unwrap_or_default()),
                expect: r.expect,
            });
        }
        Ok(Self {
            kinds,
            cumulative,
            minters,
            tls: client_config(scenario)?,
            target,
            keep_alive: scenario.keep_alive,
            http: scenario.http,
        })
    }

    fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one kind");
        let x = rng.u32(0..total);
        self.cumulative.partition_point(|c| *c <= x)
    }

    fn request(&self, kind: &Kind) -> anyhow::Result<Request<Full<Bytes>>> {
        let uri = match self.http {
            HttpVersion::Http1 => kind.target.clone(),
            HttpVersion::Http2 => format!("https://{}{}", self.target.authority, kind.target),
        };
        let mut req = Request::builder().method(kind.method.clone()).uri(uri);
        if self.http == HttpVersion::Http1 {
            req = req.header(http::header::HOST, &self.target.authority);
        }
        for (name, value) in &kind.headers {
            let value = match value {
                Value::Fixed(v) => v.clone(),
                Value::Unique(before, token, after) => {
                    let minted = self.minters[token].mint(true)?;
                    HeaderValue::from_str(&format!("{before}{minted}{after}"))?
                }
            };
            req = req.header(name, value);
        }
        Ok(req.body(Full::new(kind.body.clone()))?)
    }
}

/// `…${token:NAME}…` → the minted token (fixed), or a per-request template (unique).
fn template(
    value: &str,
    fixed: &BTreeMap<String, String>,
    minters: &BTreeMap<String, Minter>,
) -> anyhow::Result<Value> {
    let Some(start) = value.find("${token:") else {
        return Ok(Value::Fixed(HeaderValue::from_str(value)?));
    };
    let end = start + value[start..].find('}').context("unclosed ${token:…}")?;
    let name = &value[start + "${token:".len()..end];
    let (before, after) = (&value[..start], &value[end + 1..]);
    if let Some(token) = fixed.get(name) {
        return Ok(Value::Fixed(HeaderValue::from_str(&format!("{before}{token}{after}"))?));
    }
    if minters.contains_key(name) {
        return Ok(Value::Unique(before.to_owned(), name.to_owned(), after.to_owned()));
    }
    bail!("no token named {name:?} in `tokens`")
}

fn client_config(scenario: &Scenario) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let extra = match &scenario.tls.ca {
        Some(ca) => crate::tls::load_certs(ca).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let client_cert = match (&scenario.tls.client_cert, &scenario.tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::tls::load_certs(cert).map_err(anyhow::Error::msg)?;
            let key = crate::tls::load_key(key).map_err(anyhow::Error::msg)?;
            Some(crate::tls::certified_key(chain, key).map_err(anyhow::Error::msg)?)
        }
        (None, None) => None,
        _ => bail!("tls.client_cert and tls.client_key go together"),
    };
    let base =
        crate::tls::client_config(crate::tls::Roots::SystemAnd(extra), client_cert).map_err(anyhow::Error::msg)?;
    let mut config = (*base).clone();
    config.alpn_protocols = match scenario.http {
        HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(config))
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(plan: &Plan) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(plan.target.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(plan.tls.clone()).connect(plan.target.server_name.clone(), tcp).await?;
    Ok(match plan.http {
        HttpVersion::Http1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        }
        HttpVersion::Http2 => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        }
    })
}

async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> anyhow::Result<u16> {
    let rsp = match sender {
        Sender::H1(s) => {
            s.ready().await?;
            s.send_request(req).await?
        }
        Sender::H2(s) => {
            s.ready().await?;
            s.send_request(req).await?
        }
    };
    let status = rsp.status().as_u16();
    rsp.into_body().collect().await?;
    Ok(status)
}

/// What one kind of request measured.
struct Tally {
    latency: Histogram<u64>,
    unexpected: u64,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        Self { latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"), unexpected: 0, errors: 0 }
    }

    /// Adds another tally's counts into this one.
    fn add(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        self.unexpected += other.unexpected;
        self.errors += other.errors;
    }
}

/// The figures of one kind (or of all).
#[derive(Debug, Serialize)]
pub struct KindReport {
    /// The request kind's name, or `total`.
    pub name: String,
    /// Requests sent, including those that failed without a status.
    pub requests: u64,
    /// Answered requests per second of the run (failed ones do not count).
    pub rps: f64,
    /// Median latency in milliseconds, connection setup included when not keeping alive.
    pub p50_ms: f64,
    /// 90th-percentile latency in milliseconds.
    pub p90_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Slowest answer in milliseconds.
    pub max_ms: f64,
    /// Answers whose status differed from the kind's `expect`.
    pub unexpected_status: u64,
    /// Requests that got no status: connect, TLS or protocol failures.
    pub errors: u64,
}

/// One threshold of the scenario and whether the run met it.
#[derive(Debug, Serialize)]
pub struct ThresholdReport {
    /// `min_rps`, `p99_ms` or `unexpected_status` (which counts errors too).
    pub name: String,
    /// The scenario's limit, in the threshold's unit (req/s, ms or requests).
    pub limit: f64,
    /// What the run measured, over all kinds.
    pub actual: f64,
    /// Whether `actual` is within `limit`: at least for `min_rps`, at most for the others.
    pub pass: bool,
}

/// The result of a run: per-kind and total figures, thresholds, and the verdict.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Wall-clock length of the run, in seconds.
    pub seconds: f64,
    /// Figures for each request kind, in scenario order.
    pub kinds: Vec<KindReport>,
    /// Figures over all kinds together.
    pub total: KindReport,
    /// Each configured threshold, checked against `total`.
    pub thresholds: Vec<ThresholdReport>,
    /// Whether every threshold passed (true when none are configured); decides the exit code.
    pub pass: bool,
}

/// Runs the scenario against its target.
///
/// # Errors
/// Only for setup problems; failed requests are counted, not raised.
pub async fn run(scenario: &Scenario, plan: Arc<Plan>, progress: bool) -> anyhow::Result<Report> {
    let started = Instant::now();
    let pace = Arc::new(Pace {
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        budget: scenario.requests_total,
        deadline: started + scenario.run_length(),
    });
    let workers: Vec<_> = (0..scenario.connections)
        .map(|seed| tokio::spawn(worker(plan.clone(), pace.clone(), seed as u64 + 1)))
        .collect();
    let reporter = progress.then(|| tokio::spawn(report_progress(pace.clone(), started)));
    let mut merged: Vec<Tally> = plan.kinds.iter().map(|_| Tally::new()).collect();
    for w in workers {
        for (into, from) in merged.iter_mut().zip(w.await?) {
            into.add(&from);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    pace.stop.store(true, Ordering::Relaxed);
    if let Some(r) = reporter {
        r.abort();
        eprintln!();
    }
    let mut all = Tally::new();
    let mut kinds = Vec::new();
    for (kind, tally) in plan.kinds.iter().zip(&merged) {
        all.add(tally);
        kinds.push(figures(&kind.name, tally, seconds));
    }
    let total = figures("total", &all, seconds);
    let thresholds = thresholds(&scenario.thresholds, &total);
    let pass = thresholds.iter().all(|t| t.pass);
    Ok(Report { seconds, kinds, total, thresholds, pass })
}

/// When the workers stop: after `budget` requests in all, or else at `deadline`.
struct Pace {
    stop: AtomicBool,
    done: AtomicU64,
    budget: Option<u64>,
    deadline: Instant,
}

impl Pace {
    /// Takes the next request of the budget; `false` once the run is over.
    fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.budget {
            Some(limit) => self.done.fetch_add(1, Ordering::Relaxed) < limit,
            None => Instant::now() < self.deadline,
        }
    }

    /// Counts a request sent without a budget (a budget counts as it is taken).
    fn sent(&self) {
        if self.budget.is_none() {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One connection's worth of load: picks kinds at random (seeded), sends, tallies per kind.
async fn worker(plan: Arc<Plan>, pace: Arc<Pace>, seed: u64) -> Vec<Tally> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tallies: Vec<Tally> = plan.kinds.iter().map(|_| Tally::new()).collect();
    let mut sender: Option<Sender> = None;
    while pace.next() {
        let k = plan.pick(&mut rng);
        let t0 = Instant::now();
        let outcome = async {
            let req = plan.request(&plan.kinds[k])?;
            if sender.is_none() || !plan.keep_alive {
                sender = Some(connect(&plan).await?);
            }
            send(sender.as_mut().expect("connected"), req).await
        }
        .await;
        let micros = t0.elapsed().as_micros() as u64;
        let tally = &mut tallies[k];
        match outcome {
            Ok(status) => {
                let _ = tally.latency.record(micros.max(1));
                if status != plan.kinds[k].expect {
                    tally.unexpected += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                sender = None;
            }
        }
        pace.sent();
    }
    tallies
}

/// Prints the elapsed time, the requests so far and the last second's rate, once a second.
async fn report_progress(pace: Arc<Pace>, started: Instant) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = pace.done.load(Ordering::Relaxed);
        eprint!("\r{:>6.1}s  {now:>10} requests  {:>9} req/s ", started.elapsed().as_secs_f64(), now - last);
        last = now;
    }
}

/// The scenario's thresholds, each checked against the run's totals.
fn thresholds(t: &Thresholds, total: &KindReport) -> Vec<ThresholdReport> {
    let check =
        |name: &str, limit: f64, actual: f64, pass: bool| ThresholdReport { name: name.into(), limit, actual, pass };
    let mut out = Vec::new();
    if let Some(min) = t.min_rps {
        out.push(check("min_rps", min, total.rps, total.rps >= min));
    }
    if let Some(p99) = t.p99 {
        let limit = p99.0.as_secs_f64() * 1000.0;
        out.push(check("p99_ms", limit, total.p99_ms, total.p99_ms <= limit));
    }
    if let Some(max) = t.unexpected_status {
        let actual = (total.unexpected_status + total.errors) as f64;
        out.push(check("unexpected_status", max as f64, actual, actual <= max as f64));
    }
    out
}

fn figures(name: &str, tally: &Tally, seconds: f64) -> KindReport {
    let h = &tally.latency;
    let ms = |micros: u64| micros as f64 / 1000.0;
    KindReport {
        name: name.to_owned(),
        requests: h.len() + tally.errors,
        rps: h.len() as f64 / seconds.max(1e-9),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        unexpected_status: tally.unexpected,
        errors: tally.errors,
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>7}\n",
            "kind", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "unexpected", "errors"
        );
        for k in self.kinds.iter().chain(std::iter::once(&self.total)) {
            out += &format!(
                "{:<16} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>11} {:>7}\n",
                k.name, k.requests, k.rps, k.p50_ms, k.p90_ms, k.p99_ms, k.max_ms, k.unexpected_status, k.errors
            );
        }
        for t in &self.thresholds {
            let verdict = if t.pass { "pass" } else { "FAIL" };
            out += &format!("threshold {:<18} limit {:>10.2}  actual {:>10.2}  {verdict}\n", t.name, t.limit, t.actual);
        }
        out += if self.pass { "result: pass\n" } else { "result: FAIL\n" };
        out
    }
}
