//! A real TLS client for the gateway: trusts the test CA, can present a client certificate,
//! choose SNI, TLS versions and ALPN, and send request targets exactly as written.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::Pki;

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The last part of a problem's `type` URI, after checking the RFC 9457 shape.
    pub fn problem_kind(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{}", self.text());
        let p = self.json();
        assert_eq!(p["status"], self.status.as_u16(), "{p}");
        assert_eq!(p["instance"].as_str(), self.header("x-request-id"), "instance is the request id");
        p["type"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
    }
}

#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub server_name: String,
    pub config: Arc<ClientConfig>,
}

pub fn roots(pki: &Pki) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

impl Client {
    /// HTTP/1.1 over TLS, trusting the test CA, SNI `localhost`.
    pub fn new(addr: SocketAddr, pki: &Pki) -> Self {
        Self::with_config(addr, pki, None, &[&rustls::version::TLS13, &rustls::version::TLS12], &[b"http/1.1"])
    }

    pub fn with_config(
        addr: SocketAddr,
        pki: &Pki,
        client_cert: Option<(&str, &str)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Self {
        let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots(pki));
        let mut config = match client_cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(pki.path(cert)).unwrap().map(Result::unwrap).collect();
                let key = PrivateKeyDer::from_pem_file(pki.path(key)).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Self { addr, server_name: "localhost".into(), config: Arc::new(config) }
    }

    pub fn h2(addr: SocketAddr, pki: &Pki) -> Self {
        Self::with_config(addr, pki, None, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"])
    }

    pub fn with_cert(addr: SocketAddr, pki: &Pki, cert: &str, key: &str) -> Self {
        Self::with_config(
            addr,
            pki,
            Some((cert, key)),
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            &[b"http/1.1"],
        )
    }

    pub fn sni(mut self, name: &str) -> Self {
        self.server_name = name.into();
        self
    }

    /// Opens a TLS connection.
    ///
    /// # Errors
    /// The TCP connect or the handshake failed.
    pub async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from(self.server_name.clone()).unwrap();
        let mut tls = TlsConnector::from(self.config.clone()).connect(name, tcp).await?;
        // With TLS 1.3 a rejected client certificate surfaces on the first read; a write of
        // nothing is enough to flush the handshake here.
        tls.flush().await?;
        Ok(tls)
    }

    pub async fn get(&self, target: &str) -> Reply {
        self.send(Request::get(target).header("host", "localhost").body(Full::default()).unwrap()).await
    }

    /// Sends one request on a new connection, over whatever protocol ALPN chose.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        self.try_send(req).await.expect("request failed")
    }

    pub async fn try_send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let tls = self.connect().await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let rsp = if h2 {
            let authority =
                req.headers_mut().remove("host").map(|h| h.to_str().unwrap().to_owned()).unwrap_or("localhost".into());
            let path = req.uri().path_and_query().unwrap().as_str().to_owned();
            *req.uri_mut() = format!("https://{authority}{path}").parse()?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        };
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status, version: parts.version, headers: parts.headers, body })
    }

    /// Writes `bytes` as they are and returns everything the gateway answers until it closes.
    pub async fn raw(&self, bytes: &[u8]) -> String {
        let mut tls = self.connect().await.expect("connect");
        tls.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// One keep-alive HTTP/1.1 connection for many requests.
pub struct Session {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn session(&self) -> Result<Session, Box<dyn std::error::Error + Send + Sync>> {
        let tls = self.connect().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Session { sender })
    }
}

impl Session {
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        self.sender.ready().await?;
        let rsp = self.sender.send_request(req).await?;
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status, version: parts.version, headers: parts.headers, body })
    }
}
