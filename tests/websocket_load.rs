//! 1,000 upgraded connections held open at once (README: WebSockets): each opens over real
//! TLS and HTTP/1.1 through the real gateway binary to a real WebSocket echo server
//! (tokio-tungstenite on both ends), sends a message and gets its echo; the open-tunnel gauge
//! and the backend count all of them, the gateway's resident memory per idle tunnel is printed,
//! and once every client closed, the gauge is back at 0 and the backend saw every connection end.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]
// Raising this process's open-file limit (`setrlimit`) is the one unsafe call.
#![allow(unsafe_code)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::pki::listener;
use support::ws::WsBackend;
use support::{Client, Pki, TestGateway};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Connections held open at once.
const TUNNELS: usize = 1_000;
/// Handshakes in flight at once while opening them.
const OPENING: usize = 64;
const OPEN_GAUGE: &str = r#"portcullis_websocket_connections{route="ws"}"#;

/// Opens one WebSocket through the gateway and checks that `text` comes back.
async fn open_and_echo(client: Client, text: String) -> Ws {
    let tls = client.connect().await.expect("TLS handshake");
    let req = "wss://localhost/ws/load".into_client_request().unwrap();
    let (mut ws, rsp) = tokio_tungstenite::client_async(req, tls).await.expect("WebSocket handshake");
    assert_eq!(rsp.status(), 101);
    ws.send(Message::text(text.clone())).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(15), ws.next()).await.expect("an echo within 15 s");
    assert_eq!(echo.map(Result::unwrap), Some(Message::text(text)));
    ws
}

/// Sends a close and reads until the stream ends (the gateway passes the backend's close reply).
async fn close(mut ws: Ws) {
    ws.close(None).await.unwrap();
    let ended =
        tokio::time::timeout(Duration::from_secs(15), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(ended.is_ok(), "the connection ended within 15 s of its close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_upgraded_connections_are_held_counted_and_released() {
    // Two descriptors per tunnel on each side of this process (client and echo server).
    raise_fd_limit(4 * TUNNELS as u64 + 1_024);
    let pki = Pki::new();
    let echo = WsBackend::start(false).await;
    let limits = format!("{{ max_connections: {n}, max_connections_per_ip: {n} }}", n = TUNNELS + 16);
    let yaml = format!(
        r#"version: 1
listeners:{listener}admin: {{ bind: 127.0.0.1:0 }}
backends:
  echo: {{ urls: ["http://{echo}"] }}
routes:
  - {{ name: ws, match: {{ path_prefix: /ws }}, backend: echo, upgrades: [websocket] }}
"#,
        listener = listener("", &limits),
        echo = echo.addr,
    );
    let gw = TestGateway::start(&yaml, &pki);
    gw.wait_ready().await;
    let client = Client::new(gw.addr("public"), &pki);

    let before = gw.rss_kib();
    let started = Instant::now();
    let mut open = Vec::with_capacity(TUNNELS);
    let mut opening = JoinSet::new();
    for i in 0..TUNNELS {
        opening.spawn(open_and_echo(client.clone(), format!("hello from {i}")));
        while opening.len() >= OPENING {
            open.push(opening.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(ws) = opening.join_next().await {
        open.push(ws.unwrap());
    }
    let opened = started.elapsed();
    assert_eq!(open.len(), TUNNELS);

    // Every tunnel answered its echo, so each is registered; the gauge and the backend agree.
    assert_eq!(gw.metric(OPEN_GAUGE).await, TUNNELS as u64);
    assert_eq!(echo.connections(), TUNNELS);
    assert_eq!(echo.handshakes().len(), TUNNELS);
    assert_eq!(echo.ended.load(Ordering::SeqCst), 0, "no backend connection ended while held");

    let after = gw.rss_kib();
    let per_tunnel = after.saturating_sub(before) as f64 / TUNNELS as f64;
    eprintln!(
        "{TUNNELS} idle upgraded connections (TLS 1.3 + HTTP/1.1 client side, plain backend side): \
         gateway resident {before} -> {after} KiB, {per_tunnel:.1} KiB per idle upgraded connection \
         (opened and echoed in {opened:.1?}, {OPENING} handshakes at a time)"
    );
    // A sanity bound only: the figure depends on the allocator and the host.
    assert!(per_tunnel < 1024.0, "{per_tunnel:.1} KiB per idle upgraded connection");

    let mut closing = JoinSet::new();
    for ws in open {
        closing.spawn(close(ws));
    }
    while let Some(done) = closing.join_next().await {
        done.unwrap();
    }
    support::until("the open-tunnel gauge is back at 0", async || gw.metric(OPEN_GAUGE).await == 0).await;
    support::until("the backend saw every connection end", async || echo.ended.load(Ordering::SeqCst) == TUNNELS).await;
    let closed_by_client = gw.metric(r#"portcullis_websocket_closes_total{reason="client",route="ws"}"#).await;
    assert_eq!(closed_by_client, TUNNELS as u64, "every tunnel ended by its client's close");
}

/// Raises this process's soft open-file limit to at least `want` (within the hard limit).
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
