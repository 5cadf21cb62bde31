//! A real WebSocket backend (tokio-tungstenite) on a loopback port: it echoes text and binary
//! messages, records every handshake, connection and close code it sees, and closes with 1000
//! "bye" when asked with the text `close-me`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response as WsResponse};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket client connection through the gateway's TLS listener.
pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// A handshake the backend received.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub method: String,
    pub version: http::Version,
    pub target: String,
    pub headers: HeaderMap,
}

/// The echo server. `refuse` answers every handshake with 403.
pub struct WsBackend {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// WebSocket connections whose end the backend saw.
    pub ended: Arc<AtomicUsize>,
    /// The close codes it received (1005 for a close without a code).
    pub closes: Arc<Mutex<Vec<u16>>>,
}

impl WsBackend {
    pub async fn start(refuse: bool) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Self {
            addr: tcp.local_addr().unwrap(),
            handshakes: Arc::default(),
            connections: Arc::default(),
            ended: Arc::default(),
            closes: Arc::default(),
        };
        let (seen, count, ends, closes) =
            (backend.handshakes.clone(), backend.connections.clone(), backend.ended.clone(), backend.closes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, ends, closes) = (seen.clone(), ends.clone(), closes.clone());
                tokio::spawn(async move {
                    // The signature is tungstenite's callback's.
                    #[allow(clippy::result_large_err)]
                    let record = |req: &WsRequest, rsp: WsResponse| -> Result<WsResponse, ErrorResponse> {
                        seen.lock().unwrap().push(Handshake {
                            method: req.method().to_string(),
                            version: req.version(),
                            target: req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned(),
                            headers: req.headers().clone(),
                        });
                        if refuse {
                            let mut denied = ErrorResponse::new(Some("not for you".into()));
                            *denied.status_mut() = http::StatusCode::FORBIDDEN;
                            return Err(denied);
                        }
                        let mut rsp = rsp;
                        if let Some(p) = req.headers().get("sec-websocket-protocol") {
                            let first = p.to_str().unwrap().split(',').next().unwrap().trim().to_owned();
                            rsp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(&first).unwrap());
                        }
                        Ok(rsp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else { return };
                    while let Some(Ok(msg)) = ws.next().await {
                        let answered = match msg {
                            Message::Text(t) if t.as_str() == "close-me" => {
                                let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                                ws.close(Some(bye)).await
                            }
                            Message::Text(_) | Message::Binary(_) => ws.send(msg).await,
                            Message::Close(frame) => {
                                closes.lock().unwrap().push(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                                Ok(())
                            }
                            // Pings are answered and closes echoed by the library.
                            _ => Ok(()),
                        };
                        if answered.is_err() {
                            break;
                        }
                    }
                    ends.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        backend
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Opens a WebSocket to `target` through `client`'s TLS connection; the handshake must pass.
pub async fn connect(client: &super::Client, target: &str) -> Ws {
    let tls = client.connect().await.unwrap();
    let req = format!("wss://localhost{target}").into_client_request().unwrap();
    let (ws, rsp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(rsp.status(), 101);
    ws
}

/// The next message, within 10 s (`None` when the stream ended or failed).
pub async fn next(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer within 10 s").and_then(Result::ok)
}

/// Reads until the close frame; returns its code and reason.
pub async fn closed_with(ws: &mut Ws) -> (u16, String) {
    loop {
        match next(ws).await {
            Some(Message::Close(Some(frame))) => return (frame.code.into(), frame.reason.to_string()),
            Some(Message::Close(None)) | None => panic!("the stream ended without a close code"),
            Some(_) => {}
        }
    }
}

/// Sends `text` and expects it back.
pub async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(next(ws).await, Some(Message::text(text)));
}
