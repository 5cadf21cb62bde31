//! The storage trait, and what the SQLite and PostgreSQL storages share.

use std::future::Future;
use std::pin::Pin;

use super::error::StoreError;
use super::records::{AuditEntry, AuditRecord, Link, LinkRef, Lookup, SealedSecret, System, User};
use super::secret::{SecretHash, SecretSlot};
use super::subscriptions::{KeyInfo, KeySlot, Owner, Subscription, SubscriptionScope, SubscriptionState};

/// A store call in flight.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What [`super::Store::reseal_secrets`] applies to each secret: a name and its sealed value to the
/// new sealed value.
pub type Reseal<'a> = dyn Fn(&str, &[u8]) -> Result<Vec<u8>, StoreError> + Sync + 'a;

/// Makes a change's audit entry from what the change found in its transaction (the old
/// scopes, the removed link, how many secrets).
pub type AuditOf<'a, T> = dyn Fn(&T) -> AuditRecord + Send + Sync + 'a;

/// What [`Storage::update_subscription`] applies to the subscription it read in its
/// transaction: the changed subscription, or the rules' refusal (nothing is written).
pub type SubscriptionChange<'a> = dyn Fn(&Subscription) -> Result<Subscription, StoreError> + Send + Sync + 'a;

/// What [`Storage::replace_subscription_key`] checks on the subscription it read in its
/// transaction before replacing a key: the rules' refusal, if any (nothing is written).
pub type SubscriptionCheck<'a> = dyn Fn(&Subscription) -> Result<(), StoreError> + Send + Sync + 'a;

/// What an active flag belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    /// A system's flag.
    System,
    /// A user's flag.
    User,
}

/// What [`Storage::insert_link`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkWrite {
    /// The link and its audit entry are written.
    Linked,
    /// There is no such system.
    NoSystem,
    /// There is no such user.
    NoUser,
    /// The system already links this external user or this user.
    Taken,
}

/// Where the issuer's data is kept. A storage only stores: each write is one transaction
/// that applies the change and its audit entry (made by the rules) together, or neither, and
/// reports what it found; uniqueness is the database's (a duplicate is reported, never
/// raced). The rules and their messages are [`super::Store`]'s.
pub trait Storage: Send + Sync {
    /// Every system, oldest first.
    fn systems(&self) -> StoreFuture<'_, Vec<System>>;
    /// One system, if there is one with this id.
    fn system<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<System>>;
    /// Every user, by id.
    fn users(&self) -> StoreFuture<'_, Vec<User>>;
    /// A system's links, by external user id.
    fn links<'a>(&'a self, system_id: &'a str) -> StoreFuture<'a, Vec<Link>>;
    /// The audit log's entries after sequence number `after` (0: all), oldest first.
    fn audit(&self, after: i64) -> StoreFuture<'_, Vec<AuditEntry>>;
    /// A system's active flag, secret hashes and scopes and, when `external_user` is named,
    /// the internal user it is linked to: everything a token request reads, without blocking
    /// the caller's thread.
    fn lookup<'a>(&'a self, system_id: &'a str, external_user: Option<&'a str>) -> StoreFuture<'a, Lookup>;
    /// Every sealed value, by name.
    fn secrets(&self) -> StoreFuture<'_, Vec<SealedSecret>>;
    /// The master key's check value the secrets are sealed under, if any secret was ever set.
    fn secrets_key_check(&self) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// Inserts an active system; false (and nothing written) when its name or id is taken.
    fn insert_system<'a>(
        &'a self,
        system: &'a System,
        primary: &'a SecretHash,
        alternate: &'a SecretHash,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;
    /// Inserts an active user; false (and nothing written) when its id is taken.
    fn insert_user<'a>(&'a self, user: &'a User, audit: &'a AuditRecord) -> StoreFuture<'a, bool>;
    /// Sets an active flag; false (and nothing written) when there is no such row.
    fn set_active<'a>(
        &'a self,
        entity: Entity,
        id: &'a str,
        active: bool,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;
    /// Replaces a system's scopes; returns the old ones, or None (nothing written) when there
    /// is no such system.
    fn replace_scopes<'a>(
        &'a self,
        id: &'a str,
        scopes: &'a [String],
        audit: &'a AuditOf<'a, [String]>,
    ) -> StoreFuture<'a, Option<Vec<String>>>;
    /// Voids the primary secret, promotes the alternate (with its last use), stores
    /// `new_alternate`; false (and nothing written) when there is no such system.
    fn renew_secret<'a>(
        &'a self,
        id: &'a str,
        new_alternate: &'a SecretHash,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;
    /// Inserts a link when its system and user exist and neither of its ids is linked yet.
    fn insert_link<'a>(&'a self, link: &'a Link, audit: &'a AuditRecord) -> StoreFuture<'a, LinkWrite>;
    /// Deletes one link; returns it, or None (nothing written) when there is none.
    fn delete_link<'a>(
        &'a self,
        system_id: &'a str,
        link: LinkRef<'a>,
        audit: &'a AuditOf<'a, Link>,
    ) -> StoreFuture<'a, Option<Link>>;
    /// Sets one secret (new or replaced) when the store's key check is `key_check` (it
    /// becomes the store's when it has none); false (nothing written) under another key.
    fn put_secret<'a>(
        &'a self,
        name: &'a str,
        sealed: &'a [u8],
        key_check: &'a [u8],
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;
    /// Deletes one secret; false (and nothing written) when there is none.
    fn delete_secret<'a>(&'a self, name: &'a str, audit: &'a AuditRecord) -> StoreFuture<'a, bool>;
    /// Re-seals every secret and sets the key check, all or nothing; returns how many.
    fn reseal_secrets<'a>(
        &'a self,
        reseal: &'a Reseal<'a>,
        key_check: &'a [u8],
        audit: &'a AuditOf<'a, usize>,
    ) -> StoreFuture<'a, usize>;
    /// Deletes every secret and the key check; returns how many secrets.
    fn reset_secrets<'a>(&'a self, audit: &'a AuditOf<'a, usize>) -> StoreFuture<'a, usize>;
    /// Records that a configuration load resolved these secrets at `at` (not audited).
    fn secrets_used<'a>(&'a self, names: &'a [String], at: i64) -> StoreFuture<'a, ()>;
    /// Records that `slot` of the system got a token at `minute`, unless a later use is
    /// recorded (not audited).
    fn secret_used<'a>(&'a self, system_id: &'a str, slot: SecretSlot, minute: i64) -> StoreFuture<'a, ()>;

    /// Every subscription, oldest first.
    fn subscriptions(&self) -> StoreFuture<'_, Vec<Subscription>>;
    /// One subscription, if there is one with this id.
    fn subscription<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Subscription>>;
    /// Every key hash with its slot and its subscription, in one read.
    fn subscription_keys(&self) -> StoreFuture<'_, Vec<(SecretHash, KeySlot, Subscription)>>;
    /// Inserts a subscription with its two key hashes; false (and nothing written) when its
    /// id is taken. A key hash that is already stored fails the whole write with
    /// [`StoreError::SubscriptionKeyTaken`] (nothing written).
    fn insert_subscription<'a>(
        &'a self,
        subscription: &'a Subscription,
        primary: &'a SecretHash,
        secondary: &'a SecretHash,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;
    /// Inserts a subscription, or replaces the stored one with this id (its creation time
    /// kept; a key whose hash is unchanged keeps its creation and last use); returns whether
    /// one was replaced, which `audit` is told. A key hash stored for another subscription or
    /// slot fails the whole write with [`StoreError::SubscriptionKeyTaken`].
    fn import_subscription<'a>(
        &'a self,
        subscription: &'a Subscription,
        primary: &'a SecretHash,
        secondary: &'a SecretHash,
        audit: &'a AuditOf<'a, bool>,
    ) -> StoreFuture<'a, bool>;
    /// Reads the subscription, applies `change` to it and writes the name, scope, state,
    /// expiry and owner it returns, with the audit entry `audit` makes of the result; None
    /// (nothing written) when there is no such subscription, `change`'s error (nothing
    /// written) when it refuses.
    fn update_subscription<'a>(
        &'a self,
        id: &'a str,
        change: &'a SubscriptionChange<'a>,
        audit: &'a AuditOf<'a, Subscription>,
    ) -> StoreFuture<'a, Option<Subscription>>;
    /// Replaces one key's hash (its creation time `audit.at`, no use yet, `bits` strong) when
    /// `check` accepts the subscription; false (nothing written) when there is none. A hash
    /// already stored fails with [`StoreError::SubscriptionKeyTaken`] (nothing written).
    fn replace_subscription_key<'a>(
        &'a self,
        id: &'a str,
        slot: KeySlot,
        key: &'a SecretHash,
        bits: u32,
        check: &'a SubscriptionCheck<'a>,
        audit: &'a AuditRecord,
    ) -> StoreFuture<'a, bool>;
    /// Deletes a subscription and its key hashes; false (nothing written) when there is none.
    fn delete_subscription<'a>(&'a self, id: &'a str, audit: &'a AuditRecord) -> StoreFuture<'a, bool>;
    /// Records that `slot` of the subscription was accepted at `minute`, unless a later use
    /// is recorded (not audited: it changes nothing the gateway decides on).
    fn subscription_key_used<'a>(&'a self, id: &'a str, slot: KeySlot, minute: i64) -> StoreFuture<'a, ()>;
}

/// The meta key under which the secret store's key check value is kept.
pub(crate) const KEY_CHECK: &str = "secrets_key_check";

/// The columns both storages select for a [`System`], a [`User`] and a [`Link`], in order.
pub(crate) const SYSTEM_COLUMNS: &str =
    "id, name, active, created_at, secrets_renewed_at, primary_used_at, alternate_used_at, scopes";
/// See [`SYSTEM_COLUMNS`].
pub(crate) const USER_COLUMNS: &str = "id, roles, active, created_at";
/// See [`SYSTEM_COLUMNS`].
pub(crate) const LINK_COLUMNS: &str = "system_id, external_user, user_id, created_at";

/// See [`SYSTEM_COLUMNS`].
pub(crate) const SUBSCRIPTION_COLUMNS: &str = "id, name, scope, state, expires_at, owner, created_at, \
     primary_created_at, primary_used_at, primary_bits, secondary_created_at, secondary_used_at, secondary_bits";
/// [`SUBSCRIPTION_COLUMNS`] of the `subscriptions` table named `s`.
pub(crate) const SUBSCRIPTION_COLUMNS_OF_S: &str = "s.id, s.name, s.scope, s.state, s.expires_at, s.owner, \
     s.created_at, s.primary_created_at, s.primary_used_at, s.primary_bits, s.secondary_created_at, \
     s.secondary_used_at, s.secondary_bits";

/// A subscription row as both storages read it ([`SUBSCRIPTION_COLUMNS`], in order), before
/// its text columns are parsed.
pub(crate) struct SubscriptionRow {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub state: String,
    pub expires_at: Option<i64>,
    pub owner: Option<String>,
    pub created_at: i64,
    pub primary: (i64, Option<i64>, i64),
    pub secondary: (i64, Option<i64>, i64),
}

impl SubscriptionRow {
    /// The subscription keys of `(hash, slot, row)` rows, as [`Storage::subscription_keys`]
    /// returns them.
    pub(crate) fn keys(
        rows: Vec<(Vec<u8>, String, SubscriptionRow)>,
    ) -> Result<Vec<(SecretHash, KeySlot, Subscription)>, StoreError> {
        rows.into_iter()
            .map(|(hash, slot, row)| {
                let slot = KeySlot::parse(&slot).ok_or_else(|| {
                    StoreError::Unavailable(format!("subscription {:?}: unknown key slot {slot:?}", row.id))
                })?;
                Ok((SecretHash(hash), slot, row.parse()?))
            })
            .collect()
    }

    /// The subscription, or why its stored text is unreadable (a newer portcullis wrote it).
    pub(crate) fn parse(self) -> Result<Subscription, StoreError> {
        let unreadable = |what: &str, value: &str| {
            StoreError::Unavailable(format!("subscription {:?}: unknown {what} {value:?}", self.id))
        };
        let scope = SubscriptionScope::parse(&self.scope).ok_or_else(|| unreadable("scope", &self.scope))?;
        let state = SubscriptionState::parse(&self.state).ok_or_else(|| unreadable("state", &self.state))?;
        let owner = match &self.owner {
            Some(text) => Some(Owner::parse(text).ok_or_else(|| unreadable("owner", text))?),
            None => None,
        };
        let key = |(created_at, used_at, bits): (i64, Option<i64>, i64)| KeyInfo {
            created_at,
            used_at,
            bits: u32::try_from(bits).unwrap_or(0),
        };
        Ok(Subscription {
            scope,
            state,
            owner,
            expires_at: self.expires_at,
            created_at: self.created_at,
            primary: key(self.primary),
            secondary: key(self.secondary),
            name: self.name,
            id: self.id,
        })
    }
}

/// The columns of one key slot in the `subscriptions` table: created, used, bits.
pub(crate) fn key_columns(slot: KeySlot) -> (&'static str, &'static str, &'static str) {
    match slot {
        KeySlot::Primary => ("primary_created_at", "primary_used_at", "primary_bits"),
        KeySlot::Secondary => ("secondary_created_at", "secondary_used_at", "secondary_bits"),
    }
}

/// Unix seconds, as the stores keep times.
pub fn now() -> i64 {
    crate::clock::unix_now() as i64
}

/// Granted scopes as both storages keep them: space-separated, as in a token's `scope` claim
/// (RFC 6749 §3.3), so a scope never holds a space.
pub(crate) fn scopes_column(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// The granted scopes of a stored `scopes` column.
pub(crate) fn parse_scopes(column: &str) -> Vec<String> {
    column.split_whitespace().map(str::to_owned).collect()
}
