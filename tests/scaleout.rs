//! Several instances, one state: two gateway processes share one real PostgreSQL (the token
//! store) and one real Redis (rate limits). What one instance or the CLI changes holds at the
//! other at once; killing one instance mid-load leaves the other answering and the audit log
//! whole.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::client::Reply;
use support::gateway::binary;
use support::pki::listener;
use support::postgres::PgServer;
use support::redis::RedisServer;
use support::sse::{read_stream, SseBackend};
use support::tokens::now;
use support::ws::{closed_with, connect, echoes, WsBackend};
use support::{until, Client, Pki, TestBackend, TestGateway};

/// A gateway that issues tokens from the shared store and checks them on `/api/`, with a
/// per-client quota of 30 a day kept in Redis on `/limited/`; WebSockets on `/hub/` and
/// server-sent events on `/events/` take the token from `access_token` as SignalR sends it.
fn config(shared: &Shared, signing_key: &str, published: &[&str]) -> String {
    let (backend, store, redis) = (&shared.backend, &shared.store, shared.redis.url());
    format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: "127.0.0.1:0" }}
backends:
  app: {{ urls: ["{url}"] }}
  hub: {{ urls: ["{hub}"] }}
  events: {{ urls: ["{events}"] }}
policies:
  own-tokens: {{ jwt: {{ issuers: [self], audiences: [api://portal], forward_claims: {{ client_id: X-Client-Id }} }} }}
  own-query-tokens: {{ jwt: {{ issuers: [self], audiences: [api://portal], token_from: "query:access_token" }} }}
  keys: {{ subscription_key: {{ failures_per_network: 100000/min }} }}
  per-subscription: {{ rate_limit: {{ key: subscription, quota: 3/day, store: "{redis}", on_store_error: deny, timeout: 2s }} }}
  per-client: {{ rate_limit: {{ key: "claim:client_id", quota: 30/day, store: "{redis}", on_store_error: deny, timeout: 2s }} }}
routes:
  - {{ name: limited, match: {{ path_prefix: /limited/ }}, policies: [own-tokens, per-client], backend: app }}
  - {{ name: api, match: {{ path_prefix: /api/ }}, policies: [own-tokens], backend: app }}
  - {{ name: hub, match: {{ path_prefix: /hub/ }}, policies: [own-query-tokens], backend: hub, upgrades: [websocket] }}
  - {{ name: events, match: {{ path_prefix: /events/ }}, policies: [own-query-tokens], backend: events }}
  - {{ name: keyed, match: {{ path_prefix: /keyed/ }}, policies: [keys, per-subscription], backend: app }}
  - {{ name: keyed-free, match: {{ path_prefix: /keyed-free/ }}, policies: [keys], backend: app }}
identity:
  listener: public
  issuer: https://login.test
  audience: api://portal
  signing_key: {signing_key}
  published_keys: [{published}]
  store: "{store}"
  scopes: [read, write]
  rate_limit: {{ failures_per_ip: 100000/min, failures_per_client: 100000/min, issued_per_client: 100000/min }}
"#,
        listener = listener("", ""),
        url = backend.url(),
        hub = shared.hub.url(),
        events = shared.events.url(),
        published = published.join(", "),
    )
}

/// The shared state: PostgreSQL and Redis, and the certificates, keys and configurations.
struct Shared {
    pg: PgServer,
    redis: RedisServer,
    pki: Pki,
    backend: TestBackend,
    hub: WsBackend,
    events: SseBackend,
    /// The store URL as the configuration writes it: the password comes from a file.
    store: String,
}

impl Shared {
    async fn start() -> Self {
        let pg = PgServer::start();
        pg.create_database("identity");
        let pki = Pki::new();
        pki.write("db-password", &pg.password);
        for name in ["a", "b"] {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            pki.write(&format!("{name}-key.pem"), &key.serialize_pem());
            pki.write(&format!("{name}-pub.pem"), &key.public_key_pem());
        }
        let store = format!(
            "postgres://{}:${{file:db-password}}@127.0.0.1:{}/identity?sslmode=disable",
            support::postgres::USER,
            pg.port
        );
        let (hub, events) = (WsBackend::start(false).await, SseBackend::start().await);
        Self { pg, redis: RedisServer::start(), pki, backend: TestBackend::start().await, hub, events, store }
    }

    /// Starts an instance signing with `key` and publishing `published` too.
    fn gateway(&self, file: &str, key: &str, published: &[&str]) -> TestGateway {
        let yaml = config(self, key, published);
        TestGateway::start_file(self.pki.write(file, &yaml))
    }

    /// Runs `portcullis ARGS` on the shared store (through a configuration's `identity.store`).
    fn cli(&self, config: &str, args: &[&str]) -> String {
        let out = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(self.pki.path(config))
            .args(["--actor", "ops"])
            .output()
            .unwrap();
        assert!(out.status.success(), "portcullis {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a system; its client id and primary and alternate secrets.
    fn create_system(&self, config: &str, name: &str) -> (String, String, String) {
        let out = self.cli(config, &["systems", "create", name]);
        let field = |label: &str| {
            let line = out.lines().find(|l| l.trim_start().starts_with(label)).unwrap();
            line.split_once(':').unwrap().1.trim().to_owned()
        };
        (field("client id"), field("primary secret"), field("alternate secret"))
    }
}

async fn token_request(client: &Client, id: &str, secret: &str) -> Reply {
    token_request_with(client, id, secret, "grant_type=client_credentials").await
}

async fn token_request_with(client: &Client, id: &str, secret: &str, form: &str) -> Reply {
    let req = Request::post("/oauth2/token")
        .header("host", "login.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
    client.send(req.body(Full::new(Bytes::from(form.to_owned()))).unwrap()).await
}

async fn token(client: &Client, id: &str, secret: &str) -> String {
    let rsp = token_request(client, id, secret).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    rsp.json()["access_token"].as_str().unwrap().to_owned()
}

async fn get(client: &Client, path: &str, token: &str) -> Reply {
    let req = Request::get(path).header("host", "localhost").header("authorization", format!("Bearer {token}"));
    client.send(req.body(Full::default()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_token_store_and_the_rate_limits() {
    let shared = Shared::start().await;
    let one = shared.gateway("one.yaml", "a-key.pem", &[]);
    let two = shared.gateway("two.yaml", "a-key.pem", &[]);
    let (c1, c2) = (Client::new(one.addr("public"), &shared.pki), Client::new(two.addr("public"), &shared.pki));
    let (id, primary, alternate) = shared.create_system("one.yaml", "billing");

    // A token issued by instance 1 passes instance 2, and the other way round.
    let from_one = token(&c1, &id, &primary).await;
    assert_eq!(get(&c2, "/api/items", &from_one).await.status, 200);
    assert_eq!(shared.backend.last().headers["x-client-id"], id.as_str());
    let from_two = token(&c2, &id, &alternate).await;
    assert_eq!(get(&c1, "/api/items", &from_two).await.status, 200);

    // A renewal through instance 1's store voids the old primary at instance 2 at once.
    let renewed = shared.cli("one.yaml", &["systems", "renew-secret", &id]);
    assert!(renewed.contains("secret"), "{renewed}");
    assert_eq!(token_request(&c2, &id, &primary).await.status, 401, "the voided secret, at the other instance");
    assert_eq!(token_request(&c2, &id, &alternate).await.status, 200, "the promoted one works there");

    // A shared quota of 30 a day holds across both instances under concurrent load.
    let replies = futures_util::future::join_all(
        (0..60).map(|i| get(if i % 2 == 0 { &c1 } else { &c2 }, "/limited/x", &from_one)),
    )
    .await;
    let allowed = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!((allowed, refused), (30, 30), "one budget of 30 for both instances");
    let by_one = replies.iter().step_by(2).filter(|r| r.status == 200).count();
    assert!(by_one > 0 && by_one < 30, "both instances spent it ({by_one} of 30 at instance 1)");

    // A deactivated system gets no token from either instance.
    shared.cli("two.yaml", &["systems", "deactivate", &id]);
    assert_eq!(token_request(&c1, &id, &alternate).await.status, 401);
    assert_eq!(token_request(&c2, &id, &alternate).await.status, 401);
    shared.cli("two.yaml", &["systems", "activate", &id]);

    // Scopes granted through one instance's store count at the other at once.
    let ask = |scope: &str| format!("grant_type=client_credentials&scope={scope}");
    assert_eq!(token_request_with(&c1, &id, &alternate, &ask("write")).await.json()["error"], "invalid_scope");
    shared.cli("two.yaml", &["systems", "scopes", &id, "--set", "write"]);
    let rsp = token_request_with(&c1, &id, &alternate, &ask("write")).await;
    assert_eq!((rsp.status.as_u16(), rsp.json()["scope"].as_str()), (200, Some("write")), "{}", rsp.text());
    assert_eq!(token_request_with(&c1, &id, &alternate, &ask("read")).await.json()["error"], "invalid_scope");

    // A reload opens the store from blocking code, on a runtime that ends with the opening:
    // the new issuer connects on the gateway's runtime, never handed a connection of that one.
    let reloaded = two.reload().await;
    assert!(reloaded.starts_with("HTTP/1.1 200"), "{reloaded}");
    assert_eq!(token_request(&c2, &id, &alternate).await.status, 200, "the reloaded issuer answers");
    assert!(!two.log_text().contains("could not be recycled"), "{}", two.log_text());

    // Kill instance 1 while both serve token requests and the CLI keeps changing the store:
    // instance 2 answers every request, and every change is in the audit log.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |gateway: &TestGateway| {
        let (client, id, secret) = (Client::new(gateway.addr("public"), &shared.pki), id.clone(), alternate.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = client.try_send(token_req(&id, &secret)).await.map_or(0, |r| r.status.as_u16());
                statuses.push(status);
                if status == 0 {
                    break;
                }
            }
            statuses
        })
    };
    let (at_one, at_two) = (load(&one), load(&two));
    let users = 10;
    std::thread::scope(|s| {
        let adding = s.spawn(|| {
            for i in 0..users {
                shared.cli("two.yaml", &["users", "add", &format!("user-{i}"), "--roles", "Reader"]);
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut one = one;
        one.child.kill().unwrap();
        one.child.wait().unwrap();
        adding.join().unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (at_one, at_two) = (at_one.await.unwrap(), at_two.await.unwrap());
    assert!(at_one.len() > 1 && at_one[..at_one.len() - 1].iter().all(|&s| s == 200), "{at_one:?}");
    assert_eq!(at_one.last(), Some(&0), "instance 1 died mid-load");
    assert!(at_two.len() > at_one.len() && at_two.iter().all(|&s| s == 200), "instance 2 answered all: {at_two:?}");
    let audit = shared.cli("two.yaml", &["audit"]);
    let added = audit.lines().filter(|l| l.contains("user.add")).count();
    assert_eq!(added, users, "{audit}");
    for action in ["system.create", "system.renew_secret", "system.deactivate", "system.activate", "system.scopes"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    assert!(!audit.contains(&primary) && !audit.contains(&alternate), "no secret in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_ends_websockets_and_event_streams_on_every_instance_within_5s() {
    let shared = Shared::start().await;
    let one = shared.gateway("one.yaml", "a-key.pem", &[]);
    let two = shared.gateway("two.yaml", "a-key.pem", &[]);
    let (c1, c2) = (Client::new(one.addr("public"), &shared.pki), Client::new(two.addr("public"), &shared.pki));
    let (id, primary, alternate) = shared.create_system("one.yaml", "portal");
    let (other, other_secret, _) = shared.create_system("one.yaml", "reports");
    let revoked_token = token(&c1, &id, &primary).await;
    let kept_token = token(&c2, &other, &other_secret).await;

    // One tunnel per instance with the token, one event stream per instance, and a tunnel of
    // another system that must outlive the revocation.
    let mut at_one = connect(&c1, &format!("/hub/chat?access_token={revoked_token}")).await;
    let mut at_two = connect(&c2, &format!("/hub/chat?access_token={revoked_token}")).await;
    let mut bystander = connect(&c2, &format!("/hub/chat?access_token={kept_token}")).await;
    echoes(&mut at_one, "hello").await;
    echoes(&mut at_two, "hello").await;
    let events = format!("/events/feed?access_token={revoked_token}");
    let streams = tokio::spawn({
        let (c1, c2, events) = (c1.clone(), c2.clone(), events.clone());
        async move {
            let limit = std::time::Duration::from_secs(15);
            tokio::join!(read_stream(&c1, &events, limit), read_stream(&c2, &events, limit))
        }
    });
    support::until("both event streams flow", async || {
        shared.events.opened.load(std::sync::atomic::Ordering::SeqCst) == 2
    })
    .await;

    // Deactivated through the CLI on instance two's configuration: every instance closes.
    let started = std::time::Instant::now();
    shared.cli("two.yaml", &["systems", "deactivate", &id]);
    let revoked = (1008, "credential revoked".to_owned());
    assert_eq!(closed_with(&mut at_one).await, revoked);
    assert_eq!(closed_with(&mut at_two).await, revoked);
    let (s1, s2) = streams.await.unwrap();
    let within = started.elapsed();
    assert!(within < std::time::Duration::from_secs(5), "closed {within:?} after the deactivation");
    println!("both tunnels and both event streams ended {within:?} after the deactivation command started");
    for streamed in [s1, s2] {
        let streamed = streamed.expect("the event stream ended");
        assert!(streamed.text.ends_with("0\r\n\r\n"), "{:?}", streamed.text);
    }
    echoes(&mut bystander, "still here").await;
    for gw in [&one, &two] {
        support::until("the tunnel's log line", async || gw.log_text().contains(r#""close.reason":"revoked""#)).await;
        assert!(!gw.log_text().contains(&revoked_token), "the token is never logged");
    }

    // A token issued after the reactivation is not touched by the old deactivation, and a
    // secret renewal ends it in turn.
    shared.cli("one.yaml", &["systems", "activate", &id]);
    let deactivated_at = now();
    support::until("a new second", async || now() > deactivated_at).await;
    let fresh = token(&c2, &id, &alternate).await;
    let mut fresh_ws = connect(&c1, &format!("/hub/chat?access_token={fresh}")).await;
    // Longer than the instances' poll of the store: the old deactivation would have applied.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    echoes(&mut fresh_ws, "after reactivation").await;
    shared.cli("one.yaml", &["systems", "renew-secret", &id]);
    assert_eq!(closed_with(&mut fresh_ws).await, revoked);
    echoes(&mut bystander, "still here").await;
}

async fn with_key(client: &Client, path: &str, key: &str) -> u16 {
    let req = Request::get(path).header("host", "localhost").header("ocp-apim-subscription-key", key);
    client.send(req.body(Full::default()).unwrap()).await.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regenerated_key_is_refused_by_the_other_instance_within_a_second_and_quotas_are_shared() {
    let shared = Shared::start().await;
    let one = shared.gateway("one.yaml", "a-key.pem", &[]);
    let two = shared.gateway("two.yaml", "a-key.pem", &[]);
    let (c1, c2) = (Client::new(one.addr("public"), &shared.pki), Client::new(two.addr("public"), &shared.pki));
    let out = shared.cli("one.yaml", &["subscriptions", "create", "--name", "partner", "--scope", "all"]);
    let field = |text: &str, label: &str| {
        let line = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap();
        line.split_once(':').unwrap().1.trim().to_owned()
    };
    let (id, primary, secondary) = (field(&out, "id"), field(&out, "primary key"), field(&out, "secondary key"));
    for client in [&c1, &c2] {
        support::until("the key works", async || with_key(client, "/keyed-free/x", &primary).await == 200).await;
    }

    // Regenerated through instance one's configuration: instance two refuses the old key
    // within a poll of the store and one read, the secondary keeps working.
    let out = shared.cli("one.yaml", &["subscriptions", "regenerate", &id, "--primary"]);
    let new_primary = field(&out, "new primary key");
    let regenerated = std::time::Instant::now();
    support::until("the old primary is refused at instance two", async || {
        with_key(&c2, "/keyed-free/x", &primary).await == 401
    })
    .await;
    let took = regenerated.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "refused {took:?} after the regeneration");
    println!("instance two refused the regenerated key {took:?} after the CLI returned");
    assert_eq!(with_key(&c2, "/keyed-free/x", &secondary).await, 200);
    for client in [&c1, &c2] {
        support::until("the new primary works", async || with_key(client, "/keyed-free/x", &new_primary).await == 200)
            .await;
    }

    // A quota of 3 a day per subscription, kept in Redis: one budget across both instances
    // and both keys.
    let statuses = [
        with_key(&c1, "/keyed/a", &secondary).await,
        with_key(&c2, "/keyed/a", &new_primary).await,
        with_key(&c1, "/keyed/a", &new_primary).await,
        with_key(&c2, "/keyed/a", &secondary).await,
    ];
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Suspended through instance two: instance one refuses both keys.
    shared.cli("two.yaml", &["subscriptions", "suspend", &id]);
    support::until("suspended at instance one", async || with_key(&c1, "/keyed-free/x", &secondary).await == 401).await;
    assert_eq!(with_key(&c1, "/keyed-free/x", &new_primary).await, 401);
}

fn token_req(id: &str, secret: &str) -> Request<Full<Bytes>> {
    Request::post("/oauth2/token")
        .header("host", "login.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))))
        .body(Full::new(Bytes::from_static(b"grant_type=client_credentials")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_their_own_keys_publish_both_and_accept_each_others_tokens() {
    let shared = Shared::start().await;
    let one = shared.gateway("one.yaml", "a-key.pem", &["b-pub.pem"]);
    let two = shared.gateway("two.yaml", "b-key.pem", &["a-pub.pem"]);
    let (c1, c2) = (Client::new(one.addr("public"), &shared.pki), Client::new(two.addr("public"), &shared.pki));
    let (id, primary, _) = shared.create_system("one.yaml", "billing");

    let kids = |jwks: serde_json::Value| {
        let mut kids: Vec<String> =
            jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
        kids.sort();
        kids
    };
    let jwks_one = kids(c1.get("/.well-known/jwks.json").await.json());
    assert_eq!(jwks_one.len(), 2, "its own key and the other instance's");
    assert_eq!(jwks_one, kids(c2.get("/.well-known/jwks.json").await.json()), "both publish the same two keys");

    let from_one = token(&c1, &id, &primary).await;
    let from_two = token(&c2, &id, &primary).await;
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_ne!(kid(&from_one), kid(&from_two), "each instance signs with its own key");
    assert_eq!(get(&c2, "/api/items", &from_one).await.status, 200);
    assert_eq!(get(&c1, "/api/items", &from_two).await.status, 200);

    // An instance that does not publish the other's key refuses its tokens.
    let alone = shared.gateway("alone.yaml", "a-key.pem", &[]);
    let c3 = Client::new(alone.addr("public"), &shared.pki);
    let refused = get(&c3, "/api/items", &from_two).await;
    assert_eq!(refused.status, 401);
    assert_eq!(get(&c3, "/api/items", &from_one).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_the_token_endpoint_says_so_and_issued_tokens_still_pass() {
    let mut shared = Shared::start().await;
    let gw = shared.gateway("one.yaml", "a-key.pem", &[]);
    let client = Client::new(gw.addr("public"), &shared.pki);
    let (id, primary, _) = shared.create_system("one.yaml", "billing");
    let issued = token(&client, &id, &primary).await;

    shared.pg.stop();
    let refused = token_request(&client, &id, &primary).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"], "temporarily_unavailable");
    assert_eq!(get(&client, "/api/items", &issued).await.status, 200, "validation needs no database");
    assert!(gw.log_text().contains("the identity store failed"));

    shared.pg.resume();
    until("tokens are issued again", async || token_request(&client, &id, &primary).await.status == 200).await;
}
