//! A real server-sent-events backend on loopback: every request gets a `text/event-stream`
//! that sends `data: tick N` every 100 ms until the client goes away; it counts the streams
//! it opened and the ones whose reader went away.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::StreamBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct SseBackend {
    pub addr: SocketAddr,
    /// Streams opened.
    pub opened: Arc<AtomicUsize>,
    /// Streams whose reader went away.
    pub ended: Arc<AtomicUsize>,
}

/// Counts a stream's end when its body is dropped.
struct Ended(Arc<AtomicUsize>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl SseBackend {
    pub async fn start() -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Self { addr: tcp.local_addr().unwrap(), opened: Arc::default(), ended: Arc::default() };
        let (opened, ended) = (backend.opened.clone(), backend.ended.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { return };
                let (opened, ended) = (opened.clone(), ended.clone());
                let service = service_fn(move |_req| {
                    opened.fetch_add(1, Ordering::SeqCst);
                    let guard = Ended(ended.clone());
                    let ticks = futures_util::stream::unfold((0u64, guard), |(n, guard)| async move {
                        if n > 0 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        let event = Frame::data(Bytes::from(format!("data: tick {n}\n\n")));
                        Some((Ok::<_, Infallible>(event), (n + 1, guard)))
                    });
                    let rsp = Response::builder()
                        .header("content-type", "text/event-stream; charset=utf-8")
                        .header("cache-control", "no-cache")
                        .body(StreamBody::new(ticks))
                        .unwrap();
                    async move { Ok::<_, Infallible>(rsp) }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        backend
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What a client read of one event stream through the gateway, until the stream ended.
pub struct Streamed {
    /// The whole answer as read, head and body.
    pub text: String,
    /// The events (`data:` lines) in it.
    pub events: usize,
}

/// Opens `target` on `client` as an `EventSource` would and reads until the gateway ends the
/// answer (`Connection: close`: the end of the stream closes the connection) or `limit` passes.
/// `None` when the stream was still open at `limit`.
pub async fn read_stream(client: &super::Client, target: &str, limit: Duration) -> Option<Streamed> {
    let mut tls = client.connect().await.unwrap();
    let head =
        format!("GET {target} HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\nconnection: close\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(limit, tls.read_to_end(&mut bytes)).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let events = text.matches("data: tick").count();
    read.is_ok().then_some(Streamed { text, events })
}
