//! Request framing and parser differentials, attacked over raw sockets: HTTP/1.1 bytes as
//! written, and h2 frames from a raw client. Whatever the gateway refuses never reaches the
//! backend, and every refusal is counted as the client's fault. Resource limits: connections
//! per client address, idle-connection memory.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]
// Sending signals to the gateway under test (`libc::kill`) is the one unsafe call.
#![allow(unsafe_code)]

mod support;

use std::time::Duration;

use support::h2raw::{self, Outcome, H2};
use support::pki::listener;
use support::{Client, Pki, TestBackend, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(backend: &str, limits: &str) -> String {
    format!(
        "version: 1\nlisteners:{}admin: {{ bind: 127.0.0.1:0 }}\nbackends:\n  app: {{ urls: [\"{backend}\"] }}\nroutes:\n  - {{ name: all, match: {{}}, backend: app }}\n",
        listener("", limits)
    )
}

async fn setup(limits: &str) -> (Pki, TestBackend, TestGateway) {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&config(&backend.url(), limits), &pki);
    (pki, backend, gw)
}

fn status_of(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn http1_framing_attacks_are_refused_and_never_forwarded() {
    let (pki, backend, gw) = setup("{ max_headers: 20 }").await;
    let client = Client::new(gw.addr("public"), &pki);
    let many_fields: String = (0..21).map(|i| format!("X-F{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16)> = vec![
        ("two Host fields", "GET /x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n".into(), 400),
        (
            "two Authorization fields",
            "GET /x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n".into(),
            400,
        ),
        (
            "two Content-Type fields",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Type: a/b\r\nContent-Type: c/d\r\nContent-Length: 0\r\n\r\n"
                .into(),
            400,
        ),
        (
            "two Origin fields",
            "GET /x HTTP/1.1\r\nHost: localhost\r\nOrigin: https://a.example\r\nOrigin: https://b.example\r\n\r\n".into(),
            400,
        ),
        (
            "Content-Length with different values",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".into(),
            400,
        ),
        ("Content-Length not a number", "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: +3\r\n\r\nabc".into(), 400),
        ("Content-Length list", "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3, 3\r\n\r\nabc".into(), 400),
        ("NUL in a value", "GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n".into(), 400),
        ("bare CR in a value", "GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n".into(), 400),
        ("DEL in a value", "GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\x7fb\r\n\r\n".into(), 400),
        ("obsolete line folding", "GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n".into(), 400),
        ("space before the colon", "GET /x HTTP/1.1\r\nHost : localhost\r\n\r\n".into(), 400),
        ("separator in a name", "GET /x HTTP/1.1\r\nHost: localhost\r\nX(A): 1\r\n\r\n".into(), 400),
        ("empty name", "GET /x HTTP/1.1\r\nHost: localhost\r\n: 1\r\n\r\n".into(), 400),
        (
            "a coding other than chunked",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".into(),
            501,
        ),
        (
            "chunked twice",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .into(),
            400,
        ),
        (
            "chunked not last",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "a look-alike of chunked",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST /x HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "absolute-form naming another host",
            "GET https://evil.example/x HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            400,
        ),
        ("absolute-form with user info", "GET https://a@localhost/x HTTP/1.1\r\nHost: localhost\r\n\r\n".into(), 400),
        ("no Host in HTTP/1.1", "GET /x HTTP/1.1\r\nX-A: 1\r\n\r\n".into(), 400),
        ("absolute-form without Host in HTTP/1.1", "GET https://localhost/x HTTP/1.1\r\n\r\n".into(), 400),
        ("a comma-joined Host", "GET /x HTTP/1.1\r\nHost: localhost:443,evil.example\r\n\r\n".into(), 400),
        ("a Host port that is no number", "GET /x HTTP/1.1\r\nHost: localhost:evil\r\n\r\n".into(), 400),
        (
            "a comma-joined Host beside a matching target",
            "GET https://localhost/x HTTP/1.1\r\nHost: localhost,evil.example\r\n\r\n".into(),
            400,
        ),
        (
            "two Access-Control-Request-Method fields",
            "OPTIONS /x HTTP/1.1\r\nHost: localhost\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Method: DELETE\r\n\r\n"
                .into(),
            400,
        ),
        ("a Host that is no authority", "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n".into(), 400),
        ("too many fields", format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{many_fields}\r\n"), 431),
        ("a request line with two spaces", "GET  /x HTTP/1.1\r\nHost: localhost\r\n\r\n".into(), 400),
        ("an unknown version", "GET /x HTTP/1.2\r\nHost: localhost\r\n\r\n".into(), 0),
        ("asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into(), 400),
        (
            "authority-form",
            "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nConnection: close\r\n\r\n".into(),
            400,
        ),
    ];
    // Not in the table: bare LF line ends, which RFC 9112 §2.2 lets a recipient accept; the
    // backend gets the request re-framed by the gateway either way.
    let mut failures = Vec::new();
    for (name, raw, expected) in &cases {
        let answer = client.raw(raw.as_bytes()).await;
        let got = status_of(&answer);
        // 0: the connection was closed without an answer (hyper refuses some heads that way).
        let refused = if *expected == 0 { got == 0 || got == 400 || got == 505 } else { got == *expected };
        if !refused {
            failures.push(format!("{name}: expected {expected}, got {:?}", answer.lines().next()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(backend.received().is_empty(), "nothing refused reached the backend: {:?}", backend.received());

    // A well-formed request on the same listener still goes through, with one Host.
    let ok = client.raw(b"GET https://LOCALHOST/ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(backend.last().headers.get_all("host").iter().count(), 1);
    let repeated = gw.metric(r#"portcullis_errors_total{fault="client",kind="repeated_field",route="-"}"#).await;
    assert_eq!(repeated, 5, "Host, Authorization, Content-Type, Origin, Access-Control-Request-Method");
    assert_eq!(
        gw.metric(r#"portcullis_errors_total{fault="client",kind="unsupported_transfer_coding",route="-"}"#).await,
        1
    );
}

#[tokio::test]
async fn content_length_with_chunked_is_framed_by_chunked_and_nothing_is_smuggled() {
    let (pki, backend, gw) = setup("").await;
    let client = Client::new(gw.addr("public"), &pki);
    // A front end reading Content-Length would see one request; one reading the chunked
    // coding sees a second request hidden in the body. The gateway reads the chunked
    // coding, forwards no Content-Length, and closes the connection after answering.
    let smuggle = "POST /first HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let answer = client.raw(smuggle.as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "one answer, then the connection is closed: {answer}");
    let received = backend.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].target, "/first");
    assert!(!received[0].headers.contains_key("content-length"), "{:?}", received[0].headers);
    assert_eq!(received[0].body_bytes, 0);
    drop(gw);
}

#[tokio::test]
async fn malformed_and_stalled_bodies_are_the_clients_fault() {
    let (pki, backend, gw) = setup("{ body_read_timeout: 500ms, max_body_bytes: 1KiB }").await;
    let client = Client::new(gw.addr("public"), &pki);
    let cases = [
        (
            "an invalid chunk size",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            "an overflowing chunk size",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n",
            400,
        ),
        (
            "chunk data longer than its size",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
            400,
        ),
        (
            "over the limit in the middle of the stream",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n300\r\n",
            413,
        ),
    ];
    let mut body_over_limit = cases[3].1.to_owned();
    body_over_limit.push_str(&"a".repeat(0x300));
    body_over_limit.push_str("\r\n300\r\n");
    body_over_limit.push_str(&"a".repeat(0x300));
    body_over_limit.push_str("\r\n0\r\n\r\n");
    for (name, raw, expected) in cases {
        let raw = if expected == 413 { body_over_limit.as_str() } else { raw };
        let answer = client.raw(raw.as_bytes()).await;
        assert_eq!(status_of(&answer), expected, "{name}: {answer}");
    }

    // A body that stops arriving: 408 once it stalled for body_read_timeout, not a hang.
    let mut tls = client.connect().await.unwrap();
    tls.write_all(b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the stalled body was cut off");
    assert_eq!(status_of(&answer), 408, "{answer}");

    // A body cut short: the client closes its side after 10 of 100 bytes.
    let mut tls = client.connect().await.unwrap();
    tls.write_all(b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789").await.unwrap();
    backend.wait_for_request().await;
    tls.shutdown().await.unwrap();
    drop(tls);

    let series = |kind: &str| format!(r#"portcullis_errors_total{{fault="client",kind="{kind}",route="all"}}"#);
    for _ in 0..100 {
        if gw.metric(&series("bad_body")).await == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.metric(&series("bad_body")).await, 4, "three malformed bodies and one cut short");
    assert_eq!(gw.metric(&series("body_too_large")).await, 1);
    assert_eq!(gw.metric(&series("body_timeout")).await, 1);
    let text = support::gateway::admin_get(gw.addr("admin"), "/metrics").await;
    let upstream_errors =
        text.lines().filter(|l| l.starts_with("portcullis_upstream_errors_total{") && !l.ends_with(" 0"));
    assert_eq!(upstream_errors.count(), 0, "no client fault is an upstream error:\n{text}");
    assert!(!text.contains(r#"fault="backend""#), "{text}");
    assert!(!text.contains(r#"status="502""#), "{text}");
}

#[tokio::test]
async fn a_stalled_body_is_the_clients_fault_even_when_the_backend_timeout_fires_first() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!(
        "version: 1\nlisteners:{}admin: {{ bind: 127.0.0.1:0 }}\nbackends:\n  app: {{ urls: [\"{}\"], timeout: 500ms }}\nroutes:\n  - {{ name: all, match: {{}}, backend: app }}\n",
        listener("", ""),
        backend.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let mut tls = client.connect().await.unwrap();
    tls.write_all(b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), 408, "{answer}");
    let client_fault = r#"portcullis_errors_total{fault="client",kind="body_timeout",route="all"}"#;
    assert_eq!(gw.metric(client_fault).await, 1);
    assert_eq!(gw.metric(r#"portcullis_upstream_errors_total{backend="app",kind="timeout"}"#).await, 0);
}

/// A TLS connection that chose h2, with the preface sent.
async fn h2(client: &Client) -> H2 {
    H2::start(client.connect().await.unwrap()).await
}

fn request<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", "/x")];
    fields.extend_from_slice(extra);
    fields
}

#[tokio::test]
async fn h2_pseudo_header_and_field_attacks_are_refused_and_never_forwarded() {
    let (pki, backend, gw) = setup("{ max_headers: 20, max_concurrent_streams: 50 }").await;
    let client = Client::h2(gw.addr("public"), &pki);
    let many: Vec<(String, String)> = (0..21).map(|i| (format!("x-f{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let base = request(&[]);
    type Fields<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Fields, Outcome)> = vec![
        ("Host disagrees with :authority", request(&[("host", "evil.example")]), Outcome::Status(400)),
        ("a comma-joined Host", request(&[("host", "localhost:443,evil.example")]), Outcome::Status(400)),
        ("two host fields", request(&[("host", "localhost"), ("host", "evil.example")]), Outcome::Status(400)),
        (
            "two origin fields",
            request(&[("origin", "https://a.example"), ("origin", "https://b.example")]),
            Outcome::Status(400),
        ),
        (
            "two content-length fields",
            vec![
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "localhost"),
                (":path", "/x"),
                ("content-length", "0"),
                ("content-length", "5"),
            ],
            Outcome::Reset(h2raw::PROTOCOL_ERROR),
        ),
        ("two authorization fields", request(&[("authorization", "a"), ("authorization", "b")]), Outcome::Status(400)),
        ("too many fields", request(&many), Outcome::Status(431)),
        ("two :path", request(&[(":path", "/y")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        ("an unknown pseudo-header", request(&[(":foo", "1")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        (
            "a pseudo-header after a field",
            vec![(":method", "GET"), (":scheme", "https"), ("x-a", "1"), (":authority", "localhost"), (":path", "/x")],
            Outcome::Reset(h2raw::PROTOCOL_ERROR),
        ),
        ("no :method", base[1..].to_vec(), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        ("an empty :path", vec![base[0], base[1], base[2], (":path", "")], Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        ("a response pseudo-header", request(&[(":status", "200")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        ("an upper-case name", request(&[("X-Upper", "1")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        (
            "a connection-specific field",
            request(&[("connection", "keep-alive")]),
            Outcome::Reset(h2raw::PROTOCOL_ERROR),
        ),
        ("te other than trailers", request(&[("te", "gzip")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        ("transfer-encoding", request(&[("transfer-encoding", "chunked")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        ("a NUL in a value", request(&[("x-a", "a\0b")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
        ("a newline in a value", request(&[("x-a", "a\r\nx-b: 1")]), Outcome::Reset(h2raw::PROTOCOL_ERROR)),
    ];
    let mut failures = Vec::new();
    for (name, fields, expected) in cases {
        let mut conn = h2(&client).await;
        conn.request(1, &fields).await;
        let got = conn.outcome(1).await;
        // A stream error may also be answered by closing the whole connection.
        let ok =
            got == expected || (matches!(expected, Outcome::Reset(_)) && got == Outcome::GoAway(h2raw::PROTOCOL_ERROR));
        if !ok {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(backend.received().is_empty(), "{:?}", backend.received());

    let mut conn = h2(&client).await;
    conn.request(1, &request(&[("host", "LOCALHOST")])).await;
    assert_eq!(conn.outcome(1).await, Outcome::Status(200));
    assert!(conn.settings.contains(&(0x3, 50)), "MAX_CONCURRENT_STREAMS is announced: {:?}", conn.settings);
    assert_eq!(backend.received().len(), 1);
}

#[tokio::test]
async fn h2_rapid_reset_and_continuation_floods_end_the_connection() {
    let (pki, backend, gw) = setup("").await;
    let client = Client::h2(gw.addr("public"), &pki);
    let rss_before = gw.rss_kib();

    // Rapid reset (CVE-2023-44487): open and cancel streams as fast as the socket takes them.
    let mut conn = h2(&client).await;
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        let stream = 1 + 2 * i;
        burst.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            stream,
            &h2raw::block(&request(&[])),
        ));
        burst.extend(h2raw::frame(h2raw::RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let _ = conn.send_raw(&burst).await;
    let goaway = conn.until_closed().await;
    assert_eq!(goaway, Some(h2raw::ENHANCE_YOUR_CALM), "the connection is closed with ENHANCE_YOUR_CALM");
    let forwarded = backend.received().len();
    assert!(forwarded < 1_000, "most cancelled streams never reach the backend: {forwarded} of 5000");

    // CONTINUATION flood: a header block that never ends.
    let mut conn = h2(&client).await;
    conn.send(h2raw::HEADERS, 0, 1, &h2raw::block(&request(&[]))).await;
    let filler = h2raw::block(&[("x-filler", &"a".repeat(4000))]);
    let mut flood = Vec::new();
    for _ in 0..2_000 {
        flood.extend(h2raw::frame(h2raw::CONTINUATION, 0, 1, &filler));
    }
    let _ = conn.send_raw(&flood).await;
    let goaway = conn.until_closed().await;
    assert!(goaway.is_some(), "the connection is closed with GOAWAY, not read forever");

    // The gateway keeps serving, and the floods left no memory behind.
    let mut conn = h2(&client).await;
    conn.request(1, &request(&[])).await;
    assert_eq!(conn.outcome(1).await, Outcome::Status(200));
    let growth = gw.rss_kib().saturating_sub(rss_before);
    assert!(growth < 32 << 10, "resident memory grew by {growth} KiB");
}

#[tokio::test]
async fn connections_per_client_address_are_capped() {
    let (pki, backend, gw) = setup("{ max_connections_per_ip: 3 }").await;
    let client = Client::new(gw.addr("public"), &pki);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(client.session().await.expect("within the cap"));
    }
    assert!(client.session().await.is_err(), "the fourth connection from one address is closed");
    let refused = r#"portcullis_connections_refused_total{listener="public",reason="per_ip_limit"}"#;
    assert_eq!(gw.metric(refused).await, 1);
    drop(open.pop());
    // The slot is given back when the connection ends.
    let mut again = None;
    for _ in 0..100 {
        if let Ok(session) = client.session().await {
            again = Some(session);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut session = again.expect("a slot came free");
    let rsp = session
        .send(http::Request::get("/x").header("host", "localhost").body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status, 200);

    // A trusted proxy (a load balancer) speaks for many clients: no per-address cap.
    let trusted =
        format!("{}trusted_proxies: [127.0.0.0/8]\n", config(&backend.url(), "{ max_connections_per_ip: 1 }"));
    let pki = Pki::new();
    let gw = TestGateway::start(&trusted, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(client.session().await.expect("a trusted proxy is not capped"));
    }
    let mut session = sessions.pop().unwrap();
    let rsp = session
        .send(http::Request::get("/x").header("host", "localhost").body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status, 200);
}

/// Resident memory per idle TLS connection (HTTP/1.1 after the handshake), measured with
/// `IDLE_CONNECTIONS` connections (default 1,000; the README quotes 10,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_connections_cost_bounded_memory() {
    let n: usize = std::env::var("IDLE_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    raise_fd_limit(2 * n as u64 + 1_024);
    let limits =
        format!("{{ max_connections: {}, max_connections_per_ip: {}, header_read_timeout: 120s }}", n + 16, n + 16);
    let (pki, _backend, gw) = setup(&limits).await;
    let client = Client::new(gw.addr("public"), &pki);
    // One connection first, so that what is measured is the cost of each further one.
    let mut open = vec![client.connect().await.unwrap()];
    let before = gw.rss_kib();
    let mut handshakes = tokio::task::JoinSet::new();
    let started = std::time::Instant::now();
    for _ in 0..n {
        let client = client.clone();
        handshakes.spawn(async move { client.connect().await });
        while handshakes.len() >= 64 {
            open.push(handshakes.join_next().await.unwrap().unwrap().expect("handshake"));
        }
    }
    while let Some(done) = handshakes.join_next().await {
        open.push(done.unwrap().expect("handshake"));
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = gw.rss_kib();
    let active = gw.metric(r#"portcullis_active_connections{listener="public"}"#).await as usize;
    assert_eq!(active, n + 1, "every connection is open");
    let per_connection = (after.saturating_sub(before)) as f64 / n as f64;
    eprintln!(
        "{n} idle TLS connections: {before} -> {after} KiB resident, {per_connection:.1} KiB each (opened in {opened:.1?})"
    );
    assert!(per_connection < 64.0, "{per_connection:.1} KiB per idle connection");
    drop(open);
}

fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max.max(want));
            limit.rlim_max = limit.rlim_max.max(limit.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
