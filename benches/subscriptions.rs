//! The decision path (`portcullis trace`'s: routing, normalization, the chain) of one route
//! with and without a `subscription_key` policy in front of the same chain (an IP filter and
//! an in-memory rate limit), the keyring holding 1,000 subscriptions; and the cold side, the
//! keyring read from a SQLite store of 1,000 subscriptions (what a change costs each instance).
#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)] // criterion_group! defines an undocumented pub fn

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use portcullis::request::conn::ConnInfo;
use portcullis::runtime::Runtime;
use portcullis::store::{block_on, StoreLocation, SubscriptionScope};
use portcullis::tools::dryrun;

const CONFIG: &str = r#"version: 1
listeners:
  - { name: public, bind: "127.0.0.1:0", tls: { certificates: [{ cert: cert.pem, key: key.pem }] } }
backends:
  app: { urls: ["http://127.0.0.1:9"] }
policies:
  keys: { subscription_key: {} }
  office: { ip_filter: { allow: [10.0.0.0/8, 192.168.0.0/16] } }
  limit: { rate_limit: { key: client_ip, rate: 1000000000/s } }
routes:
  - { name: plain, match: { path_prefix: /plain/ }, policies: [office, limit], backend: app }
  - { name: keyed, match: { path_prefix: /keyed/ }, policies: [keys, office, limit], backend: app }
identity:
  listener: public
  issuer: https://login.test
  signing_key: signing-key.pem
  store: sqlite:identity.db
"#;

/// A compiled configuration over a store of 1,000 subscriptions; one of their keys.
fn setup(dir: &std::path::Path) -> (Runtime, String) {
    let signing = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.join("signing-key.pem"), signing.serialize_pem()).unwrap();
    let tls = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), tls.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), tls.signing_key.serialize_pem()).unwrap();
    let key = block_on(async {
        let store = StoreLocation::Sqlite(dir.join("identity.db")).open().await.unwrap();
        let mut key = String::new();
        for i in 0..1000 {
            let made =
                store.create_subscription(&format!("caller {i}"), SubscriptionScope::All, None, None, "bench").await;
            key = made.unwrap().primary.text;
        }
        key
    });
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, CONFIG).unwrap();
    let runtime = portcullis::compile::load(&file).unwrap().runtime;
    (runtime, key)
}

fn decide(rt: &Runtime, conn: &ConnInfo, path: &str, key: &str) -> bool {
    let req = Request::get(path).header("host", "localhost").header("ocp-apim-subscription-key", key).body(()).unwrap();
    let (parts, ()) = req.into_parts();
    let now = portcullis::clock::unix_now();
    let run = block_on(dryrun::run(rt, parts, conn, now));
    matches!(run.end, dryrun::End::Forwarded(_))
}

fn subscription_chain(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (rt, key) = setup(dir.path());
    let issuer = rt.issuer.clone().unwrap();
    block_on(issuer.load_keyring()).unwrap();
    let conn = ConnInfo {
        listener: Arc::from("public"),
        peer: SocketAddr::from(([10, 1, 2, 3], 50_000)),
        tls_version: Some("TLSv1_3"),
        sni: None,
        client_cert: None,
    };
    assert!(decide(&rt, &conn, "/plain/items/42", &key), "the plain route passes");
    assert!(decide(&rt, &conn, "/keyed/items/42", &key), "the key opens the keyed route");
    assert!(!decide(&rt, &conn, "/keyed/items/42", "not-a-key"), "another key does not");
    let mut g = c.benchmark_group("subscription_chain");
    g.bench_function("chain_alone", |b| b.iter(|| decide(&rt, &conn, "/plain/items/42", &key)));
    g.bench_function("with_subscription_key_warm", |b| b.iter(|| decide(&rt, &conn, "/keyed/items/42", &key)));
    g.finish();
    c.bench_function("keyring_read_1000_subscriptions_sqlite", |b| b.iter(|| block_on(issuer.load_keyring()).unwrap()));
}

criterion_group!(benches, subscription_chain);
criterion_main!(benches);
