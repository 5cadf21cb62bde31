//! Listener TLS and connection handling: versions, SNI, ALPN, the redirect listener, slow
//! clients.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::{Duration, Instant};

use support::pki::{listener, TLS_LISTENER};
use support::{Client, Pki, TestBackend, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(listeners: &str, backend: &str) -> String {
    format!(
        r#"version: 1
listeners:{listeners}
backends:
  app: {{ urls: ["{backend}"] }}
routes:
  - {{ name: all, match: {{}}, backend: app }}
"#
    )
}

/// A ClientHello offering only `version` (0x0301 = TLS 1.0, 0x0302 = TLS 1.1), the way an
/// old client sends it: no supported_versions extension.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0, 0, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused_with_a_fatal_alert() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&config(TLS_LISTENER, &backend.url()), &pki);
    for version in [[0x03, 0x01], [0x03, 0x02]] {
        let mut tcp = TcpStream::connect(gw.addr("public")).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        // rustls answers a ClientHello without TLS 1.2 or 1.3 with a fatal handshake_failure.
        assert_eq!(answer, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40], "a fatal alert, never a ServerHello");
    }
    // The same listener speaks TLS 1.2 and 1.3 to modern clients.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = Client::with_config(gw.addr("public"), &pki, None, &[version], &[b"http/1.1"]);
        assert_eq!(client.get("/x").await.status, 200);
    }
}

#[tokio::test]
async fn min_version_1_3_refuses_1_2() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&config(&listener("\n      min_version: \"1.3\"", ""), &backend.url()), &pki);
    let tls12 = Client::with_config(gw.addr("public"), &pki, None, &[&rustls::version::TLS12], &[b"http/1.1"]);
    let err = tls12.connect().await.expect_err("TLS 1.2 must be refused");
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    let tls13 = Client::with_config(gw.addr("public"), &pki, None, &[&rustls::version::TLS13], &[b"http/1.1"]);
    assert_eq!(tls13.get("/x").await.status, 200);
}

#[tokio::test]
async fn sni_picks_the_matching_certificate() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let listener = r#"
  - name: public
    bind: 127.0.0.1:0
    tls:
      certificates:
        - { cert: server.pem, key: server-key.pem }
        - { cert: alt.pem, key: alt-key.pem }
"#;
    let gw = TestGateway::start(&config(listener, &backend.url()), &pki);
    let leaf = |file: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_file_iter(pki.path(file)).unwrap().next().unwrap().unwrap()
    };
    for (sni, file) in [("alt.test", "alt.pem"), ("localhost", "server.pem"), ("unknown.test", "server.pem")] {
        let client = Client::new(gw.addr("public"), &pki).sni(sni);
        // The client verifies the name, so "unknown.test" fails verification against the
        // default certificate: check what was presented instead.
        let tcp = TcpStream::connect(gw.addr("public")).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let presented = match tokio_rustls::TlsConnector::from(client.config.clone()).connect(name, tcp).await {
            Ok(tls) => tls.get_ref().1.peer_certificates().unwrap()[0].clone(),
            Err(e) => {
                assert_eq!(sni, "unknown.test", "{e}");
                assert!(
                    e.to_string().contains("only valid for DnsName(\"localhost\")"),
                    "the default certificate was presented: {e}"
                );
                continue;
            }
        };
        assert_eq!(presented, leaf(file), "SNI {sni}");
    }
    let alt = Client::new(gw.addr("public"), &pki).sni("alt.test");
    assert_eq!(alt.get("/x").await.status, 200);
}

#[tokio::test]
async fn the_plain_listener_only_redirects() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let listeners = format!(
        "{TLS_LISTENER}  - name: plain\n    bind: 127.0.0.1:0\n    redirect_to_https: https://localhost:8443/\n"
    );
    let gw = TestGateway::start(&config(&listeners, &backend.url()), &pki);
    let mut tcp = TcpStream::connect(gw.addr("plain")).await.unwrap();
    tcp.write_all(b"POST /a/b?c=d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("location: https://localhost:8443/a/b?c=d\r\n"), "{answer}");
    assert!(backend.received().is_empty(), "plain HTTP never reaches a backend");
}

#[tokio::test]
async fn slow_header_senders_are_cut_off() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&config(&listener("", "{ header_read_timeout: 500ms }"), &backend.url()), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let mut tls = client.connect().await.unwrap();
    let start = Instant::now();
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: local").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the gateway closed the connection");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(4), "closed after {waited:?}");
    assert!(backend.received().is_empty());

    // A TCP client that never starts its handshake is dropped too.
    let mut tcp = TcpStream::connect(gw.addr("public")).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

#[tokio::test]
async fn client_certificates_are_verified_at_the_handshake() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let listeners = r#"
  - name: optional
    bind: 127.0.0.1:0
    tls:
      certificates: [{ cert: server.pem, key: server-key.pem }]
      client_auth: { mode: optional, trusted_cas: client-ca.pem }
  - name: required
    bind: 127.0.0.1:0
    tls:
      certificates: [{ cert: server.pem, key: server-key.pem }]
      client_auth: { mode: required, trusted_cas: client-ca.pem }
"#;
    let gw = TestGateway::start(&config(listeners, &backend.url()), &pki);
    for listener in ["optional", "required"] {
        let trusted = Client::with_cert(gw.addr(listener), &pki, "client.pem", "client-key.pem");
        assert_eq!(trusted.get("/x").await.status, 200, "{listener}: a trusted certificate");
        let stranger = Client::with_cert(gw.addr(listener), &pki, "stranger.pem", "stranger-key.pem");
        assert!(
            stranger.try_send(get()).await.is_err(),
            "{listener}: a certificate from another CA is refused at the handshake"
        );
    }
    assert_eq!(Client::new(gw.addr("optional"), &pki).get("/x").await.status, 200, "optional: no certificate is fine");
    assert!(
        Client::new(gw.addr("required"), &pki).try_send(get()).await.is_err(),
        "required: no certificate, no connection"
    );
    assert_eq!(backend.received().len(), 3);
}

fn get() -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get("/x").header("host", "localhost").body(Default::default()).unwrap()
}
