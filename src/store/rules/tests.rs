//! The rules against the SQLite storage in a temporary directory: each refusal is its typed
//! error with today's message, and writes nothing to the audit log.

use crate::store::{block_on, AuditAction, Field, LinkRef, Store, StoreError, StoreLocation};

/// A fresh store in its own directory (kept alive with it).
fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite(dir.path().join("identity.db"));
    (block_on(location.open()).unwrap(), dir)
}

/// The actions of the audit log, in order.
fn actions(store: &Store) -> Vec<String> {
    block_on(store.audit()).unwrap().into_iter().map(|e| e.action).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_system_is_created_with_checked_scopes_and_its_audit_entry() {
    let (store, _dir) = store();
    let h = store.hasher();
    let system =
        block_on(store.create_system("billing", &h.hash("a"), &h.hash("b"), &strings(&["read", "read"]), "op"))
            .unwrap();
    assert_eq!((system.scopes.as_slice(), system.active), (&strings(&["read"])[..], true), "repeats dropped");
    let entry = block_on(store.audit()).unwrap().remove(0);
    assert_eq!(entry.action, AuditAction::SystemCreate.as_str());
    assert_eq!(
        (entry.system_id.as_deref(), entry.detail.as_deref()),
        (Some(&*system.id), Some("name=billing scopes=[read]"))
    );
}

#[test]
fn a_system_is_not_created_twice_nor_with_a_malformed_name_or_scope() {
    let (store, _dir) = store();
    let h = store.hasher();
    let create = |name: &str, scopes: &[&str]| {
        block_on(store.create_system(name, &h.hash("a"), &h.hash("b"), &strings(scopes), "op"))
    };
    create("billing", &[]).unwrap();
    let twice = create("billing", &[]).unwrap_err();
    assert!(matches!(twice, StoreError::SystemExists { ref name } if name == "billing"));
    assert_eq!(twice.to_string(), "a system named \"billing\" exists");
    let spaced = create("two words", &[]).unwrap_err();
    assert!(matches!(spaced, StoreError::Malformed { field: Field::SystemName, .. }));
    assert_eq!(
        spaced.to_string(),
        "system name \"two words\" must be 1 to 128 visible ASCII characters without spaces"
    );
    let scope = create("other", &["a\"b"]).unwrap_err();
    assert_eq!(scope.to_string(), "\"a\\\"b\" is not a valid scope (RFC 6749 §3.3)");
    assert_eq!(actions(&store), ["system.create"], "refusals write nothing");
}

#[test]
fn flags_and_renewals_need_an_existing_system_or_user() {
    let (store, _dir) = store();
    let h = store.hasher();
    let system = block_on(store.create_system("billing", &h.hash("a"), &h.hash("b"), &[], "op")).unwrap();
    block_on(store.add_user("alice", &strings(&["Reader"]), "op")).unwrap();
    let missing = block_on(store.set_system_active("nope", false, "op")).unwrap_err();
    assert_eq!(missing.to_string(), "system \"nope\" not found");
    let missing = block_on(store.set_user_active("nope", false, "op")).unwrap_err();
    assert_eq!(missing.to_string(), "user \"nope\" not found");
    assert!(matches!(block_on(store.renew_secret("nope", &h.hash("c"), "op")), Err(StoreError::SystemNotFound { .. })));
    assert!(matches!(block_on(store.set_system_scopes("nope", &[], "op")), Err(StoreError::SystemNotFound { .. })));
    let again = block_on(store.add_user("alice", &[], "op")).unwrap_err();
    assert_eq!(again.to_string(), "user \"alice\" exists");
    let role = block_on(store.add_user("bob", &strings(&["two words"]), "op")).unwrap_err();
    assert!(matches!(role, StoreError::Malformed { field: Field::Role, .. }));

    block_on(store.set_system_active(&system.id, false, "op")).unwrap();
    block_on(store.set_system_active(&system.id, true, "op")).unwrap();
    block_on(store.set_user_active("alice", false, "op")).unwrap();
    block_on(store.set_user_active("alice", true, "op")).unwrap();
    block_on(store.renew_secret(&system.id, &h.hash("c"), "op")).unwrap();
    assert_eq!(
        actions(&store),
        [
            "system.create",
            "user.add",
            "system.deactivate",
            "system.activate",
            "user.deactivate",
            "user.activate",
            "system.renew_secret"
        ]
    );
}

#[test]
fn links_need_their_system_and_user_and_are_unique() {
    let (store, _dir) = store();
    let h = store.hasher();
    let system = block_on(store.create_system("portal", &h.hash("a"), &h.hash("b"), &[], "op")).unwrap();
    block_on(store.add_user("alice", &[], "op")).unwrap();
    block_on(store.add_user("bob", &[], "op")).unwrap();
    let link = |ext: &str, user: &str| block_on(store.link(&system.id, ext, user, "op"));
    link("ext-1", "alice").unwrap();
    let taken = link("ext-1", "bob").unwrap_err();
    assert_eq!(
        taken.to_string(),
        format!("system {:?} already links external user \"ext-1\" or user \"bob\"; unlink first", system.id)
    );
    assert!(matches!(link("ext-2", "alice"), Err(StoreError::LinkExists { .. })));
    assert!(matches!(link("ext-2", "nobody"), Err(StoreError::UserNotFound { ref id }) if id == "nobody"));
    assert!(matches!(block_on(store.link("nope", "ext-2", "bob", "op")), Err(StoreError::SystemNotFound { .. })));
    assert!(matches!(link("with space", "bob"), Err(StoreError::Malformed { field: Field::ExternalUserId, .. })));

    let removed = block_on(store.unlink(&system.id, LinkRef::User("alice"), "op")).unwrap();
    assert_eq!(removed.external_user, "ext-1");
    let gone = block_on(store.unlink(&system.id, LinkRef::ExternalUser("ext-1"), "op")).unwrap_err();
    assert_eq!(gone.to_string(), format!("a link of system {:?} with \"ext-1\" not found", system.id));
    let entries = block_on(store.audit()).unwrap();
    let unlink = entries.last().unwrap();
    assert_eq!(
        (unlink.action.as_str(), unlink.user_id.as_deref(), unlink.detail.as_deref()),
        ("system.unlink", Some("alice"), Some("external_user=ext-1")),
        "the entry names what the transaction found"
    );
    assert_eq!(entries.iter().filter(|e| e.action == "system.link").count(), 1);
}

#[test]
fn secrets_are_refused_under_another_key_and_named_when_missing() {
    let (store, _dir) = store();
    block_on(store.put_secret("api-key", b"sealed", b"key-a", "op")).unwrap();
    let other = block_on(store.put_secret("api-key", b"sealed", b"key-b", "op")).unwrap_err();
    assert!(matches!(other, StoreError::WrongMasterKey));
    assert_eq!(other.to_string(), "this store's secrets are sealed under another master key");
    let name = block_on(store.put_secret("two words", b"sealed", b"key-a", "op")).unwrap_err();
    assert!(matches!(name, StoreError::Malformed { field: Field::SecretName, .. }));
    let missing = block_on(store.remove_secret("nope", "op")).unwrap_err();
    assert_eq!(missing.to_string(), "secret \"nope\" not found");
    let count = block_on(store.reseal_secrets(&|_, sealed| Ok(sealed.to_vec()), b"key-b", "op")).unwrap();
    assert_eq!(count, 1);
    assert_eq!(block_on(store.reset_secrets("op")).unwrap(), 1);
    assert_eq!(actions(&store), ["secret.set", "secret.rotate_key", "secret.reset"]);
}

#[test]
fn an_unusable_location_is_unavailable_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "not a directory").unwrap();
    let location = StoreLocation::Sqlite(dir.path().join("file/identity.db"));
    let err = block_on(location.open()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(ref cause) if cause.starts_with("cannot create")), "{err}");
    assert!(err.to_string().starts_with("identity store: cannot create"), "{err}");
}
