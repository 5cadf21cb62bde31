//! `portcullis subscriptions` end to end: the real binary on a real SQLite store, checked
//! through the store the gateway reads (a presented key, hashed with the store's key, finds
//! its subscription). Keys are printed once and never listed, shown or audited; the APIM
//! import keeps the keys callers hold.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::store::{block_on, KeySlot, StoreLocation, SubscriptionState};
use support::gateway::binary;

/// A store in a temporary directory, managed with the CLI.
struct Cli {
    dir: tempfile::TempDir,
}

/// What one command did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("var/identity.db")
    }

    /// `portcullis ARGS --store sqlite:… --actor ci-bot`.
    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(binary())
            .args(args)
            .arg("--store")
            .arg(format!("sqlite:{}", self.db().display()))
            .args(["--actor", "ci-bot"])
            .output()
            .expect("run portcullis");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Like [`Self::run`]; panics unless it succeeds; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(run.ok, "portcullis {args:?} failed: {}{}", run.stdout, run.stderr);
        run.stdout
    }

    /// The subscription id, slot and state a presented key opens, as the gateway's snapshot
    /// finds it: hashed with the store's own key, looked up among every stored hash.
    fn opens(&self, key: &str) -> Option<(String, KeySlot, SubscriptionState)> {
        block_on(async {
            let store = StoreLocation::Sqlite(self.db()).open().await.unwrap();
            let hash = store.key_hasher().hash(key);
            let keys = store.subscription_keys().await.unwrap();
            keys.into_iter().find(|(h, _, _)| *h == hash).map(|(_, slot, s)| (s.id, slot, s.state))
        })
    }
}

/// The value after `label:` on its line.
fn field(text: &str, label: &str) -> String {
    let line = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label} in {text}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apim/subscriptions.json")
}

#[test]
fn create_list_rotate_suspend_and_cancel_with_keys_shown_once() {
    let cli = Cli::new();
    let created = cli.ok(&[
        "subscriptions",
        "create",
        "--name",
        "Contoso mobile",
        "--scope",
        "product:starter",
        "--owner-user",
        "alice",
        "--expires",
        "90d",
    ]);
    assert!(created.contains("shown only this once"), "{created}");
    let (id, primary, secondary) =
        (field(&created, "id"), field(&created, "primary key"), field(&created, "secondary key"));
    assert_eq!((primary.len(), secondary.len()), (64, 64), "256 bits in hex");
    assert_eq!(cli.opens(&primary), Some((id.clone(), KeySlot::Primary, SubscriptionState::Active)));

    let listed = cli.run(&["subscriptions", "list"]);
    assert!(listed.ok && listed.stdout.contains(&id) && listed.stdout.contains("Contoso mobile"), "{}", listed.stdout);
    assert!(listed.stdout.contains("product:starter") && listed.stdout.contains("active"), "{}", listed.stdout);
    let shown = cli.ok(&["subscriptions", "show", &id]);
    assert_eq!(field(&shown, "owner"), "user:alice");
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&["subscriptions", "list", "--json"])).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!((json[0]["scope"].as_str(), json[0]["state"].as_str()), (Some("product:starter"), Some("active")));
    assert_eq!((json[0]["primary"]["bits"].as_u64(), json[0]["primary"]["weak"].as_bool()), (Some(256), Some(false)));
    let one: serde_json::Value = serde_json::from_str(&cli.ok(&["subscriptions", "show", &id, "--json"])).unwrap();
    assert_eq!(one, json[0]);
    assert!(shown.contains("~256 bits") && !shown.contains("WEAK"), "{shown}");

    let regenerated = cli.ok(&["subscriptions", "regenerate", &id, "--primary"]);
    let new_primary = field(&regenerated, "new primary key");
    assert!(regenerated.contains("shown only this once") && regenerated.contains("secondary key keeps working"));
    assert_eq!(cli.opens(&primary), None, "the old primary is refused");
    assert_eq!(cli.opens(&new_primary).map(|o| o.1), Some(KeySlot::Primary));
    assert_eq!(cli.opens(&secondary), Some((id.clone(), KeySlot::Secondary, SubscriptionState::Active)));

    cli.ok(&["subscriptions", "suspend", &id]);
    assert_eq!(cli.opens(&secondary).map(|o| o.2), Some(SubscriptionState::Suspended));
    cli.ok(&["subscriptions", "activate", &id]);
    cli.ok(&["subscriptions", "expire", &id, "--never"]);
    assert_eq!(field(&cli.ok(&["subscriptions", "show", &id]), "expires"), "never");
    cli.ok(&["subscriptions", "cancel", &id]);
    let again = cli.run(&["subscriptions", "activate", &id]);
    assert!(!again.ok, "cancelled is final");
    assert!(
        again.stderr.contains("is cancelled, which is final; create a new subscription instead"),
        "{}",
        again.stderr
    );
    assert_eq!(cli.opens(&secondary).map(|o| o.2), Some(SubscriptionState::Cancelled));

    let audit = cli.ok(&["audit"]);
    for action in ["subscription.create", "subscription.regenerate", "subscription.suspend", "subscription.cancel"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    assert!(audit.contains("ci-bot") && audit.contains(&format!("id={id} slot=primary")), "{audit}");
    let everything =
        format!("{audit}{}{}{shown}", cli.ok(&["subscriptions", "list"]), cli.ok(&["subscriptions", "show", &id]));
    for key in [&primary, &secondary, &new_primary] {
        assert!(!everything.contains(key.as_str()), "a key is printed only when made");
    }

    cli.ok(&["subscriptions", "delete", &id]);
    assert_eq!(cli.opens(&secondary), None);
    let gone = cli.run(&["subscriptions", "show", &id]);
    assert!(
        !gone.ok && gone.stderr.contains("not found") && gone.stderr.contains("subscriptions list"),
        "{}",
        gone.stderr
    );
}

#[test]
fn mistakes_are_refused_saying_what_to_write() {
    let cli = Cli::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["subscriptions", "create", "--name", "x", "--scope", "products/starter"],
            "is not a subscription scope; write all, product:NAME or route:NAME",
        ),
        (
            &["subscriptions", "create", "--name", "x", "--scope", "all", "--expires", "soon"],
            "write an RFC 3339 time like 2027-01-31T00:00:00Z, or a duration like 90d, 12h or 30m",
        ),
        (&["subscriptions", "suspend", "nope"], "subscription \"nope\" not found"),
        (&["subscriptions", "regenerate", "nope", "--secondary"], "subscription \"nope\" not found"),
    ];
    for (args, message) in cases {
        let run = cli.run(args);
        assert!(!run.ok && run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    let neither = cli.run(&["subscriptions", "regenerate", "some-id"]);
    assert!(!neither.ok && neither.stderr.contains("--primary"), "{}", neither.stderr);
}

#[test]
fn an_apim_export_is_imported_keeping_the_callers_keys_and_can_be_run_again() {
    let cli = Cli::new();
    let sample = sample().display().to_string();
    let first = cli.run(&["subscriptions", "import", &sample]);
    assert!(!first.ok, "one subscription awaits approval in APIM: refused, exit 1");
    assert!(first.stdout.contains("4 imported, 0 updated, 1 refused"), "{}", first.stdout);
    assert!(first.stdout.contains("refused  63f0b2c1d4e5f6a7b8c9d0e1: its state is \"submitted\""), "{}", first.stdout);
    assert!(
        first.stderr.contains("subscription legacy-partner: the primary key is about 84 bits, below 128"),
        "weak imported keys are reported: {}",
        first.stderr
    );

    // The callers' keys work unchanged.
    let starter = "5931a75ae4bbd512a88c680b".to_owned();
    assert_eq!(
        cli.opens("7c4f0a9e2b5d48e1a3f6c8d0b2e4f6a1"),
        Some((starter.clone(), KeySlot::Primary, SubscriptionState::Active))
    );
    assert_eq!(cli.opens("e3b1d5f7a9c24e6080b2d4f6a8c0e2f4").map(|o| o.1), Some(KeySlot::Secondary));
    assert_eq!(
        cli.opens("Qm9uIGFwcMOpdGl0IGV0IGJvbm5lIGNoYW5jZSAhIQ"),
        Some(("orders-batch".into(), KeySlot::Primary, SubscriptionState::Suspended)),
        "keys inline in properties"
    );
    assert_eq!(cli.opens("0f9e8d7c6b5a49382716f5e4d3c2b1a0").map(|o| o.2), Some(SubscriptionState::Cancelled));
    let shown = cli.ok(&["subscriptions", "show", &starter]);
    assert_eq!(field(&shown, "scope"), "product:starter");
    assert_eq!(field(&shown, "owner"), "user:57127d485157a511ace86ae7");
    assert_eq!(field(&shown, "name"), "Contoso mobile app (Starter)");
    assert_eq!(field(&shown, "created"), "2021-03-15T09:24:51Z");
    let orders = cli.ok(&["subscriptions", "show", "orders-batch"]);
    assert_eq!(
        (field(&orders, "scope"), field(&orders, "expires")),
        ("route:orders-api".into(), "2030-01-01T00:00:00Z".into())
    );
    let legacy = cli.ok(&["subscriptions", "show", "legacy-partner"]);
    assert!(legacy.contains("scope:           all") && legacy.contains("WEAK"), "{legacy}");
    assert!(cli.ok(&["subscriptions", "show", "master"]).contains("scope:           all"));

    // Again: every one updated in place, nothing doubled.
    let again = cli.run(&["subscriptions", "import", &sample]);
    assert!(again.stdout.contains("0 imported, 4 updated, 1 refused"), "{}", again.stdout);
    let listed = cli.ok(&["subscriptions", "list"]);
    assert_eq!(listed.lines().count(), 5, "a header and four subscriptions: {listed}");
    let audit = cli.ok(&["audit"]);
    assert_eq!(audit.matches("subscription.import").count(), 8, "each import audited: {audit}");
    let json = std::fs::read_to_string(sample).unwrap();
    let keys: Vec<&str> =
        json.lines().filter_map(|l| l.split_once("Key\": \"")).map(|(_, k)| k.trim_end_matches(['"', ','])).collect();
    assert_eq!(keys.len(), 8);
    let printed = format!("{}{}{}{}{listed}{audit}", first.stdout, first.stderr, again.stdout, again.stderr);
    for key in keys {
        assert!(!printed.contains(key), "an imported key is never printed: {key}");
    }
}

#[test]
fn an_import_refuses_a_key_given_twice_and_a_key_too_long_naming_neither_key() {
    let cli = Cli::new();
    let long = "x".repeat(300);
    let file = cli.dir.path().join("subscriptions.json");
    std::fs::write(
        &file,
        format!(
            r#"[
  {{ "name": "first", "properties": {{ "displayName": "First", "scope": "/apis", "state": "active" }},
     "listSecrets": {{ "primaryKey": "shared-key-0123456789abcdef", "secondaryKey": "first-own-key-0123456789" }} }},
  {{ "name": "second", "properties": {{ "displayName": "Second", "scope": "/apis", "state": "active" }},
     "listSecrets": {{ "primaryKey": "second-own-key-0123456789", "secondaryKey": "shared-key-0123456789abcdef" }} }},
  {{ "name": "third", "properties": {{ "displayName": "Third", "scope": "/apis", "state": "active" }},
     "listSecrets": {{ "primaryKey": "{long}", "secondaryKey": "third-own-key-0123456789" }} }}
]"#
        ),
    )
    .unwrap();
    let run = cli.run(&["subscriptions", "import", &file.display().to_string()]);
    assert!(!run.ok);
    assert!(run.stdout.contains("1 imported, 0 updated, 2 refused"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "refused  second: the secondary key of subscription \"second\" is already a key of a subscription"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("refused  third: the primary key of subscription \"third\" is refused: it is 300 bytes long"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("shared-key") && !run.stdout.contains(&long[..40]), "no key is echoed");
    assert_eq!(
        cli.opens("shared-key-0123456789abcdef").map(|o| o.0),
        Some("first".into()),
        "one key, one subscription"
    );
    assert_eq!(cli.opens("second-own-key-0123456789"), None, "the refused subscription wrote nothing");

    let broken = cli.dir.path().join("broken.json");
    std::fs::write(&broken, "{\"subscriptions\": 3}").unwrap();
    let run = cli.run(&["subscriptions", "import", &broken.display().to_string()]);
    assert!(!run.ok && run.stderr.contains("not an APIM subscription list"), "{}", run.stderr);
}
