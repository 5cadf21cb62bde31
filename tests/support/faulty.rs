//! A misbehaving server on loopback, plain or TLS: it reads each request head and then does
//! exactly what its [`Script`] says, byte for byte — the faults a real backend or identity
//! provider shows on a bad day.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Script {
    /// Reads the request and never answers.
    Hang,
    /// Writes these bytes, then closes.
    Reply(Vec<u8>),
    /// Writes these bytes, then resets the connection (RST, not FIN).
    ResetAfter(Vec<u8>),
    /// Writes the head, then one body byte per interval, forever.
    Drip { head: Vec<u8>, every: Duration },
    /// Answers each request on a keep-alive connection, then closes the connection
    /// `after` the answer without saying so: a stale pooled connection.
    CloseIdle { answer: Vec<u8>, after: Duration },
}

pub struct Faulty {
    pub addr: SocketAddr,
    /// Requests whose head was read.
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Faulty {
    pub async fn plain(script: Script) -> Self {
        Self::start(script, None).await
    }

    /// HTTPS with the test `server.pem` (for JWKS and discovery).
    pub async fn tls(pki: &super::Pki, script: Script) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(pki.path("server.pem")).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(pki.path("server-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(super::client::provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Self::start(script, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let (script, tls, counted) = (script.clone(), tls.clone(), counted.clone());
                tokio::spawn(async move {
                    if matches!(script, Script::ResetAfter(_)) {
                        // Closing with a zero linger sends RST instead of FIN (and never blocks).
                        #[allow(deprecated)]
                        let _ = stream.set_linger(Some(Duration::ZERO));
                    }
                    match tls {
                        None => serve(stream, script, counted).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, script, counted).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, requests, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (and a Content-Length body, if small); false at EOF.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => seen.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    let mut body = vec![0u8; length.unwrap_or(0)];
    stream.read_exact(&mut body).await.is_ok()
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, script: Script, counted: Arc<AtomicUsize>) {
    loop {
        if !read_head(&mut stream).await {
            return;
        }
        counted.fetch_add(1, Ordering::SeqCst);
        match &script {
            Script::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Script::Reply(bytes) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Script::ResetAfter(bytes) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.flush().await;
                // Give the bytes a moment on the wire before the reset.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            Script::Drip { head, every } => {
                let _ = stream.write_all(head).await;
                loop {
                    let _ = stream.flush().await;
                    tokio::time::sleep(*every).await;
                    if stream.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            }
            Script::CloseIdle { answer, after } => {
                let _ = stream.write_all(answer).await;
                let _ = stream.flush().await;
                tokio::time::sleep(*after).await;
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}
