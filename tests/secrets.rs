//! Secrets at rest: the encrypted secret store with the real CLI (values on standard input),
//! `${secret:NAME}` resolved into what the real gateway sends its backend, master-key mistakes
//! and key rotation, the store shared through PostgreSQL, and redaction by value: secrets
//! planted everywhere must not appear in a single byte the gateway or its CLI writes.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::gateway::binary;
use support::pki::listener;
use support::postgres::PgServer;
use support::{Client, Pki, TestBackend, TestGateway};

/// Runs `portcullis ARGS` with `stdin`; its success and everything it wrote.
fn run(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `portcullis secrets ARGS --config gateway.yaml --actor ops`, which must succeed.
fn secrets(pki: &Pki, args: &[&str], stdin: &str) -> String {
    let mut all = vec!["secrets"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", "gateway.yaml", "--actor", "ops"]);
    let (ok, out) = run(pki.dir(), &all, stdin, &[]);
    assert!(ok, "portcullis {all:?}: {out}");
    out
}

fn check(pki: &Pki) -> (bool, String) {
    run(pki.dir(), &["check", "--config", "gateway.yaml"], "", &[])
}

/// A gateway whose one route sends the backend `X-Backend-Token: ${secret:backend-token}`.
fn config(backend: &str, secrets: &str, token_ref: &str) -> String {
    format!(
        r#"version: 1
listeners:{listener}
backends:
  app: {{ urls: ["{backend}"] }}
policies:
  token: {{ headers: {{ request: {{ set: {{ X-Backend-Token: "{token_ref}" }} }} }} }}
routes:
  - {{ name: all, match: {{}}, policies: [token], backend: app }}
secrets: {secrets}
"#,
        listener = listener("", ""),
    )
}

fn new_key(pki: &Pki, file: &str) -> String {
    let (ok, key) = run(pki.dir(), &["secrets", "gen-key"], "", &[]);
    assert!(ok, "{key}");
    pki.write(file, &key);
    key.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_resolved_rotated_and_audited() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    new_key(&pki, "master.key");
    let section = "{ store: sqlite:var/secrets.db, master_key: \"${file:master.key}\" }";
    let yaml = config(&backend.url(), section, "${secret:backend-token}");
    pki.write("gateway.yaml", &yaml);

    // A missing secret is a `check` error where it is referenced.
    let line = yaml.lines().position(|l| l.contains("${secret:backend-token}")).unwrap() + 1;
    let (ok, missing) = check(&pki);
    assert!(!ok && missing.contains(&format!("gateway.yaml:{line}:")), "{missing}");
    assert!(
        missing.contains("no secret named \"backend-token\" in the secret store: `portcullis secrets set"),
        "{missing}"
    );

    let value = "tok-5f1c2e9a-backend-token-value";
    let set = secrets(&pki, &["set", "backend-token"], &format!("{value}\n"));
    assert!(set.contains("secret backend-token set") && !set.contains(value), "{set}");
    secrets(&pki, &["set", "other"], "another-value-1234");
    let listed = secrets(&pki, &["list"], "");
    assert!(listed.contains("backend-token") && listed.contains("never") && !listed.contains(value), "{listed}");
    let db = std::fs::read(pki.path("var/secrets.db")).unwrap();
    assert!(!db.windows(value.len()).any(|w| w == value.as_bytes()), "the value is sealed in the database");

    let (ok, checked) = check(&pki);
    assert!(ok, "{checked}");
    let gw = TestGateway::start_file(pki.path("gateway.yaml"));
    let client = Client::new(gw.addr("public"), &pki);
    assert_eq!(client.get("/x").await.status, 200);
    assert_eq!(backend.last().headers["x-backend-token"], value, "the gateway resolved ${{secret:backend-token}}");
    let listed = secrets(&pki, &["list"], "");
    let row = listed.lines().find(|l| l.starts_with("backend-token")).unwrap();
    assert!(!row.ends_with("never"), "a load that used it is recorded: {row}");
    assert!(listed.lines().find(|l| l.starts_with("other")).unwrap().ends_with("never"), "{listed}");
    drop(gw);

    // The wrong master key (a database copied to another environment) is one clear message.
    let good = pki.read("master.key");
    new_key(&pki, "master.key");
    let (ok, wrong) = check(&pki);
    assert!(!ok && wrong.contains("secrets.master_key: the master key does not open this store's secrets"), "{wrong}");
    assert!(wrong.contains("portcullis secrets reset"), "{wrong}");
    assert_eq!(wrong.matches("error").count(), 2, "one mistake, one message (and the count): {wrong}");
    let (ok, refused) = run(pki.dir(), &["secrets", "set", "x", "--config", "gateway.yaml"], "v", &[]);
    assert!(!ok && refused.contains("does not open this store's secrets"), "{refused}");
    pki.write("master.key", &good);

    // Rotation re-seals everything under the new key at once; the old key stops working.
    new_key(&pki, "next.key");
    let rotated = secrets(&pki, &["rotate-key", "--new-key-file", "next.key"], "");
    assert!(rotated.contains("re-sealed 2 secret(s)"), "{rotated}");
    assert!(!check(&pki).0, "the old key no longer opens the store");
    std::fs::copy(pki.path("next.key"), pki.path("master.key")).unwrap();
    let (ok, checked) = check(&pki);
    assert!(ok, "{checked}");

    // A key from a systemd credential.
    let creds = tempfile::tempdir().unwrap();
    std::fs::copy(pki.path("next.key"), creds.path().join("portcullis-master-key")).unwrap();
    let yaml = config(
        &backend.url(),
        "{ store: sqlite:var/secrets.db, master_key: \"${credential:portcullis-master-key}\" }",
        "${secret:backend-token}",
    );
    pki.write("gateway.yaml", &yaml);
    let (ok, out) = run(
        pki.dir(),
        &["check", "--config", "gateway.yaml"],
        "",
        &[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())],
    );
    assert!(ok, "{out}");
    let (ok, out) = check(&pki);
    assert!(!ok && out.contains("CREDENTIALS_DIRECTORY is not set"), "{out}");
    pki.write("gateway.yaml", &config(&backend.url(), section, "${secret:backend-token}"));

    // Values are bound to their names: swapped in the database, they do not open.
    let conn = rusqlite::Connection::open(pki.path("var/secrets.db")).unwrap();
    conn.execute_batch(
        "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'other') WHERE name = 'backend-token'",
    )
    .unwrap();
    let (ok, swapped) = check(&pki);
    assert!(!ok && swapped.contains("secret \"backend-token\" is damaged or was altered"), "{swapped}");

    // Removing and resetting, all in the audit log with the actor, never with a value.
    secrets(&pki, &["rm", "other"], "");
    let (ok, no_confirm) = run(pki.dir(), &["secrets", "reset", "--config", "gateway.yaml"], "", &[]);
    assert!(!ok && no_confirm.contains("--yes"), "{no_confirm}");
    assert!(secrets(&pki, &["reset", "--yes"], "").contains("deleted 1 secret(s)"));
    new_key(&pki, "master.key");
    secrets(&pki, &["set", "backend-token"], value);
    assert!(check(&pki).0, "after a reset the store takes this environment's key");
    let (ok, audit) = run(pki.dir(), &["audit", "--store", "sqlite:var/secrets.db"], "", &[]);
    assert!(ok, "{audit}");
    let actions: Vec<&str> = audit.lines().skip(1).filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(
        actions,
        ["secret.set", "secret.set", "secret.rotate_key", "secret.rm", "secret.reset", "secret.set"],
        "{audit}"
    );
    assert!(audit.contains("name=backend-token") && audit.lines().skip(1).all(|l| l.contains("ops")), "{audit}");
    assert!(!audit.contains(value) && !audit.contains("another-value"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_store_follows_a_shared_postgres_token_store() {
    let pg = PgServer::start();
    pg.create_database("identity");
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    new_key(&pki, "master.key");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    pki.write("signing-key.pem", &key.serialize_pem());
    let yaml = format!(
        "{}identity:\n  listener: public\n  issuer: https://login.test\n  signing_key: signing-key.pem\n  store: \"{}\"\n",
        config(&backend.url(), "{ master_key: \"${file:master.key}\" }", "${secret:backend-token}"),
        pg.url("identity"),
    );
    pki.write("gateway.yaml", &yaml);
    secrets(&pki, &["set", "backend-token"], "shared-through-postgres");
    assert_eq!(pg.psql("identity", "SELECT count(*) FROM secrets").unwrap(), "1");
    let one = TestGateway::start_file(pki.path("gateway.yaml"));
    let two = TestGateway::start_file(pki.path("gateway.yaml"));
    for gw in [&one, &two] {
        assert_eq!(Client::new(gw.addr("public"), &pki).get("/x").await.status, 200);
        assert_eq!(backend.last().headers["x-backend-token"], "shared-through-postgres");
    }
    let refused = pg.psql("identity", "DELETE FROM audit WHERE action = 'secret.set'").unwrap_err();
    assert!(refused.contains("append-only"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_byte_the_gateway_writes_holds_a_configured_secret() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    new_key(&pki, "master.key");
    let from_store = "store-secret-6b9d1f0e";
    let from_env = "env-secret-3a7c55d2";
    let from_file = "file-secret-91e0b4c7";
    let hs_key = "hs256-shared-secret-0123456789abcdef-xyz";
    pki.write("api-key.txt", &format!("{from_file}\n"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    pki.write("signing-key.pem", &key.serialize_pem());
    let yaml = format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: "127.0.0.1:0" }}
backends:
  app: {{ urls: ["{url}"] }}
policies:
  planted:
    headers:
      request:
        set: {{ X-Store: "${{secret:backend-token}}", X-Env: "${{env:PORTCULLIS_PLANTED}}", X-File: "${{file:api-key.txt}}" }}
  hs: {{ jwt: {{ issuers: [https://hs.test], audiences: [api], algorithms: [HS256], secret: "${{secret:hs-key}}" }} }}
routes:
  - {{ name: hs, match: {{ path_prefix: /hs/ }}, policies: [hs, planted], backend: app }}
  - {{ name: api, match: {{ path_prefix: /api/ }}, policies: [planted], backend: app }}
identity:
  listener: public
  issuer: https://login.test
  signing_key: signing-key.pem
  store: sqlite:var/identity.db
secrets: {{ master_key: "${{file:master.key}}" }}
"#,
        listener = listener("", ""),
        url = backend.url(),
    );
    pki.write("gateway.yaml", &yaml);
    secrets(&pki, &["set", "backend-token"], from_store);
    secrets(&pki, &["set", "hs-key"], hs_key);
    let (ok, created) = run(pki.dir(), &["systems", "create", "billing", "--config", "gateway.yaml"], "", &[]);
    assert!(ok, "{created}");
    let field = |label: &str| {
        created
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap()
            .split_once(':')
            .unwrap()
            .1
            .trim()
            .to_owned()
    };
    let (client_id, client_secret) = (field("client id"), field("primary secret"));

    let mut command = Command::new(binary());
    command.env("PORTCULLIS_PLANTED", from_env);
    let gw = TestGateway::start_under(command, pki.path("gateway.yaml"), &[]);
    let client = Client::new(gw.addr("public"), &pki);
    // The gateway's own answers (problems, the token endpoint's); what a backend answers is
    // the backend's and passes unchanged.
    let mut answers = String::new();
    for secret in [from_store, from_env, from_file, hs_key] {
        // Configured secrets turn up in paths and queries (a mistake, an attack, a confused
        // client): they are scrubbed by value.
        assert_eq!(client.get(&format!("/api/{secret}?q={secret}")).await.status, 200);
        let rsp = client.get(&format!("/nowhere/{secret}?q={secret}")).await;
        answers.push_str(&format!("{:?}{}", rsp.headers, rsp.text()));
    }
    // An issued client secret is known to the gateway by its hash only: it is never logged
    // from a token request, and a query parameter named like a secret is redacted by name.
    assert_eq!(client.get(&format!("/api/x?client_secret={client_secret}")).await.status, 200);
    let planted = [from_store, from_env, from_file, hs_key, client_secret.as_str()];
    let received = backend.received();
    let sent = &received.iter().find(|r| r.target.starts_with("/api/")).unwrap().headers;
    assert_eq!(
        (sent["x-store"].to_str().unwrap(), sent["x-env"].to_str().unwrap(), sent["x-file"].to_str().unwrap()),
        (from_store, from_env, from_file),
        "the backend gets them"
    );

    let claims = serde_json::json!({ "iss": "https://hs.test", "aud": "api", "sub": "alice", "exp": 4_102_444_800u64 });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(hs_key.as_bytes()),
    )
    .unwrap();
    let req = Request::get("/hs/x").header("host", "localhost").header("authorization", format!("Bearer {token}"));
    assert_eq!(client.send(req.body(Full::default()).unwrap()).await.status, 200, "the HS key from the store verifies");
    for secret in [client_secret.as_str(), "wrong-secret-guess"] {
        let form = format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
        let req = Request::post("/oauth2/token")
            .header("host", "login.test")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        answers.push_str(&client.send(req).await.text());
    }
    let metrics = support::gateway::admin_get(gw.addr("admin"), "/metrics").await;
    drop(client);
    let logs = gw.log_text();
    assert!(logs.contains("/api/[redacted]"), "the access log shows where a secret was: {logs}");

    let (_, traced) = run(
        pki.dir(),
        &[
            "trace",
            "--config",
            "gateway.yaml",
            "-H",
            &format!("X-Probe: {from_env}"),
            &format!("https://localhost/api/{from_store}"),
        ],
        "",
        &[("PORTCULLIS_PLANTED", from_env)],
    );
    assert!(traced.to_lowercase().contains("x-store") && traced.contains("[redacted]"), "{traced}");
    let (ok, checked) = run(pki.dir(), &["check", "--config", "gateway.yaml"], "", &[("PORTCULLIS_PLANTED", from_env)]);
    assert!(ok, "{checked}");
    for secret in planted {
        for (what, text) in
            [("logs", &logs), ("answers", &answers), ("metrics", &metrics), ("trace", &traced), ("check", &checked)]
        {
            assert!(!text.contains(secret), "{secret:?} in the {what}:\n{text}");
        }
    }
}
