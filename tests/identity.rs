//! The token issuer end to end: systems, users and links made with the real CLI, tokens
//! asked for over real TLS, verified by the gateway's own `jwt` policy (`issuers: [self]`)
//! and by an outside verifier from the published JWKS; every refusal, secret rotation,
//! rate limits, and the audit log.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::client::Reply;
use support::gateway::binary;
use support::pki::listener;
use support::tokens::{self, SigningKey};
use support::{Client, Pki, TestBackend, TestGateway};

/// Runs `portcullis ARGS --config CONFIG --actor ci-bot`; panics unless it succeeds.
fn cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--actor", "ci-bot"])
        .output()
        .expect("run portcullis");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "portcullis {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The value after `label:` on its line.
fn field(text: &str, label: &str) -> String {
    let line = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label} in {text}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

struct CreatedSystem {
    id: String,
    primary: String,
    alternate: String,
}

fn create_system(config: &Path, name: &str) -> CreatedSystem {
    create_system_with(config, name, &[])
}

/// `systems create NAME` with more arguments, like `--scopes read`.
fn create_system_with(config: &Path, name: &str, more: &[&str]) -> CreatedSystem {
    let out = cli(config, &[&["systems", "create", name][..], more].concat());
    CreatedSystem {
        id: field(&out, "client id"),
        primary: field(&out, "primary secret"),
        alternate: field(&out, "alternate secret"),
    }
}

/// A signing key file, like `certs dev` makes (PKCS#8 PEM).
fn write_signing_key(pki: &Pki, alg: &'static rcgen::SignatureAlgorithm) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    pki.write("signing-key.pem", &key.serialize_pem());
}

/// A gateway with the issuer on `public`, an `/api/` route behind `issuers: [self]`, and
/// the store in `var/identity.db`. `rate_limit` is a YAML flow mapping.
fn config(backend: &TestBackend, rate_limit: &str) -> String {
    format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: "127.0.0.1:0" }}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  own-tokens:
    jwt:
      issuers: [self]
      audiences: [api://portal]
      forward_claims: {{ sub: X-User-Id, roles: X-User-Roles, client_id: X-Client-Id }}
  by-url:
    jwt: {{ issuers: ["https://login.test/"], audiences: [api://portal] }}
  portal-or-system:
    jwt:
      providers:
        - {{ issuers: [https://idp.test], audiences: [api://portal], algorithms: [ES256], keys: [portal.pub.pem], forward_claims: {{ sub: X-Portal-User }} }}
        - {{ issuers: [self], forward_claims: {{ client_id: X-Client-Id }} }}
routes:
  - {{ name: both, match: {{ path_prefix: /both/ }}, policies: [portal-or-system], backend: app }}
  - {{ name: api, match: {{ path_prefix: /api/ }}, policies: [own-tokens], backend: app }}
  - {{ name: by-url, match: {{ path_prefix: /by-url/ }}, policies: [by-url], backend: app }}
identity:
  listener: public
  issuer: https://login.test
  audience: api://portal
  signing_key: signing-key.pem
  token_ttl: 5m
  store: sqlite:var/identity.db
  scopes: [read, write]
  rate_limit: {rate_limit}
"#,
        listener = listener("", ""),
        url = backend.url(),
    )
}

/// The portal's identity provider: its tokens reach `/both/` beside the gateway's own.
fn portal_key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SigningKey::new(jsonwebtoken::Algorithm::ES256, "portal-1"))
}

struct Setup {
    /// Holds the directory with the certificates, the configuration and the store.
    pki: Pki,
    backend: TestBackend,
    gw: TestGateway,
    client: Client,
}

async fn setup(alg: &'static rcgen::SignatureAlgorithm, rate_limit: &str) -> Setup {
    let pki = Pki::new();
    write_signing_key(&pki, alg);
    pki.write("portal.pub.pem", &portal_key().public_pem);
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&config(&backend, rate_limit), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    Setup { pki, backend, gw, client }
}

const GENEROUS: &str = "{ failures_per_ip: 1000/min, failures_per_client: 1000/min, issued_per_client: 1000/min }";

/// HTTP Basic client credentials: client id and secret.
type Basic<'a> = Option<(&'a str, &'a str)>;

/// POSTs a token request: `form` as the body, HTTP Basic when `basic` is given.
async fn token_request(client: &Client, form: &str, basic: Basic<'_>) -> Reply {
    let mut req = Request::post("/oauth2/token")
        .header("host", "login.test")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        req = req.header("authorization", format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
    }
    client.send(req.body(Full::new(Bytes::from(form.to_owned()))).unwrap()).await
}

fn claims_of(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (decode(), decode())
}

async fn api(client: &Client, token: &str) -> Reply {
    get_with_token(client, "/api/items", token).await
}

async fn get_with_token(client: &Client, path: &str, token: &str) -> Reply {
    let req = Request::get(path).header("host", "localhost").header("authorization", format!("Bearer {token}"));
    client.send(req.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn issued_tokens_pass_the_gateways_own_jwt_policy_and_an_outside_verifier() {
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, GENEROUS).await;
    let system = create_system_with(&s.gw.config, "billing", &["--scopes", "read"]);
    cli(&s.gw.config, &["users", "add", "alice", "--roles", "Reader,Writer"]);
    cli(&s.gw.config, &["systems", "link", &system.id, "--external-user", "ext-alice", "--user", "alice"]);

    // Basic authentication, a named user, a scope.
    let rsp = token_request(
        &s.client,
        "grant_type=client_credentials&user=ext-alice&scope=read",
        Some((&system.id, &system.primary)),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.header("cache-control"), Some("no-store"));
    assert_eq!(rsp.header("content-type"), Some("application/json"));
    let body = rsp.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "read");
    assert!(body.get("refresh_token").is_none(), "no refresh token for client credentials");
    let token = body["access_token"].as_str().unwrap();
    let (header, claims) = claims_of(token);
    assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some("ES256"), Some("at+jwt")));
    assert_eq!(claims["iss"], "https://login.test");
    assert_eq!(claims["aud"], "api://portal");
    assert_eq!(claims["sub"], "alice", "the internal user, not the external id");
    assert_eq!(claims["client_id"], system.id.as_str());
    assert_eq!(claims["roles"], serde_json::json!(["Reader", "Writer"]));
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    // The gateway's own policy accepts it and forwards the claims.
    let rsp = api(&s.client, token).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let seen = s.backend.last();
    assert_eq!(seen.headers.get("x-user-id").map(|v| v.to_str().unwrap()), Some("alice"));
    assert_eq!(seen.headers.get("x-user-roles").map(|v| v.to_str().unwrap()), Some("Reader,Writer"));
    assert_eq!(seen.headers.get("x-client-id").map(|v| v.to_str().unwrap()), Some(system.id.as_str()));
    // Naming the issuer by its URL (and no keys) is the same as `self`.
    assert_eq!(get_with_token(&s.client, "/by-url/x", token).await.status, 200);

    // An outside verifier: discovery → JWKS → the key named by `kid`.
    let get = |path: &str| Request::get(path).header("host", "login.test").body(Full::default()).unwrap();
    let discovery = s.client.send(get("/.well-known/openid-configuration")).await.json();
    assert_eq!(discovery["issuer"], "https://login.test");
    assert_eq!(discovery["token_endpoint"], "https://login.test/oauth2/token");
    assert_eq!(discovery["grant_types_supported"], serde_json::json!(["client_credentials"]));
    let jwks_path = discovery["jwks_uri"].as_str().unwrap().strip_prefix("https://login.test").unwrap().to_owned();
    let jwks = s.client.send(get(&jwks_path)).await.json();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    assert_eq!(jwk.common.key_id.as_deref(), header["kid"].as_str());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&["https://login.test"]);
    validation.set_audience(&["api://portal"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("the published key verifies the token");

    // client_secret_post with the alternate secret, no user: the system itself is `sub`.
    let form = format!("grant_type=client_credentials&client_id={}&client_secret={}", system.id, system.alternate);
    let rsp = token_request(&s.client, &form, None).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let (_, claims) = claims_of(rsp.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], system.id.as_str());
    assert_eq!(claims["roles"], serde_json::json!([]));

    // A token whose payload was edited (sub) no longer verifies.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(claims.to_string().replace(&system.id, "admin"));
    parts[1] = &forged;
    assert_eq!(api(&s.client, &parts.join(".")).await.status, 401);
}

#[tokio::test]
async fn a_jwt_policy_trusts_the_issuer_through_its_discovery_document_over_https() {
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, GENEROUS).await;
    // Now that the port is known, publish the real URL and point a remote policy at it.
    let base = format!("https://localhost:{}", s.gw.addr("public").port());
    let yaml = config(&s.backend, GENEROUS).replace("https://login.test", &base).replace(
        "routes:\n",
        &format!(
            "  remote:\n    jwt: {{ issuers: [\"{base}\"], algorithms: [ES256], openid_config: \"{base}/.well-known/openid-configuration\", trusted_cas: ca.pem }}\nroutes:\n  - {{ name: remote, match: {{ path_prefix: /remote/ }}, policies: [remote], backend: app }}\n"
        ),
    );
    std::fs::write(&s.gw.config, yaml).unwrap();
    let answer = s.gw.reload().await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.gw.wait_ready().await;
    assert_eq!(s.gw.addr("public").port(), base.rsplit(':').next().unwrap().parse::<u16>().unwrap());

    let system = create_system(&s.gw.config, "remote-caller");
    let rsp = token_request(&s.client, "grant_type=client_credentials", Some((&system.id, &system.primary))).await;
    let token = rsp.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&token).1["iss"], base.as_str());
    let rsp = get_with_token(&s.client, "/remote/items", &token).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let metrics = support::gateway::admin_get(s.gw.addr("admin"), "/metrics").await;
    assert!(metrics.contains("portcullis_jwks_fetches_total{policy=\"remote\",result=\"ok\"}"), "{metrics}");
}

#[tokio::test]
async fn ed25519_keys_sign_eddsa_tokens() {
    let s = setup(&rcgen::PKCS_ED25519, GENEROUS).await;
    let system = create_system(&s.gw.config, "edge");
    let rsp = token_request(&s.client, "grant_type=client_credentials", Some((&system.id, &system.primary))).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let token = rsp.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&token).0["alg"], "EdDSA");
    assert_eq!(api(&s.client, &token).await.status, 200);
}

#[tokio::test]
async fn every_failed_condition_gets_the_same_answer() {
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, GENEROUS).await;
    let config = &s.gw.config;
    let billing = create_system(config, "billing");
    let other = create_system(config, "other");
    let inactive = create_system(config, "inactive");
    cli(config, &["systems", "deactivate", &inactive.id]);
    for user in ["alice", "bob", "carol"] {
        cli(config, &["users", "add", user, "--roles", "Reader"]);
    }
    cli(config, &["systems", "link", &billing.id, "--external-user", "ext-alice", "--user", "alice"]);
    cli(config, &["systems", "link", &billing.id, "--external-user", "ext-bob", "--user", "bob"]);
    cli(config, &["users", "deactivate", "bob"]);
    cli(config, &["systems", "link", &other.id, "--external-user", "ext-carol", "--user", "carol"]);

    // Client authentication: every failure is the same 401 invalid_client.
    let grant = "grant_type=client_credentials";
    let unknown = uuid_like();
    let wrong = "A".repeat(43);
    let cases: [(&str, Basic<'_>, String); 7] = [
        ("wrong secret", Some((&billing.id, &wrong)), grant.into()),
        ("another system's secret", Some((&billing.id, &other.primary)), grant.into()),
        ("unknown client", Some((&unknown, &billing.primary)), grant.into()),
        ("an id written as SQL", Some(("' OR '1'='1", &billing.primary)), grant.into()),
        ("inactive system", Some((&inactive.id, &inactive.primary)), grant.into()),
        ("no credentials", None, grant.into()),
        ("secret without id", None, format!("{grant}&client_secret={}", billing.primary)),
    ];
    let mut bodies = Vec::new();
    for (what, basic, form) in &cases {
        let rsp = token_request(&s.client, form, *basic).await;
        assert_eq!(rsp.status, 401, "{what}: {}", rsp.text());
        assert_eq!(rsp.header("www-authenticate"), Some("Basic realm=\"token\""), "{what}");
        assert_eq!(rsp.json()["error"], "invalid_client", "{what}");
        bodies.push(rsp.text());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "the answers differ: {bodies:?}");

    // Grant problems after a good secret: the same 400 invalid_grant.
    let auth = Some((billing.id.as_str(), billing.primary.as_str()));
    let mut bodies = Vec::new();
    for (what, user) in
        [("unlinked user", "ext-nobody"), ("inactive user", "ext-bob"), ("other system's user", "ext-carol")]
    {
        let rsp = token_request(&s.client, &format!("{grant}&user={user}"), auth).await;
        assert_eq!(rsp.status, 400, "{what}: {}", rsp.text());
        assert_eq!(rsp.json()["error"], "invalid_grant", "{what}");
        bodies.push(rsp.text());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "the answers differ: {bodies:?}");

    // Malformed requests.
    let expect = |rsp: &Reply, status: u16, error: &str| {
        assert_eq!(rsp.status, status, "{}", rsp.text());
        assert_eq!(rsp.json()["error"], error, "{}", rsp.text());
    };
    expect(
        &token_request(&s.client, "grant_type=password&username=a&password=b", auth).await,
        400,
        "unsupported_grant_type",
    );
    expect(&token_request(&s.client, "scope=read", auth).await, 400, "invalid_request");
    expect(&token_request(&s.client, &format!("{grant}&{grant}"), auth).await, 400, "invalid_request");
    expect(&token_request(&s.client, &format!("{grant}&scope=admin"), auth).await, 400, "invalid_scope");
    let both = format!("{grant}&client_id={}&client_secret={}", billing.id, billing.primary);
    expect(&token_request(&s.client, &both, auth).await, 400, "invalid_request");
    let json_body = Request::post("/oauth2/token")
        .header("host", "login.test")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"grant_type\":\"client_credentials\"}")))
        .unwrap();
    expect(&s.client.send(json_body).await, 400, "invalid_request");
    let huge = format!("{grant}&pad={}", "x".repeat(64 << 10));
    expect(&token_request(&s.client, &huge, auth).await, 400, "invalid_request");
    let get = Request::get("/oauth2/token").header("host", "login.test").body(Full::default()).unwrap();
    let rsp = s.client.send(get).await;
    assert_eq!((rsp.status.as_u16(), rsp.header("allow")), (405, Some("POST")));

    // The store is read per request: the CLI's changes count without a reload.
    cli(config, &["users", "activate", "bob"]);
    assert_eq!(token_request(&s.client, &format!("{grant}&user=ext-bob"), auth).await.status, 200);
    cli(config, &["systems", "deactivate", &billing.id]);
    assert_eq!(token_request(&s.client, grant, auth).await.status, 401);
    cli(config, &["systems", "activate", &billing.id]);
    assert_eq!(token_request(&s.client, grant, auth).await.status, 200);
    cli(config, &["systems", "unlink", &billing.id, "--user", "alice"]);
    assert_eq!(token_request(&s.client, &format!("{grant}&user=ext-alice"), auth).await.status, 400);

    // No secret ever reaches the logs.
    let logs = s.gw.log_text();
    for secret in [&billing.primary, &billing.alternate, &other.primary] {
        assert!(!logs.contains(secret.as_str()), "a secret was logged");
    }
    assert!(logs.contains("\"refusal\":\"invalid_client\""), "refusals are logged for operators");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

#[tokio::test]
async fn renewing_twice_replaces_both_secrets_without_downtime() {
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, GENEROUS).await;
    let system = create_system(&s.gw.config, "billing");
    let status = |secret: String| {
        let (client, id) = (s.client.clone(), system.id.clone());
        async move { token_request(&client, "grant_type=client_credentials", Some((&id, &secret))).await.status }
    };
    assert_eq!(status(system.primary.clone()).await, 200);
    assert_eq!(status(system.alternate.clone()).await, 200);
    // Which secret got a token is recorded (to the minute, without slowing the answer) and
    // counted, so that operators see callers move to the alternate before renewing again.
    let show = || cli(&s.gw.config, &["systems", "show", &system.id]);
    support::until("both secrets' use is recorded", async || {
        let out = show();
        field(&out, "primary used") != "never" && field(&out, "alternate used") != "never"
    })
    .await;
    let alternate_used = field(&show(), "alternate used");
    assert!(cli(&s.gw.config, &["systems", "list"]).contains(&alternate_used));
    let series = "portcullis_token_requests_total{result=\"issued\",secret=\"alternate\"}";
    assert_eq!(s.gw.metric(series).await, 1);

    let first = field(&cli(&s.gw.config, &["systems", "renew-secret", &system.id]), "new alternate secret");
    let renewed = show();
    assert_eq!(field(&renewed, "primary used"), alternate_used, "the promoted secret keeps its record");
    assert_eq!(field(&renewed, "alternate used"), "never", "the new alternate is unused");
    assert_eq!(status(system.primary.clone()).await, 401, "the old primary is void");
    assert_eq!(status(system.alternate.clone()).await, 200, "the old alternate is now primary");
    assert_eq!(status(first.clone()).await, 200, "the new alternate works at once");

    let second = field(&cli(&s.gw.config, &["systems", "renew-secret", &system.id]), "new alternate secret");
    assert_eq!(status(system.alternate.clone()).await, 401, "both original secrets are gone");
    assert_eq!(status(first).await, 200);
    assert_eq!(status(second).await, 200);
}

#[tokio::test]
async fn one_route_takes_tokens_of_several_providers_each_verified_with_its_own_keys() {
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, GENEROUS).await;
    let system = create_system(&s.gw.config, "billing");
    let rsp = token_request(&s.client, "grant_type=client_credentials", Some((&system.id, &system.primary))).await;
    let own = rsp.json()["access_token"].as_str().unwrap().to_owned();
    let portal_claims = |iss: &str| serde_json::json!({ "iss": iss, "aud": "api://portal", "sub": "portal-user", "exp": tokens::now() + 600 });
    let portal = portal_key().sign(&portal_claims("https://idp.test"));

    // Both kinds of token pass, each forwarding its own provider's claims.
    let rsp = get_with_token(&s.client, "/both/x", &portal).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let received = s.backend.last();
    assert_eq!(received.headers["x-portal-user"], "portal-user");
    assert!(received.headers.get("x-client-id").is_none());
    assert_eq!(get_with_token(&s.client, "/both/x", &own).await.status, 200);
    let received = s.backend.last();
    assert_eq!(received.headers["x-client-id"], system.id.as_str());
    assert!(received.headers.get("x-portal-user").is_none());

    // The `iss` picks the keys: a token naming one provider but signed by the other is forged.
    let gateway_key = jsonwebtoken::EncodingKey::from_ec_pem(s.pki.read("signing-key.pem").as_bytes()).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let portal_iss_gateway_key =
        jsonwebtoken::encode(&header, &portal_claims("https://idp.test"), &gateway_key).unwrap();
    let gateway_iss_portal_key = portal_key().sign(&portal_claims("https://login.test"));
    let unknown_iss = portal_key().sign(&portal_claims("https://idp.test.evil"));
    let before = s.backend.received().len();
    for (token, why) in [
        (&portal_iss_gateway_key, "portal issuer, gateway key"),
        (&gateway_iss_portal_key, "gateway issuer, portal key"),
        (&unknown_iss, "an issuer no provider lists"),
    ] {
        let rsp = get_with_token(&s.client, "/both/x", token).await;
        assert_eq!(rsp.status, 401, "{why}: {}", rsp.text());
        assert_eq!(rsp.problem_kind(), "invalid-token", "{why}");
    }
    assert_eq!(s.backend.received().len(), before, "no forged token reached the backend");
    let series =
        |reason: &str| format!("portcullis_policy_decisions_total{{outcome=\"{reason}\",policy=\"portal-or-system\"}}");
    assert_eq!(s.gw.metric(&series("bad_signature")).await, 1, "the portal's keys have no kid");
    assert_eq!(s.gw.metric(&series("unknown_kid")).await, 1, "the gateway's keys: none has the portal's kid");
    assert_eq!(s.gw.metric(&series("wrong_issuer")).await, 1);
}

#[tokio::test]
async fn guessing_is_stopped_per_network_and_issuance_is_limited_per_client() {
    let budgets = "{ failures_per_ip: 3/min, failures_per_client: 100/min, issued_per_client: 4/min }";
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, budgets).await;
    let a = create_system(&s.gw.config, "a");
    let b = create_system(&s.gw.config, "b");
    let grant = "grant_type=client_credentials";
    for _ in 0..4 {
        assert_eq!(token_request(&s.client, grant, Some((&a.id, &a.primary))).await.status, 200);
    }
    let rsp = token_request(&s.client, grant, Some((&a.id, &a.primary))).await;
    assert_eq!(rsp.status, 429, "a's issuance budget (4/min) is spent: {}", rsp.text());
    assert_eq!(rsp.json()["error"], "temporarily_unavailable");
    let retry: u64 = rsp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        token_request(&s.client, grant, Some((&b.id, &b.primary))).await.status,
        200,
        "issuance is limited per client, not per address"
    );

    // A guesser spends the network's failure budget, then gets 429 before any secret is checked.
    for _ in 0..3 {
        assert_eq!(token_request(&s.client, grant, Some((&b.id, "guess"))).await.status, 401);
    }
    let rsp = token_request(&s.client, grant, Some((&b.id, "guess"))).await;
    assert_eq!(rsp.status, 429, "{}", rsp.text());
    let metrics = support::gateway::admin_get(s.gw.addr("admin"), "/metrics").await;
    assert!(
        metrics.contains("portcullis_token_requests_total{result=\"rate_limited\",secret=\"none\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_token_requests_total{result=\"issued\",secret=\"primary\"} 5"), "{metrics}");
    assert!(
        metrics.contains("portcullis_token_requests_total{result=\"invalid_client\",secret=\"none\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_four_clients_behind_one_address_get_200_simultaneous_tokens() {
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, "{}").await;
    let clients: Vec<CreatedSystem> = (0..4).map(|i| create_system(&s.gw.config, &format!("app-{i}"))).collect();
    let requests = (0..200).map(|i| {
        let c = &clients[i % 4];
        token_request(&s.client, "grant_type=client_credentials", Some((&c.id, &c.primary)))
    });
    let replies = futures_util::future::join_all(requests).await;
    let refused: Vec<_> = replies.iter().filter(|r| r.status != 200).map(|r| (r.status, r.text())).collect();
    assert!(refused.is_empty(), "{} of 200 refused: {:?}", refused.len(), refused.first());
}

#[tokio::test]
async fn scopes_are_granted_per_system_and_checked_only_after_authentication() {
    let s = setup(&rcgen::PKCS_ECDSA_P256_SHA256, GENEROUS).await;
    let config = &s.gw.config;
    let out = cli(config, &["systems", "create", "reader", "--scopes", "read"]);
    assert_eq!(field(&out, "scopes"), "read", "{out}");
    let reader = CreatedSystem {
        id: field(&out, "client id"),
        primary: field(&out, "primary secret"),
        alternate: field(&out, "alternate secret"),
    };
    let other = create_system(config, "other");
    let auth = Some((reader.id.as_str(), reader.primary.as_str()));
    let ask = |scope: &str| format!("grant_type=client_credentials&scope={scope}");

    // A granted scope is issued; no scope asked is no scope given (RFC 6749 §3.3 default).
    let rsp = token_request(&s.client, &ask("read"), auth).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.json()["scope"], "read");
    assert_eq!(claims_of(rsp.json()["access_token"].as_str().unwrap()).1["scope"], "read");
    let rsp = token_request(&s.client, "grant_type=client_credentials", auth).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert!(rsp.json().get("scope").is_none());
    assert!(claims_of(rsp.json()["access_token"].as_str().unwrap()).1.get("scope").is_none());

    // Configured but not granted, not configured, one of two not granted: the same 400.
    let mut bodies = Vec::new();
    for scope in ["write", "admin", "read%20write"] {
        let rsp = token_request(&s.client, &ask(scope), auth).await;
        assert_eq!(rsp.status, 400, "{scope}: {}", rsp.text());
        assert_eq!(rsp.json()["error"], "invalid_scope", "{scope}");
        bodies.push(rsp.text());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "the answers differ: {bodies:?}");
    let rsp = token_request(&s.client, &ask("read"), Some((&other.id, &other.primary))).await;
    assert_eq!(rsp.json()["error"], "invalid_scope", "another system was granted nothing");

    // Without the right secret the scope is never looked at: grants stay unknown.
    let wrong = "A".repeat(43);
    for (what, basic, scope) in [
        ("wrong secret, ungranted scope", (reader.id.as_str(), wrong.as_str()), "write"),
        ("wrong secret, granted scope", (reader.id.as_str(), wrong.as_str()), "read"),
        ("wrong secret, unconfigured scope", (reader.id.as_str(), wrong.as_str()), "admin"),
        ("another system's secret", (reader.id.as_str(), other.primary.as_str()), "write"),
    ] {
        let rsp = token_request(&s.client, &ask(scope), Some(basic)).await;
        assert_eq!((rsp.status.as_u16(), rsp.json()["error"].as_str()), (401, Some("invalid_client")), "{what}");
    }

    // The CLI changes the grants (audited); the next request sees them, no reload.
    let out = cli(config, &["systems", "scopes", &reader.id, "--set", "read,write"]);
    assert!(out.contains("scopes [read, write] (were [read])"), "{out}");
    assert_eq!(token_request(&s.client, &ask("read%20write"), auth).await.json()["scope"], "read write");
    assert_eq!(field(&cli(config, &["systems", "scopes", &reader.id]), "scopes"), "read, write");
    assert_eq!(field(&cli(config, &["systems", "show", &reader.id]), "scopes"), "read, write");
    let list = cli(config, &["systems", "list"]);
    let row = list.lines().find(|l| l.starts_with(&reader.id)).unwrap();
    assert!(row.ends_with(" read,write"), "{list}");
    assert!(list.lines().find(|l| l.starts_with(&other.id)).unwrap().ends_with(" -"), "{list}");
    cli(config, &["systems", "scopes", &reader.id, "--set", ""]);
    assert_eq!(token_request(&s.client, &ask("read"), auth).await.json()["error"], "invalid_scope", "revoked");
    assert_eq!(token_request(&s.client, "grant_type=client_credentials", auth).await.status, 200);

    // Only configured scopes can be granted; a refused grant changes nothing.
    let refuse = |args: &[&str]| {
        let out = Command::new(binary()).args(args).arg("--config").arg(config).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refuse(&["systems", "scopes", &reader.id, "--set", "read,admin"]);
    assert!(
        err.contains("cannot grant admin: not in identity.scopes") && err.contains("(configured: read, write)"),
        "{err}"
    );
    let err = refuse(&["systems", "create", "ambitious", "--scopes", "admin"]);
    assert!(err.contains("cannot grant admin"), "{err}");
    assert!(!cli(config, &["systems", "list"]).contains("ambitious"), "nothing was created");
    assert!(refuse(&["systems", "scopes", "nope", "--set", "read"]).contains("system \"nope\" not found"));

    let audit = cli(config, &["audit"]);
    let changes: Vec<&str> = audit.lines().filter(|l| l.contains("system.scopes")).collect();
    assert_eq!(changes.len(), 2, "{audit}");
    assert!(changes[0].contains("ci-bot") && changes[0].contains(&reader.id), "{audit}");
    assert!(changes[0].ends_with("scopes=[read,write] was=[read]"), "{audit}");
    assert!(changes[1].ends_with("scopes=[] was=[read,write]"), "{audit}");
    assert!(audit.contains("name=reader scopes=[read]"), "{audit}");
    for secret in [&reader.primary, &reader.alternate] {
        assert!(!audit.contains(secret.as_str()));
    }
}

/// POSTs a token request as if from `ip`, behind the trusted proxy the test client poses as.
async fn token_request_from(session: &mut support::client::Session, ip: &str, basic: (&str, &str)) -> u16 {
    let req = Request::post("/oauth2/token")
        .header("host", "login.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", ip)
        .header("authorization", format!("Basic {}", STANDARD.encode(format!("{}:{}", basic.0, basic.1))))
        .body(Full::new(Bytes::from_static(b"grant_type=client_credentials")))
        .unwrap();
    session.send(req).await.unwrap().status.as_u16()
}

#[tokio::test]
async fn failures_from_thousands_of_networks_do_not_lock_a_client_out_of_its_own() {
    // Default budgets: 30 failures a minute per network and per client id.
    let pki = Pki::new();
    write_signing_key(&pki, &rcgen::PKCS_ECDSA_P256_SHA256);
    pki.write("portal.pub.pem", &portal_key().public_pem);
    let backend = TestBackend::start().await;
    let yaml = format!("{}trusted_proxies: [127.0.0.0/8]\n", config(&backend, "{}"));
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let victim = create_system(&gw.config, "victim");
    let mut session = client.session().await.unwrap();
    let good = (victim.id.as_str(), victim.primary.as_str());
    assert_eq!(token_request_from(&mut session, "2001:db8:1:1::10", good).await, 200, "home becomes familiar");

    // An attacker floods failures with the victim's client id from 2,000 other /64s.
    let wrong = "A".repeat(43);
    let (mut refused, mut limited) = (0, 0);
    for i in 0..2_000 {
        match token_request_from(&mut session, &format!("2001:db8:ff:{i:x}::1"), (&victim.id, &wrong)).await {
            401 => refused += 1,
            429 => limited += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((refused, limited), (30, 1_970), "the client id's failure budget stops the guessing");
    assert_eq!(token_request_from(&mut session, "2001:db8:2:2::1", good).await, 429, "an unfamiliar network waits");
    // From its familiar /64 (another host in it), the victim still gets tokens.
    assert_eq!(token_request_from(&mut session, "2001:db8:1:1::20", good).await, 200);
    assert_eq!(token_request_from(&mut session, "2001:db8:1:1::10", good).await, 200);
}

#[test]
fn the_audit_log_records_every_change_with_its_actor_and_never_a_secret() {
    let pki = Pki::new();
    write_signing_key(&pki, &rcgen::PKCS_ECDSA_P256_SHA256);
    let config = pki.write(
        "gateway.yaml",
        &format!(
            "version: 1\nlisteners:{}identity:\n  listener: public\n  issuer: https://login.test\n  signing_key: signing-key.pem\n  store: sqlite:var/identity.db\n",
            listener("", "")
        ),
    );
    let system = create_system(&config, "billing");
    let renewed = field(&cli(&config, &["systems", "renew-secret", &system.id]), "new alternate secret");
    cli(&config, &["users", "add", "alice", "--roles", "Reader"]);
    cli(&config, &["systems", "link", &system.id, "--external-user", "ext-1", "--user", "alice"]);
    cli(&config, &["systems", "unlink", &system.id, "--external-user", "ext-1"]);
    cli(&config, &["systems", "deactivate", &system.id]);
    cli(&config, &["systems", "activate", &system.id]);
    cli(&config, &["users", "deactivate", "alice"]);

    let audit = cli(&config, &["audit"]);
    let actions: Vec<(&str, &str)> = audit
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[1], cols[2])
        })
        .collect();
    let expected = [
        "system.create",
        "system.renew_secret",
        "user.add",
        "system.link",
        "system.unlink",
        "system.deactivate",
        "system.activate",
        "user.deactivate",
    ];
    assert_eq!(actions, expected.map(|a| ("ci-bot", a)), "{audit}");
    assert!(audit.contains(&system.id));

    // Secrets appear nowhere after they were printed: not in any listing, not in the file.
    let listings = [
        audit,
        cli(&config, &["systems", "list"]),
        cli(&config, &["systems", "show", &system.id]),
        cli(&config, &["users", "list"]),
    ]
    .join("\n");
    let mut db = Vec::new();
    for entry in std::fs::read_dir(pki.path("var")).unwrap() {
        db.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for secret in [&system.primary, &system.alternate, &renewed] {
        assert!(!listings.contains(secret.as_str()), "a secret was shown again");
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "a secret is stored in the clear");
    }
    assert!(listings.contains("billing") && listings.contains("alice"));

    // Refusals are clear and change nothing.
    let out = Command::new(binary()).args(["systems", "show", "nope", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("system \"nope\" not found"));
    let out = Command::new(binary()).args(["users", "add", "alice", "--config"]).arg(&config).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("user \"alice\" exists"));
}

#[test]
fn check_reports_identity_mistakes_at_their_location() {
    let pki = Pki::new();
    write_signing_key(&pki, &rcgen::PKCS_ECDSA_P256_SHA256);
    let base = |identity: &str, policies: &str| {
        format!(
            "version: 1\nlisteners:{}  - {{ name: plain, bind: \"127.0.0.1:0\", redirect_to_https: \"https://localhost\" }}\n{policies}identity:\n{identity}",
            listener("", "")
        )
    };
    let good = "  listener: public\n  issuer: https://login.test\n  signing_key: signing-key.pem\n  store: sqlite:var/identity.db\n";
    let check = |yaml: String| {
        let file = pki.write("gateway.yaml", &yaml);
        let out = Command::new(binary()).args(["check", "--config"]).arg(&file).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).replace(&format!("{}/", pki.dir().display()), ""))
    };
    let (ok, stderr) = check(base(good, ""));
    assert!(ok, "{stderr}");
    let cases = [
        (
            good.replace("listener: public", "listener: plain"),
            "gateway.yaml:9:13: identity.listener: \"plain\" is not a TLS listener",
        ),
        (
            good.replace("listener: public", "listener: nope"),
            "gateway.yaml:9:13: identity.listener: \"nope\" is not a listener",
        ),
        (
            good.replace("https://login.test", "http://login.test"),
            "gateway.yaml:10:11: identity.issuer: \"http://login.test\" is not an https:// URL",
        ),
        (good.replace("signing-key.pem", "missing.pem"), "gateway.yaml:11:16: identity.signing_key: cannot read"),
        (
            good.replace("sqlite:var/identity.db", "postgres://db/identity"),
            "gateway.yaml:12:10: identity.store: the PostgreSQL URL names no user",
        ),
        (
            good.replace("sqlite:var/identity.db", "postgres://portcullis:${env:PORTCULLIS_UNSET_DB_PASSWORD}@db/x"),
            "gateway.yaml:12:10: identity.store: environment variable PORTCULLIS_UNSET_DB_PASSWORD is not set",
        ),
        (
            good.replace("sqlite:var/identity.db", "postgres://portcullis:hunter2@127.0.0.1:1/x?sslmode=disable"),
            "gateway.yaml:12:10: identity.store: postgres://portcullis@127.0.0.1:1/x: error connecting to server",
        ),
        (format!("{good}  token_ttl: 2d\n"), "gateway.yaml:13:14: invalid duration \"2d\""),
        (format!("{good}  rate_limit: {{ failures_per_ip: lots }}\n"), "invalid rate \"lots\""),
    ];
    for (identity, expected) in cases {
        let (ok, stderr) = check(base(&identity, ""));
        assert!(!ok && stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
        assert!(!stderr.contains("hunter2"), "a database password is never shown: {stderr}");
    }
    // `issuers: [self]` needs the identity section.
    let yaml =
        format!("version: 1\nlisteners:{}policies:\n  own: {{ jwt: {{ issuers: [self] }} }}\n", listener("", ""));
    let (ok, stderr) = check(yaml);
    assert!(!ok && stderr.contains("`self` names the gateway's own token issuer"), "{stderr}");
    // A broken section is the one root cause: `self` is not reported again as missing it.
    let own = "policies:\n  own: { jwt: { issuers: [self] } }\n";
    let (ok, stderr) = check(base(&good.replace("signing-key.pem", "missing.pem"), own));
    assert!(!ok && stderr.contains("identity.signing_key: cannot read"), "{stderr}");
    assert!(!stderr.contains("add an `identity` section"), "a misleading second message:\n{stderr}");
    assert!(stderr.contains(": 1 error(s)"), "{stderr}");
}

#[test]
fn check_warns_when_a_default_jwt_policy_would_refuse_every_token_request() {
    let pki = Pki::new();
    write_signing_key(&pki, &rcgen::PKCS_ECDSA_P256_SHA256);
    let yaml = format!(
        "version: 1\nlisteners:{}default_policies: [everyone-needs-a-token]\npolicies:\n  everyone-needs-a-token: {{ jwt: {{ issuers: [self] }} }}\n  any-audience: {{ jwt: {{ issuers: [https://idp.test], algorithms: [ES256], keys: [signing-pub.pem] }} }}\nidentity:\n  listener: public\n  issuer: https://login.test\n  signing_key: signing-key.pem\n  store: sqlite:var/identity.db\n",
        listener("", "")
    );
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    pki.write("signing-pub.pem", &key.public_key_pem());
    let file = pki.write("gateway.yaml", &yaml);
    let out = Command::new(binary()).args(["check", "--config"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "warnings do not fail `check`: {stderr}");
    assert!(
        stderr
            .contains("default policy \"everyone-needs-a-token\" is a jwt policy and also runs on the token endpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("policies.any-audience.jwt.audiences: no `audiences`"), "{stderr}");
    // `issuers: [self]` checks the issuer's own audience by default: no warning for it.
    assert!(!stderr.contains("policies.everyone-needs-a-token.jwt.audiences"), "{stderr}");
}
