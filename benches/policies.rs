//! Per-request cost of each policy over its compiled structure, with naive baselines where
//! the structure is hand-rolled (the IP range table), and JWT verification per algorithm
//! family with the verified-token cache missing (full verification) and hitting.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)] // criterion_group! defines an undocumented pub fn

use std::future::Future;
use std::hint::black_box;
use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method};
use ipnet::IpNet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::config::context::CompileContext;
use portcullis::policy::client_cert::{ClientCert, ClientCertConfig, IdentityConfig};
use portcullis::policy::context::Params;
use portcullis::policy::cors::{Cors, CorsConfig};
use portcullis::policy::ip_filter::{IpFilter, IpFilterConfig};
use portcullis::policy::jwt::config::JwtConfig;
use portcullis::policy::jwt::Jwt;
use portcullis::policy::rate_limit::{RateLimit, RateLimitConfig};
use portcullis::policy::{Claims, PolicyKind, RequestContext};
use portcullis::request::conn::ConnInfo;
use portcullis::tls::dn::Dn;
use portcullis::tls::ClientCertInfo;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use std::sync::Arc;

/// Polls a future that never waits (static keys) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked check waited"),
    }
}

fn cors(c: &mut Criterion) {
    let cors = Cors::compile(
        &CorsConfig {
            allowed_origins: vec!["https://portal.example.com".into(), "https://*.portal.example.com".into()],
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_headers: vec!["Authorization".into()],
            expose_headers: vec!["X-Request-Id".into()],
            allow_credentials: false,
            max_age: None,
            terminate_unmatched: true,
        },
        &mut CompileContext::standalone(std::path::Path::new("."), "bench"),
    )
    .unwrap();
    let mut g = c.benchmark_group("cors");
    for (name, origin) in [
        ("exact", "https://portal.example.com"),
        ("wildcard", "https://eu.portal.example.com"),
        ("look_alike", "https://evilportal.example.com"),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("origin", HeaderValue::from_static(origin));
        g.bench_function(name, |b| b.iter(|| cors.verdict(&Method::GET, black_box(&headers))));
    }
    g.finish();
}

fn ip_filter(c: &mut Criterion) {
    // 1,000 allow rules and 1,000 deny rules across the address space.
    let allow: Vec<IpNet> =
        (0..1000u32).map(|i| format!("{}.{}.0.0/16", 1 + i / 250, i % 250).parse().unwrap()).collect();
    let deny: Vec<IpNet> =
        (0..1000u32).map(|i| format!("{}.{}.{}.0/24", 100 + i / 250, i % 250, 7).parse().unwrap()).collect();
    let cfg = IpFilterConfig { allow: allow.clone(), deny: deny.clone() };
    let filter = IpFilter::compile(&cfg, &mut CompileContext::standalone(std::path::Path::new("."), "bench")).unwrap();
    let probe: IpAddr = "4.200.1.1".parse().unwrap();
    let mut g = c.benchmark_group("ip_filter_2000_rules");
    g.bench_function("range_table", |b| b.iter(|| filter.check_address(black_box(probe)).is_ok()));
    g.bench_function("naive_linear_baseline", |b| {
        b.iter(|| {
            let ip = black_box(probe);
            !deny.iter().any(|n| n.contains(&ip)) && allow.iter().any(|n| n.contains(&ip))
        })
    });
    g.finish();
}

fn client_cert(c: &mut Criterion) {
    let cfg = ClientCertConfig {
        identities: vec![
            IdentityConfig { thumbprint_sha256: Some("00".repeat(32)), ..Default::default() },
            IdentityConfig { dns_name: Some("other.example.com".into()), ..Default::default() },
            IdentityConfig { subject: Some("CN=apim-client,O=Example".parse().unwrap()), ..Default::default() },
        ],
        forward_header: Some("X-Client-Cert".into()),
    };
    let policy =
        ClientCert::compile(&cfg, &mut CompileContext::standalone(std::path::Path::new("."), "bench")).unwrap();
    let (subject_name, issuer_name): (Dn, Dn) =
        ("CN=apim-client,O=Example".parse().unwrap(), "CN=Issuing CA,O=Example".parse().unwrap());
    let cert = ClientCertInfo {
        subject: subject_name.to_string(),
        issuer: issuer_name.to_string(),
        subject_name,
        issuer_name,
        serial: "1A2B3C".into(),
        thumbprint_sha256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08".into(),
        dns_names: vec!["apim.internal.example.com".into()],
        uris: vec![],
        not_after: 1_900_000_000,
    };
    c.bench_function("client_cert_third_identity", |b| {
        b.iter_batched_ref(HeaderMap::new, |h| policy.check_cert(Some(black_box(&cert)), h), BatchSize::SmallInput)
    });
}

/// An allowed request through an in-memory `rate_limit` (key, budget, headers for the
/// response): the bound is a median under 150 ns. 1,000 clients take turns, so the
/// state is spread over the shards like real traffic.
fn rate_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_memory_allowed");
    for (name, yaml) in [
        ("client_ip_rate", "{ key: client_ip, rate: 1000000/s }"),
        ("claim_and_header_rate", "{ key: [\"claim:sub\", \"header:X-Api-Key\"], rate: 1000000/s }"),
        ("client_ip_quota", "{ key: client_ip, quota: 1000000000/day }"),
    ] {
        let cfg: RateLimitConfig = serde_saphyr::from_str(yaml).unwrap();
        let limit =
            RateLimit::compile(&cfg, &mut CompileContext::standalone(std::path::Path::new("."), "bench")).unwrap();
        let clients: Vec<(ConnInfo, Parts, Arc<Claims>)> = (0..1000u32)
            .map(|i| {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                let conn = ConnInfo {
                    listener: "public".into(),
                    peer: (ip, 1).into(),
                    tls_version: None,
                    sni: None,
                    client_cert: None,
                };
                let (parts, ()) =
                    http::Request::builder().header("x-api-key", format!("key-{i}")).body(()).unwrap().into_parts();
                let claims = serde_json::json!({ "sub": format!("user-{i}") }).as_object().unwrap().clone();
                (conn, parts, Arc::new(claims))
            })
            .collect();
        let params = Params::new();
        let mut turn = 0;
        g.bench_function(format!("{name}/decide"), |b| {
            b.iter(|| {
                turn = (turn + 1) % clients.len();
                let (conn, parts, claims) = &clients[turn];
                let mut cx = RequestContext::new("id", conn.peer.ip(), conn, "api", "/", &params, 1_800_000_000);
                cx.claims = Some(claims.clone());
                ready(limit.spend(black_box(parts), &mut cx)).is_ok()
            })
        });
        // With the response fields, written into a response's existing header map.
        let mut headers = HeaderMap::with_capacity(16);
        g.bench_function(format!("{name}/decide_and_fields"), |b| {
            b.iter(|| {
                turn = (turn + 1) % clients.len();
                let (conn, parts, claims) = &clients[turn];
                let mut cx = RequestContext::new("id", conn.peer.ip(), conn, "api", "/", &params, 1_800_000_000);
                cx.claims = Some(claims.clone());
                let allowed = ready(limit.spend(black_box(parts), &mut cx)).is_ok();
                limit.on_response(&cx, &mut headers);
                headers.clear();
                allowed
            })
        });
    }
    g.finish();
}

/// (algorithm, private PEM, public PEM)
fn keys() -> Vec<(Algorithm, String, String)> {
    let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    vec![
        (
            Algorithm::RS256,
            rsa.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            rsa.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        ),
        (Algorithm::ES256, es.serialize_pem(), es.public_key_pem()),
        (Algorithm::EdDSA, ed.serialize_pem(), ed.public_key_pem()),
    ]
}

fn jwt(c: &mut Criterion) {
    // Before any token is signed: the first use of jsonwebtoken fixes its provider.
    portcullis::policy::jwt::crypto::install();
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({ "iss": "https://idp.test", "aud": "api://bench", "sub": "u", "exp": now + 3600, "roles": ["Read"] });
    let mut g = c.benchmark_group("jwt");
    let mut cases: Vec<(String, Algorithm, String, String)> = Vec::new();
    for (alg, private, public) in keys() {
        let file = format!("{alg:?}.pub.pem");
        std::fs::write(dir.path().join(&file), public).unwrap();
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
        };
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &encoding).unwrap();
        cases.push((format!("{alg:?}"), alg, format!("keys: [{file}]"), token));
    }
    let secret = "a bench secret of more than 32 bytes";
    std::fs::write(dir.path().join("hs.secret"), secret).unwrap();
    let hs =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap();
    cases.push(("HS256".into(), Algorithm::HS256, "secret: \"${file:hs.secret}\"".into(), hs));
    for (name, alg, source, token) in cases {
        for (cache, size) in [("miss", 0), ("hit", 1024)] {
            let yaml = format!(
                "{{ issuers: [https://idp.test], audiences: [api://bench], algorithms: [{alg:?}], {source}, token_cache: {size}, require_claims: {{ roles: {{ any_of: [Read] }} }} }}"
            );
            let cfg: JwtConfig = serde_saphyr::from_str(&yaml).unwrap();
            let policy = Jwt::compile(&cfg, &mut CompileContext::standalone(dir.path(), "bench")).unwrap();
            let mut headers = HeaderMap::new();
            headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
            assert!(ready(policy.check_token(&mut headers.clone(), None, now)).is_ok(), "{name} verifies");
            g.bench_function(format!("{name}/cache_{cache}"), |b| {
                b.iter_batched_ref(
                    || headers.clone(),
                    |h| ready(policy.check_token(h, None, now)),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

/// The floor under `jwt/RS256/cache_miss`: one RSA-2048 PKCS#1 signature check and nothing
/// else, with the key parsed on every call and with a key parsed once (what the policy uses).
fn rsa_signature_only(c: &mut Criterion) {
    use base64::Engine;
    use rsa::traits::PublicKeyParts;
    let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = rsa.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({ "sub": "u" }),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let (message, signature) = token.rsplit_once('.').unwrap();
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap();
    let public = rsa.to_public_key();
    let key = aws_lc_rs::signature::RsaPublicKeyComponents { n: public.n().to_bytes_be(), e: public.e().to_bytes_be() };
    let params = &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256;
    key.verify(params, message.as_bytes(), &signature).unwrap();
    c.bench_function("rsa2048_signature_only/aws_lc_parsed_per_call", |b| {
        b.iter(|| key.verify(params, message.as_bytes(), &signature).is_ok())
    });
    let parsed = aws_lc_rs::signature::RsaPublicKeyComponents { n: &key.n, e: &key.e }
        .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
        .unwrap();
    parsed.verify_sig(message.as_bytes(), &signature).unwrap();
    c.bench_function("rsa2048_signature_only/aws_lc_parsed_once", |b| {
        b.iter(|| parsed.verify_sig(message.as_bytes(), &signature).is_ok())
    });
}

criterion_group!(benches, cors, ip_filter, client_cert, rate_limit, jwt, rsa_signature_only);
criterion_main!(benches);
