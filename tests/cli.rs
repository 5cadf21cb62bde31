//! The command line as an operator uses it: `check` errors that point into the file,
//! `demo` and its printed commands, graceful shutdown on SIGTERM.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]
// Sending signals to the gateway under test (`libc::kill`) is the one unsafe call.
#![allow(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::gateway::binary;
use support::pki::TLS_LISTENER;
use support::{Client, Pki, TestBackend, TestGateway};

const VALID: &str = r#"version: 1
listeners:
  - name: public
    bind: 127.0.0.1:0
    tls:
      certificates:
        - { cert: server.pem, key: server-key.pem }
    limits: { max_body_bytes: 10MiB }
backends:
  echo: { builtin: echo }
policies:
  tag: { headers: { request: { set: { X-Tag: "1" } } } }
routes:
  - name: a
    match: { path_prefix: /a/ }
    policies: [tag]
    backend: echo
"#;

fn check(pki: &Pki, yaml: &str) -> (bool, String, String) {
    let file = pki.write("gateway.yaml", yaml);
    let out = Command::new(binary()).args(["check", "--config"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&format!("{}/", pki.dir().display()), "");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn check_accepts_a_valid_file_without_binding_ports() {
    let pki = Pki::new();
    // A port that is taken would fail `run`; `check` binds nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let yaml = VALID.replace("127.0.0.1:0", &taken.local_addr().unwrap().to_string());
    let (ok, stdout, stderr) = check(&pki, &yaml);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (1 listeners, 1 routes, 1 backends, 0 warnings)"), "{stdout}");
}

#[test]
fn check_errors_name_file_line_and_column_with_a_hint() {
    let pki = Pki::new();
    let cases = [
        // (edit of the valid file, expected location and words)
        (("max_body_bytes: 10MiB", "max_body_bytes: 10MB"), "gateway.yaml:8:31: invalid size \"10MB\""),
        (("max_body_bytes: 10MiB", "max_body_bytez: 1"), "gateway.yaml:8:15: unknown field `max_body_bytez`"),
        (("policies: [tag]", "policies: [jwt2]"), "gateway.yaml:16:16: routes[0].policies[0]: unknown policy \"jwt2\""),
        (("backend: echo", "backend: ech0"), "gateway.yaml:17:14: routes[0].backend: unknown backend \"ech0\""),
        (
            ("cert: server.pem", "cert: missing.pem"),
            "gateway.yaml:7:19: listeners[0].tls.certificates[0].cert: cannot read",
        ),
        (
            ("key: server-key.pem", "key: client-key.pem"),
            "gateway.yaml:7:36: listeners[0].tls.certificates[0].key: certificate and key do not fit together",
        ),
        (("version: 1", "version: 2"), "gateway.yaml:1:10: version: unsupported version 2"),
        (("path_prefix: /a/", "path: \"/a/{}\""), "gateway.yaml:15:20: routes[0].match.path: invalid parameter"),
        (
            ("X-Tag: \"1\"", "X-Tag: \"${env:PORTCULLIS_UNSET_FOR_TEST}\""),
            "environment variable PORTCULLIS_UNSET_FOR_TEST is not set",
        ),
    ];
    for ((from, to), expected) in cases {
        assert!(VALID.contains(from), "{from}");
        let (ok, _, stderr) = check(&pki, &VALID.replace(from, to));
        assert!(!ok, "{to}: accepted");
        assert!(stderr.contains(expected), "{to}: expected {expected:?} in:\n{stderr}");
        assert!(stderr.contains("hint:") || expected.contains("env"), "{to}: a hint follows:\n{stderr}");
    }
    // Several errors are reported together, in file order.
    let (_, _, stderr) =
        check(&pki, &VALID.replace("backend: echo", "backend: ech0").replace("policies: [tag]", "policies: [nope]"));
    let policy = stderr.find("unknown policy").unwrap();
    let backend = stderr.find("unknown backend").unwrap();
    assert!(policy < backend, "{stderr}");
    assert!(stderr.contains("2 error(s)"));
}

#[test]
fn check_points_at_a_malformed_distinguished_name() {
    let pki = Pki::new();
    let with = |subject: &str| {
        VALID.replace(
            "  tag: { headers: { request: { set: { X-Tag: \"1\" } } } }\n",
            &format!("  tag: {{ headers: {{ request: {{ set: {{ X-Tag: \"1\" }} }} }} }}\n  partner:\n    client_cert:\n      identities:\n        - subject: {subject}\n"),
        )
    };
    let (ok, _, stderr) = check(&pki, &with(r#""CN=svc,O=Contoso""#));
    assert!(ok, "{stderr}");
    for (subject, reason) in [
        (r#""CN=svc;O=Contoso""#, "';' must be escaped"),
        (r#""XX=svc""#, "unknown attribute type \"XX\""),
        (r#""CN=#04037376""#, "`#` hex (BER) values are not supported"),
        (r#"'CN=svc\q'"#, "escapes only"),
        (r#""""#, "the name is empty"),
    ] {
        let (ok, _, stderr) = check(&pki, &with(subject));
        assert!(!ok, "{subject}: accepted");
        assert!(stderr.contains("gateway.yaml:16:20: invalid distinguished name"), "{subject}:\n{stderr}");
        assert!(stderr.contains(reason), "{subject}: {reason:?} in:\n{stderr}");
        assert!(stderr.contains("hint: write the name as RFC 4514 does"), "{subject}:\n{stderr}");
    }
}

#[test]
fn check_warns_about_shadowed_routes() {
    let pki = Pki::new();
    let yaml = VALID.replace("routes:\n", "routes:\n  - { name: catch-all, match: {}, backend: echo }\n");
    let (ok, stdout, stderr) = check(&pki, &yaml);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("warning: ") && stderr.contains("route \"a\" is never reached"), "{stderr}");
    assert!(stdout.contains("1 warnings"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!(
        "version: 1\nlisteners:{TLS_LISTENER}drain_timeout: 10s\nbackends:\n  app: {{ urls: [\"{}\"] }}\nroutes:\n  - {{ name: all, match: {{}}, backend: app }}\n",
        backend.url()
    );
    let mut gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.get("/slow?ms=1500").await }
    });
    backend.wait_for_request().await;
    assert_eq!(unsafe { libc::kill(gw.pid(), libc::SIGTERM) }, 0);
    let rsp = slow.await.unwrap();
    assert_eq!(rsp.status, 200, "the in-flight request completed: {}", rsp.text());
    let (gw, status) = tokio::task::spawn_blocking(move || {
        let status = gw.child.wait();
        (gw, status)
    })
    .await
    .unwrap();
    assert!(status.unwrap().success(), "drained and exited cleanly");
    assert!(client.connect().await.is_err(), "no new connections after shutdown");
    // The access log is flushed before the process exits: the drained request has its line.
    let line =
        |gw: &TestGateway| gw.log_text().lines().any(|l| l.contains("\"log\":\"access\"") && l.contains("/slow"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !line(&gw) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // the pipe's last bytes
    }
    assert!(line(&gw), "{}", gw.log_text());
}

#[test]
fn demo_starts_and_its_printed_commands_succeed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/demo.yaml")).unwrap();
    // Ephemeral ports: the printed commands use whatever was bound.
    let demo = demo
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    std::fs::write(dir.path().join("policies/demo.yaml"), demo).unwrap();
    let mut child = Command::new(binary())
        .arg("demo")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut commands = Vec::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut comment = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(c) = line.strip_prefix("# ") {
            comment = c.to_owned();
        }
        if line.starts_with("curl ") {
            commands.push((comment.clone(), line.clone()));
        }
        if line.contains("/readyz") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    assert!(dir.path().join("certs/dev/ca.pem").exists(), "demo created the development certificates");
    assert!(commands.len() >= 6, "{commands:?}");
    let kinds: Vec<&str> = commands.iter().map(|(what, _)| what.split(" (").next().unwrap()).collect();
    for kind in ["allowed", "denied by JWT", "denied by CORS", "denied by IP", "denied by client certificate"] {
        assert!(kinds.contains(&kind), "demo shows {kind}: {kinds:?}");
    }
    for (what, command) in &commands {
        let out = Command::new("sh").arg("-c").arg(command).current_dir(dir.path()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{what}: `{command}` failed: {}", String::from_utf8_lossy(&out.stderr));
        let status = what.split_once(" (").unwrap().1.get(..3).unwrap();
        let first = stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("HTTP/") && first.contains(&format!(" {status}")),
            "{what}: `{command}` printed:\n{stdout}"
        );
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = Duration::ZERO;
}

#[test]
fn trace_shows_each_policy_decision_without_echoing_secrets() {
    use jsonwebtoken::Algorithm;
    use support::tokens::{claims, SigningKey};
    let pki = Pki::new();
    let key = SigningKey::new(Algorithm::ES256, "k1");
    pki.write("es.pub.pem", &key.public_pem);
    let yaml = r#"version: 1
listeners:
  - name: public
    bind: 127.0.0.1:0
    tls: { certificates: [{ cert: server.pem, key: server-key.pem }] }
backends:
  app: { urls: ["http://127.0.0.1:9"] }
policies:
  cors: { cors: { allowed_origins: [https://portal.example.com], terminate_unmatched: true } }
  office: { ip_filter: { allow: [203.0.113.0/24] } }
  office-report: { mode: report, ip_filter: { allow: [198.51.100.0/24] } }
  jwt: { jwt: { issuers: [https://idp.test], audiences: [api://portcullis], algorithms: [ES256], keys: [es.pub.pem], forward_claims: { sub: X-User-Id } } }
  partner: { client_cert: { identities: [{ subject: "CN=test-client,O=Example" }] } }
routes:
  - { name: api, match: { path_prefix: /api/ }, policies: [cors, office, office-report, jwt], backend: app, rewrite: { strip_prefix: /api } }
  - { name: partners, match: { path_prefix: /partners/ }, policies: [partner], backend: app }
"#;
    let config = pki.write("gateway.yaml", yaml);
    let token = key.sign(&claims());
    let trace = |args: &[&str]| {
        let out = Command::new(binary()).arg("trace").arg("--config").arg(&config).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let origin = "Origin: https://portal.example.com";

    let out = trace(&[
        "--client-ip",
        "203.0.113.5",
        "-H",
        origin,
        "--token",
        &token,
        "https://localhost/api/items?access_token=s3cr3t&x=1",
    ]);
    assert!(out.contains("route: api -> backend app"), "{out}");
    assert!(out.contains("1. cors (cors): allowed"), "{out}");
    assert!(out.contains("2. office (ip_filter): allowed"), "{out}");
    assert!(out.contains("3. office-report (ip_filter): denied: ip_not_allowed (report mode: not enforced)"), "{out}");
    assert!(out.contains("4. jwt (jwt): allowed"), "{out}");
    assert!(out.contains("final: forwarded to backend app as GET /items?access_token=[redacted]&x=1"), "{out}");
    assert!(out.contains("x-user-id: user-1"), "{out}");
    assert!(out.contains("authorization: [redacted]"), "{out}");
    assert!(!out.contains(&token) && !out.contains("s3cr3t"), "secrets echoed:\n{out}");

    let out =
        trace(&["--client-ip", "203.0.113.5", "-H", origin, "--token", "not.a.jwt", "https://localhost/api/items"]);
    assert!(
        out.contains("4. jwt (jwt): denied: malformed")
            && out.contains("final: 401 invalid-token (malformed), not forwarded"),
        "{out}"
    );
    assert!(!out.contains("not.a.jwt"), "{out}");

    let out = trace(&["--client-ip", "192.0.2.1", "-H", origin, "https://localhost/api/items"]);
    assert!(
        out.contains("2. office (ip_filter): denied: ip_not_allowed") && !out.contains("3. "),
        "stops at the denial:\n{out}"
    );
    assert!(out.contains("final: 403 ip-rejected (ip_not_allowed)"), "{out}");

    let out = trace(&["-H", "Origin: https://evil.example", "https://localhost/api/items"]);
    assert!(out.contains("1. cors (cors): denied: origin_not_allowed"), "{out}");

    let cert = pki.path("client.pem");
    let out = trace(&["--client-cert", cert.to_str().unwrap(), "https://localhost/partners/x"]);
    assert!(out.contains("1. partner (client_cert): allowed"), "{out}");
    assert!(
        out.contains(
            "client certificate: O=Example,CN=test-client (issuer O=portcullis development,CN=test client CA)"
        ),
        "names as RFC 4514 writes them:\n{out}"
    );
    let cert = pki.path("look-alike.pem");
    let out = trace(&["--client-cert", cert.to_str().unwrap(), "https://localhost/partners/x"]);
    assert!(out.contains(r"client certificate: O=Fabrikam,CN=svc\, O=Contoso (issuer"), "{out}");
    assert!(out.contains("1. partner (client_cert): denied: client_cert_not_allowed"), "{out}");
    let out = trace(&["https://localhost/partners/x"]);
    assert!(out.contains("denied: no_client_cert"), "{out}");

    let out = trace(&["https://localhost/api/../../partners/%2fx"]);
    assert!(out.contains("route: none") && out.contains("final: 400 bad-request"), "{out}");
    let out = trace(&["https://localhost/elsewhere"]);
    assert!(out.contains("final: 404 not-found"), "{out}");
}

// The backend runs on this test's runtime while the bench command blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_each_kind_and_fails_on_thresholds() {
    use jsonwebtoken::Algorithm;
    use support::tokens::SigningKey;
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let key = SigningKey::new(Algorithm::ES256, "k1");
    pki.write("es.pub.pem", &key.public_pem);
    pki.write("es-key.pem", &key.private_pem);
    let yaml = format!(
        r#"version: 1
listeners:{TLS_LISTENER}
backends:
  app: {{ urls: ["{}"] }}
policies:
  jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portcullis], algorithms: [ES256], keys: [es.pub.pem] }} }}
routes:
  - {{ name: api, match: {{ path_prefix: /api/ }}, policies: [jwt], backend: app }}
"#,
        backend.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let scenario = |extra: &str| {
        format!(
            r#"requests_total: 300
connections: 4
{extra}
tls: {{ ca: ca.pem, server_name: localhost }}
tokens:
  valid: {{ key: es-key.pem, alg: ES256, claims: {{ iss: "https://idp.test", aud: "api://portcullis", sub: bench }} }}
  fresh: {{ key: es-key.pem, alg: ES256, unique: true, claims: {{ iss: "https://idp.test", aud: "api://portcullis", sub: bench }} }}
  expired: {{ key: es-key.pem, alg: ES256, ttl: -1h, claims: {{ iss: "https://idp.test", aud: "api://portcullis" }} }}
requests:
  - {{ name: ok, weight: 6, url: /api/a, headers: {{ Authorization: "Bearer ${{token:valid}}" }}, expect: 200 }}
  - {{ name: fresh, weight: 2, url: /api/b, headers: {{ Authorization: "Bearer ${{token:fresh}}" }}, expect: 200 }}
  - {{ name: expired, weight: 2, url: /api/c, headers: {{ Authorization: "Bearer ${{token:expired}}" }}, expect: 401 }}
"#
        )
    };
    let url = format!("https://localhost:{}", gw.addr("public").port());
    let run = |file: &str, body: String, extra_args: &[&str]| {
        let path = pki.write(file, &body);
        let mut cmd = Command::new(binary());
        cmd.args(["bench", "--url", &url, "--scenario"]).arg(path).args(extra_args);
        cmd.output().unwrap()
    };

    let out = run("s1.yaml", scenario("thresholds: { min_rps: 1, p99: 10s, unexpected_status: 0 }"), &["--json"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["total"]["requests"], 300);
    assert_eq!(report["total"]["unexpected_status"], 0);
    assert_eq!(report["total"]["errors"], 0);
    let kinds: Vec<&str> = report["kinds"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ok", "fresh", "expired"]);
    assert!(report["kinds"].as_array().unwrap().iter().all(|k| k["requests"].as_u64().unwrap() > 0));
    assert_eq!(report["pass"], true);
    assert_eq!(
        backend.received().len() as u64,
        300 - report["kinds"][2]["requests"].as_u64().unwrap(),
        "expired tokens never reached the backend"
    );

    // h2, a new connection per request, a wrong expectation and an impossible rate: exit 1.
    let body = scenario("http: \"2\"\nkeep_alive: false\nthresholds: { min_rps: 1000000000, unexpected_status: 0 }")
        .replace("expect: 401", "expect: 200");
    let out = run("s2.yaml", body, &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("threshold min_rps") && table.contains("FAIL") && table.contains("result: FAIL"), "{table}");
    let expired_row = table.lines().find(|l| l.starts_with("expired")).unwrap();
    let cols: Vec<&str> = expired_row.split_whitespace().collect();
    assert_eq!(cols[1], cols[7], "every expired request is unexpected when 200 is expected: {expired_row}");
}

#[test]
fn bench_can_start_the_gateway_itself() {
    let pki = Pki::new();
    let config = pki.write(
        "gateway.yaml",
        "version: 1\nlisteners:\n  - name: public\n    bind: 127.0.0.1:0\n    tls: { certificates: [{ cert: server.pem, key: server-key.pem }] }\nbackends:\n  echo: { builtin: echo }\nroutes:\n  - { name: all, match: {}, backend: echo }\n",
    );
    let scenario = pki.write(
        "s.yaml",
        "requests_total: 100\nconnections: 2\ntls: { ca: ca.pem }\nrequests:\n  - { name: echo, url: /x, expect: 200 }\n  - { name: post, method: POST, url: /y, body: hello, expect: 200 }\nthresholds: { unexpected_status: 0 }\n",
    );
    let out = Command::new(binary())
        .arg("bench")
        .arg("--config")
        .arg(&config)
        .arg("--scenario")
        .arg(&scenario)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table.contains("result: pass") && table.lines().any(|l| l.starts_with("total") && l.contains(" 100 ")),
        "{table}"
    );
}

#[test]
fn check_strict_turns_lint_warnings_into_errors() {
    let pki = Pki::new();
    let yaml = format!(
        "version: 1\nlisteners:{}backends:\n  app: {{ urls: [\"http://127.0.0.1:7071\"] }}\npolicies:\n  trial: {{ mode: report, ip_filter: {{ allow: [10.0.0.0/8] }} }}\nroutes:\n  - {{ name: r, match: {{}}, policies: [trial], backend: app }}\n",
        support::pki::listener("", "")
    );
    let file = pki.write("lint.yaml", &yaml);
    let run = |strict: bool| {
        let mut cmd = Command::new(binary());
        cmd.args(["check", "--config"]).arg(&file);
        if strict {
            cmd.arg("--strict");
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let line = yaml.lines().position(|l| l.contains("trial:")).unwrap() + 1;
    let (ok, stderr) = run(false);
    assert!(ok, "a warning does not fail check: {stderr}");
    assert!(
        stderr.contains(&format!("warning: {}:{line}:", file.display())) && stderr.contains("is in report mode"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: switch it to `mode: enforce`"), "{stderr}");
    let (ok, stderr) = run(true);
    assert!(!ok, "--strict fails on it: {stderr}");
    assert!(stderr.contains(&format!("error: {}:{line}:", file.display())), "{stderr}");
}
