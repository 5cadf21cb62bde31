//! The subscription rules against the SQLite storage: each change its audit entry (never a
//! key), each refusal its typed error, writing nothing.

use crate::store::{
    block_on, Field, Imported, ImportedSubscription, KeySlot, Owner, Store, StoreError, StoreLocation,
    SubscriptionScope, SubscriptionState, MAX_SECRET_BYTES,
};

fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite(dir.path().join("identity.db"));
    (block_on(location.open()).unwrap(), dir)
}

/// The audit log as `action detail` lines.
fn audit(store: &Store) -> Vec<String> {
    block_on(store.audit())
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.action, e.detail.unwrap_or_default()))
        .collect()
}

/// The subscription id and slot a presented key opens, hashed as the gateway will.
fn opens(store: &Store, key: &str) -> Option<(String, KeySlot)> {
    let hash = store.key_hasher().hash(key);
    block_on(store.subscription_keys())
        .unwrap()
        .into_iter()
        .find(|(h, _, _)| *h == hash)
        .map(|(_, slot, s)| (s.id, slot))
}

fn import(id: &str, primary: &str, secondary: &str) -> ImportedSubscription {
    ImportedSubscription {
        id: id.to_owned(),
        name: format!("Imported {id}"),
        scope: SubscriptionScope::Product("starter".into()),
        state: SubscriptionState::Active,
        expires_at: None,
        owner: Some(Owner::User("alice".into())),
        created_at: Some(1_600_000_000),
        primary_key: primary.to_owned(),
        secondary_key: secondary.to_owned(),
    }
}

#[test]
fn a_subscription_is_created_with_two_new_keys_that_open_it_and_are_audited_without_them() {
    let (store, _dir) = store();
    let created = block_on(store.create_subscription(
        "Contoso mobile",
        SubscriptionScope::Route("echo".into()),
        Some(Owner::System("sys-1".into())),
        None,
        "op",
    ))
    .unwrap();
    let s = &created.subscription;
    assert_eq!((s.state, s.primary.bits, s.secondary.bits), (SubscriptionState::Active, 256, 256));
    assert_eq!(created.primary.text.len(), 64);
    assert_eq!(opens(&store, &created.primary.text), Some((s.id.clone(), KeySlot::Primary)));
    assert_eq!(opens(&store, &created.secondary.text), Some((s.id.clone(), KeySlot::Secondary)));
    assert_eq!(opens(&store, "guess"), None);
    assert_eq!(block_on(store.subscriptions()).unwrap(), std::slice::from_ref(s));
    assert_eq!(block_on(store.subscription(&s.id)).unwrap().as_ref(), Some(s));
    let entries = audit(&store);
    assert_eq!(
        entries,
        [format!("subscription.create id={} name=\"Contoso mobile\" scope=route:echo owner=system:sys-1", s.id)]
    );
    assert!(!format!("{entries:?}{created:?}").contains(&created.primary.text), "no key in the audit or Debug");
    let entry = block_on(store.audit()).unwrap().remove(0);
    assert_eq!(entry.subscription_id(), Some(&*s.id), "what a watcher re-reads");
}

#[test]
fn malformed_names_scopes_and_owners_are_refused_writing_nothing() {
    let (store, _dir) = store();
    let create = |name: &str, scope: SubscriptionScope, owner: Option<Owner>| {
        block_on(store.create_subscription(name, scope, owner, None, "op")).unwrap_err()
    };
    let name = create("", SubscriptionScope::All, None);
    assert_eq!(name.to_string(), "display name \"\" must be 1 to 256 characters without control characters");
    assert!(matches!(create("a\nb", SubscriptionScope::All, None), StoreError::MalformedDisplayName { .. }));
    let scope = create("x", SubscriptionScope::Product("two words".into()), None);
    assert_eq!(
        scope.to_string(),
        "\"product:two words\" is not a subscription scope; write all, product:NAME or route:NAME"
    );
    let owner = create("x", SubscriptionScope::All, Some(Owner::User("with space".into())));
    assert!(matches!(owner, StoreError::Malformed { field: Field::UserId, .. }));
    assert!(audit(&store).is_empty());
}

#[test]
fn regenerating_one_key_leaves_the_other_working() {
    let (store, _dir) = store();
    let created = block_on(store.create_subscription("s", SubscriptionScope::All, None, None, "op")).unwrap();
    let id = created.subscription.id.clone();
    let new = block_on(store.regenerate_subscription_key(&id, KeySlot::Primary, "op")).unwrap();
    assert_eq!(opens(&store, &created.primary.text), None, "the old primary is refused");
    assert_eq!(opens(&store, &new.text), Some((id.clone(), KeySlot::Primary)));
    assert_eq!(opens(&store, &created.secondary.text), Some((id.clone(), KeySlot::Secondary)), "the secondary works");
    assert_eq!(block_on(store.subscription_keys()).unwrap().len(), 2);
    assert_eq!(audit(&store).last().unwrap(), &format!("subscription.regenerate id={id} slot=primary"));
    let missing = block_on(store.regenerate_subscription_key("nope", KeySlot::Secondary, "op")).unwrap_err();
    assert_eq!(missing.to_string(), "subscription \"nope\" not found");
}

#[test]
fn states_move_as_apim_allows_and_cancelled_is_final() {
    let (store, _dir) = store();
    let created = block_on(store.create_subscription("s", SubscriptionScope::All, None, None, "op")).unwrap();
    let id = created.subscription.id.clone();
    assert_eq!(block_on(store.suspend_subscription(&id, "op")).unwrap().state, SubscriptionState::Suspended);
    assert_eq!(block_on(store.activate_subscription(&id, "op")).unwrap().state, SubscriptionState::Active);
    let expiring = block_on(store.set_subscription_expiry(&id, Some(1_000), "op")).unwrap();
    assert_eq!((expiring.expires_at, expiring.state_at(1_000)), (Some(1_000), SubscriptionState::Expired));
    assert_eq!(block_on(store.set_subscription_expiry(&id, None, "op")).unwrap().expires_at, None);
    assert_eq!(block_on(store.cancel_subscription(&id, "op")).unwrap().state, SubscriptionState::Cancelled);
    let before = audit(&store);
    for refused in [
        block_on(store.activate_subscription(&id, "op")).map(drop),
        block_on(store.suspend_subscription(&id, "op")).map(drop),
        block_on(store.cancel_subscription(&id, "op")).map(drop),
        block_on(store.set_subscription_expiry(&id, Some(5), "op")).map(drop),
        block_on(store.regenerate_subscription_key(&id, KeySlot::Primary, "op")).map(drop),
    ] {
        let err = refused.unwrap_err();
        assert!(matches!(err, StoreError::SubscriptionCancelled { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("subscription {id:?} is cancelled, which is final; create a new subscription instead")
        );
    }
    assert_eq!(audit(&store), before, "refusals write nothing");
    assert_eq!(opens(&store, &created.primary.text).map(|(i, _)| i), Some(id.clone()), "a cancelled key stays known");
    block_on(store.delete_subscription(&id, "op")).unwrap();
    assert_eq!(opens(&store, &created.primary.text), None);
    assert!(matches!(block_on(store.delete_subscription(&id, "op")), Err(StoreError::SubscriptionNotFound { .. })));
    let actions: Vec<String> = audit(&store).into_iter().map(|l| l.split(' ').next().unwrap().to_owned()).collect();
    assert_eq!(
        actions,
        [
            "subscription.create",
            "subscription.suspend",
            "subscription.activate",
            "subscription.expiry",
            "subscription.expiry",
            "subscription.cancel",
            "subscription.delete"
        ]
    );
    assert!(audit(&store).contains(&format!("subscription.expiry id={id} expires_at=1000 was=none")));
    assert!(audit(&store).contains(&format!("subscription.expiry id={id} expires_at=none was=1000")));
    assert!(audit(&store).contains(&format!("subscription.cancel id={id} state=cancelled was=active")));
}

#[test]
fn an_import_keeps_the_callers_keys_and_a_reimport_updates_in_place() {
    let (store, _dir) = store();
    let first =
        block_on(store.import_subscription(&import("sub-1", "0123456789abcdef0123456789abcdef", "short-key"), "op"));
    let Imported::Created(s) = first.unwrap() else { panic!("created") };
    assert_eq!((s.created_at, s.primary.bits, s.secondary.bits), (1_600_000_000, 128, 54));
    assert!(!s.primary.is_weak() && s.secondary.is_weak());
    assert_eq!(opens(&store, "0123456789abcdef0123456789abcdef"), Some(("sub-1".into(), KeySlot::Primary)));
    block_on(store.subscription_key_used("sub-1", KeySlot::Primary, 1_700_000_040)).unwrap();
    block_on(store.subscription_key_used("sub-1", KeySlot::Primary, 1_700_000_000)).unwrap();

    // Re-run: the primary unchanged (its last use kept), the secondary replaced, the state moved.
    let mut again = import("sub-1", "0123456789abcdef0123456789abcdef", "another-key-entirely");
    again.state = SubscriptionState::Suspended;
    let Imported::Updated(s) = block_on(store.import_subscription(&again, "op")).unwrap() else { panic!("updated") };
    assert_eq!(
        (s.state, s.primary.used_at, s.created_at),
        (SubscriptionState::Suspended, Some(1_700_000_040), 1_600_000_000)
    );
    assert_eq!(opens(&store, "short-key"), None, "the replaced key is refused");
    assert_eq!(opens(&store, "another-key-entirely"), Some(("sub-1".into(), KeySlot::Secondary)));

    // Keys swapped between the slots are no clash.
    let swapped = import("sub-1", "another-key-entirely", "0123456789abcdef0123456789abcdef");
    block_on(store.import_subscription(&swapped, "op")).unwrap();
    assert_eq!(opens(&store, "another-key-entirely"), Some(("sub-1".into(), KeySlot::Primary)));
    assert_eq!(block_on(store.subscription_keys()).unwrap().len(), 2);
    let imports: Vec<String> = audit(&store).into_iter().filter(|l| l.starts_with("subscription.import")).collect();
    assert_eq!(
        imports,
        [
            "subscription.import id=sub-1 created scope=product:starter state=active",
            "subscription.import id=sub-1 updated scope=product:starter state=suspended",
            "subscription.import id=sub-1 updated scope=product:starter state=active",
        ]
    );
}

#[test]
fn a_key_given_twice_or_too_long_is_refused_and_nothing_is_written() {
    let (store, _dir) = store();
    block_on(store.import_subscription(&import("sub-1", "key-one-aaaaaaaa", "key-two-bbbbbbbb"), "op")).unwrap();
    let before = audit(&store);
    let taken = block_on(store.import_subscription(&import("sub-2", "key-three-cccccc", "key-one-aaaaaaaa"), "op"))
        .unwrap_err();
    assert!(matches!(taken, StoreError::SubscriptionKeyTaken { slot: KeySlot::Secondary, .. }), "{taken}");
    assert_eq!(
        taken.to_string(),
        "the secondary key of subscription \"sub-2\" is already a key of a subscription; every key must be unique"
    );
    assert_eq!(block_on(store.subscription("sub-2")).unwrap(), None, "rolled back: no subscription without keys");
    assert_eq!(opens(&store, "key-three-cccccc"), None);
    let same = block_on(store.import_subscription(&import("sub-3", "same-key-dddddd", "same-key-dddddd"), "op"));
    assert!(matches!(same.unwrap_err(), StoreError::SubscriptionKeyTaken { .. }));
    let long = "k".repeat(MAX_SECRET_BYTES + 1);
    let too_long = block_on(store.import_subscription(&import("sub-4", &long, "fine-key"), "op")).unwrap_err();
    assert_eq!(
        too_long.to_string(),
        format!("the primary key of subscription \"sub-4\" is refused: it is {} bytes long, more than the {MAX_SECRET_BYTES} allowed", MAX_SECRET_BYTES + 1)
    );
    let bad_id = block_on(store.import_subscription(&import("two words", "a-key-eeeeeeee", "b-key-ffffffff"), "op"));
    assert!(matches!(bad_id.unwrap_err(), StoreError::Malformed { field: Field::SubscriptionId, .. }));
    assert_eq!(audit(&store), before, "refusals write nothing");
    let all = format!("{:?}", block_on(store.audit()).unwrap());
    assert!(!all.contains("key-one") && !all.contains("key-two"), "no key in the audit log");
}
