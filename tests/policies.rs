//! The security policies end to end, attacks first: cors, ip_filter, jwt, client_cert —
//! real TLS, real signed tokens, a real HTTPS JWKS server, real client certificates.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;
use support::client::Reply;
use support::gateway::admin_get;
use support::pki::listener;
use support::tokens::{self, claims, now, JwksServer, SigningKey};
use support::{Client, Pki, TestBackend, TestGateway};

fn req(target: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(target).header("host", "localhost");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::default()).unwrap()
}

// ---------------------------------------------------------------- cors

async fn cors_setup() -> (Pki, TestBackend, TestGateway, Client) {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!(
        r#"version: 1
listeners:{listener}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  portal-cors:
    cors:
      allowed_origins: [https://portal.example.com, "https://*.portal.example.com"]
      allowed_methods: [GET, POST]
      allowed_headers: [Authorization, Content-Type]
      expose_headers: [X-Request-Id]
      max_age: 10m
      terminate_unmatched: true
  lenient-cors:
    cors:
      allowed_origins: [https://portal.example.com]
      allow_credentials: true
  needs-token:
    jwt: {{ issuers: [https://idp.test], algorithms: [HS256], secret: "${{file:hs.secret}}" }}
routes:
  - {{ name: strict, match: {{ path_prefix: /strict/ }}, policies: [portal-cors], backend: app }}
  - {{ name: lenient, match: {{ path_prefix: /lenient/ }}, policies: [lenient-cors], backend: app }}
  - {{ name: guarded, match: {{ path_prefix: /guarded/ }}, policies: [portal-cors, needs-token], backend: app }}
"#,
        listener = listener("", "{ max_header_bytes: 16KiB }"),
        url = backend.url()
    );
    pki.write("hs.secret", "0123456789abcdef0123456789abcdef");
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    (pki, backend, gw, client)
}

#[tokio::test]
async fn cors_allows_listed_origins_with_the_right_headers() {
    let (_pki, backend, _gw, client) = cors_setup().await;
    for origin in ["https://portal.example.com", "https://eu.portal.example.com"] {
        let rsp = client.send(req("/strict/x", &[("origin", origin)])).await;
        assert_eq!(rsp.status, 200, "{origin}");
        assert_eq!(rsp.header("access-control-allow-origin"), Some(origin));
        assert_eq!(rsp.header("access-control-expose-headers"), Some("X-Request-Id"));
        assert!(rsp.header("access-control-allow-credentials").is_none());
        assert!(rsp.headers.get_all("vary").iter().any(|v| v == "Origin"));
    }
    assert_eq!(backend.received().len(), 2);
    let rsp = client.send(req("/strict/x", &[])).await;
    assert_eq!(rsp.status, 200, "no Origin: same-origin or not a browser");
    assert!(rsp.header("access-control-allow-origin").is_none());
    assert!(rsp.headers.get_all("vary").iter().any(|v| v == "Origin"));
}

#[tokio::test]
async fn cors_refuses_look_alike_origins() {
    let (_pki, backend, _gw, client) = cors_setup().await;
    for origin in [
        "https://portal.example.com.evil.net",
        "https://evilportal.example.com",
        "http://portal.example.com",
        "https://portal.example.com:8443",
        "https://PORTAL.EXAMPLE.COM",
        "https://portal.example.com/path",
        "null",
        "https://evil.net",
    ] {
        let rsp = client.send(req("/strict/x", &[("origin", origin)])).await;
        assert_eq!(rsp.status, 403, "{origin}");
        assert_eq!(rsp.problem_kind(), "cors-rejected");
        assert!(rsp.header("access-control-allow-origin").is_none(), "{origin}");
    }
    assert!(backend.received().is_empty());
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_gateway() {
    let (_pki, backend, _gw, client) = cors_setup().await;
    let preflight = |origin: &str, method: &str, headers: &str| {
        Request::options("/strict/x")
            .header("host", "localhost")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .body(Full::default())
            .unwrap()
    };
    let rsp = client.send(preflight("https://portal.example.com", "POST", "authorization, content-type")).await;
    assert_eq!(rsp.status, 204);
    assert_eq!(rsp.header("access-control-allow-origin"), Some("https://portal.example.com"));
    assert_eq!(rsp.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(rsp.header("access-control-allow-headers"), Some("Authorization, Content-Type"));
    assert_eq!(rsp.header("access-control-max-age"), Some("600"));
    for (origin, method, headers) in [
        ("https://portal.example.com", "DELETE", ""),
        ("https://portal.example.com", "GET", "x-secret"),
        ("https://evilportal.example.com", "GET", ""),
    ] {
        let rsp = client.send(preflight(origin, method, headers)).await;
        assert_eq!(rsp.status, 403, "{origin} {method} {headers}");
    }
    assert!(backend.received().is_empty(), "preflights are never forwarded");
}

#[tokio::test]
async fn cors_without_terminate_forwards_unlisted_origins_bare_and_decorates_denials() {
    let (_pki, backend, _gw, client) = cors_setup().await;
    let rsp = client.send(req("/lenient/x", &[("origin", "https://evil.net")])).await;
    assert_eq!(rsp.status, 200);
    assert!(rsp.header("access-control-allow-origin").is_none());
    let rsp = client.send(req("/lenient/x", &[("origin", "https://portal.example.com")])).await;
    assert_eq!(
        rsp.header("access-control-allow-origin"),
        Some("https://portal.example.com"),
        "never * with credentials"
    );
    assert_eq!(rsp.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(backend.received().len(), 2);

    // A later policy's denial still carries the CORS headers, so the page can read it.
    let rsp = client.send(req("/guarded/x", &[("origin", "https://portal.example.com")])).await;
    assert_eq!(rsp.status, 401);
    assert_eq!(rsp.header("access-control-allow-origin"), Some("https://portal.example.com"));
}

// ---------------------------------------------------------------- ip_filter

fn ip_config(backend: &str, trusted: &str) -> String {
    format!(
        r#"version: 1
listeners:{listener}
trusted_proxies: [{trusted}]
backends:
  app: {{ urls: ["{backend}"] }}
policies:
  loopback-only: {{ ip_filter: {{ allow: [127.0.0.0/8, "::1/128"] }} }}
  office-only: {{ ip_filter: {{ allow: [203.0.113.0/24, "2001:db8::/32"], deny: [203.0.113.66/32] }} }}
  office-report: {{ mode: report, ip_filter: {{ allow: [203.0.113.0/24] }} }}
routes:
  - {{ name: loopback, match: {{ path_prefix: /loopback/ }}, policies: [loopback-only], backend: app }}
  - {{ name: office, match: {{ path_prefix: /office/ }}, policies: [office-only], backend: app }}
  - {{ name: report, match: {{ path_prefix: /report/ }}, policies: [office-report], backend: app }}
"#,
        listener = listener("", "{ max_header_bytes: 16KiB }")
    )
}

#[tokio::test]
async fn ip_filter_ignores_spoofed_forwarding_headers_from_untrusted_peers() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&ip_config(&backend.url(), "10.0.0.0/8"), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    assert_eq!(client.get("/loopback/x").await.status, 200);
    let spoofs: [&[(&str, &str)]; 4] = [
        &[],
        &[("x-forwarded-for", "203.0.113.5")],
        &[("x-real-ip", "203.0.113.5")],
        &[("forwarded", "for=203.0.113.5"), ("x-forwarded-for", "203.0.113.5, 203.0.113.6")],
    ];
    for headers in spoofs {
        let rsp = client.send(req("/office/x", headers)).await;
        assert_eq!(rsp.status, 403, "{headers:?}");
        assert_eq!(rsp.problem_kind(), "ip-rejected");
    }
    assert_eq!(backend.received().len(), 1);
    let rsp = client.get("/report/x").await;
    assert_eq!(rsp.status, 200, "report mode decides but lets the request through");
}

#[tokio::test]
async fn ip_filter_uses_the_right_most_untrusted_address_behind_trusted_proxies() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let gw = TestGateway::start(&ip_config(&backend.url(), "127.0.0.0/8, 10.0.0.0/8"), &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let cases = [
        ("203.0.113.5", 200),
        ("198.51.100.1, 203.0.113.5", 200),
        ("198.51.100.1, 203.0.113.5, 10.1.2.3", 200),
        ("203.0.113.5, 198.51.100.1", 403),
        ("203.0.113.66", 403),
        ("::ffff:203.0.113.66", 403),
        ("::ffff:203.0.113.7", 200),
        ("2001:db8::7", 200),
        ("not-an-address, 203.0.113.5", 200),
        // A trusted proxy's entry that is not an address refuses the request (fail closed).
        ("203.0.113.5, garbage", 400),
    ];
    for (xff, status) in cases {
        let rsp = client.send(req("/office/x", &[("x-forwarded-for", xff)])).await;
        assert_eq!(rsp.status, status, "X-Forwarded-For: {xff}");
    }
}

// ---------------------------------------------------------------- jwt

struct JwtEnv {
    _pki: Pki,
    backend: TestBackend,
    gw: TestGateway,
    client: Client,
    rsa: SigningKey,
    es256: SigningKey,
    es384: SigningKey,
    ed: SigningKey,
    jwks: JwksServer,
    rotating: SigningKey,
}

const HS_SECRET: &str = "an HS256 secret of at least 32 bytes!";

async fn jwt_setup() -> JwtEnv {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let rsa = SigningKey::new(Algorithm::RS256, "rsa-1");
    let es256 = SigningKey::new(Algorithm::ES256, "ec-1");
    let es384 = SigningKey::new(Algorithm::ES384, "ec-2");
    let ed = SigningKey::new(Algorithm::EdDSA, "ed-1");
    let rotating = SigningKey::new(Algorithm::ES256, "rot-1");
    pki.write("rsa.pub.pem", &rsa.public_pem);
    pki.write("es256.pub.pem", &es256.public_pem);
    pki.write("es384.pub.pem", &es384.public_pem);
    pki.write("ed.pub.pem", &ed.public_pem);
    pki.write("hs.secret", HS_SECRET);
    let jwks = JwksServer::start(&pki, &[&rsa, &rotating]).await;
    let common = r#"issuers: [https://idp.test], audiences: [api://portcullis], clock_skew: 30s"#;
    let yaml = format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: 127.0.0.1:0 }}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  rs: {{ jwt: {{ {common}, algorithms: [RS256], keys: [rsa.pub.pem], require_claims: {{ roles: {{ any_of: [Config.Read, Config.Admin] }} }}, forward_claims: {{ sub: X-User-Id, roles: X-User-Roles }} }} }}
  ps: {{ jwt: {{ {common}, algorithms: [PS256, PS384, PS512, RS384, RS512], keys: [rsa.pub.pem] }} }}
  es: {{ jwt: {{ {common}, algorithms: [ES256], keys: [es256.pub.pem] }} }}
  es384: {{ jwt: {{ {common}, algorithms: [ES384], keys: [es384.pub.pem] }} }}
  ed: {{ jwt: {{ {common}, algorithms: [EdDSA], keys: [ed.pub.pem] }} }}
  hs: {{ jwt: {{ {common}, algorithms: [HS256], secret: "${{file:hs.secret}}" }} }}
  jwks: {{ jwt: {{ {common}, algorithms: [RS256, ES256], jwks_url: "{jwks_url}", trusted_cas: ca.pem, jwks_min_refresh: 100ms }} }}
  jwks-slow: {{ jwt: {{ {common}, algorithms: [RS256, ES256], jwks_url: "{jwks_url}", trusted_cas: ca.pem, jwks_min_refresh: 1h }} }}
  oidc: {{ jwt: {{ {common}, algorithms: [RS256], openid_config: "{discovery}", trusted_cas: ca.pem }} }}
routes:
  - {{ name: rs, match: {{ path_prefix: /rs/ }}, policies: [rs], backend: app }}
  - {{ name: ps, match: {{ path_prefix: /ps/ }}, policies: [ps], backend: app }}
  - {{ name: es, match: {{ path_prefix: /es/ }}, policies: [es], backend: app }}
  - {{ name: es384, match: {{ path_prefix: /es384/ }}, policies: [es384], backend: app }}
  - {{ name: ed, match: {{ path_prefix: /ed/ }}, policies: [ed], backend: app }}
  - {{ name: hs, match: {{ path_prefix: /hs/ }}, policies: [hs], backend: app }}
  - {{ name: jwks, match: {{ path_prefix: /jwks/ }}, policies: [jwks], backend: app }}
  - {{ name: jwks-slow, match: {{ path_prefix: /jwks-slow/ }}, policies: [jwks-slow], backend: app }}
  - {{ name: oidc, match: {{ path_prefix: /oidc/ }}, policies: [oidc], backend: app }}
"#,
        listener = listener("", "{ max_header_bytes: 256KiB }"),
        url = backend.url(),
        jwks_url = jwks.jwks_url(),
        discovery = jwks.discovery_url(),
    );
    let gw = TestGateway::start(&yaml, &pki);
    gw.wait_ready().await;
    let client = Client::new(gw.addr("public"), &pki);
    JwtEnv { _pki: pki, backend, gw, client, rsa, es256, es384, ed, jwks, rotating }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn call(client: &Client, path: &str, token: &str) -> Reply {
    client.send(req(path, &[("authorization", &bearer(token))])).await
}

fn assert_invalid_token(rsp: &Reply, token: &str, what: &str) {
    assert_eq!(rsp.status, 401, "{what}: {}", rsp.text());
    assert_eq!(rsp.problem_kind(), "invalid-token", "{what}");
    assert!(rsp.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""), "{what}");
    assert!(token.len() < 20 || !rsp.text().contains(token), "{what}: the problem echoes the token");
}

#[tokio::test]
async fn jwt_accepts_every_key_family_and_forwards_claims() {
    let env = jwt_setup().await;
    let c = claims();
    let cases = [
        ("/rs/x", env.rsa.sign(&c)),
        ("/ps/x", SigningKey { alg: Algorithm::PS256, ..env.rsa.clone() }.sign(&c)),
        ("/ps/x", SigningKey { alg: Algorithm::PS512, ..env.rsa.clone() }.sign(&c)),
        ("/ps/x", SigningKey { alg: Algorithm::RS384, ..env.rsa.clone() }.sign(&c)),
        ("/es/x", env.es256.sign(&c)),
        ("/es384/x", env.es384.sign(&c)),
        ("/ed/x", env.ed.sign(&c)),
        ("/hs/x", tokens::hs256(HS_SECRET.as_bytes(), &c)),
        ("/jwks/x", env.rsa.sign(&c)),
        ("/jwks/x", env.rotating.sign(&c)),
        ("/oidc/x", env.rsa.sign(&c)),
    ];
    for (path, token) in &cases {
        let rsp = call(&env.client, path, token).await;
        assert_eq!(rsp.status, 200, "{path}: {}", rsp.text());
    }
    // An RFC 9068 access token (typ at+jwt) is accepted like any JWT.
    let mut at = Header::new(Algorithm::RS256);
    at.typ = Some("at+jwt".into());
    assert_eq!(call(&env.client, "/rs/x", &env.rsa.sign_with(at, &c)).await.status, 200);
    // Claims are forwarded; a client-sent header of that name never is.
    let rsp =
        env.client.send(req("/rs/x", &[("authorization", &bearer(&env.rsa.sign(&c))), ("x-user-id", "admin")])).await;
    assert_eq!(rsp.status, 200);
    let seen = env.backend.last();
    assert_eq!(seen.headers["x-user-id"], "user-1");
    assert_eq!(seen.headers["x-user-roles"], "Config.Read");
    assert_eq!(seen.headers.get_all("x-user-id").iter().count(), 1);
    let rsp =
        env.client.send(req("/ps/x", &[("authorization", &bearer(&env.rsa.sign(&c))), ("x-user-id", "admin")])).await;
    assert_eq!(rsp.status, 401, "the algorithm is pinned per policy: /ps/ does not list RS256");
}

#[tokio::test]
async fn jwt_refuses_forged_expired_and_misdirected_tokens() {
    let env = jwt_setup().await;
    let good = env.rsa.sign(&claims());
    let with = |patch: serde_json::Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let other_rsa = SigningKey::other_rsa(Algorithm::RS256, "rsa-1");
    let mut embedded = Header::new(Algorithm::RS256);
    embedded.jwk = Some(serde_json::from_value(other_rsa.jwk.clone()).unwrap());
    let mut jku = Header::new(Algorithm::RS256);
    jku.jku = Some("https://evil.example/jwks.json".into());
    let parts: Vec<&str> = good.split('.').collect();
    // Each attack with the exact reason the policy must name: a test that only checked the
    // status would pass if, say, the embedded-key check were removed and the token were then
    // refused for its signature.
    let attacks: Vec<(&str, String, &str)> = vec![
        ("alg none", tokens::unsigned(&claims()), "malformed"),
        (
            "HS256 keyed with the RSA public key",
            tokens::hs256(env.rsa.public_pem.as_bytes(), &claims()),
            "alg_not_allowed",
        ),
        ("expired", env.rsa.sign(&with(json!({ "exp": now() - 120 }))), "expired"),
        ("not yet valid", env.rsa.sign(&with(json!({ "nbf": now() + 600 }))), "not_yet_valid"),
        ("wrong issuer", env.rsa.sign(&with(json!({ "iss": "https://evil.test" }))), "wrong_issuer"),
        ("wrong audience", env.rsa.sign(&with(json!({ "aud": "api://other" }))), "wrong_audience"),
        (
            "audience array without ours",
            env.rsa.sign(&with(json!({ "aud": ["api://a", "api://b"] }))),
            "wrong_audience",
        ),
        ("missing exp", env.rsa.sign(&with(json!({ "exp": null }))), "missing_claim"),
        ("exp as a string", env.rsa.sign(&with(json!({ "exp": "never" }))), "malformed"),
        ("missing issuer", env.rsa.sign(&with(json!({ "iss": null }))), "missing_claim"),
        ("missing audience", env.rsa.sign(&with(json!({ "aud": null }))), "missing_claim"),
        ("three dots", format!("{good}.{}", parts[2]), "malformed"),
        (
            "a critical extension",
            env.rsa.sign_raw_header(&json!({ "alg": "RS256", "crit": ["exp"] }), &claims()),
            "critical_extension",
        ),
        ("tampered payload", tokens::with_payload(&good, &with(json!({ "sub": "admin" }))), "bad_signature"),
        ("stripped signature", format!("{}.{}.", parts[0], parts[1]), "bad_signature"),
        ("bad base64", "abc.d$f.ghi".to_owned(), "malformed"),
        ("two parts", format!("{}.{}", parts[0], parts[1]), "malformed"),
        ("signed by another key", other_rsa.sign(&claims()), "bad_signature"),
        // Signed by the key it embeds: only the embedded-key check refuses it.
        ("embedded jwk", other_rsa.sign_with(embedded, &claims()), "embedded_key"),
        // Signed by the right key: only the embedded-key check refuses it.
        ("jku header", env.rsa.sign_with(jku, &claims()), "embedded_key"),
        ("ES256 where only RS256 is allowed", env.es256.sign(&claims()), "alg_not_allowed"),
        ("100 KB token", format!("{}.{}.{}", parts[0], "A".repeat(100 * 1024), parts[2]), "token_too_large"),
    ];
    for (what, token, reason) in &attacks {
        let series = format!(r#"portcullis_policy_decisions_total{{outcome="{reason}",policy="rs"}}"#);
        let before = env.gw.metric(&series).await;
        let rsp = call(&env.client, "/rs/x", token).await;
        assert_invalid_token(&rsp, token, what);
        assert_eq!(env.gw.metric(&series).await, before + 1, "{what}: refused for {reason}");
    }
    // Within the clock skew, an expired token still passes; so does a raw header without `crit`.
    assert_eq!(call(&env.client, "/rs/x", &env.rsa.sign(&with(json!({ "exp": now() - 5 })))).await.status, 200);
    let plain_header = env.rsa.sign_raw_header(&json!({ "alg": "RS256" }), &claims());
    assert_eq!(call(&env.client, "/rs/x", &plain_header).await.status, 200);
    assert_eq!(env.backend.received().len(), 2, "no refused token reached the backend");

    let rsp = env.client.send(req("/rs/x", &[])).await;
    assert_eq!(rsp.status, 401);
    assert_eq!(rsp.header("www-authenticate"), Some("Bearer"), "no token: a plain challenge");
    let rsp = env.client.send(req("/rs/x", &[("authorization", "Basic dXNlcjpwYXNz")])).await;
    assert_eq!(rsp.status, 401);

    // A valid token beside a forged one: the backend might read the one the policy did not.
    let forged = tokens::with_payload(&good, &with(json!({ "sub": "admin" })));
    let before = env.backend.received().len();
    for pair in [[&good, &forged], [&forged, &good]] {
        let two = [("authorization", bearer(pair[0])), ("authorization", bearer(pair[1]))];
        let rsp = env.client.send(req("/rs/x", &[(two[0].0, &two[0].1), (two[1].0, &two[1].1)])).await;
        assert_eq!(rsp.status, 400, "{}", rsp.text());
        assert!(rsp.text().contains("Authorization"), "{}", rsp.text());
    }
    assert_eq!(env.backend.received().len(), before, "neither request reached the backend");

    let rsp = call(&env.client, "/rs/x", &env.rsa.sign(&with(json!({ "roles": ["Partner"] })))).await;
    assert_eq!(rsp.status, 403, "a valid token without the required role");
    assert_eq!(rsp.problem_kind(), "insufficient-claims");
    assert!(rsp.header("www-authenticate").unwrap().contains("insufficient_scope"));
}

#[tokio::test]
async fn jwt_follows_jwks_rotation_and_resists_kid_floods() {
    let env = jwt_setup().await;
    let c = claims();
    assert_eq!(call(&env.client, "/jwks/x", &env.rotating.sign(&c)).await.status, 200);

    // The issuer rotates: rot-2 replaces rot-1. A token with the new kid triggers a refresh.
    let next = SigningKey::new(Algorithm::ES256, "rot-2");
    env.jwks.publish(&[&env.rsa, &next]);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await; // past jwks_min_refresh
    let rsp = call(&env.client, "/jwks/x", &next.sign(&c)).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let rsp = call(&env.client, "/jwks/x", &env.rotating.sign(&c)).await;
    assert_invalid_token(&rsp, "", "a key removed from the JWKS no longer verifies");

    // A flood of random kids: at most one fetch per jwks_min_refresh (1 h on this policy).
    let before = env.jwks.fetches();
    let attacker = SigningKey::new(Algorithm::ES256, "x");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = env.client.clone();
        let token = SigningKey { kid: format!("random-{i}"), ..attacker.clone() }.sign(&c);
        tasks.push(tokio::spawn(async move { call(&client, "/jwks-slow/x", &token).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    assert!(env.jwks.fetches() - before <= 1, "{} fetches for 40 unknown kids", env.jwks.fetches() - before);
}

#[tokio::test]
async fn jwt_keeps_last_good_keys_when_the_issuer_goes_down() {
    let env = jwt_setup().await;
    let JwtEnv { client, rsa, jwks, gw, .. } = env;
    drop(jwks);
    let rsp = call(&client, "/jwks/x", &SigningKey { kid: "unknown".into(), ..rsa.clone() }.sign(&claims())).await;
    assert_eq!(rsp.status, 401, "an unknown kid while the issuer is down");
    assert_eq!(call(&client, "/jwks/x", &rsa.sign(&claims())).await.status, 200, "last good keys still verify");
    assert!(admin_get(gw.addr("admin"), "/readyz").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn jwt_routes_answer_503_and_readyz_reports_until_keys_load() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml = format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: 127.0.0.1:0 }}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  down: {{ jwt: {{ issuers: [https://idp.test], algorithms: [RS256], jwks_url: "https://localhost:{port}/jwks.json", trusted_cas: ca.pem }} }}
routes:
  - {{ name: down, match: {{ path_prefix: /down/ }}, policies: [down], backend: app }}
"#,
        listener = listener("", "{ max_header_bytes: 16KiB }"),
        url = backend.url(),
        port = closed.port()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    let rsa = SigningKey::new(Algorithm::RS256, "rsa-1");
    let rsp = call(&client, "/down/x", &rsa.sign(&claims())).await;
    assert_eq!(rsp.status, 503);
    assert_eq!(rsp.problem_kind(), "service-unavailable");
    let ready = admin_get(gw.addr("admin"), "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("policy down has no keys yet"), "{ready}");
    assert!(backend.received().is_empty());
}

// ---------------------------------------------------------------- client_cert

async fn mtls_setup() -> (Pki, TestBackend, TestGateway) {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!(
        r#"version: 1
listeners:{listener}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  test-client:
    client_cert:
      identities: [{{ subject: "CN=test-client,O=Example" }}]
      forward_header: X-Client-Cert
  someone-else:
    client_cert:
      identities: [{{ subject: "CN=someone-else,O=Example", issuer: "CN=test client CA, O=portcullis development" }}]
routes:
  - {{ name: mtls, match: {{ path_prefix: /mtls/ }}, policies: [test-client], backend: app }}
  - {{ name: other, match: {{ path_prefix: /other/ }}, policies: [someone-else], backend: app }}
  - {{ name: open, match: {{ path_prefix: /open/ }}, backend: app }}
"#,
        listener =
            listener("\n      client_auth: { mode: optional, trusted_cas: client-ca.pem, crls: [client-crl.pem] }", ""),
        url = backend.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    (pki, backend, gw)
}

#[tokio::test]
async fn client_cert_admits_the_listed_identity_and_forwards_a_summary() {
    let (pki, backend, gw) = mtls_setup().await;
    let client = Client::with_cert(gw.addr("public"), &pki, "client.pem", "client-key.pem");
    let rsp = client.send(req("/mtls/x", &[("x-client-cert", "subject=\"CN=admin\"")])).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let summary = backend.last().headers["x-client-cert"].to_str().unwrap().to_owned();
    // RFC 4514: most specific RDN first (rcgen writes CN before O in the certificate).
    assert!(
        summary
            .starts_with("subject=\"O=Example,CN=test-client\";issuer=\"O=portcullis development,CN=test client CA\";"),
        "{summary}"
    );
    assert!(summary.contains("thumbprint_sha256=") && summary.contains(";serial=") && summary.contains(";not_after="));

    let someone = Client::with_cert(gw.addr("public"), &pki, "someone.pem", "someone-key.pem");
    assert_eq!(someone.get("/other/x").await.status, 200);

    // Without the policy the header is still the gateway's: a client's copy is removed.
    let anonymous = Client::new(gw.addr("public"), &pki);
    assert_eq!(anonymous.send(req("/open/x", &[("x-client-cert", "forged")])).await.status, 200);
    assert!(!backend.last().headers.contains_key("x-client-cert"));
}

/// Subjects are compared RDN for RDN, in either order; a CN that spells a second RDN is only
/// itself; names reach the backend escaped as RFC 4514 says, in one printable header line.
#[tokio::test]
async fn client_cert_compares_names_rdn_for_rdn_and_forwards_them_escaped() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    let yaml = format!(
        r#"version: 1
listeners:{listener}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  rfc4514-order:
    client_cert:
      identities: [{{ subject: "O=Contoso, CN=svc" }}]
      forward_header: X-Client-Cert
  windows-order:
    client_cert:
      identities: [{{ subject: "CN=svc, O=Contoso", issuer: "O=portcullis development,CN=test client CA" }}]
      forward_header: X-Client-Cert
  look-alike:
    client_cert:
      identities: [{{ subject: 'O=Fabrikam,CN=svc\, O=Contoso' }}]
      forward_header: X-Client-Cert
  any-client:
    client_cert:
      identities: [{{ issuer: "CN=test client CA, O=portcullis development" }}]
      forward_header: X-Client-Cert
routes:
  - {{ name: a, match: {{ path_prefix: /rfc4514/ }}, policies: [rfc4514-order], backend: app }}
  - {{ name: b, match: {{ path_prefix: /windows/ }}, policies: [windows-order], backend: app }}
  - {{ name: c, match: {{ path_prefix: /look-alike/ }}, policies: [look-alike], backend: app }}
  - {{ name: d, match: {{ path_prefix: /any/ }}, policies: [any-client], backend: app }}
"#,
        listener = listener("\n      client_auth: { mode: optional, trusted_cas: client-ca.pem }", ""),
        url = backend.url()
    );
    let gw = TestGateway::start(&yaml, &pki);
    let svc = Client::with_cert(gw.addr("public"), &pki, "svc.pem", "svc-key.pem");
    let look_alike = Client::with_cert(gw.addr("public"), &pki, "look-alike.pem", "look-alike-key.pem");
    let crlf = Client::with_cert(gw.addr("public"), &pki, "crlf.pem", "crlf-key.pem");

    for path in ["/rfc4514/x", "/windows/x"] {
        let rsp = svc.get(path).await;
        assert_eq!(rsp.status, 200, "{path}: {}", rsp.text());
        let summary = backend.last().headers["x-client-cert"].to_str().unwrap().to_owned();
        assert!(summary.starts_with("subject=\"O=Contoso,CN=svc\";"), "{summary}");
    }
    let seen = backend.received().len();
    for path in ["/rfc4514/x", "/windows/x"] {
        let rsp = look_alike.get(path).await;
        assert_eq!(rsp.status, 403, "{path}: CN=\"svc, O=Contoso\" is not CN=svc in O=Contoso");
        assert_eq!(rsp.problem_kind(), "client-cert-rejected");
        assert_eq!(svc.get("/look-alike/x").await.status, 403, "and the other way round");
    }
    assert_eq!(backend.received().len(), seen, "nothing refused reached the backend");

    // The look-alike is admitted where it is named, escaped; the comma cannot be misread.
    assert_eq!(look_alike.get("/look-alike/x").await.status, 200);
    let summary = backend.last().headers["x-client-cert"].to_str().unwrap().to_owned();
    assert!(summary.starts_with(r#"subject="O=Fabrikam,CN=svc\\, O=Contoso";issuer="#), "{summary}");

    // CR, LF and non-ASCII travel as \XX escapes: one header line, nothing injected.
    assert_eq!(crlf.get("/any/x").await.status, 200);
    let last = backend.last();
    let summary = last.headers["x-client-cert"].to_str().unwrap().to_owned();
    assert!(summary.starts_with(r#"subject="O=Contoso,CN=svc\\0D\\0AX-Injected: 1 M\\C3\\BCller";"#), "{summary}");
    assert!(!last.headers.contains_key("x-injected"));
    assert_eq!(last.headers.get_all("x-client-cert").iter().count(), 1);
}

#[tokio::test]
async fn client_cert_refuses_missing_wrong_untrusted_expired_and_revoked_certificates() {
    let (pki, backend, gw) = mtls_setup().await;
    let rsp = Client::new(gw.addr("public"), &pki).get("/mtls/x").await;
    assert_eq!(rsp.status, 403, "no certificate");
    assert_eq!(rsp.problem_kind(), "client-cert-rejected");
    let rsp = Client::with_cert(gw.addr("public"), &pki, "someone.pem", "someone-key.pem").get("/mtls/x").await;
    assert_eq!(rsp.status, 403, "a trusted certificate with the wrong subject");
    let rsp = Client::with_cert(gw.addr("public"), &pki, "client.pem", "client-key.pem").get("/other/x").await;
    assert_eq!(rsp.status, 403);
    for (cert, key, what) in [
        ("stranger.pem", "stranger-key.pem", "another CA"),
        ("expired.pem", "expired-key.pem", "expired"),
        ("revoked.pem", "revoked-key.pem", "revoked by the CRL"),
    ] {
        let client = Client::with_cert(gw.addr("public"), &pki, cert, key);
        let err = client.try_send(req("/mtls/x", &[])).await.expect_err(what);
        assert!(!err.to_string().is_empty(), "{what}: refused at the handshake");
    }
    assert!(backend.received().is_empty());
}
