//! Operating the gateway: hot reload under load, refused reloads, listener changes,
//! certificates replaced on disk, SIGHUP, metrics, redacted access logs, `certs check`.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]
// Sending signals to the gateway under test (`libc::kill`) is the one unsafe call.
#![allow(unsafe_code)]

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::gateway::{admin_get, binary, metric};
use support::pki::TLS_LISTENER;
use support::{until, Client, Pki, TestBackend, TestGateway};

fn versioned(backend: &str, version: &str, extra: &str) -> String {
    format!(
        r#"version: 1
listeners:{TLS_LISTENER}{extra}
admin: {{ bind: 127.0.0.1:0 }}
backends:
  app: {{ urls: ["{backend}"] }}
policies:
  first: {{ headers: {{ request: {{ set: {{ X-Config-First: "{version}" }} }} }} }}
  second: {{ headers: {{ request: {{ set: {{ X-Config-Second: "{version}" }} }} }} }}
routes:
  - {{ name: all, match: {{}}, policies: [first, second], backend: app }}
"#
    )
}

/// Replaces the configuration the way an editor's "save" does: write aside, then rename.
fn replace(pki: &Pki, file: &str, contents: &str) {
    let tmp = pki.write(&format!("{file}.tmp"), contents);
    std::fs::rename(tmp, pki.path(file)).unwrap();
}

fn get(target: &str) -> Request<Full<Bytes>> {
    Request::get(target).header("host", "localhost").body(Full::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_never_mix_configurations() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&versioned(&backend.url(), "A", ""), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for keep_alive in [true, true, true, false, false, false] {
        let (client, stop, done, failed) = (client.clone(), stop.clone(), done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut session = None;
            while !stop.load(Ordering::Relaxed) {
                let reply = if keep_alive {
                    if session.is_none() {
                        session = Some(client.session().await.expect("connect"));
                    }
                    session.as_mut().unwrap().send(get("/x")).await
                } else {
                    client.try_send(get("/x")).await
                };
                match reply {
                    Ok(r) if r.status == 200 => done.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for i in 0..20 {
        let version = if i % 2 == 0 { "B" } else { "A" };
        replace(&pki, "gateway.yaml", &versioned(&backend.url(), version, ""));
        let answer = gw.reload().await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let start = Instant::now();
    while done.load(Ordering::Relaxed) < 2000 && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(done.load(Ordering::Relaxed) >= 2000, "{} requests", done.load(Ordering::Relaxed));
    let seen = backend.received();
    let mut versions = std::collections::HashSet::new();
    for r in &seen {
        let (first, second) = (&r.headers["x-config-first"], &r.headers["x-config-second"]);
        assert_eq!(first, second, "a request saw one whole configuration");
        versions.insert(first.to_str().unwrap().to_owned());
    }
    assert_eq!(versions.len(), 2, "both configurations served: {versions:?}");
}

#[tokio::test]
async fn a_single_worker_serves_requests_and_reloads() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let config = pki.write("gateway.yaml", &versioned(&backend.url(), "A", ""));
    let gw = TestGateway::start_with(config, &["--workers", "1"]);
    assert_eq!(event_loop(&gw), ("single".to_owned(), 1));
    let client = Client::new(gw.addr("public"), &pki);
    assert_eq!(client.get("/x").await.status, 200);
    replace(&pki, "gateway.yaml", &versioned(&backend.url(), "B", ""));
    let answer = gw.reload().await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(client.get("/x").await.status, 200);
    assert_eq!(backend.last().headers["x-config-first"], "B");
}

/// The event loop the `ready` line names: its kind and its number of workers.
fn event_loop(gw: &TestGateway) -> (String, u64) {
    let ready = gw
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| j["message"] == "ready")
        .expect("a ready line");
    (ready["event_loop"].as_str().unwrap_or_default().to_owned(), ready["workers"].as_u64().unwrap_or_default())
}

#[tokio::test]
async fn without_flags_the_event_loop_fits_the_cpus_the_gateway_may_use() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let config = pki.write("gateway.yaml", &versioned(&backend.url(), "A", ""));
    // Allowed one CPU (an affinity mask, as `taskset` or a container's cpuset gives): one
    // event loop without work stealing, like HAProxy's `nbthread 1`.
    let mut pinned = Command::new("taskset");
    pinned.args(["-c", "0", binary()]);
    let gw = TestGateway::start_under(pinned, config.clone(), &[]);
    assert_eq!(event_loop(&gw), ("single".to_owned(), 1));
    assert_eq!(Client::new(gw.addr("public"), &pki).get("/x").await.status, 200);
    drop(gw);
    // Every CPU of this machine: one worker per CPU.
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let gw = TestGateway::start_file(config);
    let expected = if cpus == 1 { "single" } else { "work_stealing" };
    assert_eq!(event_loop(&gw), (expected.to_owned(), cpus));
    assert_eq!(Client::new(gw.addr("public"), &pki).get("/x").await.status, 200);
}

#[tokio::test]
async fn a_broken_reload_is_refused_and_the_old_configuration_keeps_serving() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&versioned(&backend.url(), "A", ""), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let broken = versioned(&backend.url(), "B", "").replace("backend: app", "backend: ap");
    replace(&pki, "gateway.yaml", &broken);
    let answer = gw.reload().await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("gateway.yaml:16:65") && answer.contains("unknown backend"), "{answer}");
    assert_eq!(client.get("/x").await.status, 200);
    assert_eq!(backend.last().headers["x-config-first"], "A");
    let metrics = admin_get(gw.addr("admin"), "/metrics").await;
    assert!(metrics.contains("portcullis_config_reloads_total{result=\"error\"}"), "{metrics}");
    assert!(gw.log_text().contains("configuration reload refused"), "the refusal is logged");

    // Fixing the file reloads by itself (the file is watched).
    replace(&pki, "gateway.yaml", &versioned(&backend.url(), "C", ""));
    until("the fixed file is picked up", async || {
        client.get("/x").await;
        backend.last().headers["x-config-first"] == "C"
    })
    .await;
}

#[tokio::test]
async fn reloads_bind_new_listeners_keep_unchanged_ones_and_drain_removed_ones() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&versioned(&backend.url(), "A", ""), &pki);
    let public = gw.addr("public");
    let second = "\n  - name: second\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{ cert: server.pem, key: server-key.pem }]\n";
    replace(&pki, "gateway.yaml", &versioned(&backend.url(), "B", second));
    assert!(gw.reload().await.starts_with("HTTP/1.1 200"));
    assert_eq!(gw.addr("public"), public, "an unchanged listener keeps its socket");
    let added = gw.addr("second");
    assert_eq!(Client::new(added, &pki).get("/x").await.status, 200);

    replace(&pki, "gateway.yaml", &versioned(&backend.url(), "C", ""));
    assert!(gw.reload().await.starts_with("HTTP/1.1 200"));
    until("the removed listener stops accepting", async || tokio::net::TcpStream::connect(added).await.is_err()).await;
    assert_eq!(Client::new(public, &pki).get("/x").await.status, 200);
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_on_the_next_handshake() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&versioned(&backend.url(), "A", ""), &pki);
    let alt = Client::new(gw.addr("public"), &pki).sni("alt.test");
    assert!(alt.connect().await.is_err(), "the first certificate is not valid for alt.test");
    // The key first, then the certificate: the debounce waits for both.
    replace(&pki, "server-key.pem", &pki.read("alt-key.pem"));
    replace(&pki, "server.pem", &pki.read("alt.pem"));
    until("the new certificate is served", async || alt.connect().await.is_ok()).await;
    assert_eq!(alt.get("/x").await.status, 200);
}

/// A Kubernetes ConfigMap volume: `gateway.yaml` is a symlink into `..data`, itself a symlink
/// to a timestamped folder; an update writes a new folder and swaps `..data` atomically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_delivered_as_a_symlink_swap_is_reloaded() {
    use std::os::unix::fs::symlink;
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let volume = pki.dir().join("configmap");
    // Certificates by absolute path: they come from another volume (a Secret).
    let yaml = |v: &str| versioned(&backend.url(), v, "").replace("server", &format!("{}/server", pki.dir().display()));
    std::fs::create_dir_all(volume.join("..2026_12_06_a")).unwrap();
    std::fs::write(volume.join("..2026_12_06_a/gateway.yaml"), yaml("A")).unwrap();
    symlink("..2026_12_06_a", volume.join("..data")).unwrap();
    symlink("..data/gateway.yaml", volume.join("gateway.yaml")).unwrap();
    let gw = TestGateway::start_file(volume.join("gateway.yaml"));
    let client = Client::new(gw.addr("public"), &pki);
    client.get("/x").await;
    assert_eq!(backend.last().headers["x-config-first"], "A");

    // What the kubelet does: a new folder, a new `..data_tmp` link renamed over `..data`, the
    // old folder removed. The same length, so only the file's identity tells the change.
    std::fs::create_dir_all(volume.join("..2026_12_06_b")).unwrap();
    std::fs::write(volume.join("..2026_12_06_b/gateway.yaml"), yaml("B")).unwrap();
    symlink("..2026_12_06_b", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    std::fs::remove_dir_all(volume.join("..2026_12_06_a")).unwrap();
    until("the swapped configuration serves", async || {
        client.get("/x").await;
        backend.last().headers["x-config-first"] == "B"
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = |v: &str| versioned(&backend.url(), v, "").replace("version: 1\n", "version: 1\nwatch_files: false\n");
    let gw = TestGateway::start(&yaml("A"), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    replace(&pki, "gateway.yaml", &yaml("B"));
    tokio::time::sleep(Duration::from_millis(1200)).await; // longer than a file-watch cycle
    client.get("/x").await;
    assert_eq!(backend.last().headers["x-config-first"], "A", "watch_files: false ignores the change");
    assert_eq!(unsafe { libc::kill(gw.pid(), libc::SIGHUP) }, 0);
    until("SIGHUP reloads", async || {
        client.get("/x").await;
        backend.last().headers["x-config-first"] == "B"
    })
    .await;
}

#[tokio::test]
async fn metrics_count_exactly_the_requests_sent() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!(
        r#"version: 1
listeners:{TLS_LISTENER}
admin: {{ bind: 127.0.0.1:0 }}
backends:
  app: {{ urls: ["{}"] }}
policies:
  loopback: {{ ip_filter: {{ allow: [127.0.0.0/8] }} }}
  office: {{ ip_filter: {{ allow: [203.0.113.0/24] }} }}
routes:
  - {{ name: open, match: {{ path_prefix: /open/ }}, policies: [loopback], backend: app }}
  - {{ name: closed, match: {{ path_prefix: /closed/ }}, policies: [office], backend: app }}
"#,
        backend.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    for _ in 0..7 {
        assert_eq!(client.get("/open/a?secret=1").await.status, 200);
    }
    for _ in 0..5 {
        assert_eq!(
            client
                .send(Request::post("/closed/b").header("host", "localhost").body(Full::default()).unwrap())
                .await
                .status,
            403
        );
    }
    for _ in 0..3 {
        assert_eq!(client.get("/nowhere").await.status, 404);
    }
    let m = admin_get(gw.addr("admin"), "/metrics").await;
    assert_eq!(metric(&m, r#"portcullis_policy_decisions_total{outcome="allowed",policy="loopback"}"#), 7, "{m}");
    assert_eq!(metric(&m, r#"portcullis_policy_decisions_total{outcome="ip_not_allowed",policy="office"}"#), 5);
    assert_eq!(metric(&m, r#"portcullis_requests_total{method="read",route="open",status="200"}"#), 7);
    assert_eq!(metric(&m, r#"portcullis_requests_total{method="write",route="closed",status="403"}"#), 5);
    assert_eq!(metric(&m, r#"portcullis_requests_total{method="read",route="-",status="404"}"#), 3);
    assert_eq!(metric(&m, r#"portcullis_request_duration_seconds_count{route="open"}"#), 7);
    assert_eq!(metric(&m, r#"portcullis_upstream_duration_seconds_count{backend="app"}"#), 7);
    assert!(m.contains(r#"portcullis_certificate_expiry_seconds{certificate="server.pem",serial=""#), "{m}");
    assert!(m.contains(r#"",usage="listeners[0].tls.certificates[0].cert"}"#), "{m}");
    assert!(m.contains(r#"portcullis_active_connections{listener="public"}"#));
    for unbounded in ["127.0.0.1", "/open/", "/nowhere", "secret", "CN="] {
        assert!(!m.contains(unbounded), "{unbounded} used as a label value");
    }
    // A failed handshake is counted by reason: plain HTTP sent to the TLS port.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr("public")).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut Vec::new()).await;
    let m = admin_get(gw.addr("admin"), "/metrics").await;
    let failures: u64 = m
        .lines()
        .filter(|l| l.starts_with("portcullis_tls_handshake_failures_total{listener=\"public\""))
        .map(|l| metric(l, l.split(' ').next().unwrap()))
        .sum();
    assert_eq!(failures, 1, "{m}");
}

#[tokio::test]
async fn access_log_has_one_line_per_request_and_no_secret() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let secret_value = "env-secret-value-4711";
    std::env::set_var("PORTCULLIS_TEST_API_KEY", secret_value);
    let jwt_secret = "a shared HS256 secret of 32+ bytes!!";
    pki.write("hs.secret", jwt_secret);
    let yaml = format!(
        r#"version: 1
listeners:{TLS_LISTENER}
backends:
  app: {{ urls: ["{}"] }}
policies:
  api-key: {{ headers: {{ request: {{ set: {{ X-Api-Key: "${{env:PORTCULLIS_TEST_API_KEY}}" }} }} }} }}
  jwt: {{ jwt: {{ issuers: [https://idp.test], algorithms: [HS256], secret: "${{file:hs.secret}}" }} }}
routes:
  - {{ name: api, match: {{ path_prefix: /api/ }}, policies: [jwt, api-key], backend: app }}
"#,
        backend.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let token = support::tokens::hs256(jwt_secret.as_bytes(), &support::tokens::claims());
    let req = Request::get("/api/items?access_token=qs-token-123&code=auth-code-456&password=pw-789&page=2")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("cookie", "session=cookie-secret-abc")
        .body(Full::default())
        .unwrap();
    let rsp = client.send(req).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(backend.last().headers["x-api-key"], secret_value, "the secret reaches the backend");
    let id = rsp.header("x-request-id").unwrap().to_owned();
    let denied = client
        .send(
            Request::get("/api/x")
                .header("host", "localhost")
                .header("authorization", "Bearer forged.token.value")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(denied.status, 401);
    until("both access-log lines are written", async || gw.log_text().matches("\"log\":\"access\"").count() >= 2).await;
    let logs = gw.log_text();
    for secret in [
        token.as_str(),
        "qs-token-123",
        "auth-code-456",
        "pw-789",
        "cookie-secret-abc",
        secret_value,
        jwt_secret,
        "forged.token.value",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs:\n{logs}");
    }
    let line: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| j["log"] == "access" && j["request.id"] == id.as_str())
        .expect("an access-log line for the request");
    assert_eq!(line["route"], "api");
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/items");
    assert_eq!(line["query"], "access_token=[redacted]&code=[redacted]&password=[redacted]&page=2");
    assert_eq!(line["client.ip"], "127.0.0.1");
    assert_eq!(line["tls.version"], "TLSv1_3");
    assert_eq!(line["jwt.sub"], "user-1");
    assert_eq!(line["decisions"][0]["policy"], "jwt");
    assert_eq!(line["decisions"][0]["outcome"], "allowed");
    assert_eq!(line["upstream.addr"], backend.addr.to_string());
    assert!(line["bytes.out"].as_u64().unwrap() > 0 && line["total.ms"].as_f64().is_some());
    let denial = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| j["log"] == "access" && j["status"] == 401)
        .unwrap();
    assert_eq!(denial["decisions"][0]["outcome"], "malformed");
}

#[test]
fn certs_check_flags_a_certificate_about_to_expire() {
    let pki = Pki::new();
    let ca = portcullis::tools::pki::Ca::new("short-lived CA").unwrap();
    let soon = ca.issue(&portcullis::tools::pki::LeafKind::Server(&["localhost"]), 5).unwrap();
    pki.write("soon.pem", &soon.cert_pem);
    pki.write("soon-key.pem", &soon.key_pem);
    let yaml = "version: 1\nlisteners:\n  - name: public\n    bind: 127.0.0.1:0\n    tls: { certificates: [{ cert: soon.pem, key: soon-key.pem }] }\n";
    let config = pki.write("gateway.yaml", yaml);
    let check = |days: &str| {
        Command::new(binary()).args(["certs", "check", "--warn-days", days, "--config"]).arg(&config).output().unwrap()
    };
    let out = check("30");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("CN=localhost") && table.contains("listeners[0].tls.certificates[0].cert"), "{table}");
    assert!(table.contains("EXPIRES SOON") && table.contains("1 expire within 30 days"), "{table}");
    let row = table.lines().find(|l| l.contains("soon.pem")).unwrap();
    let days: i64 = row.split_whitespace().next().unwrap().parse().unwrap();
    assert!((4..=5).contains(&days), "{row}");
    assert_eq!(check("3").status.code(), Some(0));
}

#[tokio::test]
async fn the_admin_listener_answers_only_its_allow_list() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let base = versioned(&backend.url(), "A", "");
    let gw = TestGateway::start(
        &base.replace("admin: { bind: 127.0.0.1:0 }", "admin: { bind: 127.0.0.1:0, allow: [10.0.0.0/8] }"),
        &pki,
    );
    let answer = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(gw.addr("admin")).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await.ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.ok()?;
        Some(text)
    }
    .await;
    assert!(answer.is_none_or(|text| text.is_empty()), "a client outside `allow` gets no answer");
    let gw = TestGateway::start(
        &base.replace("admin: { bind: 127.0.0.1:0 }", "admin: { bind: 127.0.0.1:0, allow: [127.0.0.0/8] }"),
        &pki,
    );
    assert!(admin_get(gw.addr("admin"), "/healthz").await.starts_with("HTTP/1.1 200"));
}

#[test]
fn check_warns_about_an_exposed_admin_listener() {
    let pki = Pki::new();
    let base = versioned("http://127.0.0.1:9", "A", "");
    let run = |yaml: String| {
        let config = pki.write("gateway.yaml", &yaml);
        let out = Command::new(binary()).args(["check", "--config"]).arg(config).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let exposed = run(base.replace("admin: { bind: 127.0.0.1:0 }", "admin: { bind: 0.0.0.0:0 }"));
    assert!(exposed.contains("admin.bind: the admin listener (0.0.0.0:0) is reachable beyond this host"), "{exposed}");
    let allowed = run(base.replace("admin: { bind: 127.0.0.1:0 }", "admin: { bind: 0.0.0.0:0, allow: [10.0.0.0/8] }"));
    assert!(!allowed.contains("warning"), "{allowed}");
    assert!(!run(base).contains("warning"));
}
