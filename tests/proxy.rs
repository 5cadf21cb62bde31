//! The request pipeline end to end: routing, normalization, header hygiene, forwarding,
//! limits and backend failures — over real TLS to the real gateway and a real backend.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::gateway::admin_get;
use support::pki::{one_route, TLS_LISTENER};
use support::{Client, Pki, TestBackend, TestGateway};

fn routing_config(backend: &str) -> String {
    format!(
        r#"version: 1
listeners:{TLS_LISTENER}
backends:
  app: {{ urls: ["{backend}"] }}
policies:
  tag-api: {{ headers: {{ request: {{ set: {{ X-Route: api }} }} }} }}
  tag-other: {{ headers: {{ request: {{ set: {{ X-Route: other-host }} }} }} }}
  tag-case: {{ headers: {{ request: {{ set: {{ X-Route: case }} }} }} }}
  tag-admin: {{ headers: {{ request: {{ set: {{ X-Route: admin }} }} }} }}
  tag-public: {{ headers: {{ request: {{ set: {{ X-Route: public }} }} }} }}
routes:
  - name: other-host
    match: {{ hosts: [api.example.com], path_prefix: /apolloapi/ }}
    policies: [tag-other]
    backend: app
  - name: api
    match: {{ hosts: [localhost], path_prefix: /apolloapi/, methods: [GET, POST] }}
    policies: [tag-api]
    backend: app
    rewrite: {{ strip_prefix: /apolloapi }}
  - name: case
    match: {{ path: "/partners/accounts/{{account}}/cases/**" }}
    policies: [tag-case]
    backend: app
  - name: admin
    match: {{ path_prefix: /admin/ }}
    policies: [tag-admin]
    backend: app
  - name: public
    match: {{ path_prefix: /public/ }}
    policies: [tag-public]
    backend: app
"#
    )
}

async fn setup() -> (Pki, TestBackend, TestGateway, Client) {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&routing_config(&backend.url()), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    (pki, backend, gw, client)
}

fn get(target: &str, host: &str) -> Request<Full<Bytes>> {
    Request::get(target).header("host", host).body(Full::default()).unwrap()
}

#[tokio::test]
async fn routes_by_host_prefix_template_and_method() {
    let (_pki, backend, _gw, client) = setup().await;

    let rsp = client.send(get("/apolloapi/items?x=1", "localhost")).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let seen = backend.last();
    assert_eq!(seen.headers["x-route"], "api");
    assert_eq!(seen.target, "/items?x=1", "strip_prefix removed /apolloapi, the query is kept");

    client.send(get("/apolloapi/items", "API.Example.com:443")).await;
    assert_eq!(backend.last().headers["x-route"], "other-host", "hosts match case-insensitively, without port");
    assert_eq!(backend.last().target, "/apolloapi/items", "no rewrite on this route");

    client.send(get("/partners/accounts/42/cases/7/notes", "localhost")).await;
    assert_eq!(backend.last().headers["x-route"], "case");

    let before = backend.received().len();
    let put = Request::put("/apolloapi/items").header("host", "localhost").body(Full::default()).unwrap();
    let rsp = client.send(put).await;
    assert_eq!(rsp.status, 404, "PUT is not among the api route's methods");
    assert_eq!(rsp.problem_kind(), "not-found");

    for target in ["/nowhere", "/apolloapix/items", "/partners/accounts/42/other"] {
        let rsp = client.get(target).await;
        assert_eq!(rsp.status, 404, "{target}");
    }
    assert_eq!(backend.received().len(), before, "nothing unrouted reached the backend");
}

#[tokio::test]
async fn path_spellings_land_where_their_normalized_path_says_or_get_400() {
    let (_pki, backend, _gw, client) = setup().await;
    // (target as sent, route expected, path the backend must see)
    let routed = [
        ("/public/../admin/x", "admin", "/admin/x"),
        ("/public/%2e%2e/admin/x", "admin", "/admin/x"),
        ("/public/%2E%2E/admin/x", "admin", "/admin/x"),
        ("/public/./x", "public", "/public/x"),
        ("/public//x", "public", "/public/x"),
        ("//public/x", "public", "/public/x"),
        ("/%70ublic/x", "public", "/public/x"),
        ("/admin/../../../public/x", "public", "/public/x"),
        ("/public/a%20b", "public", "/public/a%20b"),
    ];
    for (target, route, path) in routed {
        let rsp = client.get(target).await;
        assert_eq!(rsp.status, 200, "{target}: {}", rsp.text());
        let seen = backend.last();
        assert_eq!(seen.headers["x-route"], route, "{target}");
        assert_eq!(seen.target, path, "{target}: the backend sees the normalized path");
    }
    let before = backend.received().len();
    for target in
        ["/public/%2fadmin/x", "/public/..%2fadmin", "/public/%5cadmin", "/public/%00", "/public/%zz", "/public/%2"]
    {
        let rsp = client.get(target).await;
        assert_eq!(rsp.status, 400, "{target}: {}", rsp.text());
        assert_eq!(rsp.problem_kind(), "bad-request");
    }
    let raw = client.raw(b"GET /public/..\\admin/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "a raw backslash is refused: {raw}");
    assert_eq!(backend.received().len(), before, "no refused spelling reached the backend");

    // Raw UTF-8 in the target (which hyper passes on) and its escaped spelling are one path.
    let raw = client.raw("GET /public/ж HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(backend.last().target, "/public/%D0%B6");
    assert_eq!(client.get("/public/%d0%b6").await.status, 200);
    assert_eq!(backend.last().target, "/public/%D0%B6");
}

#[tokio::test]
async fn backend_sees_forwarded_headers_and_client_gets_the_request_id() {
    let (_pki, backend, _gw, client) = setup().await;
    let req = Request::get("/public/x")
        .header("host", "localhost")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "http")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-id", "chosen-by-attacker")
        .header("x-route", "spoofed")
        .body(Full::default())
        .unwrap();
    let rsp = client.send(req).await;
    assert_eq!(rsp.status, 200);
    let seen = backend.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1", "an untrusted peer's X-Forwarded-For is replaced");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "localhost");
    assert!(!seen.headers.contains_key("x-real-ip") && !seen.headers.contains_key("forwarded"));
    assert_eq!(seen.headers["x-route"], "public", "a header a policy sets is the policy's value");
    assert_eq!(seen.headers.get_all("x-route").iter().count(), 1);
    assert_eq!(seen.headers["host"], backend.addr.to_string(), "the backend gets its own Host");
    let id = rsp.header("x-request-id").expect("request id returned").to_owned();
    assert_ne!(id, "chosen-by-attacker");
    assert_eq!(seen.headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn trusted_proxies_may_pass_on_forwarded_for_and_request_id() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!("{}trusted_proxies: [127.0.0.0/8]\n", routing_config(&backend.url()));
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let req = Request::get("/public/x")
        .header("host", "localhost")
        .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
        .header("x-request-id", "edge-1234")
        .header("x-real-ip", "6.6.6.6")
        .body(Full::default())
        .unwrap();
    let rsp = client.send(req).await;
    let seen = backend.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 10.0.0.1, 127.0.0.1", "the list is extended");
    assert_eq!(seen.headers["x-request-id"], "edge-1234");
    assert_eq!(rsp.header("x-request-id"), Some("edge-1234"));
    assert!(!seen.headers.contains_key("x-real-ip"), "only X-Forwarded-For and X-Request-Id pass");

    // Two X-Forwarded-For lines are one list (RFC 9110 §5.3), forwarded whole and in order.
    let req = Request::get("/public/x")
        .header("host", "localhost")
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-for", "10.0.0.1")
        .body(Full::default())
        .unwrap();
    assert_eq!(client.send(req).await.status, 200);
    let seen = backend.last();
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-for"], "198.51.100.7, 10.0.0.1, 127.0.0.1");
    // A trusted proxy's two request ids: which one would the backend log?
    let req = Request::get("/public/x")
        .header("host", "localhost")
        .header("x-request-id", "edge-1")
        .header("x-request-id", "edge-2")
        .body(Full::default())
        .unwrap();
    let before = backend.received().len();
    assert_eq!(client.send(req).await.status, 400);
    assert_eq!(backend.received().len(), before);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let (_pki, backend, _gw, client) = setup().await;
    let req = Request::get("/public/x")
        .header("host", "localhost")
        .header("connection", "keep-alive, X-Forwarded-For, X-Private")
        .header("x-private", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        // `Upgrade` makes an upgrade request, refused unless it is a WebSocket handshake on a
        // route that accepts them (tests/websocket.rs).
        .body(Full::default())
        .unwrap();
    let rsp = client.send(req).await;
    assert_eq!(rsp.status, 200);
    let seen = backend.last();
    for name in ["x-private", "keep-alive", "proxy-authorization", "te"] {
        assert!(!seen.headers.contains_key(name), "{name} reached the backend");
    }
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1", "Connection cannot remove the gateway's own header");
    assert!(rsp.header("x-backend-private").is_none(), "a header the backend's Connection names is dropped");
    assert_eq!(rsp.header("x-powered-by"), Some("tests"));
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn() {
    let (pki, backend, gw, _client) = setup().await;
    let h2 = Client::h2(gw.addr("public"), &pki);
    let rsp = h2.send(get("/apolloapi/items", "localhost")).await;
    assert_eq!(rsp.version, http::Version::HTTP_2);
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(backend.last().headers["x-route"], "api", "the :authority routes like Host");
    assert_eq!(backend.last().headers["x-forwarded-host"], "localhost");
}

#[tokio::test]
async fn backend_down_is_502_and_slow_is_504_and_idempotent_requests_retry() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    // A port that refuses connections: bind, then close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml = format!(
        r#"version: 1
listeners:{TLS_LISTENER}
backends:
  down: {{ urls: ["http://{closed}"], connect_timeout: 500ms }}
  slow: {{ urls: ["{url}"], timeout: 300ms }}
  half: {{ urls: ["http://{closed}", "{url}"], retries: 1 }}
routes:
  - {{ name: down, match: {{ path_prefix: /down/ }}, backend: down }}
  - {{ name: slow, match: {{ path_prefix: /slow/ }}, backend: slow }}
  - {{ name: half, match: {{ path_prefix: /half/ }}, backend: half }}
"#,
        url = backend.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);

    let rsp = client.get("/down/x").await;
    assert_eq!(rsp.status, 502);
    assert_eq!(rsp.problem_kind(), "bad-gateway");
    assert!(!rsp.text().contains(&closed.to_string()), "the problem does not reveal backend addresses");

    let rsp = client.get("/slow/x?ms=3000").await;
    assert_eq!(rsp.status, 504);
    assert_eq!(rsp.problem_kind(), "gateway-timeout");

    for _ in 0..4 {
        let rsp = client.get("/half/x").await;
        assert_eq!(rsp.status, 200, "a GET retries on the healthy url: {}", rsp.text());
    }
    let post =
        Request::post("/half/x").header("host", "localhost").body(Full::new(Bytes::from_static(b"data"))).unwrap();
    let statuses: Vec<u16> = futures_statuses(&client, post, 4).await;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 502), "{statuses:?}");
}

async fn futures_statuses(client: &Client, req: Request<Full<Bytes>>, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (parts, body) = req.clone().into_parts();
        out.push(client.send(Request::from_parts(parts, body)).await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn oversized_bodies_get_413_and_oversized_heads_431() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = one_route(&backend.url(), "{ max_body_bytes: 1KiB, max_header_bytes: 8KiB }");
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);

    let ok = Request::post("/x").header("host", "localhost").body(Full::new(Bytes::from(vec![b'a'; 1024]))).unwrap();
    assert_eq!(client.send(ok).await.status, 200);

    let before = backend.received().len();
    let big = Request::post("/x").header("host", "localhost").body(Full::new(Bytes::from(vec![b'a'; 1025]))).unwrap();
    let rsp = client.send(big).await;
    assert_eq!(rsp.status, 413);
    assert_eq!(rsp.problem_kind(), "payload-too-large");
    assert_eq!(backend.received().len(), before, "a declared oversize body is refused before forwarding");

    // Chunked, so the size is only known while streaming.
    let chunk = "a".repeat(600);
    let raw = format!(
        "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = client.raw(raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(backend.received().iter().all(|r| r.body_bytes <= 1024), "the backend never got more than the limit");

    let huge = Request::get("/x")
        .header("host", "localhost")
        .header("x-big", "b".repeat(10_000))
        .body(Full::default())
        .unwrap();
    assert_eq!(client.send(huge).await.status, 431);
}

#[tokio::test]
async fn a_200_mib_upload_streams_through_with_bounded_memory() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = one_route(&backend.url(), "{ max_body_bytes: 1GiB }");
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let before = gw.peak_rss_kib();

    const TOTAL: u64 = 200 << 20;
    let tls = client.connect().await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let chunks = futures_stream(TOTAL);
    let body = http_body_util::StreamBody::new(chunks);
    let req = Request::post("/upload")
        .header("host", "localhost")
        .header("content-length", TOTAL.to_string())
        .body(body)
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(backend.last().body_bytes, TOTAL, "every byte arrived");
    let growth_mib = (gw.peak_rss_kib().saturating_sub(before)) / 1024;
    eprintln!("gateway peak RSS: {} KiB before, {} KiB after the upload", before, gw.peak_rss_kib());
    assert!(growth_mib < 64, "the gateway's peak memory grew by {growth_mib} MiB for a 200 MiB upload");
}

/// 200 MiB in 64 KiB frames, produced lazily.
fn futures_stream(
    total: u64,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>> {
    const CHUNK: usize = 64 << 10;
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    let mut sent = 0u64;
    futures_util::stream::poll_fn(move |_| {
        if sent >= total {
            return std::task::Poll::Ready(None);
        }
        let n = CHUNK.min((total - sent) as usize);
        sent += n as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk.slice(..n)))))
    })
}

#[tokio::test]
async fn https_backends_get_the_gateway_client_certificate_and_h2() {
    let pki = Pki::new();
    let backend = TestBackend::start_tls(&pki).await;
    let yaml = format!(
        r#"version: 1
listeners:{TLS_LISTENER}
backends:
  mtls:
    urls: ["https://localhost:{port}"]
    tls: {{ trusted_cas: ca.pem, client_cert: gateway-client.pem, client_key: gateway-client-key.pem }}
  no-cert:
    urls: ["https://localhost:{port}"]
    tls: {{ trusted_cas: ca.pem }}
  untrusted:
    urls: ["https://localhost:{port}"]
    tls: {{ trusted_cas: client-ca.pem, client_cert: gateway-client.pem, client_key: gateway-client-key.pem }}
routes:
  - {{ name: mtls, match: {{ path_prefix: /mtls/ }}, backend: mtls }}
  - {{ name: no-cert, match: {{ path_prefix: /no-cert/ }}, backend: no-cert }}
  - {{ name: untrusted, match: {{ path_prefix: /untrusted/ }}, backend: untrusted }}
"#,
        port = backend.addr.port()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);

    let rsp = client.get("/mtls/x").await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let seen = backend.last();
    assert_eq!(seen.client_cert.as_deref(), Some("O=Example,CN=gateway"));
    assert_eq!(seen.version, http::Version::HTTP_2, "h2 negotiated by ALPN with the backend");

    assert_eq!(client.get("/no-cert/x").await.status, 502, "the backend requires a client certificate");
    assert_eq!(client.get("/untrusted/x").await.status, 502, "the backend's certificate is not from the trusted CA");
    assert_eq!(backend.received().len(), 1);
}

#[tokio::test]
async fn round_robin_spreads_requests_and_active_health_drives_readiness() {
    let pki = Pki::new();
    let (a, b) = (TestBackend::start().await, TestBackend::start().await);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml = format!(
        r#"version: 1
listeners:{TLS_LISTENER}
admin: {{ bind: 127.0.0.1:0 }}
backends:
  pair: {{ urls: ["{a}", "{b}"] }}
  gone: {{ urls: ["http://{closed}"], health_check: {{ path: /health, interval: 100ms }} }}
routes:
  - {{ name: pair, match: {{ path_prefix: /pair/ }}, backend: pair }}
  - {{ name: gone, match: {{ path_prefix: /gone/ }}, backend: gone }}
"#,
        a = a.url(),
        b = b.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    for _ in 0..6 {
        assert_eq!(client.get("/pair/x").await.status, 200);
    }
    assert_eq!((a.received().len(), b.received().len()), (3, 3));

    // The health check marks the only url of `gone` down; /readyz says which backend.
    let admin = gw.addr("admin");
    let mut body = String::new();
    for _ in 0..100 {
        body = admin_get(admin, "/readyz").await;
        if body.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(body.starts_with("HTTP/1.1 503"), "{body}");
    assert!(body.contains("backend gone has no healthy url"), "{body}");
    assert!(admin_get(admin, "/healthz").await.starts_with("HTTP/1.1 200"));
}

/// A raw HTTP/1.1 backend that numbers its connections and the requests on each: every
/// answer says `conn C req R`. `/bye` answers and then closes the connection, the way a
/// backend drops an idle keep-alive connection; `/big` promises 1 MiB, sends 64 KiB and waits.
struct NumberingBackend {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl NumberingBackend {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = std::sync::Arc::new(tokio::sync::Notify::new());
        let (count, notify) = (connections.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = tcp.accept().await.unwrap();
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                let notify = notify.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for req in 1.. {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return notify.notify_one(),
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        if path == "/big" {
                            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n";
                            let _ = stream.write_all(head).await;
                            let _ = stream.write_all(&[b'x'; 65536]).await;
                            // Wait for the gateway to give up on this connection.
                            let _ = stream.read(&mut [0u8; 1]).await;
                            return notify.notify_one();
                        }
                        let body = format!("conn {conn} req {req}");
                        let rsp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        if stream.write_all(rsp.as_bytes()).await.is_err() || path == "/bye" {
                            return notify.notify_one();
                        }
                    }
                });
            }
        });
        Self { addr, connections, closed, task }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for NumberingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn backend_connections_are_reused_and_never_carry_a_stale_answer() {
    let pki = Pki::new();
    let backend = NumberingBackend::start().await;
    let gw = TestGateway::start(&one_route(&format!("http://{}", backend.addr), ""), &pki);
    let client = Client::new(gw.addr("public"), &pki);

    // Sequential requests, each on its own client connection, share one backend connection.
    for req in 1..=10 {
        let rsp = client.get("/n").await;
        assert_eq!((rsp.status.as_u16(), rsp.text()), (200, format!("conn 1 req {req}")));
    }
    assert_eq!(backend.connections(), 1);

    // The backend drops the idle connection: the next request goes on a new one, no 502.
    assert_eq!(client.get("/bye").await.text(), "conn 1 req 11");
    tokio::time::timeout(std::time::Duration::from_secs(5), backend.closed.notified()).await.unwrap();
    // Give the gateway's connection task its turn to see the close (it is idle: no request).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let rsp = client.get("/n").await;
    assert_eq!((rsp.status.as_u16(), rsp.text()), (200, "conn 2 req 1".to_owned()));

    // A client that leaves in the middle of a body: that backend connection, with the rest of
    // the body still on it, is closed and never answers another request.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = client.connect().await.unwrap();
        tls.write_all(b"GET /big HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        let mut some = [0u8; 16384];
        let n = tls.read(&mut some).await.unwrap();
        assert!(String::from_utf8_lossy(&some[..n]).starts_with("HTTP/1.1 200"));
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), backend.closed.notified()).await.unwrap();
    let before = backend.connections();
    for _ in 0..3 {
        let rsp = client.get("/n").await;
        assert_eq!(rsp.status, 200);
        assert!(rsp.text().starts_with("conn ") && rsp.text().len() < 32, "{}", rsp.text());
        assert!(!rsp.text().contains('x'), "no leftover of the abandoned body");
    }
    assert!(backend.connections() <= before + 1, "one new connection at most");
}
