//! The token issuer's store suite, run against both stores: the embedded SQLite file and a
//! real PostgreSQL server (a fresh database per case). Each case sees only the
//! [`Store`] (the rules over either storage), plus raw SQL for what the database itself must
//! refuse.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::sync::Arc;

use std::future::Future;

use portcullis::store::{
    block_on, Imported, ImportedSubscription, KeySlot, LinkRef, Lookup, Owner, SecretSlot, Store, StoreError,
    StoreLocation, SubscriptionScope, SubscriptionState,
};
use support::gateway::binary;
use support::postgres::PgServer;
use support::Pki;

/// Runs one SQL statement on a store's database, bypassing the store: its first value, or
/// the database's error message.
type RawSql = Box<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// One case of the suite.
type Case = (&'static str, fn(&Fresh));

/// One fresh, empty store location, a way to run raw SQL on its database, and the case's
/// runtime (a PostgreSQL store's connections live on the runtime that made them).
struct Fresh {
    location: StoreLocation,
    raw: RawSql,
    runtime: tokio::runtime::Runtime,
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    fn new(location: StoreLocation, raw: RawSql, dir: Option<tempfile::TempDir>) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self { location, raw, runtime, _dir: dir }
    }

    async fn open(&self) -> Store {
        self.location.open().await.unwrap()
    }

    /// Runs one case's body on the case's runtime.
    fn run(&self, case: impl Future<Output = ()>) {
        self.runtime.block_on(case);
    }
}

fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/identity.db");
    let location = StoreLocation::parse(&format!("sqlite:{}", path.display()), dir.path()).unwrap();
    let raw = Box::new(move |sql: &str| {
        let conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
        conn.query_row(sql, [], |row| row.get::<_, rusqlite::types::Value>(0)).map(|v| format!("{v:?}")).or_else(|e| {
            match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(String::new()),
                rusqlite::Error::ExecuteReturnedResults => Ok(String::new()),
                e => Err(e.to_string()),
            }
        })
    });
    Fresh::new(location, raw, Some(dir))
}

fn postgres(server: &Arc<PgServer>, name: &str) -> Fresh {
    server.create_database(name);
    let location = StoreLocation::parse(&server.url(name), std::path::Path::new("")).unwrap();
    let (server, name) = (server.clone(), name.to_owned());
    Fresh::new(location, Box::new(move |sql| server.psql(&name, sql)), None)
}

/// The cases, each on a fresh store.
const CASES: &[Case] = &[
    ("creates_lists_and_refuses_duplicates", creates_lists_and_refuses_duplicates),
    ("renewing_promotes_the_alternate_and_voids_the_primary", renewing_promotes_the_alternate_and_voids_the_primary),
    ("links_are_unique_per_system_and_user", links_are_unique_per_system_and_user),
    ("lookups_answer_what_a_token_request_needs", lookups_answer_what_a_token_request_needs),
    ("the_audit_log_is_append_only_in_the_database", the_audit_log_is_append_only_in_the_database),
    ("hostile_names_are_data_not_sql", hostile_names_are_data_not_sql),
    ("stores_opened_together_migrate_once_and_share_a_key", stores_opened_together_migrate_once_and_share_a_key),
    ("a_newer_schema_is_refused", a_newer_schema_is_refused),
    ("secret_values_are_kept_sealed_and_audited", secret_values_are_kept_sealed_and_audited),
    ("secret_use_is_recorded_and_follows_a_renewal", secret_use_is_recorded_and_follows_a_renewal),
    (
        "scopes_are_granted_per_system_and_read_with_its_secrets",
        scopes_are_granted_per_system_and_read_with_its_secrets,
    ),
    ("a_store_from_before_scopes_migrates_granting_none", a_store_from_before_scopes_migrates_granting_none),
    (
        "subscription_keys_open_one_subscription_and_every_change_is_audited",
        subscription_keys_open_one_subscription_and_every_change_is_audited,
    ),
    (
        "an_imported_subscription_keeps_its_keys_and_a_clash_writes_nothing",
        an_imported_subscription_keeps_its_keys_and_a_clash_writes_nothing,
    ),
    (
        "a_store_from_before_subscriptions_migrates_keeping_its_data",
        a_store_from_before_subscriptions_migrates_keeping_its_data,
    ),
];

#[test]
fn the_sqlite_store_passes_the_store_suite() {
    for (name, case) in CASES {
        eprintln!("sqlite: {name}");
        case(&sqlite());
    }
}

#[test]
fn the_postgres_store_passes_the_store_suite() {
    let server = Arc::new(PgServer::start());
    for (name, case) in CASES {
        eprintln!("postgres: {name}");
        case(&postgres(&server, name));
    }
}

async fn lookup(store: &Store, system: &str, external_user: Option<&str>) -> Lookup {
    store.lookup(system, external_user).await.unwrap()
}

fn creates_lists_and_refuses_duplicates(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let billing = store.create_system("billing", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap();
        let twice =
            store.create_system("billing", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap_err();
        assert!(matches!(twice, StoreError::SystemExists { ref name } if name == "billing"), "{twice}");
        assert_eq!(store.systems().await.unwrap(), std::slice::from_ref(&billing));
        assert_eq!(store.system(&billing.id).await.unwrap(), Some(billing.clone()));
        assert_eq!(store.system("no-such-id").await.unwrap(), None);
        store.add_user("alice", &["Reader".into(), "Writer".into()], "op").await.unwrap();
        assert!(matches!(store.add_user("alice", &[], "op").await, Err(StoreError::UserExists { .. })));
        assert!(matches!(store.add_user("with space", &[], "op").await, Err(StoreError::Malformed { .. })));
        assert_eq!(store.users().await.unwrap()[0].roles, ["Reader", "Writer"]);
        assert!(matches!(store.set_system_active("nope", false, "op").await, Err(StoreError::SystemNotFound { .. })));
        assert!(matches!(store.set_user_active("nope", false, "op").await, Err(StoreError::UserNotFound { .. })));
        store.set_system_active(&billing.id, false, "op").await.unwrap();
        assert!(!store.system(&billing.id).await.unwrap().unwrap().active);
    })
}

fn renewing_promotes_the_alternate_and_voids_the_primary(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let (p, a) = (h.generate(), h.generate());
        let system = store.create_system("billing", &p.hash, &a.hash, &[], "op").await.unwrap();
        let next = h.generate();
        store.renew_secret(&system.id, &next.hash, "op").await.unwrap();
        let client = lookup(&store, &system.id, None).await.client.unwrap();
        assert!(!h.matches_either(&p.text, &client.primary, &client.alternate));
        assert_eq!((client.primary, client.alternate), (a.hash, next.hash.clone()));
        assert!(store.system(&system.id).await.unwrap().unwrap().secrets_renewed_at.is_some());
        assert!(matches!(store.renew_secret("nope", &next.hash, "op").await, Err(StoreError::SystemNotFound { .. })));
    })
}

fn links_are_unique_per_system_and_user(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let s1 = store.create_system("one", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap();
        let s2 = store.create_system("two", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap();
        store.add_user("alice", &["Reader".into()], "op").await.unwrap();
        store.add_user("bob", &[], "op").await.unwrap();
        store.link(&s1.id, "ext-1", "alice", "op").await.unwrap();
        let twice = store.link(&s1.id, "ext-2", "alice", "op").await.unwrap_err();
        assert!(matches!(twice, StoreError::LinkExists { .. }), "{twice}");
        let taken = store.link(&s1.id, "ext-1", "bob", "op").await.unwrap_err();
        assert!(matches!(taken, StoreError::LinkExists { .. }), "{taken}");
        store.link(&s2.id, "ext-1", "alice", "op").await.unwrap();
        assert!(matches!(store.link(&s1.id, "x", "nobody", "op").await, Err(StoreError::UserNotFound { .. })));
        assert!(matches!(store.link("nope", "x", "alice", "op").await, Err(StoreError::SystemNotFound { .. })));
        assert_eq!(store.links(&s1.id).await.unwrap().len(), 1);
        let removed = store.unlink(&s1.id, LinkRef::User("alice"), "op").await.unwrap();
        assert_eq!(removed.external_user, "ext-1");
        assert!(store.links(&s1.id).await.unwrap().is_empty());
        assert!(matches!(
            store.unlink(&s1.id, LinkRef::ExternalUser("ext-1"), "op").await,
            Err(StoreError::LinkNotFound { .. })
        ));
        assert_eq!(store.links(&s2.id).await.unwrap()[0].user_id, "alice", "other systems keep their link");
    })
}

fn lookups_answer_what_a_token_request_needs(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let (p, a) = (h.generate(), h.generate());
        let system = store.create_system("portal", &p.hash, &a.hash, &[], "op").await.unwrap();
        store.add_user("alice", &["Reader".into()], "op").await.unwrap();
        store.link(&system.id, "ext-alice", "alice", "op").await.unwrap();

        let found = lookup(&store, &system.id, Some("ext-alice")).await;
        let client = found.client.unwrap();
        assert!(client.active && client.primary == p.hash && client.alternate == a.hash);
        let user = found.user.unwrap();
        assert_eq!((user.id.as_str(), user.roles.as_slice(), user.active), ("alice", &["Reader".to_owned()][..], true));
        assert!(lookup(&store, &system.id, None).await.user.is_none(), "no user named, none read");
        assert!(lookup(&store, &system.id, Some("ext-bob")).await.user.is_none(), "an unlinked user is no user");
        assert!(lookup(&store, &system.id, Some("EXT-ALICE")).await.user.is_none(), "ids compare exactly");
        let unknown = lookup(&store, "no-such-system", Some("ext-alice")).await;
        assert!(unknown.client.is_none() && unknown.user.is_none());
        store.set_user_active("alice", false, "op").await.unwrap();
        assert!(!lookup(&store, &system.id, Some("ext-alice")).await.user.unwrap().active);
        store.set_system_active(&system.id, false, "op").await.unwrap();
        assert!(!lookup(&store, &system.id, None).await.client.unwrap().active, "a change is read at once");
    })
}

fn the_audit_log_is_append_only_in_the_database(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let (p, a) = (h.generate(), h.generate());
        let system = store.create_system("billing", &p.hash, &a.hash, &[], "alice").await.unwrap();
        store.set_system_active(&system.id, false, "bob").await.unwrap();
        store.renew_secret(&system.id, &h.generate().hash, "carol").await.unwrap();
        let entries = store.audit().await.unwrap();
        let actions: Vec<_> = entries.iter().map(|e| (e.action.as_str(), e.actor.as_str())).collect();
        assert_eq!(
            actions,
            [("system.create", "alice"), ("system.deactivate", "bob"), ("system.renew_secret", "carol")]
        );
        assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(!format!("{entries:?}").contains(&p.text) && !format!("{entries:?}").contains(&a.text));
        for tamper in ["DELETE FROM audit", "UPDATE audit SET actor = 'mallory'"] {
            let refused = (db.raw)(tamper).unwrap_err();
            assert!(refused.contains("append-only"), "{tamper}: {refused}");
        }
        if matches!(db.location, StoreLocation::Postgres(_)) {
            let refused = (db.raw)("TRUNCATE audit").unwrap_err();
            assert!(refused.contains("append-only"), "{refused}");
        }
        assert_eq!(store.audit().await.unwrap(), entries, "nothing changed");
    })
}

fn hostile_names_are_data_not_sql(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let name = "x');DROP-TABLE-systems;--";
        let system = store.create_system(name, &h.generate().hash, &h.generate().hash, &[], "o'brien").await.unwrap();
        assert_eq!(store.systems().await.unwrap()[0].name, name);
        assert_eq!(store.audit().await.unwrap()[0].actor, "o'brien");
        assert!(lookup(&store, "' OR '1'='1", None).await.client.is_none());
        assert!(lookup(&store, &system.id, Some("' OR '1'='1")).await.user.is_none());
    })
}

fn stores_opened_together_migrate_once_and_share_a_key(db: &Fresh) {
    db.run(async {
        let stores: Vec<Store> = std::thread::scope(|s| {
            let opening: Vec<_> = (0..4).map(|_| s.spawn(|| block_on(db.location.open()).unwrap())).collect();
            opening.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let secret = stores[0].hasher().generate();
        assert!(stores.iter().all(|s| s.hasher().hash(&secret.text) == secret.hash), "one hashing key for all");
        let version = match db.location {
            StoreLocation::Sqlite(_) => (db.raw)("PRAGMA user_version").unwrap(),
            StoreLocation::Postgres(_) => (db.raw)("SELECT version FROM portcullis_schema").unwrap(),
        };
        assert!(version == "4" || version == "Integer(4)", "{version}");
        drop(stores);
        let reopened = db.open().await;
        assert_eq!(reopened.hasher().hash(&secret.text), secret.hash, "the key is kept");
    })
}

fn a_newer_schema_is_refused(db: &Fresh) {
    db.run(async {
        drop(db.open().await);
        match db.location {
            StoreLocation::Sqlite(_) => (db.raw)("PRAGMA user_version = 99").unwrap(),
            StoreLocation::Postgres(_) => (db.raw)("UPDATE portcullis_schema SET version = 99").unwrap(),
        };
        let err = db.location.open().await.err().unwrap().to_string();
        assert!(err.contains("version 99") && err.contains("upgrade portcullis"), "{err}");
    })
}

#[test]
fn postgres_over_tls_verifies_the_server_and_the_cli_manages_the_store() {
    let pki = Pki::new();
    let server = PgServer::start_tls(&pki);
    server.create_database("identity");
    let url =
        |query: &str| format!("postgres://{}@localhost:{}/identity?{query}", support::postgres::USER, server.port);
    let cli = |store: &str, args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .args(["--store", store, "--actor", "ops"])
            .env("PGPASSWORD", &server.password)
            .current_dir(pki.path(""))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let verified = url("sslmode=verify-full&sslrootcert=ca.pem");
    let (ok, created) = cli(&verified, &["systems", "create", "billing"]);
    assert!(ok, "{created}");
    let (ok, listed) = cli(&verified, &["systems", "list"]);
    assert!(ok && listed.contains("billing"), "{listed}");
    let (ok, added) = cli(&verified, &["users", "add", "alice", "--roles", "Reader"]);
    assert!(ok, "{added}");
    let (ok, subscribed) =
        cli(&verified, &["subscriptions", "create", "--name", "Contoso", "--scope", "route:echo", "--expires", "30d"]);
    assert!(ok && subscribed.contains("shown only this once"), "{subscribed}");
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apim/subscriptions.json");
    let (ok, imported) = cli(&verified, &["subscriptions", "import", sample.to_str().unwrap()]);
    assert!(!ok && imported.contains("4 imported, 0 updated, 1 refused"), "{imported}");
    let (ok, listed) = cli(&verified, &["subscriptions", "list"]);
    assert!(ok && listed.contains("Contoso") && listed.contains("orders-batch"), "{listed}");
    assert!(!listed.contains("7c4f0a9e2b5d48e1a3f6c8d0b2e4f6a1"), "no key listed");
    let (ok, audit) = cli(&verified, &["audit"]);
    assert!(ok && audit.contains("system.create") && audit.contains("user.add") && audit.contains("ops"), "{audit}");
    assert!(audit.contains("subscription.create") && audit.contains("subscription.import"), "{audit}");

    let (ok, stranger) = cli(&url("sslmode=verify-full&sslrootcert=client-ca.pem"), &["systems", "list"]);
    assert!(!ok && stranger.contains("certificate"), "a server certificate from another CA is refused: {stranger}");
    let (ok, plain) = cli(&url("sslmode=disable"), &["systems", "list"]);
    assert!(!ok && plain.contains("no pg_hba.conf entry"), "the server takes TLS only: {plain}");
    let wrong = format!(
        "postgres://{}:wrong-password@localhost:{}/identity?sslmode=require&sslrootcert=ca.pem",
        support::postgres::USER,
        server.port
    );
    let (ok, denied) = cli(&wrong, &["systems", "list"]);
    assert!(!ok && denied.contains("password authentication failed"), "{denied}");
    assert!(!denied.contains("wrong-password") && !created.contains(&server.password), "no password is shown");
}

fn secret_values_are_kept_sealed_and_audited(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        assert_eq!(store.secrets_key_check().await.unwrap(), None, "no secret yet, no key");
        store.put_secret("api-key", b"sealed-1", b"check-a", "alice").await.unwrap();
        assert_eq!(store.secrets_key_check().await.unwrap().as_deref(), Some(&b"check-a"[..]));
        let first = store.secrets().await.unwrap();
        store.put_secret("api-key", b"sealed-2", b"check-a", "alice").await.unwrap();
        let refused = store.put_secret("other", b"x", b"check-b", "mallory").await.unwrap_err();
        assert!(matches!(refused, StoreError::WrongMasterKey), "another key's value is refused: {refused}");
        store.put_secret("db-password", b"sealed-3", b"check-a", "alice").await.unwrap();
        let all = store.secrets().await.unwrap();
        assert_eq!(all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["api-key", "db-password"]);
        assert_eq!(all[0].sealed, b"sealed-2");
        assert_eq!(all[0].created_at, first[0].created_at, "replacing keeps the creation time");
        assert!(all[0].used_at.is_none());
        store.secrets_used(&["api-key".to_owned()], 1_700_000_000).await.unwrap();
        assert_eq!(store.secrets().await.unwrap()[0].used_at, Some(1_700_000_000));

        let resealed = store
            .reseal_secrets(&|name: &str, sealed: &[u8]| Ok([name.as_bytes(), sealed].concat()), b"check-c", "bob")
            .await
            .unwrap();
        assert_eq!(resealed, 2);
        assert_eq!(store.secrets().await.unwrap()[1].sealed, b"db-passwordsealed-3");
        assert_eq!(store.secrets_key_check().await.unwrap().as_deref(), Some(&b"check-c"[..]));
        let failing = store.reseal_secrets(
            &|name: &str, sealed: &[u8]| {
                if name == "db-password" {
                    Err(StoreError::Reseal("cannot open".into()))
                } else {
                    Ok(sealed.to_vec())
                }
            },
            b"check-d",
            "bob",
        );
        assert!(matches!(failing.await, Err(StoreError::Reseal(ref e)) if e.to_string() == "cannot open"));
        assert_eq!(store.secrets_key_check().await.unwrap().as_deref(), Some(&b"check-c"[..]), "all or nothing");
        assert_eq!(store.secrets().await.unwrap()[0].sealed, b"api-keysealed-2");

        store.remove_secret("api-key", "carol").await.unwrap();
        assert!(matches!(store.remove_secret("api-key", "carol").await, Err(StoreError::SecretNotFound { .. })));
        assert_eq!(store.reset_secrets("dave").await.unwrap(), 1);
        assert!(store.secrets().await.unwrap().is_empty() && store.secrets_key_check().await.unwrap().is_none());
        let audit: Vec<_> = store.audit().await.unwrap().into_iter().map(|e| (e.action, e.actor, e.detail)).collect();
        let expected = [
            ("secret.set", "alice", "name=api-key"),
            ("secret.set", "alice", "name=api-key"),
            ("secret.set", "alice", "name=db-password"),
            ("secret.rotate_key", "bob", "secrets=2"),
            ("secret.rm", "carol", "name=api-key"),
            ("secret.reset", "dave", "secrets=1"),
        ];
        let expected: Vec<_> =
            expected.iter().map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), Some((*c).to_owned()))).collect();
        assert_eq!(audit, expected);
        assert!((db.raw)("DELETE FROM audit WHERE action LIKE 'secret.%'").is_err());
    })
}

fn secret_use_is_recorded_and_follows_a_renewal(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let system = store.create_system("billing", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap();
        store.secret_used(&system.id, SecretSlot::Primary, 1_700_000_040).await.unwrap();
        store.secret_used(&system.id, SecretSlot::Primary, 1_700_000_000).await.unwrap();
        store.secret_used(&system.id, SecretSlot::Alternate, 1_700_000_100).await.unwrap();
        let s = store.system(&system.id).await.unwrap().unwrap();
        assert_eq!((s.primary_used_at, s.alternate_used_at), (Some(1_700_000_040), Some(1_700_000_100)), "later wins");
        store.renew_secret(&system.id, &h.generate().hash, "op").await.unwrap();
        let s = store.system(&system.id).await.unwrap().unwrap();
        assert_eq!(
            (s.primary_used_at, s.alternate_used_at),
            (Some(1_700_000_100), None),
            "the record moves with the secret"
        );
        store.secret_used("nope", SecretSlot::Primary, 1).await.unwrap();
    })
}

fn scopes_are_granted_per_system_and_read_with_its_secrets(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let h = store.hasher();
        let scopes = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let reader = store
            .create_system("reader", &h.generate().hash, &h.generate().hash, &scopes(&["read", "read"]), "op")
            .await;
        let reader = reader.unwrap();
        assert_eq!(reader.scopes, ["read"], "repeats dropped");
        let none = store.create_system("none", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap();
        assert_eq!(
            lookup(&store, &reader.id, None).await.client.unwrap().scopes,
            ["read"],
            "in the token request's read"
        );
        assert!(lookup(&store, &none.id, None).await.client.unwrap().scopes.is_empty());
        let mut listed: Vec<_> = store.systems().await.unwrap().into_iter().map(|s| (s.name, s.scopes)).collect();
        listed.sort();
        assert_eq!(listed, [("none".to_owned(), vec![]), ("reader".to_owned(), scopes(&["read"]))]);

        let old = store.set_system_scopes(&reader.id, &scopes(&["write", "read"]), "alice").await.unwrap();
        assert_eq!(old, ["read"]);
        assert_eq!(lookup(&store, &reader.id, None).await.client.unwrap().scopes, ["write", "read"], "read at once");
        assert_eq!(store.set_system_scopes(&reader.id, &[], "bob").await.unwrap(), ["write", "read"]);
        assert!(store.system(&reader.id).await.unwrap().unwrap().scopes.is_empty());
        assert!(matches!(
            store.set_system_scopes("nope", &scopes(&["read"]), "op").await,
            Err(StoreError::SystemNotFound { .. })
        ));
        for bad in ["two words", "", "quote\"d"] {
            let refused = store.set_system_scopes(&none.id, &scopes(&[bad]), "op").await.unwrap_err();
            assert!(
                matches!(refused, StoreError::MalformedScope { ref scope } if scope == bad)
                    && refused.to_string().contains("not a valid scope"),
                "{bad:?}: {refused}"
            );
        }
        let hostile = "x');DROP-TABLE-systems;--";
        store.set_system_scopes(&none.id, &scopes(&[hostile]), "op").await.unwrap();
        assert_eq!(store.system(&none.id).await.unwrap().unwrap().scopes, [hostile], "data, not SQL");

        let audit: Vec<_> = store
            .audit()
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.action, e.actor, e.system_id.unwrap_or_default(), e.detail.unwrap_or_default()))
            .collect();
        let entry = |action: &str, actor: &str, id: &str, detail: String| {
            (action.to_owned(), actor.to_owned(), id.to_owned(), detail)
        };
        assert_eq!(
            audit,
            [
                entry("system.create", "op", &reader.id, "name=reader scopes=[read]".into()),
                entry("system.create", "op", &none.id, "name=none scopes=[]".into()),
                entry("system.scopes", "alice", &reader.id, "scopes=[write,read] was=[read]".into()),
                entry("system.scopes", "bob", &reader.id, "scopes=[] was=[write,read]".into()),
                entry("system.scopes", "op", &none.id, format!("scopes=[{hostile}] was=[]")),
            ],
            "only changes are audited, each with the old and the new scopes"
        );
    })
}

fn a_store_from_before_scopes_migrates_granting_none(db: &Fresh) {
    db.run(async {
        // A store at schema 2: made now, then the scopes column (and what later schemas added)
        // dropped and the version set back.
        let store = db.open().await;
        let h = store.hasher();
        let legacy = store.create_system("legacy", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap();
        store.set_system_scopes(&legacy.id, &["read".to_owned()], "op").await.unwrap();
        drop(store);
        (db.raw)("ALTER TABLE systems DROP COLUMN scopes").unwrap();
        (db.raw)("DROP TABLE subscription_keys").unwrap();
        (db.raw)("DROP TABLE subscriptions").unwrap();
        match db.location {
            StoreLocation::Sqlite(_) => (db.raw)("PRAGMA user_version = 2").unwrap(),
            StoreLocation::Postgres(_) => (db.raw)("UPDATE portcullis_schema SET version = 2").unwrap(),
        };

        let store = db.open().await;
        let migrated = store.system(&legacy.id).await.unwrap().unwrap();
        assert_eq!((migrated.name.as_str(), migrated.active), ("legacy", true));
        assert!(migrated.scopes.is_empty(), "an existing system is granted nothing: {:?}", migrated.scopes);
        let client = lookup(&store, &legacy.id, None).await.client.unwrap();
        assert!(client.active && client.scopes.is_empty());
        assert_eq!(store.audit().await.unwrap().len(), 2, "the audit log is kept");
        store.set_system_scopes(&legacy.id, &["write".to_owned()], "op").await.unwrap();
        assert_eq!(lookup(&store, &legacy.id, None).await.client.unwrap().scopes, ["write"]);
    })
}

/// The subscription id and slot a presented key opens, from the one read the gateway makes.
async fn opens(store: &Store, key: &str) -> Option<(String, KeySlot)> {
    let hash = store.key_hasher().hash(key);
    let keys = store.subscription_keys().await.unwrap();
    keys.into_iter().find(|(h, _, _)| *h == hash).map(|(_, slot, s)| (s.id, slot))
}

fn subscription_keys_open_one_subscription_and_every_change_is_audited(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let hostile = "x');DROP TABLE subscriptions;--";
        let created = store
            .create_subscription(hostile, SubscriptionScope::Product("starter".into()), None, Some(4_000_000_000), "op")
            .await
            .unwrap();
        let id = created.subscription.id.clone();
        assert_eq!(store.subscriptions().await.unwrap(), std::slice::from_ref(&created.subscription), "data, not SQL");
        assert_eq!(opens(&store, &created.primary.text).await, Some((id.clone(), KeySlot::Primary)));
        assert_eq!(opens(&store, &created.secondary.text).await, Some((id.clone(), KeySlot::Secondary)));
        let seen = store.audit().await.unwrap().last().unwrap().seq;

        let new = store.regenerate_subscription_key(&id, KeySlot::Primary, "alice").await.unwrap();
        assert_eq!(opens(&store, &created.primary.text).await, None, "the old primary is refused at once");
        assert_eq!(opens(&store, &new.text).await, Some((id.clone(), KeySlot::Primary)));
        assert_eq!(opens(&store, &created.secondary.text).await, Some((id.clone(), KeySlot::Secondary)));
        store.subscription_key_used(&id, KeySlot::Secondary, 1_700_000_060).await.unwrap();
        store.subscription_key_used(&id, KeySlot::Secondary, 1_700_000_000).await.unwrap();
        let s = store.subscription(&id).await.unwrap().unwrap();
        assert_eq!((s.primary.used_at, s.secondary.used_at), (None, Some(1_700_000_060)), "the later use wins");

        store.suspend_subscription(&id, "bob").await.unwrap();
        let keys = store.subscription_keys().await.unwrap();
        assert!(keys.iter().all(|(_, _, s)| s.state == SubscriptionState::Suspended), "the state comes with the keys");
        store.set_subscription_expiry(&id, None, "bob").await.unwrap();
        store.activate_subscription(&id, "bob").await.unwrap();
        store.cancel_subscription(&id, "carol").await.unwrap();
        let again = store.activate_subscription(&id, "mallory").await.unwrap_err();
        assert!(matches!(again, StoreError::SubscriptionCancelled { .. }), "{again}");

        // What a watcher on another instance reads after `seen`: each change, naming the subscription.
        let changes: Vec<(String, String, String)> = store
            .audit_after(seen)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.action, e.actor, e.detail.unwrap_or_default()))
            .collect();
        let entry = |action: &str, actor: &str, detail: &str| {
            (action.to_owned(), actor.to_owned(), format!("id={id} {detail}"))
        };
        assert_eq!(
            changes,
            [
                entry("subscription.regenerate", "alice", "slot=primary"),
                entry("subscription.suspend", "bob", "state=suspended was=active"),
                entry("subscription.expiry", "bob", "expires_at=none was=4000000000"),
                entry("subscription.activate", "bob", "state=active was=suspended"),
                entry("subscription.cancel", "carol", "state=cancelled was=active"),
            ]
        );
        store.delete_subscription(&id, "carol").await.unwrap();
        assert!(store.subscription_keys().await.unwrap().is_empty());
        assert_eq!(store.audit().await.unwrap().last().unwrap().action, "subscription.delete");
        let everything = format!("{:?}", store.audit().await.unwrap());
        assert!(!everything.contains(&created.secondary.text) && !everything.contains(&new.text), "no key audited");
    })
}

fn imported(id: &str, primary: &str, secondary: &str) -> ImportedSubscription {
    ImportedSubscription {
        id: id.to_owned(),
        name: format!("APIM {id}"),
        scope: SubscriptionScope::Route("echo".into()),
        state: SubscriptionState::Active,
        expires_at: None,
        owner: Some(Owner::User("1".into())),
        created_at: Some(1_500_000_000),
        primary_key: primary.to_owned(),
        secondary_key: secondary.to_owned(),
    }
}

fn an_imported_subscription_keeps_its_keys_and_a_clash_writes_nothing(db: &Fresh) {
    db.run(async {
        let store = db.open().await;
        let apim_key = "3f1c5e0a9b2d4c6e8f0a1b2c3d4e5f60";
        let done = store.import_subscription(&imported("5f0c", apim_key, "it's-a-'quoted'-key"), "op").await.unwrap();
        assert!(matches!(done, Imported::Created(ref s) if s.primary.bits == 128 && s.created_at == 1_500_000_000));
        assert_eq!(opens(&store, apim_key).await, Some(("5f0c".into(), KeySlot::Primary)), "the caller's key works");
        assert_eq!(opens(&store, "it's-a-'quoted'-key").await, Some(("5f0c".into(), KeySlot::Secondary)));
        let count = store.audit().await.unwrap().len();

        let clash = store.import_subscription(&imported("other", "fresh-key-1234", apim_key), "op").await.unwrap_err();
        assert!(matches!(clash, StoreError::SubscriptionKeyTaken { slot: KeySlot::Secondary, .. }), "{clash}");
        assert!(!clash.to_string().contains(apim_key), "the key is never named");
        assert_eq!(store.subscription("other").await.unwrap(), None, "nothing written");
        assert_eq!(opens(&store, "fresh-key-1234").await, None);
        assert_eq!(store.audit().await.unwrap().len(), count);

        let mut again = imported("5f0c", apim_key, "a-new-secondary-key");
        again.state = SubscriptionState::Suspended;
        let done = store.import_subscription(&again, "op").await.unwrap();
        assert!(matches!(done, Imported::Updated(ref s) if s.state == SubscriptionState::Suspended));
        assert_eq!(opens(&store, "it's-a-'quoted'-key").await, None);
        assert_eq!(store.subscriptions().await.unwrap().len(), 1);
        let last = store.audit().await.unwrap().pop().unwrap();
        assert_eq!(last.detail.as_deref(), Some("id=5f0c updated scope=route:echo state=suspended"));
    })
}

fn a_store_from_before_subscriptions_migrates_keeping_its_data(db: &Fresh) {
    db.run(async {
        // A store at schema 3: made now, then the subscription tables dropped and the version set back.
        let store = db.open().await;
        let h = store.hasher();
        let legacy = store.create_system("legacy", &h.generate().hash, &h.generate().hash, &[], "op").await.unwrap();
        drop(store);
        (db.raw)("DROP TABLE subscription_keys").unwrap();
        (db.raw)("DROP TABLE subscriptions").unwrap();
        match db.location {
            StoreLocation::Sqlite(_) => (db.raw)("PRAGMA user_version = 3").unwrap(),
            StoreLocation::Postgres(_) => (db.raw)("UPDATE portcullis_schema SET version = 3").unwrap(),
        };
        let store = db.open().await;
        assert_eq!(store.system(&legacy.id).await.unwrap().unwrap().name, "legacy", "systems are kept");
        assert_eq!(store.audit().await.unwrap().len(), 1, "the audit log is kept");
        assert!(store.subscriptions().await.unwrap().is_empty());
        let created = store.create_subscription("new", SubscriptionScope::All, None, None, "op").await.unwrap();
        assert_eq!(opens(&store, &created.primary.text).await.map(|(id, _)| id), Some(created.subscription.id));
    })
}
