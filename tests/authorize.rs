//! Scoped authorization and several identity providers, end to end: real tokens for two
//! accounts, two contacts of account A, an administrator and callers without roles, against
//! the real gateway and a real backend that records what reached it.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
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

fn config(backend: &str) -> String {
    format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: 127.0.0.1:0 }}
backends:
  app: {{ urls: ["{backend}"] }}
policies:
  portal-jwt: {{ jwt: {{ issuers: [https://idp.test], audiences: [api://portal], algorithms: [ES256], keys: [portal.pub.pem] }} }}
  partner-access:
    authorize:
      roles_claim: roles
      rules:
        - {{ name: admins, roles: [Partner.Admin], scope: global, actions: [read, create, update, delete] }}
        - {{ name: account, roles: [Partner], scope: account, path_param: account, claim: account_id, actions: [read] }}
        - {{ name: uploads, roles: [Partner.Uploader], scope: parental, parent: account, actions: [create] }}
        - {{ name: purgers, roles: [Partner.Admin], scope: global, methods: [PURGE] }}
  contact-access:
    authorize:
      roles_claim: realm_access.roles
      rules:
        - {{ name: own, roles: [Partner.Contact], scope: contact, path_param: contact, claim: contact_id, actions: [read, update] }}
routes:
  - {{ name: contacts, match: {{ path: "/accounts/{{account}}/contacts/{{contact}}/**" }}, policies: [portal-jwt, contact-access], backend: app }}
  - {{ name: accounts, match: {{ path: "/accounts/{{account}}/**" }}, policies: [portal-jwt, partner-access], backend: app }}
"#,
        listener = listener("", ""),
    )
}

async fn setup() -> Env {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let key = SigningKey::new(Algorithm::ES256, "portal-1");
    pki.write("portal.pub.pem", &key.public_pem);
    let gw = TestGateway::start(&config(&backend.url()), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    Env { pki, backend, gw, client, key }
}

/// A portal token with these extra claims.
fn token(key: &SigningKey, extra: Value) -> String {
    let mut claims = json!({ "iss": "https://idp.test", "aud": "api://portal", "sub": "user", "exp": now() + 600 });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    key.sign(&claims)
}

impl Env {
    async fn call(&self, method: &str, path: &str, token: &str) -> Reply {
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        self.client.send(req).await
    }

    /// Sends the request; asserts it was allowed and reached the backend as `path`.
    async fn allowed(&self, method: &str, path: &str, token: &str, why: &str) {
        let before = self.backend.received().len();
        let rsp = self.call(method, path, token).await;
        assert_eq!(rsp.status, 200, "{why}: {method} {path}: {}", rsp.text());
        let received = self.backend.received();
        assert_eq!(received.len(), before + 1, "{why}: the backend got it");
        assert_eq!(received.last().unwrap().method, method, "{why}");
    }

    /// Sends the request; asserts a 403 problem that names no rule, and that the backend never
    /// saw it.
    async fn forbidden(&self, method: &str, path: &str, token: &str, why: &str) {
        let before = self.backend.received().len();
        let rsp = self.call(method, path, token).await;
        assert_eq!(rsp.status, 403, "{why}: {method} {path}: {}", rsp.text());
        if method != "HEAD" {
            assert_eq!(rsp.problem_kind(), "forbidden", "{why}");
            let text = rsp.text();
            for internal in ["admins", "account_id", "contact_id", "Partner", "uploads", "roles"] {
                assert!(!text.contains(internal), "{why}: the problem names {internal}: {text}");
            }
        }
        assert_eq!(self.backend.received().len(), before, "{why}: the backend never saw it");
    }
}

#[tokio::test]
async fn accounts_reach_only_their_own_records_for_the_actions_granted() {
    let env = setup().await;
    let k = &env.key;
    let partner_a = token(k, json!({ "roles": ["Partner"], "account_id": "A" }));
    let partner_b = token(k, json!({ "roles": ["Partner"], "account_id": "B" }));
    let admin = token(k, json!({ "roles": ["Partner.Admin"] }));

    env.allowed("GET", "/accounts/A/cases/7", &partner_a, "own account, read").await;
    env.allowed("HEAD", "/accounts/A/cases/7", &partner_a, "HEAD is read").await;
    env.forbidden("GET", "/accounts/B/cases/7", &partner_a, "account A reaching for B").await;
    env.allowed("GET", "/accounts/B/cases/7", &partner_b, "account B on its own").await;
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        env.forbidden(method, "/accounts/A/cases/7", &partner_a, "the account rule grants read only").await;
        env.allowed(method, "/accounts/B/cases/7", &admin, "an admin may do everything").await;
    }
    env.allowed("GET", "/accounts/Z/cases", &admin, "admin: every record").await;
    env.allowed("PURGE", "/accounts/A/cache", &admin, "a method named directly").await;
    env.forbidden("PURGE", "/accounts/A/cache", &partner_a, "PURGE is granted to admins only").await;
    env.forbidden("OPTIONS", "/accounts/A/cases", &admin, "OPTIONS is no action: left to cors").await;

    // The log and the metrics name the rule and the reason.
    until("access-log lines", async || env.gw.log_text().contains("\"rule\":\"purgers\"")).await;
    let logs = env.gw.log_text();
    assert!(logs.contains(r#""policy":"partner-access","outcome":"allowed","rule":"account""#), "{logs}");
    assert!(logs.contains(r#""policy":"partner-access","outcome":"not_granted""#), "{logs}");
    let denied = r#"portcullis_policy_decisions_total{outcome="not_granted",policy="partner-access"}"#;
    assert_eq!(env.gw.metric(denied).await, 7);
}

#[tokio::test]
async fn ids_compare_exactly_and_path_spellings_cannot_reach_another_record() {
    let env = setup().await;
    let k = &env.key;
    let acct = |id: Value| token(k, json!({ "roles": ["Partner"], "account_id": id }));
    let (four, zero_42, forty_two) = (acct(json!("4")), acct(json!("042")), acct(json!("42")));

    env.allowed("GET", "/accounts/42/cases", &forty_two, "the exact id").await;
    env.allowed("GET", "/accounts/42/cases", &acct(json!(42)), "an integer claim in its canonical form").await;
    env.forbidden("GET", "/accounts/42/cases", &four, "a prefix of the id").await;
    env.forbidden("GET", "/accounts/42/cases", &zero_42, "a zero-padded look-alike").await;
    env.forbidden("GET", "/accounts/042/cases", &forty_two, "the padded path is another record").await;
    env.forbidden("GET", "/accounts/42/cases", &acct(json!("42 ")), "trailing space").await;
    env.forbidden("GET", "/accounts/42/cases", &acct(json!(["4", "2"])), "array elements are whole ids").await;
    env.forbidden("GET", "/accounts/42/cases", &acct(json!([["42"]])), "nested arrays hold nothing").await;
    env.forbidden("GET", "/accounts/42/cases", &acct(json!({ "id": "42" })), "an object holds nothing").await;
    env.forbidden("GET", "/accounts/42/cases", &acct(json!(42.0)), "a float is not an id").await;

    // Every spelling is normalized before the parameter is read (DESIGN §3).
    env.forbidden("GET", "/accounts/4/../42/cases", &four, "dot segments resolve to 42").await;
    env.forbidden("GET", "/accounts/4%32/cases", &four, "4%32 is 42").await;
    env.allowed("GET", "/accounts/%34%32/cases", &forty_two, "%34%32 is 42").await;
    assert_eq!(env.backend.last().target, "/accounts/42/cases", "the backend sees the normalized record");
    env.allowed("GET", "/accounts/4/./x/../cases", &four, "dot segments inside own record").await;
    for bypass in ["/accounts/4%2F..%2F42/cases", "/accounts/4%2f42/cases", "/accounts/4%5C..%5C42/cases"] {
        let rsp = env.call("GET", bypass, &four).await;
        assert_eq!(rsp.status, 400, "{bypass}: {}", rsp.text());
    }

    // Arrays grant by membership.
    let both = acct(json!(["A", "C"]));
    env.allowed("GET", "/accounts/A/x", &both, "first of the array").await;
    env.allowed("GET", "/accounts/C/x", &both, "second of the array").await;
    env.forbidden("GET", "/accounts/B/x", &both, "not in the array").await;
}

#[tokio::test]
async fn contacts_reach_only_their_own_records_through_a_nested_roles_claim() {
    let env = setup().await;
    let k = &env.key;
    let contact = |id: &str| {
        token(k, json!({ "realm_access": { "roles": ["Partner.Contact"] }, "account_id": "A", "contact_id": id }))
    };
    let (c1, c2) = (contact("c-1"), contact("c-2"));
    env.allowed("GET", "/accounts/A/contacts/c-1/profile", &c1, "own contact record").await;
    env.allowed("PATCH", "/accounts/A/contacts/c-1/profile", &c1, "update own").await;
    env.forbidden("DELETE", "/accounts/A/contacts/c-1/profile", &c1, "delete is not granted").await;
    env.forbidden("GET", "/accounts/A/contacts/c-2/profile", &c1, "another contact of the same account").await;
    env.allowed("GET", "/accounts/A/contacts/c-2/profile", &c2, "that contact itself").await;
    env.forbidden("GET", "/accounts/A/contacts/c-10/profile", &c1, "a look-alike contact id").await;
    let top_level = token(k, json!({ "roles": ["Partner.Contact"], "contact_id": "c-1" }));
    env.forbidden("GET", "/accounts/A/contacts/c-1/profile", &top_level, "the roles are read from realm_access.roles")
        .await;
}

#[tokio::test]
async fn parental_grants_need_the_parent_grant() {
    let env = setup().await;
    let k = &env.key;
    let path = "/accounts/A/cases/7/downloads/report.pdf";
    let uploader_a = token(k, json!({ "roles": ["Partner", "Partner.Uploader"], "account_id": "A" }));
    env.allowed("POST", path, &uploader_a, "child role, and the parent rule grants account A").await;
    until("the deciding rule in the access log", async || env.gw.log_text().contains("\"rule\":\"uploads\"")).await;

    let uploader_only = token(k, json!({ "roles": ["Partner.Uploader"], "account_id": "A" }));
    env.forbidden("POST", path, &uploader_only, "the parent rule needs the Partner role").await;
    let uploader_b = token(k, json!({ "roles": ["Partner", "Partner.Uploader"], "account_id": "B" }));
    env.forbidden("POST", path, &uploader_b, "the parent record is account A's").await;
    let partner_a = token(k, json!({ "roles": ["Partner"], "account_id": "A" }));
    env.forbidden("POST", path, &partner_a, "the parent grant alone grants no create").await;
    env.forbidden("DELETE", path, &uploader_a, "the child rule grants create only").await;
}

#[tokio::test]
async fn missing_or_malformed_roles_are_denials() {
    let env = setup().await;
    let k = &env.key;
    for (roles, why) in [
        (json!(null), "null roles"),
        (json!(5), "a number"),
        (json!({ "Partner.Admin": true }), "an object"),
        (json!(["Partner.Admin", 5]), "an array with a non-string"),
        (json!(""), "an empty string"),
        (json!("Partner.Admin Partner"), "a string is one role, not a list"),
    ] {
        env.forbidden("GET", "/accounts/A/x", &token(k, json!({ "roles": roles, "account_id": "A" })), why).await;
    }
    env.forbidden("GET", "/accounts/A/x", &token(k, json!({ "account_id": "A" })), "no roles claim").await;
    env.allowed("GET", "/accounts/A/x", &token(k, json!({ "roles": "Partner.Admin" })), "one role as a string").await;
    let rsp =
        env.client.send(Request::get("/accounts/A/x").header("host", "localhost").body(Full::default()).unwrap()).await;
    assert_eq!(rsp.status, 401, "no token: the jwt policy answers first");
    let roles_missing = r#"portcullis_policy_decisions_total{outcome="roles_missing",policy="partner-access"}"#;
    assert_eq!(env.gw.metric(roles_missing).await, 5, "null, a number, an object, a mixed array, absent");
}

#[tokio::test]
async fn report_mode_and_trace_name_the_deciding_rule() {
    let env = setup().await;
    let yaml = config(&env.backend.url()).replace("  partner-access:\n", "  partner-access:\n    mode: report\n");
    let config = env.pki.write("report.yaml", &yaml);
    let partner_a = token(&env.key, json!({ "roles": ["Partner"], "account_id": "A" }));
    let trace = |path: &str| {
        let out = std::process::Command::new(binary())
            .args(["trace", "--config"])
            .arg(&config)
            .args(["--token", &partner_a, "-X", "GET", path])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let own = trace("https://localhost/accounts/A/cases");
    assert!(own.contains("partner-access (authorize): allowed by rule account"), "{own}");
    let other = trace("https://localhost/accounts/B/cases");
    assert!(other.contains("partner-access (authorize): denied: not_granted (report mode: not enforced)"), "{other}");
    assert!(other.contains("final: forwarded"), "report mode lets it through: {other}");
    assert!(!other.contains(&partner_a), "trace never echoes the token");
}

/// Runs `portcullis check` on `yaml`; its combined output.
fn check(pki: &Pki, yaml: &str) -> (bool, String) {
    let config = pki.write("check.yaml", yaml);
    let out = std::process::Command::new(binary()).args(["check", "--config"]).arg(&config).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn check_refuses_rules_the_routes_cannot_satisfy_at_their_location() {
    let env = setup().await;
    let base = config(&env.backend.url());
    let (ok, out) = check(&env.pki, &base);
    assert!(ok, "the test configuration is valid: {out}");

    // A route without the {account} parameter the rules compare; a route without a jwt policy.
    let broken = base.clone()
        + "  - { name: flat, match: { path_prefix: /flat/ }, policies: [portal-jwt, partner-access], backend: app }\n"
        + "  - { name: nojwt, match: { path: \"/x/{account}/**\" }, policies: [partner-access], backend: app }\n";
    let (ok, out) = check(&env.pki, &broken);
    assert!(!ok, "{out}");
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let flat = format!("check.yaml:{}:", line_of("name: flat"));
    assert!(out.contains(&flat) && out.contains("route \"flat\" has no path parameter {account}, which rule \"account\" of policy \"partner-access\" compares"), "{out}");
    assert_eq!(out.matches("has no path parameter").count(), 1, "one message for one mistake: {out}");
    let nojwt = format!("check.yaml:{}:", line_of("name: nojwt"));
    assert!(
        out.contains(&nojwt) && out.contains("authorize policy \"partner-access\" has no jwt policy before it"),
        "{out}"
    );

    // Unknown action and scope, a parent that is not an earlier rule: each at its own line.
    for (from, to, message) in [
        ("actions: [read] }", "actions: [reed] }", "unknown action \"reed\""),
        ("scope: global, actions: [read, create", "scope: world, actions: [read, create", "unknown scope \"world\""),
        ("parent: account", "parent: nobody", "no earlier rule is named \"nobody\""),
    ] {
        let yaml = base.replacen(from, to, 1);
        let (ok, out) = check(&env.pki, &yaml);
        let at = format!("check.yaml:{}:", line_of(from));
        assert!(!ok && out.contains(message) && out.contains(&at), "{message} at {at}: {out}");
    }
}
