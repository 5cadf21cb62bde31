//! Rate limits and quotas end to end: budgets in memory, and budgets two gateway processes
//! share through a real `redis-server` that is stopped and started again mid-test.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::client::Reply;
use support::pki::listener;
use support::redis::RedisServer;
use support::tokens::{now, SigningKey};
use support::{until, Client, Pki, TestBackend, TestGateway};

/// A gateway config whose routes `/NAME/` each run the policy NAME (after `jwt` for `user`).
fn config(backend: &str, policies: &str) -> String {
    let routes: String = policies
        .lines()
        .filter_map(|l| l.strip_prefix("  ").filter(|rest| !rest.starts_with(' '))?.split_once(':'))
        .map(|(name, _)| name)
        .filter(|name| *name != "portal-jwt")
        .map(|name| {
            let chain = if name == "user" { "[portal-jwt, user]".to_owned() } else { format!("[{name}]") };
            format!("  - {{ name: {name}, match: {{ path_prefix: /{name}/ }}, policies: {chain}, backend: app }}\n")
        })
        .collect();
    format!(
        "version: 1\nlisteners:{}admin: {{ bind: 127.0.0.1:0 }}\nbackends:\n  app: {{ urls: [\"{backend}\"] }}\npolicies:\n{policies}routes:\n{routes}",
        listener("", "")
    )
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(path).header("host", "localhost");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::default()).unwrap()
}

fn assert_limited(rsp: &Reply, kind: &str, why: &str) -> u64 {
    assert_eq!(rsp.status, 429, "{why}: {}", rsp.text());
    assert_eq!(rsp.problem_kind(), kind, "{why}");
    let retry: u64 = rsp.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{why}");
    assert!(rsp.header("ratelimit").unwrap().contains(";r=0;"), "{why}");
    retry
}

#[tokio::test]
async fn memory_budgets_refuse_with_retry_after_and_the_ietf_fields_and_spare_the_backend() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let key = SigningKey::new(Algorithm::ES256, "portal-1");
    pki.write("portal.pub.pem", &key.public_pem);
    let policies = r#"  ip: { rate_limit: { key: client_ip, rate: 3/min } }
  key: { rate_limit: { key: "header:X-Api-Key", quota: 2/day } }
  portal-jwt: { jwt: { issuers: [https://idp.test], audiences: [api://portal], algorithms: [ES256], keys: [portal.pub.pem] } }
  user: { rate_limit: { key: "claim:sub", rate: 2/h } }
  report: { mode: report, rate_limit: { key: client_ip, rate: 1/h } }
"#;
    let gw = TestGateway::start(&config(&backend.url(), policies), &pki);
    let client = Client::new(gw.addr("public"), &pki);

    // A rate per client address: three, then 429 that never reaches the backend.
    for left in [2, 1, 0] {
        let rsp = client.send(get("/ip/x", &[])).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text());
        assert_eq!(rsp.header("ratelimit-policy"), Some("\"ip\";q=3;w=60"));
        assert!(rsp.header("ratelimit").unwrap().starts_with(&format!("\"ip\";r={left};t=")));
    }
    let before = backend.received().len();
    let spoofed = [("x-forwarded-for", "203.0.113.9")];
    let retry = assert_limited(&client.send(get("/ip/x", &spoofed)).await, "rate-limited", "a spoofed X-Forwarded-For");
    assert!((1..=20).contains(&retry), "one request per 20 s: {retry}");
    assert_eq!(backend.received().len(), before, "the refused request never reached the backend");

    // A quota per API key: each key its own, a missing key one shared budget.
    for k in ["k1", "k1", "k2", "k2"] {
        assert_eq!(client.send(get("/key/x", &[("x-api-key", k)])).await.status, 200);
    }
    let rsp = client.send(get("/key/x", &[("x-api-key", "k1")])).await;
    let retry = assert_limited(&rsp, "quota-exceeded", "k1's daily quota");
    assert!(retry <= 86_400, "until midnight UTC: {retry}");
    assert_eq!(rsp.header("ratelimit-policy"), Some("\"key\";q=2;w=86400"));

    // Per token subject: another user has a budget of its own.
    let token = |sub: &str| {
        key.sign(&json!({ "iss": "https://idp.test", "aud": "api://portal", "sub": sub, "exp": now() + 600 }))
    };
    let (alice, bob) = (token("alice"), token("bob"));
    for _ in 0..2 {
        assert_eq!(client.send(get("/user/x", &[("authorization", &format!("Bearer {alice}"))])).await.status, 200);
    }
    let rsp = client.send(get("/user/x", &[("authorization", &format!("Bearer {alice}"))])).await;
    assert_limited(&rsp, "rate-limited", "alice's rate");
    assert_eq!(client.send(get("/user/x", &[("authorization", &format!("Bearer {bob}"))])).await.status, 200);

    // Report mode decides and counts, and lets the request through.
    assert_eq!(client.send(get("/report/x", &[])).await.status, 200);
    let rsp = client.send(get("/report/x", &[])).await;
    assert_eq!(rsp.status, 200, "report mode never refuses");
    assert!(rsp.header("ratelimit").unwrap().contains(";r=0;"));
    let series = |policy: &str, outcome: &str| {
        format!("portcullis_policy_decisions_total{{outcome=\"{outcome}\",policy=\"{policy}\"}}")
    };
    assert_eq!(gw.metric(&series("ip", "rate_limited")).await, 1);
    assert_eq!(gw.metric(&series("key", "quota_exceeded")).await, 1);
    assert_eq!(gw.metric(&series("report", "report_rate_limited")).await, 1);
}

// Deny on a store error (and a generous deadline for a loaded CI machine): a request the
// store did not decide shows as a 503, never as an allowed request beyond the budget.
const SHARED: &str = r#"  rate: { rate_limit: { key: route, rate: 100/h, store: "REDIS", on_store_error: deny, timeout: 2s } }
  quota: { rate_limit: { key: route, quota: 60/day, store: "REDIS", on_store_error: deny, timeout: 2s } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_budget_through_redis() {
    let redis = RedisServer::start();
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let config = pki.write("gateway.yaml", &config(&backend.url(), &SHARED.replace("REDIS", &redis.url())));
    let (one, two) = (TestGateway::start_file(config.clone()), TestGateway::start_file(config));
    let clients = [Client::new(one.addr("public"), &pki), Client::new(two.addr("public"), &pki)];

    for (path, budget, sent) in [("/rate/x", 100, 240), ("/quota/x", 60, 150)] {
        // Concurrent load on both instances at once, in waves of 16 (8 each), so that neither
        // can spend the whole budget before the other's first requests arrive (an instance
        // still connecting to Redis would otherwise see only refusals).
        let mut replies = Vec::with_capacity(sent);
        for wave in (0..sent).collect::<Vec<_>>().chunks(16) {
            let answers = futures_util::future::join_all(wave.iter().map(|i| clients[i % 2].send(get(path, &[]))));
            replies.extend(answers.await);
        }
        let allowed = replies.iter().filter(|r| r.status == 200).count();
        let refused = replies.iter().filter(|r| r.status == 429).count();
        let undecided = replies.iter().filter(|r| r.status == 503).count();
        assert_eq!(allowed + refused, sent, "{path}: every answer is 200 or 429 ({undecided} undecided by Redis)");
        let off = (allowed as f64 - f64::from(budget)).abs() / f64::from(budget);
        assert!(off <= 0.05, "{path}: {allowed} allowed of a shared budget of {budget}");
        let by_one = replies.iter().step_by(2).filter(|r| r.status == 200).count();
        assert!(by_one > 0 && by_one < allowed, "{path}: both instances spent the one budget ({by_one} of {allowed})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_stops_on_store_error_decides_and_traffic_recovers_when_it_is_back() {
    let mut redis = RedisServer::start();
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let policies = r#"  open: { rate_limit: { key: client_ip, rate: 1000/min, store: "REDIS", on_store_error: allow, timeout: 2s } }
  closed: { rate_limit: { key: client_ip, rate: 1000/min, store: "REDIS", on_store_error: deny, timeout: 2s } }
"#
    .replace("REDIS", &redis.url());
    let gw = TestGateway::start(&config(&backend.url(), &policies), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    for path in ["/open/x", "/closed/x"] {
        let rsp = client.send(get(path, &[])).await;
        assert_eq!(rsp.status, 200, "{path}: {}", rsp.text());
        assert!(rsp.header("ratelimit").is_some(), "{path}: decided by Redis");
    }

    redis.stop();
    for _ in 0..5 {
        let open = client.send(get("/open/x", &[])).await;
        assert_eq!(open.status, 200, "on_store_error: allow lets requests through");
        assert!(open.header("ratelimit").is_none(), "no budget is reported when none was checked");
        let closed = client.send(get("/closed/x", &[])).await;
        assert_eq!(closed.status, 503, "{}", closed.text());
        assert_eq!(closed.problem_kind(), "rate-limit-unavailable");
        assert_eq!(closed.header("retry-after"), Some("1"));
    }
    let errors = |policy: &str| format!("portcullis_rate_limit_store_errors_total{{policy=\"{policy}\"}}");
    assert_eq!(gw.metric(&errors("open")).await, 5);
    assert_eq!(gw.metric(&errors("closed")).await, 5);
    let outages = gw.log_text().matches("rate-limit store unavailable").count();
    assert_eq!(outages, 2, "logged once per policy and outage, not per request:\n{}", gw.log_text());

    redis.resume();
    until("requests are decided by Redis again", async || client.send(get("/closed/x", &[])).await.status == 200).await;
    let rsp = client.send(get("/open/x", &[])).await;
    assert!(rsp.header("ratelimit").is_some(), "the open policy is decided by Redis again");
    until("the recovery is logged", async || gw.log_text().contains("rate-limit store reachable again")).await;
}

#[tokio::test]
async fn rediss_verifies_the_server_against_the_configured_cas() {
    let pki = Pki::new();
    let redis = RedisServer::start_tls(&pki);
    let backend = TestBackend::start().await;
    let url = format!("rediss://localhost:{}", redis.port);
    let policies = format!(
        r#"  trusted: {{ rate_limit: {{ key: client_ip, rate: 2/h, store: "{url}", trusted_cas: ca.pem, on_store_error: deny, timeout: 2s }} }}
  stranger: {{ rate_limit: {{ key: client_ip, rate: 2/h, store: "{url}", trusted_cas: client-ca.pem, on_store_error: deny, timeout: 2s }} }}
"#
    );
    let gw = TestGateway::start(&config(&backend.url(), &policies), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    for _ in 0..2 {
        let rsp = client.send(get("/trusted/x", &[])).await;
        assert_eq!(rsp.status, 200, "{}", rsp.text());
    }
    assert_limited(&client.send(get("/trusted/x", &[])).await, "rate-limited", "the budget kept in Redis over TLS");
    let rsp = client.send(get("/stranger/x", &[])).await;
    assert_eq!(rsp.status, 503, "a server certificate from a CA not listed is refused: {}", rsp.text());
}

#[test]
fn check_refuses_a_claim_key_without_a_jwt_policy_before_it() {
    let pki = Pki::new();
    let yaml = config("http://127.0.0.1:9", "  user: { rate_limit: { key: \"claim:sub\", rate: 2/h } }\n")
        .replace("policies: [portal-jwt, user]", "policies: [user]");
    let file = pki.write("check.yaml", &yaml);
    let out =
        std::process::Command::new(support::gateway::binary()).args(["check", "--config"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    let line = yaml.lines().position(|l| l.contains("name: user")).unwrap() + 1;
    assert!(text.contains(&format!("check.yaml:{line}:")), "{text}");
    assert!(text.contains("rate_limit policy \"user\" has no jwt policy before it"), "{text}");
}
