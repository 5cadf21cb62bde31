//! WebSockets over h2 (README: WebSockets; RFC 8441): a real h2 client (the `h2` crate, with
//! extended CONNECT) over the test client's TLS, through the real gateway, to a real
//! WebSocket echo server (tokio-tungstenite) that speaks HTTP/1.1 only and records every
//! handshake it receives. Frames are written by hand (masked, as a client must) and read
//! back from the h2 stream.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Method, Request, Response};
use support::pki::listener;
use support::tokens::SigningKey;
use support::ws::{Handshake, WsBackend};
use support::{Client, Pki, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend that answers every handshake wrongly: `/liar/accept` with a `101` whose
/// `Sec-WebSocket-Accept` answers no key, `/liar/ok` with a `200`.
async fn liar() -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = tcp.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let answer: &[u8] = if head.starts_with(b"GET /liar/accept") {
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                let _ = stream.write_all(answer).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    addr
}

struct Setup {
    pki: Pki,
    echo: WsBackend,
    refusing: WsBackend,
    gw: TestGateway,
    key: SigningKey,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let key = SigningKey::new(jsonwebtoken::Algorithm::ES256, "hub-1");
    pki.write("hub.pub.pem", &key.public_pem);
    let (echo, refusing) = (WsBackend::start(false).await, WsBackend::start(true).await);
    let config = format!(
        r#"version: 1
listeners:{listener}
backends:
  echo: {{ urls: ["http://{echo}"] }}
  refusing: {{ urls: ["http://{refusing}"] }}
  liar: {{ urls: ["http://{liar}"] }}
policies:
  hub-jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portcullis], algorithms: [ES256], keys: [hub.pub.pem], token_from: "query:access_token" }} }}
routes:
  - {{ name: ws, match: {{ path_prefix: /ws, methods: [GET] }}, backend: echo, upgrades: [websocket] }}
  - {{ name: hub, match: {{ path_prefix: /hub }}, policies: [hub-jwt], backend: echo, upgrades: [websocket] }}
  - {{ name: refusing, match: {{ path_prefix: /refusing }}, backend: refusing, upgrades: [websocket] }}
  - {{ name: liar, match: {{ path_prefix: /liar }}, backend: liar, upgrades: [websocket] }}
  - {{ name: plain, match: {{ path_prefix: /plain }}, backend: echo }}
"#,
        listener = listener("", ""),
        echo = echo.addr,
        refusing = refusing.addr,
        liar = liar().await,
    );
    let gw = TestGateway::start(&config, &pki);
    Setup { pki, echo, refusing, gw, key }
}

impl Setup {
    /// An h2 connection to the gateway (ALPN h2), once its SETTINGS allowed extended CONNECT.
    async fn h2(&self) -> SendRequest<Bytes> {
        let tls = Client::h2(self.gw.addr("public"), &self.pki).connect().await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) = h2::client::Builder::new().handshake::<_, Bytes>(tls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.unwrap();
        // The server's SETTINGS arrive right after the preface.
        support::until("SETTINGS_ENABLE_CONNECT_PROTOCOL = 1", async || {
            send = send.clone().ready().await.unwrap();
            send.is_extended_connect_protocol_enabled()
        })
        .await;
        send
    }
}

/// Sends an extended CONNECT (`protocol`) or a plain one (`None`) to `target`; the answer
/// and the stream to write to.
async fn connect(
    send: &mut SendRequest<Bytes>,
    protocol: Option<&str>,
    target: &str,
    fields: &[(&str, &str)],
) -> (Response<RecvStream>, SendStream<Bytes>) {
    let uri = if protocol.is_some() { format!("https://localhost{target}") } else { "localhost:443".to_owned() };
    let mut req = Request::builder().method(Method::CONNECT).uri(uri);
    for (name, value) in fields {
        req = req.header(*name, *value);
    }
    if let Some(protocol) = protocol {
        req = req.extension(h2::ext::Protocol::from(protocol));
    }
    let mut ready = send.clone().ready().await.unwrap();
    let (answer, stream) = ready.send_request(req.body(()).unwrap(), false).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer).await.expect("an answer").unwrap();
    (answer, stream)
}

/// A WebSocket handshake over h2 with `Sec-WebSocket-Version: 13` and extra fields.
async fn websocket(
    send: &mut SendRequest<Bytes>,
    target: &str,
    fields: &[(&str, &str)],
) -> (Response<RecvStream>, SendStream<Bytes>) {
    let mut all = vec![("sec-websocket-version", "13")];
    all.extend_from_slice(fields);
    connect(send, Some("websocket"), target, &all).await
}

/// The whole body of a refusal.
async fn body(rsp: Response<RecvStream>) -> String {
    let mut recv = rsp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), recv.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client frame: FIN, `opcode`, masked (RFC 6455 §5.3), payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Bytes {
    assert!(payload.len() < 126);
    let mask: [u8; 4] = rand::random();
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    Bytes::from(frame)
}

/// Reads WebSocket frames off an h2 stream.
struct Frames {
    recv: RecvStream,
    buf: BytesMut,
}

impl Frames {
    /// The next server frame (unmasked, under 126 bytes): (opcode, payload); `None` once the
    /// stream ended.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let len = usize::from(self.buf[1] & 0x7f);
                assert!(len < 126);
                if self.buf.len() >= 2 + len {
                    let frame = self.buf.split_to(2 + len);
                    assert_eq!(frame[0] & 0x80, 0x80, "FIN");
                    return Some((frame[0] & 0x0f, frame[2..].to_vec()));
                }
            }
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), self.recv.data()).await.expect("data within 10 s");
            let chunk = chunk?.unwrap();
            let _ = self.recv.flow_control().release_capacity(chunk.len());
            self.buf.extend_from_slice(&chunk);
        }
    }
}

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;

#[tokio::test]
async fn a_websocket_over_h2_reaches_an_http1_backend_and_echoes() {
    let s = setup().await;
    let mut send = s.h2().await;
    let (rsp, mut up) = websocket(&mut send, "/ws/chat?room=1", &[("sec-websocket-protocol", "chat, superchat")]).await;
    assert_eq!(rsp.status(), 200, "RFC 8441 §5: 200, not 101");
    let h = rsp.headers();
    assert_eq!(h["sec-websocket-protocol"], "chat", "the backend's choice reaches the client");
    assert!(h.contains_key("x-request-id"));
    for absent in ["sec-websocket-accept", "upgrade", "connection", "content-length"] {
        assert!(!h.contains_key(absent), "{absent} in the 200: {h:?}");
    }
    let mut down = Frames { recv: rsp.into_body(), buf: BytesMut::new() };
    up.send_data(client_frame(TEXT, b"hello"), false).unwrap();
    assert_eq!(down.next().await, Some((TEXT, b"hello".to_vec())));
    up.send_data(client_frame(BINARY, &[0, 1, 2, 255]), false).unwrap();
    assert_eq!(down.next().await, Some((BINARY, vec![0, 1, 2, 255])));

    // A second WebSocket on the same connection is a tunnel of its own, alongside the first.
    let (rsp2, mut up2) = websocket(&mut send, "/ws/other", &[]).await;
    assert_eq!(rsp2.status(), 200);
    assert!(!rsp2.headers().contains_key("sec-websocket-protocol"));
    let mut down2 = Frames { recv: rsp2.into_body(), buf: BytesMut::new() };
    up2.send_data(client_frame(TEXT, b"second"), false).unwrap();
    up.send_data(client_frame(TEXT, b"first"), false).unwrap();
    assert_eq!(down2.next().await, Some((TEXT, b"second".to_vec())));
    assert_eq!(down.next().await, Some((TEXT, b"first".to_vec())));

    // The backend got an ordinary HTTP/1.1 handshake, with a key of the gateway's own.
    let seen = s.echo.handshakes();
    assert_eq!(seen.len(), 2);
    let b = &seen[0];
    assert_eq!((b.method.as_str(), b.version, b.target.as_str()), ("GET", http::Version::HTTP_11, "/ws/chat?room=1"));
    assert_eq!(b.headers["upgrade"], "websocket");
    assert_eq!(b.headers["connection"], "upgrade");
    assert_eq!(b.headers["sec-websocket-version"], "13");
    assert_eq!(b.headers["sec-websocket-protocol"], "chat, superchat");
    assert_eq!(b.headers["host"], s.echo.addr.to_string().as_str());
    assert!(b.headers.contains_key("x-request-id") && b.headers.contains_key("x-forwarded-for"));
    let key = |h: &Handshake| h.headers["sec-websocket-key"].to_str().unwrap().to_owned();
    let nonce = base64::engine::general_purpose::STANDARD.decode(key(b)).unwrap();
    assert_eq!(nonce.len(), 16, "16 random bytes");
    assert_ne!(key(b), key(&seen[1]), "a fresh key per handshake");

    // The client closes: the close is echoed, the backend ends, and so does the h2 stream.
    up.send_data(client_frame(CLOSE, &[0x03, 0xe8]), false).unwrap();
    assert_eq!(down.next().await, Some((CLOSE, vec![0x03, 0xe8])));
    // The gateway may end the stream as soon as the close handshake is done and the backend
    // hung up, before the client ends its side: then there is no side left to end.
    let _ = up.send_data(Bytes::new(), true);
    assert_eq!(down.next().await, None, "the stream ends with the backend's connection");
    support::until("the backend sees the first end", async || s.echo.ended.load(Ordering::SeqCst) == 1).await;
    // The other tunnel is untouched; a reset stream (a vanished client) closes its backend connection.
    up2.send_data(client_frame(TEXT, b"still here"), false).unwrap();
    assert_eq!(down2.next().await, Some((TEXT, b"still here".to_vec())));
    up2.send_reset(h2::Reason::CANCEL);
    support::until("the backend sees the second end", async || s.echo.ended.load(Ordering::SeqCst) == 2).await;
    // The connection goes on serving streams.
    let (rsp3, _up3) = websocket(&mut send, "/ws/third", &[]).await;
    assert_eq!(rsp3.status(), 200);
    support::until("the access-log lines", async || s.gw.log_text().matches(r#""status":200"#).count() >= 3).await;
}

#[tokio::test]
async fn h2_handshakes_the_gateway_does_not_accept_are_refused() {
    let s = setup().await;
    let mut send = s.h2().await;
    // A route without `upgrades: [websocket]`: the same 403 as over HTTP/1.1.
    let (rsp, _) = websocket(&mut send, "/plain/x", &[]).await;
    assert_eq!(rsp.status(), 403);
    let text = body(rsp).await;
    assert!(text.contains("websocket-not-accepted"), "{text}");
    // Another :protocol is refused like any other Upgrade token, on every route.
    let (rsp, _) = connect(&mut send, Some("foo"), "/ws/x", &[("sec-websocket-version", "13")]).await;
    assert_eq!(rsp.status(), 400);
    let text = body(rsp).await;
    assert!(text.contains("upgrade-refused"), "{text}");
    // A plain CONNECT: the gateway is no forward proxy.
    let (rsp, _) = connect(&mut send, None, "", &[]).await;
    assert_eq!(rsp.status(), 400);
    let text = body(rsp).await;
    assert!(text.contains("connect-refused"), "{text}");
    // Sec-WebSocket-Version is required (RFC 8441 §5).
    let (rsp, _) = connect(&mut send, Some("websocket"), "/ws/x", &[]).await;
    assert_eq!(rsp.status(), 400);
    let text = body(rsp).await;
    assert!(text.contains("Sec-WebSocket-Version"), "{text}");
    // The connection survives every refusal.
    let (rsp, _) = websocket(&mut send, "/ws/x", &[]).await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(s.echo.handshakes().len(), 1, "only the accepted handshake reached the backend");

    // Over HTTP/1.1 a CONNECT is refused too, and the connection closes.
    let answer = Client::new(s.gw.addr("public"), &s.pki)
        .raw(b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("connect-refused"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert_eq!(s.echo.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_h2_handshake_runs_the_routes_jwt_policy() {
    let s = setup().await;
    let mut send = s.h2().await;
    let token = s.key.sign(&support::tokens::claims());
    let (rsp, _) = websocket(&mut send, "/hub/signalr?id=7", &[]).await;
    assert_eq!(rsp.status(), 401);
    let (rsp, _) = websocket(&mut send, "/hub/signalr?access_token=not.a.token", &[]).await;
    assert_eq!(rsp.status(), 401);
    assert!(s.echo.handshakes().is_empty(), "refused handshakes never reach the backend");
    let (rsp, mut up) = websocket(&mut send, &format!("/hub/signalr?id=7&access_token={token}"), &[]).await;
    assert_eq!(rsp.status(), 200);
    let mut down = Frames { recv: rsp.into_body(), buf: BytesMut::new() };
    up.send_data(client_frame(TEXT, b"hi"), false).unwrap();
    assert_eq!(down.next().await, Some((TEXT, b"hi".to_vec())));
    assert_eq!(s.echo.handshakes()[0].method, "GET");
    support::until("the access-log lines", async || s.gw.log_text().matches(r#""route":"hub""#).count() >= 3).await;
    let logs = s.gw.log_text();
    assert!(logs.contains("access_token=[redacted]") && !logs.contains(&token), "{logs}");
}

#[tokio::test]
async fn a_backend_that_refuses_the_h2_handshake_is_answered_as_is() {
    let s = setup().await;
    let mut send = s.h2().await;
    let (rsp, _) = websocket(&mut send, "/refusing/x", &[]).await;
    assert_eq!(rsp.status(), 403);
    let text = body(rsp).await;
    assert!(text.contains("not for you"), "{text}");
    let seen = s.refusing.handshakes();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["upgrade"], "websocket");
}

#[tokio::test]
async fn a_backend_whose_accept_answers_no_key_or_that_answers_200_is_a_502() {
    let s = setup().await;
    let mut send = s.h2().await;
    // The RFC's example accept, for a key the gateway did not send: an h2 client could not tell.
    let (rsp, _) = websocket(&mut send, "/liar/accept", &[]).await;
    assert_eq!(rsp.status(), 502);
    // Over h2 a 2xx to a CONNECT opens the tunnel: a backend's 200 cannot pass as it is.
    let (rsp, _) = websocket(&mut send, "/liar/ok", &[]).await;
    assert_eq!(rsp.status(), 502);
    let (rsp, _) = websocket(&mut send, "/ws/x", &[]).await;
    assert_eq!(rsp.status(), 200, "the connection goes on");
    support::until("both reasons logged", async || {
        let logs = s.gw.log_text();
        logs.contains("does not answer the gateway's key") && logs.contains("with a 2xx, not 101")
    })
    .await;
}
