//! Subscription keys through the real gateway (README: Subscription keys): keys made and
//! changed with the real CLI in the issuer's SQLite store, sent as APIM's callers send them,
//! checked by the `subscription_key` policy; what the backend receives and what the log
//! keeps. Two instances sharing PostgreSQL are in `scaleout.rs`.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::client::Reply;
use support::gateway::binary;
use support::pki::listener;
use support::{Client, Pki, TestBackend, TestGateway};

struct Setup {
    pki: Pki,
    backend: TestBackend,
    gw: TestGateway,
    client: Client,
    config: PathBuf,
}

/// Routes `/orders/` and `/invoices/` (the `portal` product), `/admin/` (outside it) and
/// `/limited/` (2 requests a minute per subscription), all behind `subscription_key`; unknown
/// keys count against a budget of 1000 a minute per network there (tests poll until a new
/// key works), and of 5 on `/guarded/`.
async fn setup() -> Setup {
    let pki = Pki::new();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    pki.write("signing-key.pem", &key.serialize_pem());
    let backend = TestBackend::start().await;
    let yaml = format!(
        r#"version: 1
listeners:{listener}admin: {{ bind: 127.0.0.1:0 }}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  keys: {{ subscription_key: {{ forward_header: X-Subscription-Id, failures_per_network: 1000/min }} }}
  guarded-keys: {{ subscription_key: {{ failures_per_network: 5/min }} }}
  per-subscription: {{ rate_limit: {{ key: subscription, rate: 2/min, burst: 2 }} }}
products:
  portal: {{ display_name: Portal, routes: [orders, invoices] }}
routes:
  - {{ name: orders, match: {{ path_prefix: /orders/ }}, policies: [keys], backend: app }}
  - {{ name: invoices, match: {{ path_prefix: /invoices/ }}, policies: [keys], backend: app }}
  - {{ name: admin, match: {{ path_prefix: /admin/ }}, policies: [keys], backend: app }}
  - {{ name: limited, match: {{ path_prefix: /limited/ }}, policies: [keys, per-subscription], backend: app }}
  - {{ name: guarded, match: {{ path_prefix: /guarded/ }}, policies: [guarded-keys], backend: app }}
identity:
  listener: public
  issuer: https://login.test
  signing_key: signing-key.pem
  store: sqlite:var/identity.db
"#,
        listener = listener("", ""),
        url = backend.url(),
    );
    let config = pki.write("gateway.yaml", &yaml);
    let gw = TestGateway::start_file(config.clone());
    let client = Client::new(gw.addr("public"), &pki);
    Setup { pki, backend, gw, client, config }
}

/// The value after `label:` on its line.
fn field(text: &str, label: &str) -> String {
    let line = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label} in {text}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

impl Setup {
    /// `portcullis subscriptions ARGS` on the gateway's store; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("subscriptions")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .args(["--actor", "ops"])
            .output()
            .unwrap();
        assert!(out.status.success(), "subscriptions {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a subscription; its id and primary and secondary keys.
    fn create(&self, name: &str, scope: &str) -> (String, String, String) {
        let out = self.cli(&["create", "--name", name, "--scope", scope]);
        (field(&out, "id"), field(&out, "primary key"), field(&out, "secondary key"))
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(target).header("host", "localhost");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.client.send(req.body(Full::<Bytes>::default()).unwrap()).await
    }

    async fn with_key(&self, target: &str, key: &str) -> Reply {
        self.get(target, &[("Ocp-Apim-Subscription-Key", key)]).await
    }

    /// The problem kind a key is refused with on `target`; None when it passes.
    async fn refusal(&self, target: &str, key: &str) -> Option<String> {
        let rsp = self.with_key(target, key).await;
        (rsp.status != 200).then(|| rsp.problem_kind())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_opens_its_scope_and_never_reaches_the_backend_nor_the_log() {
    let s = setup().await;
    let (id, primary, secondary) = s.create("portal web", "product:portal");
    assert_eq!(primary.len(), 64, "256 random bits, hex");
    // The gateway reads the new subscription within a poll of the store.
    support::until("the new key opens the product", async || s.with_key("/orders/1", &primary).await.status == 200)
        .await;
    let got = s.backend.last();
    assert!(got.headers.get("ocp-apim-subscription-key").is_none(), "the key is removed before forwarding");
    assert_eq!(got.headers["x-subscription-id"], id.as_str());

    // The query form, as `?subscription-key=`: removed, the other parameters kept as spelled.
    let rsp = s.get(&format!("/invoices/7?a=1&subscription-key={secondary}&b=%2F"), &[]).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(s.backend.last().target, "/invoices/7?a=1&b=%2F");

    // A client cannot claim a subscription by sending the forwarded header itself.
    let rsp =
        s.get("/orders/2", &[("Ocp-Apim-Subscription-Key", &primary), ("X-Subscription-Id", "someone-else")]).await;
    assert_eq!(rsp.status, 200);
    assert_eq!(s.backend.last().headers["x-subscription-id"], id.as_str());

    // Outside the product: refused as APIM refuses a key not valid for the API.
    let rsp = s.with_key("/admin/users", &primary).await;
    assert_eq!((rsp.status.as_u16(), rsp.problem_kind()), (401, "subscription-out-of-scope".to_owned()));

    // Missing, unknown, and given twice.
    let rsp = s.get("/orders/1", &[]).await;
    assert_eq!((rsp.status.as_u16(), rsp.problem_kind()), (401, "subscription-key-missing".to_owned()));
    assert!(rsp.text().contains("missing subscription key"), "APIM's wording: {}", rsp.text());
    let rsp = s.with_key("/orders/1", &primary.to_uppercase()).await;
    assert_eq!((rsp.status.as_u16(), rsp.problem_kind()), (401, "subscription-key-invalid".to_owned()));
    let rsp =
        s.get(&format!("/orders/1?subscription-key={secondary}"), &[("Ocp-Apim-Subscription-Key", &primary)]).await;
    assert_eq!((rsp.status.as_u16(), rsp.problem_kind()), (401, "subscription-key-ambiguous".to_owned()));
    let rsp =
        s.get("/orders/1", &[("Ocp-Apim-Subscription-Key", &primary), ("Ocp-Apim-Subscription-Key", &primary)]).await;
    assert_eq!(rsp.status, 401, "a repeated header is ambiguous");

    // `trace` reads the same keys from the store, and prints neither key.
    let trace = |key: &str| {
        let out = Command::new(binary())
            .args(["trace", "--config"])
            .arg(&s.config)
            .args(["-H", &format!("Ocp-Apim-Subscription-Key: {key}"), "https://localhost/orders/1"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let passed = trace(&primary);
    assert!(passed.contains("forwarded"), "{passed}");
    assert!(!passed.contains(&primary), "{passed}");
    assert!(trace("wrong").contains("subscription_key_invalid"));

    let log = s.gw.log_text();
    assert!(!log.contains(&primary) && !log.contains(&secondary), "no key in any log line");
    assert!(log.contains("subscription-key=[redacted]"), "the query key is redacted by name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerating_suspending_and_cancelling_take_effect_and_the_other_key_keeps_working() {
    let s = setup().await;
    let (id, primary, secondary) = s.create("partner", "all");
    support::until("the key works", async || s.with_key("/admin/x", &primary).await.status == 200).await;

    let out = s.cli(&["regenerate", &id, "--primary"]);
    let new_primary = field(&out, "new primary key");
    support::until("the old primary is refused", async || s.with_key("/admin/x", &primary).await.status == 401).await;
    assert_eq!(s.with_key("/admin/x", &secondary).await.status, 200, "the secondary kept working");
    assert_eq!(s.with_key("/admin/x", &new_primary).await.status, 200);

    s.cli(&["suspend", &id]);
    support::until("suspended", async || {
        s.refusal("/admin/x", &secondary).await.as_deref() == Some("subscription-suspended")
    })
    .await;
    s.cli(&["activate", &id]);
    support::until("active again", async || s.with_key("/admin/x", &secondary).await.status == 200).await;
    s.cli(&["cancel", &id]);
    support::until("cancelled", async || {
        s.refusal("/admin/x", &secondary).await.as_deref() == Some("subscription-cancelled")
    })
    .await;

    // An expiry in the past expires it at once, without a store change at that time.
    let (late, late_key, _) = s.create("late", "route:orders");
    support::until("the route key works", async || s.with_key("/orders/1", &late_key).await.status == 200).await;
    assert_eq!(s.with_key("/invoices/1", &late_key).await.problem_kind(), "subscription-out-of-scope");
    s.cli(&["expire", &late, "--at", "2020-01-01T00:00:00Z"]);
    support::until("expired", async || {
        s.refusal("/orders/1", &late_key).await.as_deref() == Some("subscription-expired")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_from_one_network_ends_in_429_before_any_lookup() {
    let s = setup().await;
    let (_, primary, _) = s.create("victim", "all");
    support::until("the key works", async || s.with_key("/admin/x", &primary).await.status == 200).await;
    assert_eq!(s.with_key("/guarded/x", &primary).await.status, 200);
    for i in 0..5 {
        let rsp = s.with_key("/guarded/x", &format!("guess-{i:060}")).await;
        assert_eq!(rsp.status, 401, "guess {i}");
    }
    let rsp = s.with_key("/guarded/x", "guess-6").await;
    assert_eq!((rsp.status.as_u16(), rsp.problem_kind()), (429, "subscription-key-guessing".to_owned()));
    assert!(rsp.header("retry-after").is_some());
    // Even the right key waits: the network spent its budget, and nothing is looked up.
    assert_eq!(s.with_key("/guarded/x", &primary).await.status, 429);
    // A missing key is no guess.
    assert_eq!(s.get("/orders/1", &[]).await.problem_kind(), "subscription-key-missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_counts_per_subscription_and_imported_apim_keys_work_unchanged() {
    let s = setup().await;
    let (_, a, _) = s.create("a", "all");
    let (_, b, _) = s.create("b", "all");
    support::until("both keys work", async || s.with_key("/orders/1", &b).await.status == 200).await;
    for _ in 0..2 {
        assert_eq!(s.with_key("/limited/x", &a).await.status, 200);
    }
    assert_eq!(s.with_key("/limited/x", &a).await.status, 429, "a's budget of 2 is spent");
    assert_eq!(s.with_key("/limited/x", &b).await.status, 200, "b has its own");

    // The keys APIM's callers hold, imported from the management API's shape.
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apim/subscriptions.json");
    let out = Command::new(binary())
        .args(["subscriptions", "import"])
        .arg(&sample)
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("imported"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&sample).unwrap()).unwrap();
    let active = json["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["properties"]["state"] == "active" && s["properties"]["scope"].as_str().unwrap().ends_with("/apis"))
        .expect("an active all-APIs subscription in the sample");
    let key = active["properties"]["primaryKey"]
        .as_str()
        .or_else(|| active["listSecrets"]["primaryKey"].as_str())
        .unwrap()
        .to_owned();
    support::until("the imported key works", async || s.with_key("/admin/x", &key).await.status == 200).await;

    // `check` reads the store too: the short imported keys, and the scopes this configuration
    // does not have (APIM's `starter` product, its `orders-api` API).
    let out = Command::new(binary()).arg("check").arg("--config").arg(&s.config).output().unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{warnings}");
    assert!(warnings.contains("subscription legacy-partner: its primary key is estimated at"), "{warnings}");
    assert!(warnings.contains("scope product:starter names no product of this configuration"), "{warnings}");
    assert!(warnings.contains("scope route:orders-api names no route"), "{warnings}");
    assert!(!warnings.contains(&key), "no key in the warnings");
    drop(s.pki);
}
