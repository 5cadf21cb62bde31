//! A real HTTP/1.1 backend on loopback that records what it received.
//!
//! - `/slow…?ms=N` waits N ms before answering;
//! - every answer carries `Server`, `X-Powered-By` and a hop-by-hop header the gateway must
//!   strip (`Connection: X-Backend-Private` naming `X-Backend-Private`);
//! - bodies are streamed and counted, never kept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Path and query as sent on the wire.
    pub target: String,
    pub headers: HeaderMap,
    pub body_bytes: u64,
    pub version: http::Version,
    /// Subject of the client certificate the gateway presented (TLS backends only).
    pub client_cert: Option<String>,
}

pub struct TestBackend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    /// Plain HTTP/1.1 and h2c.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// HTTPS with `server.pem`, ALPN h2 + http/1.1, and a client certificate from
    /// `client-ca.pem` required: an mTLS backend.
    pub async fn start_tls(pki: &super::Pki) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.path("client-ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let chain = CertificateDer::pem_file_iter(pki.path("server.pem")).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(pki.path("server-key.pem")).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = tcp.local_addr().expect("backend addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (rec, notify) = (received.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { continue };
                let (rec, notify, tls) = (rec.clone(), notify.clone(), tls.clone());
                tokio::spawn(async move {
                    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let (stream, subject) = match tls {
                        None => (Stream::Plain(stream), None),
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let subject = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| portcullis::tls::ClientCertInfo::parse(&c[0]).unwrap().subject);
                            (Stream::Tls(Box::new(stream)), subject)
                        }
                    };
                    let svc = service_fn(move |req| answer(req, subject.clone(), rec.clone(), notify.clone()));
                    let _ = match stream {
                        Stream::Plain(s) => http.serve_connection(TokioIo::new(s), svc).await,
                        Stream::Tls(s) => http.serve_connection(TokioIo::new(s), svc).await,
                    };
                });
            }
        });
        Self { addr, received, arrived, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received().pop().expect("the backend received a request")
    }

    /// Waits until a request's head has arrived (before its body is read).
    pub async fn wait_for_request(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.arrived.notified())
            .await
            .expect("a request reached the backend");
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

async fn answer(
    req: Request<Incoming>,
    client_cert: Option<String>,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    arrived.notify_one();
    let mut body_bytes = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    let target = parts.uri.path_and_query().map_or("/".to_owned(), |pq| pq.to_string());
    received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body_bytes,
        version: parts.version,
        client_cert,
    });
    if parts.uri.path().contains("/slow") {
        let ms = parts.uri.query().and_then(|q| q.strip_prefix("ms=")).and_then(|v| v.parse().ok()).unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let rsp = Response::builder()
        .header("server", "test-backend")
        .header("x-powered-by", "tests")
        .header("connection", "X-Backend-Private")
        .header("x-backend-private", "secret")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(format!("backend saw {} {target} ({body_bytes} bytes)", parts.method))))
        .unwrap();
    Ok(rsp)
}
