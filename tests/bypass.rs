//! The classes of the adversarial review, end to end: each attack in its spellings against
//! the real gateway and a recording backend, beside the legitimate form that must keep
//! working; and `trace` answering like `run` for the same requests.
//!
//! The test client connects from 127.0.0.1, which this configuration trusts as a proxy: the
//! "proxy network" an `ip_filter` allows, as behind Azure Application Gateway.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use bytes::Bytes;
use http::{HeaderName, Method, Request};
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::client::Reply;
use support::gateway::binary;
use support::pki::listener;
use support::tokens::{now, SigningKey};
use support::{until, Client, Pki, TestBackend, TestGateway};

struct Env {
    pki: Pki,
    backend: TestBackend,
    gw: TestGateway,
    client: Client,
    key: SigningKey,
}

fn config(backend: &str, forwarded_header: &str) -> String {
    format!(
        r#"version: 1
listeners:{listener}
trusted_proxies: [127.0.0.1/32]
forwarded_header: {forwarded_header}
backends:
  app: {{ urls: ["{backend}"] }}
policies:
  office: {{ ip_filter: {{ allow: [127.0.0.0/8, 203.0.113.0/24] }} }}
  portal-jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portal], algorithms: [ES256], keys: [portal.pub.pem], forward_claims: {{ sub: X-User-Id }} }} }}
  query-jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portal], algorithms: [ES256], keys: [portal.pub.pem], token_from: "query:jwt" }} }}
  readers:
    authorize:
      roles_claim: roles
      rules:
        - {{ name: account, roles: [Partner], scope: account, path_param: account, claim: account_id, actions: [read] }}
        - {{ name: admins, roles: [Admin], scope: global, actions: [read, create, update, delete] }}
routes:
  - {{ name: office, match: {{ path_prefix: /office }}, policies: [office], backend: app }}
  - {{ name: accounts, match: {{ path: "/accounts/{{account}}/**" }}, policies: [portal-jwt, readers], backend: app }}
  - {{ name: legacy, match: {{ path: "/legacy/{{account}}/**" }}, policies: [portal-jwt, readers], backend: app, method_override: X-HTTP-Method-Override }}
  - {{ name: items-delete, match: {{ path_prefix: /items, methods: [DELETE] }}, policies: [portal-jwt], backend: app }}
  - {{ name: files, match: {{ path_prefix: /files }}, backend: app, path_parameters: strip }}
  - {{ name: query, match: {{ path_prefix: /query }}, policies: [query-jwt], backend: app }}
  - {{ name: public, match: {{}}, backend: app }}
"#,
        listener = listener("", ""),
    )
}

async fn setup(forwarded_header: &str) -> Env {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let key = SigningKey::new(Algorithm::ES256, "portal-1");
    pki.write("portal.pub.pem", &key.public_pem);
    let gw = TestGateway::start(&config(&backend.url(), forwarded_header), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    Env { pki, backend, gw, client, key }
}

fn token(key: &SigningKey, roles: &[&str], account: &str) -> String {
    key.sign(&json!({
        "iss": "https://idp.test", "aud": "api://portal", "sub": "user-7", "exp": now() + 600,
        "roles": roles, "account_id": account,
    }))
}

impl Env {
    async fn call(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(target)
            .header("host", "localhost");
        for (name, value) in headers {
            req = req.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), *value);
        }
        self.client.send(req.body(Full::<Bytes>::default()).unwrap()).await
    }

    /// Sends the request and asserts its status, and whether the backend saw it.
    async fn expect(&self, method: &str, target: &str, headers: &[(&str, &str)], status: u16) -> Reply {
        let before = self.backend.received().len();
        let rsp = self.call(method, target, headers).await;
        assert_eq!(rsp.status, status, "{method} {target} {headers:?}: {}", rsp.text());
        let forwarded = self.backend.received().len() - before;
        assert_eq!(forwarded, usize::from(status == 200), "{method} {target}: forwarded {forwarded} times");
        rsp
    }

    /// POST to the route that passes `X-HTTP-Method-Override`, asking for `method`.
    async fn overriding(&self, auth: &str, method: &str, status: u16) {
        let headers = [("authorization", auth), ("x-http-method-override", method)];
        self.expect("POST", "/legacy/7/cases", &headers, status).await;
    }

    /// `portcullis trace` for the same request from the client's address.
    fn trace(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        let mut cmd = std::process::Command::new(binary());
        cmd.args(["trace", "--config"]).arg(self.pki.path("gateway.yaml")).args(["-X", method]);
        for (name, value) in headers {
            cmd.args(["-H", &format!("{name}: {value}")]);
        }
        let out = cmd.arg(format!("https://localhost{target}")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

/// Application Gateway writes `IP:port`: the client behind it must be read, never the proxy.
#[tokio::test]
async fn client_addresses_with_ports_are_read_and_unreadable_ones_refused() {
    let env = setup("x-forwarded-for").await;
    env.expect("GET", "/office/x", &[], 200).await;
    for outsider in ["198.51.100.7:4711", "[2001:db8::7]:443", "[2001:db8::7]", "198.51.100.7, 127.0.0.1:80"] {
        let rsp = env.expect("GET", "/office/x", &[("x-forwarded-for", outsider)], 403).await;
        assert_eq!(rsp.problem_kind(), "ip-rejected", "{outsider}");
    }
    for garbage in ["unknown", "_hidden", "198.51.100.7:99999", "fe80::1%eth0", "client.example"] {
        let rsp = env.expect("GET", "/office/x", &[("x-forwarded-for", garbage)], 400).await;
        assert!(rsp.text().contains("not an IP address"), "{garbage}: {}", rsp.text());
    }
    env.expect("GET", "/office/x", &[("x-forwarded-for", "203.0.113.5:1234"), ("forwarded", "for=6.6.6.6")], 200).await;
    let seen = env.backend.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.5:1234, 127.0.0.1");
    assert!(!seen.headers.contains_key("forwarded"), "Forwarded never reaches the backend in this mode");
    let trace = env.trace("GET", "/office/x", &[("X-Forwarded-For", "198.51.100.7:4711")]);
    assert!(trace.contains("final: 403"), "trace answers like run: {trace}");
    let trace = env.trace("GET", "/office/x", &[("X-Forwarded-For", "unknown")]);
    assert!(trace.contains("final: 400"), "trace answers like run: {trace}");
}

/// `forwarded_header: forwarded` reads RFC 7239 `for=` nodes, and ignores X-Forwarded-For.
#[tokio::test]
async fn the_standard_forwarded_header_is_read_when_configured() {
    let env = setup("forwarded").await;
    let from = |value: &'static str| [("forwarded", value), ("x-forwarded-for", "203.0.113.9")];
    env.expect("GET", "/office/x", &from("for=\"[2001:db8::7]:4711\";proto=https"), 403).await;
    env.expect("GET", "/office/x", &from("for=198.51.100.7, for=127.0.0.1"), 403).await;
    env.expect("GET", "/office/x", &from("for=unknown"), 400).await;
    env.expect("GET", "/office/x", &from("proto=https"), 400).await;
    env.expect("GET", "/office/x", &from("for=203.0.113.5:80"), 200).await;
    let seen = env.backend.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.5:80, 127.0.0.1");
    assert!(!seen.headers.contains_key("forwarded"));
}

/// Tomcat, Jetty and Spring strip `;…` before resolving `..`: `/accounts/7/..;/8` is account 8.
#[tokio::test]
async fn matrix_parameters_never_bind_or_climb() {
    let env = setup("x-forwarded-for").await;
    let seven = format!("Bearer {}", token(&env.key, &["Partner"], "7"));
    let auth = [("authorization", seven.as_str())];
    env.expect("GET", "/accounts/7/cases", &auth, 200).await;
    for attack in [
        "/accounts/7/..;/8/cases",
        "/accounts/7/%2e%2e;/8/cases",
        "/accounts/7/.%2E;x=1/../8/cases",
        "/accounts/7/..%3B/8/cases",
    ] {
        let rsp = env.expect("GET", attack, &auth, 400).await;
        assert!(rsp.text().contains("'..' segment followed by ';'"), "{attack}: {}", rsp.text());
    }
    // Parameters elsewhere: the route refuses them rather than falling through to `public`.
    for attack in ["/accounts/7;x=8/cases", "/accounts;x/7/cases", "/accounts/8;/cases"] {
        let rsp = env.expect("GET", attack, &auth, 400).await;
        assert!(rsp.text().contains("path parameters"), "{attack}: {}", rsp.text());
    }
    env.expect("GET", "/files/a;v=1/b;jsessionid=9", &[], 200).await;
    assert_eq!(env.backend.last().target, "/files/a/b", "a route that strips them forwards the path without them");
    let trace = env.trace("GET", "/accounts/7/..;/8/cases", &[("Authorization", &seven)]);
    assert!(trace.contains("final: 400"), "trace answers like run: {trace}");
}

/// ASP.NET Core and Express read `delete` as DELETE: it must not skip the DELETE route.
#[tokio::test]
async fn methods_differing_only_in_case_are_refused() {
    let env = setup("x-forwarded-for").await;
    env.expect("DELETE", "/items/1", &[], 401).await;
    for method in ["delete", "Delete", "dELETE", "get", "purge"] {
        let rsp = env.expect(method, "/items/1", &[], 400).await;
        assert!(rsp.text().contains("methods are case-sensitive"), "{method}: {}", rsp.text());
    }
    env.expect("GET", "/items/1", &[], 200).await;
    let trace = env.trace("delete", "/items/1", &[]);
    assert!(trace.contains("final: 400") && trace.contains("case-sensitive"), "trace answers like run: {trace}");
}

/// CGI-style servers read `X_User_Id` as the `X-User-Id` the gateway vouches for; override
/// headers make the backend execute what the gateway never checked.
#[tokio::test]
async fn look_alike_and_override_headers_never_reach_the_backend() {
    let env = setup("x-forwarded-for").await;
    let seven = format!("Bearer {}", token(&env.key, &["Partner"], "7"));
    let spoofed = [
        ("authorization", seven.as_str()),
        ("x_user_id", "admin"),
        ("x-user_id", "admin"),
        ("x_forwarded_for", "10.0.0.1"),
        ("x_request_id", "chosen"),
        ("x-http-method-override", "DELETE"),
        ("x_http_method_override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-kept", "1"),
    ];
    env.expect("GET", "/accounts/7/cases", &spoofed, 200).await;
    let seen = env.backend.last();
    let mut names: Vec<&str> = seen.headers.keys().map(HeaderName::as_str).filter(|n| n.starts_with("x")).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-kept", "x-request-id", "x-user-id"],
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers["x-user-id"], "user-7");

    // A route that passes the override: authorize decides on the method the backend runs.
    let admin = format!("Bearer {}", token(&env.key, &["Admin"], ""));
    env.overriding(&seven, "DELETE", 403).await;
    env.overriding(&admin, "DELETE", 200).await;
    assert_eq!(env.backend.last().headers["x-http-method-override"], "DELETE", "passed on this route");
    for bad in ["delete", "DELETE, GET", ""] {
        env.overriding(&admin, bad, 400).await;
    }
    env.expect("GET", "/legacy/7/cases", &[("authorization", &seven), ("x-http-method", "DELETE")], 200).await;
    assert!(!env.backend.last().headers.contains_key("x-http-method"), "only the named override passes");
}

/// A token read from `?jwt=` is a credential whatever its parameter is called, and in every
/// spelling the reader decodes.
#[tokio::test]
async fn credentials_are_redacted_by_the_name_they_are_read_from() {
    let env = setup("x-forwarded-for").await;
    let t = token(&env.key, &["Partner"], "7");
    env.expect("GET", &format!("/query/a?jwt={t}&page=2"), &[], 200).await;
    env.expect("GET", &format!("/query/b?%6Awt={t}&page=3"), &[], 200).await;
    env.expect("GET", &format!("/public?%74oken={t}"), &[], 200).await;
    until("the access-log lines", async || env.gw.log_text().contains("%74oken")).await;
    let logs = env.gw.log_text();
    assert!(!logs.contains(&t), "the token is in the log: {logs}");
    assert!(logs.contains("jwt=[redacted]&page=2") && logs.contains("%6Awt=[redacted]&page=3"), "{logs}");
    assert!(logs.contains("%74oken=[redacted]"), "{logs}");
}
