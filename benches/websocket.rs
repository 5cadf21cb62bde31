//! WebSocket messages through the gateway against the direct path, in one run (README:
//! WebSockets): the real release gateway binary (`portcullis run`, as operators start it, access
//! log on) in front of a real tokio-tungstenite echo server, and a tokio-tungstenite client.
//!
//! Three paths, side by side:
//! - `direct ws://`: the client straight to the echo server, no TLS;
//! - `direct wss://`: the client straight to the same echo server behind TLS 1.3 (rustls);
//! - `gateway`: the client over TLS 1.3 and HTTP/1.1 to the gateway, which relays to the
//!   plain echo server (as a gateway usually reaches its backends).
//!
//! Measured: (a) the round trip of one small message (16 bytes) on one connection, median and
//! p99 over `WS_BENCH_ROUND_TRIPS` (20,000) after 1,000 unmeasured; (b) throughput with
//! `WS_BENCH_CONNECTIONS` (50) connections, each keeping 32 messages of 64 bytes in flight
//! (pipelined), for `WS_BENCH_SECONDS` (5 s) per path: echoed messages per second (each
//! counted once; it crossed the path both ways). `WS_BENCH_RUNS` (3) interleaved rounds each
//! run every path once; the summary gives medians over the rounds.
//!
//! ```text
//! cargo bench --bench websocket
//! ```
//!
//! The client and the echo server share this process's runtime (2 worker threads); the gateway
//! runs with its default workers (one per CPU). On a small machine all three compete for the
//! same cores, so the ratios, not the absolute figures, are what carries over.
// Bench code: a failed unwrap is a failed run, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::pki::listener;
use support::{Client, Pki, TestGateway};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const BATCH: usize = 32;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// An echo server on a loopback port, behind TLS when `tls` is given.
async fn echo_server(tls: Option<TlsAcceptor>) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = tcp.accept().await else { return };
            stream.set_nodelay(true).unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else { return };
                        echo(stream).await;
                    }
                    None => echo(stream).await,
                }
            });
        }
    });
    addr
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// How a path's connections are opened.
#[derive(Clone)]
enum Target {
    Plain(SocketAddr),
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type Ws = WebSocketStream<Box<dyn Stream>>;

impl Target {
    async fn connect(&self) -> Ws {
        let (stream, url): (Box<dyn Stream>, _) = match self {
            Self::Plain(addr) => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                (Box::new(tcp), format!("ws://{addr}/ws/bench"))
            }
            Self::Tls(addr, config) => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let tls = TlsConnector::from(config.clone()).connect(name, tcp).await.unwrap();
                (Box::new(tls), "wss://localhost/ws/bench".to_owned())
            }
        };
        let (ws, rsp) = tokio_tungstenite::client_async(url.into_client_request().unwrap(), stream).await.unwrap();
        assert_eq!(rsp.status(), 101);
        ws
    }
}

/// Round trips of one 16-byte message on one connection: (median, p99).
async fn latency(path: &Target, round_trips: usize) -> (Duration, Duration) {
    let mut ws = path.connect().await;
    let payload = Message::binary(vec![7u8; 16]);
    let mut took = Vec::with_capacity(round_trips);
    for i in 0..1_000 + round_trips {
        let sent = Instant::now();
        ws.send(payload.clone()).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.len(), 16);
        if i >= 1_000 {
            took.push(sent.elapsed());
        }
    }
    ws.close(None).await.unwrap();
    took.sort_unstable();
    (took[took.len() / 2], took[took.len() * 99 / 100])
}

/// Echoed 64-byte messages per second over `connections` connections, each keeping `BATCH`
/// messages in flight, for `seconds`.
async fn throughput(path: &Target, connections: usize, seconds: u64) -> f64 {
    let mut opened = Vec::with_capacity(connections);
    for _ in 0..connections {
        opened.push(path.connect().await);
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in opened {
        tasks.spawn(async move {
            let payload = Message::binary(vec![42u8; 64]);
            let mut echoed = 0u64;
            while Instant::now() < until {
                for _ in 0..BATCH {
                    ws.feed(payload.clone()).await.unwrap();
                }
                ws.flush().await.unwrap();
                for _ in 0..BATCH {
                    let echo = ws.next().await.unwrap().unwrap();
                    assert_eq!(echo.len(), 64);
                    echoed += 1;
                }
            }
            let _ = ws.close(None).await;
            echoed
        });
    }
    let mut echoed = 0;
    while let Some(n) = tasks.join_next().await {
        echoed += n.unwrap();
    }
    echoed as f64 / start.elapsed().as_secs_f64()
}

fn tls_acceptor(pki: &Pki) -> TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(pki.path("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(pki.path("server-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(support::client::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this without it: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let round_trips = env_or("WS_BENCH_ROUND_TRIPS", 20_000) as usize;
    let connections = env_or("WS_BENCH_CONNECTIONS", 50) as usize;
    let seconds = env_or("WS_BENCH_SECONDS", 5);
    let runs = env_or("WS_BENCH_RUNS", 3).max(1);

    let pki = Pki::new();
    let plain = echo_server(None).await;
    let tls = echo_server(Some(tls_acceptor(&pki))).await;
    let yaml = format!(
        r#"version: 1
listeners:{listener}admin: {{ bind: 127.0.0.1:0 }}
backends:
  echo: {{ urls: ["http://{plain}"] }}
routes:
  - {{ name: ws, match: {{ path_prefix: /ws }}, backend: echo, upgrades: [websocket] }}
"#,
        listener = listener("", ""),
    );
    let gw = TestGateway::start(&yaml, &pki);
    gw.wait_ready().await;
    let client = Client::new(gw.addr("public"), &pki).config;
    let paths = [
        ("direct ws:// (no TLS)", Target::Plain(plain)),
        ("direct wss:// (TLS 1.3)", Target::Tls(tls, client.clone())),
        ("gateway (TLS 1.3 -> ws://)", Target::Tls(gw.addr("public"), client)),
    ];
    eprintln!(
        "gateway {} (pid {}); {round_trips} round trips of 16 B on 1 connection; \
         {connections} connections x {BATCH} in flight x 64 B for {seconds} s; {runs} rounds",
        support::gateway::binary(),
        gw.pid()
    );

    // Rounds are interleaved (each runs every path once) and each ratio is the median of the
    // ratios within a round, so a shared machine whose speed drifts favours no path.
    let names = paths.each_ref().map(|(name, _)| *name);
    let mut rounds = Vec::new();
    for round in 1..=runs {
        let mut rows = Vec::new();
        for (_, path) in &paths {
            let (p50, p99) = latency(path, round_trips).await;
            let rate = throughput(path, connections, seconds).await;
            rows.push(Row { p50: micros(p50), p99: micros(p99), rate });
        }
        println!("round {round}");
        table(&names, &rows);
        rounds.push(rows);
    }
    let med = |f: &dyn Fn(&[Row]) -> f64| median(rounds.iter().map(|r| f(r)).collect());
    let summary: Vec<Row> = (0..paths.len())
        .map(|i| Row { p50: med(&|r| r[i].p50), p99: med(&|r| r[i].p99), rate: med(&|r| r[i].rate) })
        .collect();
    println!("median of {runs} rounds");
    table(&names, &summary);
    for (i, (name, _)) in paths.iter().enumerate().take(2) {
        println!(
            "gateway vs {name}: added latency p50 +{:.1} µs, p99 +{:.1} µs; throughput {:.2}x (medians of per-round differences and ratios)",
            med(&|r| r[2].p50 - r[i].p50),
            med(&|r| r[2].p99 - r[i].p99),
            med(&|r| r[2].rate / r[i].rate),
        );
    }
}

/// One path's figures in one round: round-trip median and p99 in µs, echoed messages per second.
struct Row {
    p50: f64,
    p99: f64,
    rate: f64,
}

fn table(names: &[&str], rows: &[Row]) {
    println!("  {:<28} {:>12} {:>12} {:>14}", "path", "rtt p50 µs", "rtt p99 µs", "messages/s");
    for (name, row) in names.iter().zip(rows) {
        println!("  {name:<28} {:>12.1} {:>12.1} {:>14.0}", row.p50, row.p99, row.rate);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
