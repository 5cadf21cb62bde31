//! Faults around the gateway: backends that reset, drip, hang or answer garbage; identity
//! providers that hang or send garbage or huge documents; a full disk under the access log;
//! SIGTERM during a reload; a reload storm. Each time the client gets a clear answer, the
//! process keeps serving, and its memory stays flat.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]
// Sending signals to the gateway under test (`libc::kill`) is the one unsafe call.
#![allow(unsafe_code)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::faulty::{Faulty, Script};
use support::gateway::admin_get;
use support::pki::listener;
use support::{Client, Pki, TestBackend, TestGateway};

fn get(target: &str) -> Request<Full<Bytes>> {
    Request::get(target).header("host", "localhost").body(Full::default()).unwrap()
}

fn post(target: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::post(target).header("host", "localhost").body(Full::new(Bytes::from_static(body))).unwrap()
}

/// How a request ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The whole response, with this status.
    Complete(u16),
    /// The response head came and its body was cut off (or the connection failed).
    Broken,
}

async fn seen(client: &Client, req: Request<Full<Bytes>>) -> Seen {
    match tokio::time::timeout(Duration::from_secs(10), client.try_send(req)).await {
        Ok(Ok(reply)) => Seen::Complete(reply.status.as_u16()),
        Ok(Err(_)) => Seen::Broken,
        Err(_) => panic!("the client was left hanging"),
    }
}

fn head_then(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{body}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_faults_get_clear_answers_and_the_gateway_keeps_serving() {
    let pki = Pki::new();
    let reset = Faulty::plain(Script::ResetAfter(head_then("only ten b"))).await;
    let drip = Faulty::plain(Script::Drip { head: head_then("x"), every: Duration::from_secs(5) }).await;
    let hang = Faulty::plain(Script::Hang).await;
    let huge_head = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n", "b".repeat(1 << 20));
    let huge = Faulty::plain(Script::Reply(huge_head.into_bytes())).await;
    let malformed = Faulty::plain(Script::Reply(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n".to_vec())).await;
    let garbage = Faulty::plain(Script::Reply(b"\x16\x03\x01 not http at all\r\n\r\n".to_vec())).await;
    let closed = Faulty::plain(Script::Reply(Vec::new())).await;
    let stale = Faulty::plain(Script::CloseIdle {
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        after: Duration::from_millis(100),
    })
    .await;
    let healthy = TestBackend::start().await;
    let backends = [
        ("reset", &reset),
        ("drip", &drip),
        ("hang", &hang),
        ("huge", &huge),
        ("malformed", &malformed),
        ("garbage", &garbage),
        ("closed", &closed),
        ("stale", &stale),
    ];
    let mut yaml = format!("version: 1\nlisteners:{}admin: {{ bind: 127.0.0.1:0 }}\nbackends:\n", listener("", ""));
    for (name, server) in &backends {
        yaml += &format!("  {name}: {{ urls: [\"{}\"], timeout: 500ms, retries: 0 }}\n", server.url());
    }
    yaml += &format!("  healthy: {{ urls: [\"{}\"] }}\nroutes:\n", healthy.url());
    for (name, _) in &backends {
        yaml += &format!("  - {{ name: {name}, match: {{ path_prefix: /{name}/ }}, backend: {name} }}\n");
    }
    yaml += "  - { name: healthy, match: {}, backend: healthy }\n";
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);

    let round = async || {
        assert_eq!(seen(&client, get("/reset/x")).await, Seen::Broken, "a reset mid-body cuts the response off");
        let started = Instant::now();
        assert_eq!(seen(&client, get("/drip/x")).await, Seen::Broken, "a stalled body is cut off");
        assert!(started.elapsed() < Duration::from_secs(4), "cut off after the backend timeout, not at the next drip");
        assert_eq!(seen(&client, get("/hang/x")).await, Seen::Complete(504));
        assert_eq!(seen(&client, get("/huge/x")).await, Seen::Complete(502), "a huge response head");
        assert_eq!(seen(&client, get("/malformed/x")).await, Seen::Complete(502), "a malformed status line");
        assert_eq!(seen(&client, get("/garbage/x")).await, Seen::Complete(502), "not HTTP");
        assert_eq!(seen(&client, get("/closed/x")).await, Seen::Complete(502), "closed without an answer");
        // Pooled connections the backend closed while idle are never used for a request.
        for req in [get("/stale/a"), post("/stale/b", b"body"), get("/stale/c")] {
            assert_eq!(seen(&client, req).await, Seen::Complete(200));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(seen(&client, get("/ok")).await, Seen::Complete(200), "the gateway keeps serving");
    };
    round().await;
    let rss = gw.rss_kib();
    // 300 quick faults more: a leak of even 64 KiB each would show as 19 MiB.
    for _ in 0..60 {
        for path in ["/reset/x", "/huge/x", "/malformed/x", "/garbage/x", "/closed/x"] {
            let _ = seen(&client, get(path)).await;
        }
    }
    round().await;
    let growth = gw.rss_kib().saturating_sub(rss);
    assert!(growth < 16 << 10, "resident memory grew by {growth} KiB over 300 faults");

    let metrics = admin_get(gw.addr("admin"), "/metrics").await;
    let count = |backend: &str, kind: &str| {
        support::gateway::metric(
            &metrics,
            &format!(r#"portcullis_upstream_errors_total{{backend="{backend}",kind="{kind}"}}"#),
        )
    };
    assert_eq!(count("reset", "response_body"), 62, "{metrics}");
    assert_eq!(count("drip", "response_body"), 2);
    assert_eq!(count("hang", "timeout"), 2);
    for name in ["huge", "malformed", "garbage", "closed"] {
        assert_eq!(count(name, "upstream"), 62, "{name}");
    }
    assert_eq!(stale.requests.load(Ordering::SeqCst), 6, "every stale-pool request reached the backend once");
    assert!(!metrics.contains(r#"fault="client""#), "no backend fault is the client's: {metrics}");
}

#[tokio::test]
async fn a_backend_body_timeout_of_zero_lets_event_streams_drip() {
    let pki = Pki::new();
    let stream = Faulty::plain(Script::Drip { head: head_then("x"), every: Duration::from_millis(700) }).await;
    let yaml = format!(
        "version: 1\nlisteners:{}backends:\n  events: {{ urls: [\"{}\"], timeout: 500ms, body_timeout: 0s }}\nroutes:\n  - {{ name: all, match: {{}}, backend: events }}\n",
        listener("", ""),
        stream.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let mut tls = client.connect().await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(2_500);
    let mut chunk = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), tls.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.len() >= 3, "the stream kept flowing past the 500 ms timeout: {body:?}");
}

#[tokio::test]
async fn identity_provider_faults_leave_routes_refusing_and_the_rest_serving() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let hang = Faulty::tls(&pki, Script::Hang).await;
    let garbage =
        Faulty::tls(&pki, Script::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"keys\":[".to_vec())).await;
    let mut huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{{\"keys\":[", 10 << 20).into_bytes();
    huge.resize(huge.len() + (10 << 20) - 9, b' ');
    huge.extend_from_slice(b"]}");
    let huge = Faulty::tls(&pki, Script::Reply(huge)).await;
    let common = "issuers: [https://idp.test], audiences: [api://x], algorithms: [RS256], trusted_cas: ca.pem";
    let yaml = format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: 127.0.0.1:0 }}
backends:
  app: {{ urls: ["{app}"] }}
policies:
  hang: {{ jwt: {{ {common}, jwks_url: "{hang}" }} }}
  garbage: {{ jwt: {{ {common}, jwks_url: "{garbage}" }} }}
  huge: {{ jwt: {{ {common}, jwks_url: "{huge}" }} }}
routes:
  - {{ name: hang, match: {{ path_prefix: /hang/ }}, policies: [hang], backend: app }}
  - {{ name: garbage, match: {{ path_prefix: /garbage/ }}, policies: [garbage], backend: app }}
  - {{ name: huge, match: {{ path_prefix: /huge/ }}, policies: [huge], backend: app }}
  - {{ name: open, match: {{}}, backend: app }}
"#,
        listener = listener("", ""),
        app = backend.url(),
        hang = hang.https_url("/jwks"),
        garbage = garbage.https_url("/jwks"),
        huge = huge.https_url("/jwks"),
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let fetch_errors = async |policy: &str| {
        gw.metric(&format!(r#"portcullis_jwks_fetches_total{{policy="{policy}",result="error"}}"#)).await
    };
    // The hanging fetch gives up after its 10 s timeout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if fetch_errors("hang").await > 0 && fetch_errors("garbage").await > 0 && fetch_errors("huge").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for policy in ["hang", "garbage", "huge"] {
        assert!(fetch_errors(policy).await > 0, "{policy}: the failed fetch is counted");
        // An RS256-shaped token: checking it needs the keys that never loaded.
        let token = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln";
        let req = Request::get(format!("/{policy}/x"))
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap();
        let rsp = client.send(req).await;
        assert_eq!(rsp.status, 503, "{policy}: no keys, no entry: {}", rsp.text());
    }
    let ready = admin_get(gw.addr("admin"), "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("policy huge has no keys"), "{ready}");
    assert_eq!(client.get("/open/x").await.status, 200, "routes without those policies keep serving");
    assert!(gw.peak_rss_kib() < 64 << 10, "the 10 MiB key document was not read whole: {} KiB", gw.peak_rss_kib());
    assert!(!gw.log_text().contains("panicked"));
}

#[tokio::test]
async fn a_full_disk_under_the_access_log_loses_lines_not_requests() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!(
        "version: 1\nlisteners:{}admin: {{ bind: 127.0.0.1:0 }}\nbackends:\n  app: {{ urls: [\"{}\"] }}\nroutes:\n  - {{ name: all, match: {{}}, backend: app }}\n",
        listener("", ""),
        backend.url()
    );
    let config = pki.write("gateway.yaml", &yaml);
    let gw = TestGateway::start_with(config, &["--access-log", "/dev/full"]);
    let client = Client::new(gw.addr("public"), &pki);
    let mut session = client.session().await.unwrap();
    for _ in 0..50 {
        assert_eq!(session.send(get("/x")).await.unwrap().status, 200);
    }
    let start = Instant::now();
    while gw.metric("portcullis_access_log_dropped_total").await < 50 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.metric("portcullis_access_log_dropped_total").await, 50, "every lost line is counted");
    let warnings = gw.log_text().matches("access log write failed").count();
    assert_eq!(warnings, 1, "one warning, not one per line:\n{}", gw.log_text());
}

fn one_backend(backend: &str, tag: &str) -> String {
    format!(
        "version: 1\nlisteners:{}admin: {{ bind: 127.0.0.1:0 }}\ndrain_timeout: 5s\nbackends:\n  app: {{ urls: [\"{backend}\"] }}\npolicies:\n  tag: {{ headers: {{ request: {{ set: {{ X-Tag: \"{tag}\" }} }} }} }}\nroutes:\n  - {{ name: all, match: {{}}, policies: [tag], backend: app }}\n",
        listener("", "")
    )
}

#[tokio::test]
async fn sigterm_during_a_reload_stops_cleanly() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let mut gw = TestGateway::start(&one_backend(&backend.url(), "a"), &pki);
    pki.write("gateway.yaml", &one_backend(&backend.url(), "b"));
    let pid = gw.pid();
    // SIGHUP starts a reload; SIGTERM arrives while it is being built.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
        libc::kill(pid, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the gateway did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a clean exit: {status:?}\n{}", gw.log_text());
    assert!(!gw.log_text().contains("panicked"), "{}", gw.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_storm_is_absorbed_while_requests_keep_succeeding() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&one_backend(&backend.url(), "v0"), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (client, stop, failed) = (client.clone(), stop.clone(), failed.clone());
        tokio::spawn(async move {
            let mut session = client.session().await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                if !matches!(session.send(get("/x")).await, Ok(r) if r.status == 200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    session = client.session().await.unwrap();
                }
            }
        })
    };
    let rss = gw.rss_kib();
    // 100 writes within a second, every tenth one broken.
    for i in 1..=100 {
        let yaml = if i % 10 == 5 {
            "version: 1\nlisteners: [oops".to_owned()
        } else {
            one_backend(&backend.url(), &format!("v{i}"))
        };
        pki.write("gateway.yaml", &yaml);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    loop {
        let rsp = client.get("/x").await;
        assert_eq!(rsp.status, 200);
        if backend.last().headers["x-tag"] == "v100" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the last write was never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed during the storm");
    let reloads = gw.metric(r#"portcullis_config_reloads_total{result="ok"}"#).await;
    assert!((1..=20).contains(&reloads), "the writes were debounced into a few reloads: {reloads}");
    let growth = gw.rss_kib().saturating_sub(rss);
    assert!(growth < 16 << 10, "resident memory grew by {growth} KiB");
    assert!(!gw.log_text().contains("panicked"));
}
