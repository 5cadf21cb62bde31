//! WebSockets over HTTP/1.1 (README: WebSockets): a real WebSocket client (tokio-tungstenite
//! over the test client's TLS) through the real gateway to a real WebSocket echo server, which
//! records every handshake and every connection it accepts. Routes opt in with
//! `upgrades: [websocket]`; every other upgrade is refused and never reaches the backend.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use support::pki::listener;
use support::tokens::SigningKey;
use support::ws::WsBackend;
use support::{Client, Pki, TestGateway};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

fn config(echo: &WsBackend, refusing: &WsBackend, limits: &str) -> String {
    format!(
        r#"version: 1
listeners:{listener}
backends:
  echo: {{ urls: ["{echo}"] }}
  refusing: {{ urls: ["{refusing}"] }}
policies:
  portal-cors: {{ cors: {{ allowed_origins: [https://portal.example.com], terminate_unmatched: true }} }}
  hub-jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portcullis], algorithms: [ES256], keys: [hub.pub.pem], token_from: "query:access_token" }} }}
routes:
  - {{ name: ws, match: {{ path_prefix: /ws }}, backend: echo, upgrades: [websocket] }}
  - {{ name: portal, match: {{ path_prefix: /portal }}, policies: [portal-cors], backend: echo, upgrades: [websocket] }}
  - {{ name: hub, match: {{ path_prefix: /hub }}, policies: [hub-jwt], backend: echo, upgrades: [websocket] }}
  - {{ name: refusing, match: {{ path_prefix: /refusing }}, backend: refusing, upgrades: [websocket] }}
  - {{ name: plain, match: {{ path_prefix: /plain }}, backend: echo }}
"#,
        listener = listener("", limits),
        echo = echo.url(),
        refusing = refusing.url(),
    )
}

struct Setup {
    pki: Pki,
    echo: WsBackend,
    refusing: WsBackend,
    gw: TestGateway,
    key: SigningKey,
}

async fn setup(limits: &str) -> Setup {
    let pki = Pki::new();
    let key = SigningKey::new(jsonwebtoken::Algorithm::ES256, "hub-1");
    pki.write("hub.pub.pem", &key.public_pem);
    let (echo, refusing) = (WsBackend::start(false).await, WsBackend::start(true).await);
    let gw = TestGateway::start(&config(&echo, &refusing, limits), &pki);
    Setup { pki, echo, refusing, gw, key }
}

impl Setup {
    fn client(&self) -> Client {
        Client::new(self.gw.addr("public"), &self.pki)
    }

    /// A WebSocket handshake to `target` with extra fields, over the test client's TLS.
    async fn connect(
        &self,
        target: &str,
        fields: &[(&str, &str)],
    ) -> Result<WebSocketStream<TlsStream<TcpStream>>, WsError> {
        let tls = self.client().connect().await.unwrap();
        let mut req = format!("wss://localhost{target}").into_client_request().unwrap();
        for (name, value) in fields {
            req.headers_mut().insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let (ws, rsp) = tokio_tungstenite::client_async(req, tls).await?;
        assert_eq!(rsp.status(), 101);
        Ok(ws)
    }
}

/// The next data, pong or close message, within 10 s.
async fn next(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer within 10 s").map(Result::unwrap)
}

/// The status of a handshake the gateway or the backend refused, and the body.
fn refused(result: Result<WebSocketStream<TlsStream<TcpStream>>, WsError>) -> (u16, String) {
    match result {
        Err(WsError::Http(rsp)) => {
            let body = rsp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            (rsp.status().as_u16(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got 101"),
    }
}

#[tokio::test]
async fn messages_of_every_kind_cross_the_tunnel_both_ways() {
    let s = setup("").await;
    let tls = s.client().connect().await.unwrap();
    let mut req = "wss://localhost/ws/chat?room=1".into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("chat, superchat"));
    let (mut ws, rsp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(rsp.status(), 101);
    assert_eq!(rsp.headers()["sec-websocket-protocol"], "chat", "the backend's choice reaches the client");
    assert!(rsp.headers().contains_key("sec-websocket-accept") && rsp.headers().contains_key("x-request-id"));
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(vec![0u8, 1, 2, 255])));
    // One text message in two frames: the gateway passes frames as bytes, the backend joins them.
    ws.send(Message::Frame(Frame::message("frag", OpCode::Data(Data::Text), false))).await.unwrap();
    ws.send(Message::Frame(Frame::message("mented", OpCode::Data(Data::Continue), true))).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("fragmented")));
    ws.send(Message::Ping("are you there".into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::Pong("are you there".into())));
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(big)));
    // The client closes: the backend's close frame comes back, then the stream ends.
    ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "done".into() })).await.unwrap();
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected the echoed close, got {other:?}"),
    }
    assert!(next(&mut ws).await.is_none());

    let seen = s.echo.handshakes();
    assert_eq!(seen.len(), 1);
    let h = &seen[0];
    assert_eq!(h.target, "/ws/chat?room=1");
    assert_eq!(h.headers["upgrade"], "websocket");
    assert_eq!(h.headers["connection"], "upgrade");
    assert_eq!(h.headers["sec-websocket-version"], "13");
    assert!(h.headers.contains_key("sec-websocket-key"));
    assert_eq!(h.headers["sec-websocket-protocol"], "chat, superchat");
    assert_eq!(h.headers["host"], s.echo.addr.to_string().as_str());
    assert!(h.headers.contains_key("x-request-id") && h.headers.contains_key("x-forwarded-for"));
    // One access-log line for the handshake, with 101.
    support::until("the handshake's access-log line", async || s.gw.log_text().contains(r#""status":101"#)).await;
}

#[tokio::test]
async fn a_backend_close_reaches_the_client() {
    let s = setup("").await;
    let mut ws = s.connect("/ws/x", &[]).await.unwrap();
    ws.send(Message::text("close-me")).await.unwrap();
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Normal, "bye"))
        }
        other => panic!("expected the backend's close, got {other:?}"),
    }
    assert!(next(&mut ws).await.is_none(), "the stream ends after the close");
}

#[tokio::test]
async fn a_vanished_client_closes_the_backend_connection() {
    let s = setup("").await;
    let mut ws = s.connect("/ws/x", &[]).await.unwrap();
    ws.send(Message::text("here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("here")));
    assert_eq!(s.echo.ended.load(Ordering::SeqCst), 0);
    // No close frame: the client's TCP connection just goes away.
    drop(ws);
    support::until("the backend sees its connection end", async || s.echo.ended.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn a_browser_token_in_the_query_is_checked_and_never_logged() {
    let s = setup("").await;
    let token = s.key.sign(&support::tokens::claims());
    let mut ws = s.connect(&format!("/hub/signalr?id=7&access_token={token}"), &[]).await.unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hi")));
    assert_eq!(refused(s.connect("/hub/signalr?id=7", &[]).await).0, 401);
    assert_eq!(refused(s.connect("/hub/signalr?access_token=not.a.token", &[]).await).0, 401);
    assert_eq!(s.echo.handshakes().len(), 1, "refused handshakes never reach the backend");
    support::until("the access-log lines", async || s.gw.log_text().matches(r#""route":"hub""#).count() >= 3).await;
    let logs = s.gw.log_text();
    assert!(logs.contains(r#""status":101"#) && logs.contains("access_token=[redacted]"), "{logs}");
    assert!(!logs.contains(&token) && !logs.contains("not.a.token"), "a token reached the log: {logs}");
}

#[tokio::test]
async fn an_unlisted_origin_is_refused_on_the_handshake() {
    let s = setup("").await;
    let (status, _) = refused(s.connect("/portal/hub", &[("origin", "https://evil.example")]).await);
    assert_eq!(status, 403);
    assert!(s.echo.handshakes().is_empty(), "the backend never saw it");
    let mut ws = s.connect("/portal/hub", &[("origin", "https://portal.example.com")]).await.unwrap();
    ws.send(Message::text("ok")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("ok")));
}

#[tokio::test]
async fn a_route_without_the_opt_in_refuses_websockets() {
    let s = setup("").await;
    let (status, body) = refused(s.connect("/plain/x", &[]).await);
    assert_eq!(status, 403);
    assert!(body.contains("websocket-not-accepted") && body.contains("does not accept WebSocket"), "{body}");
    assert_eq!(s.echo.connections(), 0, "the backend never saw it");
}

#[tokio::test]
async fn every_other_upgrade_is_refused_and_never_forwarded() {
    let s = setup("").await;
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let cases = [
        ("h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n".to_owned(), "upgrade-refused"),
        ("foo", format!("Connection: Upgrade\r\nUpgrade: foo\r\n{key}"), "upgrade-refused"),
        ("a list", format!("Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n{key}"), "upgrade-refused"),
        ("TLS/1.2", "Connection: Upgrade\r\nUpgrade: TLS/1.2\r\n".to_owned(), "upgrade-refused"),
        ("two Upgrade fields", format!("Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n{key}"), "upgrade-refused"),
        ("no key", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n".to_owned(), "bad-request"),
        ("version 8", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n".to_owned(), "bad-request"),
    ];
    for (what, fields, kind) in cases {
        for path in ["/ws/x", "/plain/x"] {
            let answer =
                s.client().raw(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n").as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 400 "), "{what} on {path}: {answer}");
            assert!(answer.contains(kind), "{what} on {path}: {answer}");
            assert!(answer.to_ascii_lowercase().contains("connection: close"), "{what}: the connection closes");
        }
    }
    // A POST with a body that names h2c: refused before its body is read.
    let post = "POST /ws/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello";
    assert!(s.client().raw(post.as_bytes()).await.starts_with("HTTP/1.1 400 "));
    assert_eq!(s.echo.connections(), 0, "no refused upgrade reached the backend");
}

#[tokio::test]
async fn an_upgrade_over_h2_is_reset_by_the_h2_server() {
    use support::h2raw::{Outcome, H2, PROTOCOL_ERROR};
    let s = setup("").await;
    let mut h2 = H2::start(Client::h2(s.gw.addr("public"), &s.pki).connect().await.unwrap()).await;
    let fields = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/ws/x"),
        (":authority", "localhost"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    h2.request(1, &fields).await;
    assert_eq!(h2.outcome(1).await, Outcome::Reset(PROTOCOL_ERROR), "RFC 9113 §8.2.2: a connection-specific field");
    assert_eq!(s.echo.connections(), 0);
}

#[tokio::test]
async fn a_backend_that_refuses_the_upgrade_is_answered_as_is() {
    let s = setup("").await;
    let (status, body) = refused(s.connect("/refusing/x", &[]).await);
    // tungstenite does not read a chunked body: the bytes are the backend's, re-framed by the gateway.
    assert!(status == 403 && body.contains("not for you"), "{status} {body}");
    assert_eq!(s.refusing.handshakes().len(), 1);
    // Each handshake gets a backend connection of its own, never a pooled one.
    let _ = refused(s.connect("/refusing/x", &[]).await);
    assert_eq!(s.refusing.connections(), 2);
}

/// An upgraded connection keeps its place in `max_connections_per_ip` until its tunnel ends.
#[tokio::test]
async fn an_upgraded_connection_counts_until_its_tunnel_ends() {
    let s = setup("{ max_connections_per_ip: 1 }").await;
    let mut ws = s.connect("/ws/x", &[]).await.unwrap();
    ws.send(Message::text("held")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("held")));
    let client = s.client();
    let plain = || http::Request::get("/plain/x").header("host", "localhost").body(Default::default()).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), client.try_send(plain())).await;
    assert!(second.unwrap().is_err(), "the slot is taken while the tunnel lives");
    ws.close(None).await.unwrap();
    while next(&mut ws).await.is_some() {}
    drop(ws);
    support::until("the slot is given back", async || client.try_send(plain()).await.is_ok()).await;
}
