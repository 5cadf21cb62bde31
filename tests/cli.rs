//! The command line as an operator uses it: `check` errors that point into the file,
//! `demo` and its printed commands, graceful shutdown on SIGTERM.

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
    let status = tokio::task::spawn_blocking(move || gw.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "drained and exited cleanly: {status:?}");
    assert!(client.connect().await.is_err(), "no new connections after shutdown");
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
    for (what, command) in &commands {
        let out = Command::new("sh").arg("-c").arg(command).current_dir(dir.path()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{what}: `{command}` failed: {}", String::from_utf8_lossy(&out.stderr));
        let expected = if what.starts_with("allowed") {
            "\"method\":\"GET\""
        } else if what.starts_with("no route") {
            " 404"
        } else if what.contains("encoded slash") {
            " 400"
        } else if what.contains("redirect") {
            " 308"
        } else if what.contains("readiness") {
            "\"ready\""
        } else {
            " 200"
        };
        assert!(stdout.contains(expected), "{what}: `{command}` printed:\n{stdout}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = Duration::ZERO;
}
