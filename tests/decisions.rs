//! `run`, `trace` and `test` share one decision path: every refusal the running gateway
//! makes — before routing, at routing, on the declared body size, and by a policy — is sent
//! to the real gateway and through `portcullis trace`, and both give the same status and
//! problem.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use bytes::Bytes;
use http::{HeaderName, Method, Request};
use http_body_util::Full;
use support::gateway::binary;
use support::pki::listener;
use support::{Client, Pki, TestBackend, TestGateway};

/// One gateway with a 1 KiB body limit, a trusted proxy (the test client's 127.0.0.1) and no
/// catch-all route.
fn config(backend: &str) -> String {
    format!(
        r#"version: 1
listeners:{listener}
trusted_proxies: [127.0.0.1/32]
backends:
  app: {{ urls: ["{backend}"] }}
policies:
  office: {{ ip_filter: {{ allow: [203.0.113.0/24] }} }}
  portal-cors: {{ cors: {{ allowed_origins: [https://portal.example.com] }} }}
  portal-jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portal], algorithms: [ES256], keys: [portal.pub.pem] }} }}
routes:
  - {{ name: office, match: {{ path_prefix: /office }}, policies: [office], backend: app }}
  - {{ name: cors, match: {{ path_prefix: /cors }}, policies: [portal-cors], backend: app }}
  - {{ name: secure, match: {{ path_prefix: /secure }}, policies: [portal-jwt], backend: app }}
  - {{ name: legacy, match: {{ path_prefix: /legacy }}, backend: app, method_override: X-HTTP-Method-Override }}
  - {{ name: open, match: {{ path_prefix: /open }}, backend: app }}
"#,
        listener = listener("", "{ max_body_bytes: 1KiB }"),
    )
}

/// A request as both sides take it: method, target, extra headers; `raw` when it must be
/// written byte for byte (a client library would refuse or repair it).
struct Case {
    what: &'static str,
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    raw: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { what: "a repeated Host", method: "GET", target: "/open/x", headers: &[("host", "evil.example")], raw: None },
    Case { what: "a lower-case method", method: "get", target: "/open/x", headers: &[], raw: None },
    Case {
        what: "an unreadable forwarding chain",
        method: "GET",
        target: "/open/x",
        headers: &[("x-forwarded-for", "unknown")],
        raw: None,
    },
    Case { what: "an encoded slash", method: "GET", target: "/open/a%2fb", headers: &[], raw: None },
    Case {
        what: "no Host",
        method: "GET",
        target: "/open/x",
        headers: &[],
        raw: Some("GET /open/x HTTP/1.1\r\nConnection: close\r\n\r\n"),
    },
    Case { what: "no route", method: "GET", target: "/nowhere", headers: &[], raw: None },
    Case { what: "path parameters", method: "GET", target: "/open;v=1/x", headers: &[], raw: None },
    Case {
        what: "an override naming a lower-case method",
        method: "POST",
        target: "/legacy/x",
        headers: &[("x-http-method-override", "patch")],
        raw: None,
    },
    Case {
        what: "a declared body above max_body_bytes",
        method: "POST",
        target: "/open/x",
        headers: &[("content-length", "4096")],
        raw: Some("POST /open/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4096\r\nConnection: close\r\n\r\n"),
    },
    Case {
        what: "an address outside the allow list",
        method: "GET",
        target: "/office/x",
        headers: &[("x-forwarded-for", "198.51.100.7")],
        raw: None,
    },
    Case {
        what: "a preflight from a look-alike origin",
        method: "OPTIONS",
        target: "/cors/x",
        headers: &[("origin", "https://portal.example.com.evil.example"), ("access-control-request-method", "GET")],
        raw: None,
    },
    Case { what: "no token", method: "GET", target: "/secure/x", headers: &[], raw: None },
    Case {
        what: "a WebSocket handshake on a route without the opt-in",
        method: "GET",
        target: "/open/x",
        headers: WEBSOCKET,
        raw: None,
    },
    Case {
        what: "an h2c upgrade",
        method: "GET",
        target: "/open/x",
        headers: &[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        raw: None,
    },
    Case {
        what: "an upgrade to a list of protocols",
        method: "GET",
        target: "/open/x",
        headers: &[("connection", "upgrade"), ("upgrade", "websocket, h2c")],
        raw: None,
    },
    Case {
        what: "a WebSocket handshake without its key",
        method: "GET",
        target: "/open/x",
        headers: &[("connection", "upgrade"), ("upgrade", "websocket"), ("sec-websocket-version", "13")],
        raw: None,
    },
    Case {
        what: "a CONNECT (the gateway is no forward proxy)",
        method: "CONNECT",
        target: "/open/x",
        headers: &[],
        raw: Some("CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n"),
    },
];

/// A valid WebSocket opening handshake's fields (RFC 6455 §4.1).
const WEBSOCKET: &[(&str, &str)] = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
];

/// The status and problem kind the running gateway answers.
async fn run(client: &Client, case: &Case) -> (u16, String) {
    if let Some(raw) = case.raw {
        let answer = client.raw(raw.as_bytes()).await;
        let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        return (status, problem["type"].as_str().unwrap().rsplit('/').next().unwrap().to_owned());
    }
    let mut req = Request::builder()
        .method(Method::from_bytes(case.method.as_bytes()).unwrap())
        .uri(case.target)
        .header("host", "localhost");
    for (name, value) in case.headers {
        req = req.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), *value);
    }
    let reply = client.send(req.body(Full::<Bytes>::default()).unwrap()).await;
    (reply.status.as_u16(), reply.problem_kind())
}

/// The status and problem kind `portcullis trace` prints on its `final:` line.
fn trace(pki: &Pki, case: &Case) -> (u16, String) {
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["trace", "--config"]).arg(pki.path("gateway.yaml")).args(["-X", case.method, "--client-ip", "127.0.0.1"]);
    for (name, value) in case.headers {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    let url = if case.what == "no Host" { case.target.to_owned() } else { format!("https://localhost{}", case.target) };
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let last = text.lines().find_map(|l| l.strip_prefix("final: ")).unwrap_or_else(|| panic!("{text}"));
    let mut words = last.split(' ');
    (words.next().unwrap().parse().unwrap(), words.next().unwrap().to_owned())
}

#[tokio::test]
async fn trace_answers_every_refusal_like_the_running_gateway() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let key = support::tokens::SigningKey::new(jsonwebtoken::Algorithm::ES256, "portal-1");
    pki.write("portal.pub.pem", &key.public_pem);
    let gw = TestGateway::start(&config(&backend.url()), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    for case in CASES {
        let ran = run(&client, case).await;
        assert!(ran.0 >= 400, "{}: the gateway refuses it, got {ran:?}", case.what);
        assert_eq!(trace(&pki, case), ran, "{}: trace answers like run", case.what);
    }
    assert!(backend.received().is_empty(), "no refused request reached the backend");
}
