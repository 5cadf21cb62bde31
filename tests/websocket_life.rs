//! The lifecycle of an upgraded connection (README: WebSockets): the gateway reads frame
//! headers both ways and closes a tunnel itself when it idles, lives too long, carries a
//! message too big or a malformed frame, drains, or when the handshake's credential expires.
//! A real WebSocket client (tokio-tungstenite over the test client's TLS) through the real
//! gateway binary to a real WebSocket echo server.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use support::gateway::admin_get;
use support::pki::listener;
use support::sse::{read_stream, SseBackend};
use support::tokens::{now, SigningKey};
use support::ws::{closed_with, connect, echoes, Ws, WsBackend};
use support::{Client, Pki, TestGateway};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

struct Setup {
    pki: Pki,
    echo: WsBackend,
    events: SseBackend,
    gw: TestGateway,
    key: SigningKey,
}

/// Routes `/ws` (with `websocket` settings `ws`), `/hub` (a `jwt` with a 1 s clock skew) and
/// `/hub-keep` (the same, opted out of credential expiry); `/events` and `/events-keep` the
/// same two to a server-sent-events backend.
async fn setup(ws: &str, top: &str) -> Setup {
    setup_with(ws, top, "", Pki::new()).await
}

async fn setup_with(ws: &str, top: &str, extra_tls: &str, pki: Pki) -> Setup {
    let key = SigningKey::new(jsonwebtoken::Algorithm::ES256, "hub-1");
    pki.write("hub.pub.pem", &key.public_pem);
    let echo = WsBackend::start(false).await;
    let events = SseBackend::start().await;
    let yaml = format!(
        r#"version: 1
listeners:{listener}admin: {{ bind: 127.0.0.1:0 }}
{top}
backends:
  echo: {{ urls: ["http://{echo}"] }}
  events: {{ urls: ["{events}"] }}
policies:
  hub-jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portcullis], algorithms: [ES256], keys: [hub.pub.pem], token_from: "query:access_token", clock_skew: 1s }} }}
routes:
  - {{ name: ws, match: {{ path_prefix: /ws }}, backend: echo, upgrades: [websocket], websocket: {{ {ws} }} }}
  - {{ name: hub-keep, match: {{ path_prefix: /hub-keep }}, policies: [hub-jwt], backend: echo, upgrades: [websocket], websocket: {{ close_on_credential_expiry: false }} }}
  - {{ name: hub, match: {{ path_prefix: /hub }}, policies: [hub-jwt], backend: echo, upgrades: [websocket] }}
  - {{ name: events-keep, match: {{ path_prefix: /events-keep }}, policies: [hub-jwt], backend: events, websocket: {{ close_on_credential_expiry: false }} }}
  - {{ name: events, match: {{ path_prefix: /events }}, policies: [hub-jwt], backend: events }}
"#,
        listener = listener(extra_tls, ""),
        echo = echo.addr,
        events = events.url(),
    );
    let gw = TestGateway::start(&yaml, &pki);
    Setup { pki, echo, events, gw, key }
}

impl Setup {
    async fn connect(&self, target: &str) -> Ws {
        self.connect_as(Client::new(self.gw.addr("public"), &self.pki), target).await
    }

    async fn connect_as(&self, client: Client, target: &str) -> Ws {
        connect(&client, target).await
    }

    async fn metrics(&self) -> String {
        admin_get(self.gw.addr("admin"), "/metrics").await
    }

    /// The tunnel access-log line of `route` closed for `reason`.
    fn tunnel_line(&self, route: &str, reason: &str) -> Option<serde_json::Value> {
        self.gw
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|j| j["kind"] == "websocket" && j["route"] == route && j["close.reason"] == reason)
    }
}

#[tokio::test]
async fn an_idle_tunnel_closes_with_1001_and_is_counted_and_logged() {
    let s = setup("idle_timeout: 300ms", "").await;
    let mut ws = s.connect("/ws/chat").await;
    echoes(&mut ws, "hello").await;
    // Traffic keeps it open past the idle timeout.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        echoes(&mut ws, "still here").await;
    }
    let quiet = Instant::now();
    assert_eq!(closed_with(&mut ws).await, (1001, "idle".to_owned()));
    assert!(quiet.elapsed() < Duration::from_secs(2), "closed after {:?}", quiet.elapsed());
    support::until("the backend got the gateway's close", async || s.echo.closes.lock().unwrap().contains(&1001)).await;
    support::until("the tunnel's log line", async || s.tunnel_line("ws", "idle").is_some()).await;
    let line = s.tunnel_line("ws", "idle").unwrap();
    assert_eq!(line["messages.from_client"], 5);
    assert_eq!(line["messages.from_backend"], 5);
    assert_eq!(line["close.code"], 1001);
    assert!(line["bytes.from_client"].as_u64().unwrap() > 5 * 6 && line["bytes.from_backend"].as_u64().unwrap() > 0);
    assert!(line["duration.ms"].as_f64().unwrap() >= 600.0);
    let m = s.metrics().await;
    assert!(m.contains(r#"portcullis_websocket_closes_total{reason="idle",route="ws"} 1"#), "{m}");
    assert!(m.contains(r#"portcullis_websocket_messages_total{direction="from_client",route="ws"} 5"#), "{m}");
    assert!(m.contains(r#"portcullis_websocket_bytes_total{direction="from_backend",route="ws"}"#), "{m}");
    assert!(m.contains(r#"portcullis_websocket_connections{route="ws"} 0"#), "{m}");
}

#[tokio::test]
async fn the_open_gauge_counts_a_live_tunnel() {
    let s = setup("", "").await;
    let mut ws = s.connect("/ws/x").await;
    echoes(&mut ws, "hi").await;
    assert!(s.metrics().await.contains(r#"portcullis_websocket_connections{route="ws"} 1"#));
    ws.close(None).await.unwrap();
    support::until("the client's close is counted", async || {
        s.metrics().await.contains(r#"portcullis_websocket_closes_total{reason="client",route="ws"} 1"#)
    })
    .await;
}

#[tokio::test]
async fn a_tunnel_closes_at_its_max_lifetime_despite_traffic() {
    let s = setup("max_lifetime: 1s", "").await;
    let mut ws = s.connect("/ws/x").await;
    let opened = Instant::now();
    echoes(&mut ws, "one").await;
    assert_eq!(closed_with(&mut ws).await, (1001, "max lifetime".to_owned()));
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn a_message_over_the_limit_closes_both_sides_with_1009() {
    let s = setup("max_message_bytes: 1KiB", "").await;
    let mut ws = s.connect("/ws/x").await;
    echoes(&mut ws, &"a".repeat(1024)).await;
    ws.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    assert_eq!(closed_with(&mut ws).await.0, 1009);
    support::until("the backend got 1009", async || s.echo.closes.lock().unwrap().contains(&1009)).await;
    support::until("the backend connection ended", async || s.echo.ended.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn a_malformed_frame_from_the_client_closes_with_1002() {
    let s = setup("", "").await;
    let mut ws = s.connect("/ws/x").await;
    echoes(&mut ws, "fine").await;
    // An unmasked text frame: RFC 6455 forbids it from a client.
    ws.get_mut().write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    ws.get_mut().flush().await.unwrap();
    assert_eq!(closed_with(&mut ws).await.0, 1002);
    support::until("counted as a protocol error", async || {
        s.metrics().await.contains(r#"portcullis_websocket_closes_total{reason="protocol_error",route="ws"} 1"#)
    })
    .await;
    let mut ws = s.connect("/ws/x").await;
    // A reserved opcode, masked.
    ws.get_mut().write_all(&[0x83, 0x80, 1, 2, 3, 4]).await.unwrap();
    assert_eq!(closed_with(&mut ws).await.0, 1002);
}

#[tokio::test]
async fn a_tunnel_closes_with_1008_when_its_token_expires_unless_the_route_opts_out() {
    let s = setup("", "").await;
    let exp = now() + 2;
    let mut claims = support::tokens::claims();
    claims["exp"] = json!(exp);
    let token = s.key.sign(&claims);
    let mut hub = s.connect(&format!("/hub/signalr?access_token={token}")).await;
    let mut keep = s.connect(&format!("/hub-keep/signalr?access_token={token}")).await;
    echoes(&mut hub, "before").await;
    assert_eq!(closed_with(&mut hub).await, (1008, "token expired".to_owned()));
    // exp + skew (1 s) + 1 s, with the clock's whole seconds.
    assert!(now() <= exp + 2, "closed at {} for exp {exp}", now());
    // The opted-out route keeps its tunnel past the expiry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    echoes(&mut keep, "after").await;
    support::until("the expiry is counted", async || {
        s.metrics().await.contains(r#"portcullis_websocket_closes_total{reason="token_expired",route="hub"} 1"#)
    })
    .await;
    support::until("the tunnel's log line", async || s.tunnel_line("hub", "token_expired").is_some()).await;
    let line = s.tunnel_line("hub", "token_expired").unwrap();
    assert_eq!(line["close.code"], 1008);
    assert!(!s.gw.log_text().contains(&token), "the token is never logged");
}

#[tokio::test]
async fn an_event_stream_ends_when_its_token_expires_unless_the_route_opts_out() {
    let s = setup("", "").await;
    let exp = now() + 2;
    let mut claims = support::tokens::claims();
    claims["exp"] = json!(exp);
    let token = s.key.sign(&claims);
    let client = Client::new(s.gw.addr("public"), &s.pki);
    let (watched, opted_out) =
        (format!("/events/hub?access_token={token}"), format!("/events-keep/hub?access_token={token}"));
    let (ended, kept) = tokio::join!(
        read_stream(&client, &watched, Duration::from_secs(10)),
        read_stream(&client, &opted_out, Duration::from_secs(5)),
    );
    let ended = ended.expect("the stream ends at the token's expiry");
    assert!(ended.text.starts_with("HTTP/1.1 200"), "{}", ended.text);
    assert!(ended.text.ends_with("0\r\n\r\n"), "a clean end of the chunked stream: {:?}", ended.text);
    assert!(ended.events >= 5, "events flowed until then: {}", ended.events);
    // exp + skew (1 s) + 1 s, with the clock's whole seconds.
    assert!(now() <= exp + 3, "ended at {} for exp {exp}", now());
    assert!(kept.is_none(), "the opted-out route's stream is still open past the expiry");
    support::until("the backend sees both readers go", async || s.events.ended.load(Ordering::SeqCst) == 2).await;
    assert!(s.gw.log_text().contains("event stream ended"), "{}", s.gw.log_text());
    assert!(!s.gw.log_text().contains(&token), "the token is never logged");
}

#[tokio::test]
async fn sigterm_closes_tunnels_with_1001_after_the_drain_timeout() {
    let s = setup("", "drain_timeout: 500ms").await;
    let mut ws = s.connect("/ws/x").await;
    echoes(&mut ws, "hi").await;
    // Sending a signal to the gateway under test is the one unsafe call.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(s.gw.pid(), libc::SIGTERM) };
    assert_eq!(sent, 0);
    let signalled = Instant::now();
    assert_eq!(closed_with(&mut ws).await, (1001, "going away".to_owned()));
    assert!(signalled.elapsed() >= Duration::from_millis(400), "not before the drain timeout");
    support::until("the backend got 1001", async || s.echo.closes.lock().unwrap().contains(&1001)).await;
}

#[tokio::test]
async fn a_reload_closes_tunnels_after_the_drain_timeout_not_at_once() {
    let s = setup("", "drain_timeout: 1s").await;
    let mut ws = s.connect("/ws/x").await;
    echoes(&mut ws, "hi").await;
    let reloaded = Instant::now();
    assert!(s.gw.reload().await.contains("reloaded"));
    echoes(&mut ws, "still open after the reload").await;
    assert_eq!(closed_with(&mut ws).await, (1001, "going away".to_owned()));
    assert!(reloaded.elapsed() >= Duration::from_millis(900));
    // A tunnel opened on the new configuration is not drained.
    let mut fresh = s.connect("/ws/x").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    echoes(&mut fresh, "new").await;
    let _ = CloseCode::Away;
}

#[tokio::test]
async fn a_tunnel_closes_with_1008_when_its_client_certificate_expires() {
    use portcullis::tools::pki::{Ca, LeafKind};
    let pki = Pki::new();
    let ca = Ca::new("short-lived client CA").unwrap();
    let issued = time::OffsetDateTime::now_utc();
    let leaf = ca
        .issue_between(
            &LeafKind::Client { common_name: "kiosk", organization: "Example" },
            issued - time::Duration::hours(1),
            issued + time::Duration::seconds(3),
        )
        .unwrap();
    pki.write("short-ca.pem", &ca.cert_pem);
    pki.write("short.pem", &leaf.cert_pem);
    pki.write("short-key.pem", &leaf.key_pem);
    let s = setup_with("", "", "\n      client_auth: { mode: optional, trusted_cas: short-ca.pem }", pki).await;
    let not_after = issued.unix_timestamp() as u64 + 3;
    let client = Client::with_cert(s.gw.addr("public"), &s.pki, "short.pem", "short-key.pem");
    let mut ws = s.connect_as(client, "/ws/x").await;
    echoes(&mut ws, "valid now").await;
    assert_eq!(closed_with(&mut ws).await, (1008, "client certificate expired".to_owned()));
    assert!(now() <= not_after + 1, "closed at {} for not-after {not_after}", now());
    support::until("the tunnel's log line", async || s.tunnel_line("ws", "cert_expired").is_some()).await;
}
