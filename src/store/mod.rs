//! What the token issuer keeps: external systems with their two secret hashes, internal
//! users, the links between them, the append-only audit log, and the sealed values of the
//! secret store — in an embedded SQLite file ([`sqlite`]) or a shared PostgreSQL database
//! ([`postgres`]).
//!
//! Two layers: [`Store`] ([`rules`]) holds the issuer's rules — which ids are well formed,
//! what must exist, what is unique, which audit entry each change writes and every error a
//! caller sees — once; a [`Storage`] only stores, each change in one transaction with the
//! audit entry the rules made. Every call is a future: blocking callers (the CLI, the
//! configuration compiler) bridge at their own edge ([`block_on`], [`BlockingStore`]).

mod blocking;
mod location;
pub mod postgres;
pub mod rules;
pub mod secret;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;

pub use blocking::{block_on, BlockingStore};
pub use location::{LocationError, StoreLocation};
pub use rules::{check_id, check_scopes, Store};
pub use secret::{random_bytes, NewSecret, SecretHash, SecretHasher, SecretSlot, MAX_SECRET_BYTES};

/// An external system: one calling program with its own two secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    /// The system's id, a UUID v4 made at creation: the `client_id` of its token requests.
    pub id: String,
    /// The system's name, unique in the store.
    pub name: String,
    /// Whether the system may get tokens.
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// When the secrets were last renewed (Unix seconds), if ever.
    pub secrets_renewed_at: Option<i64>,
    /// When the primary secret last got a token (Unix seconds, to the minute), if ever.
    pub primary_used_at: Option<i64>,
    /// When the alternate secret last got a token (Unix seconds, to the minute), if ever.
    pub alternate_used_at: Option<i64>,
    /// The scopes it may ask for (each also configured in `identity.scopes`), in the order
    /// granted. None for a system created before scopes were granted per system.
    pub scopes: Vec<String>,
}

/// One value of the secret store, as stored: sealed, never in clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    /// The name configurations use (`${secret:NAME}`).
    pub name: String,
    /// Nonce, ciphertext and tag (AES-256-GCM, sealed by the secret store).
    pub sealed: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// When a configuration load last resolved it (Unix seconds), if ever.
    pub used_at: Option<i64>,
}

/// An internal user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The internal user's id, put in `sub` of tokens issued for it.
    pub id: String,
    /// The roles put in the `roles` claim of its tokens.
    pub roles: Vec<String>,
    /// Whether tokens may be issued for this user.
    pub active: bool,
    /// When the user was added (Unix seconds).
    pub created_at: i64,
}

/// One system's external user id mapped to one internal user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The system the link belongs to.
    pub system_id: String,
    /// The user id the system sends in its token requests (`user`).
    pub external_user: String,
    /// The internal user it maps to.
    pub user_id: String,
    /// When the link was made (Unix seconds).
    pub created_at: i64,
}

/// Which link `unlink` removes.
#[derive(Clone, Copy, Debug)]
pub enum LinkRef<'a> {
    /// The link of this external user id.
    ExternalUser(&'a str),
    /// The link to this internal user id.
    User(&'a str),
}

impl LinkRef<'_> {
    /// The id it names.
    pub fn id(&self) -> &str {
        match self {
            Self::ExternalUser(id) | Self::User(id) => id,
        }
    }
}

/// One audit-log entry as stored. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The entry's sequence number, increasing.
    pub seq: i64,
    /// When it was written (Unix seconds).
    pub at: i64,
    /// Who made the change (`--actor`, or the OS user).
    pub actor: String,
    /// What was done, as written ([`AuditAction::as_str`]; an older or newer portcullis may
    /// have written others).
    pub action: String,
    /// The system concerned, if any.
    pub system_id: Option<String>,
    /// The user concerned, if any.
    pub user_id: Option<String>,
    /// More about the change, like `name=…` or `roles=…`.
    pub detail: Option<String>,
}

/// What a change is recorded as in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// `system.create`
    SystemCreate,
    /// `system.activate`
    SystemActivate,
    /// `system.deactivate`
    SystemDeactivate,
    /// `system.scopes`
    SystemScopes,
    /// `system.renew_secret`
    SystemRenewSecret,
    /// `system.link`
    SystemLink,
    /// `system.unlink`
    SystemUnlink,
    /// `user.add`
    UserAdd,
    /// `user.activate`
    UserActivate,
    /// `user.deactivate`
    UserDeactivate,
    /// `secret.set`
    SecretSet,
    /// `secret.rm`
    SecretRemove,
    /// `secret.rotate_key`
    SecretRotateKey,
    /// `secret.reset`
    SecretReset,
}

impl AuditAction {
    /// The action as the audit log keeps it, like `system.create`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemCreate => "system.create",
            Self::SystemActivate => "system.activate",
            Self::SystemDeactivate => "system.deactivate",
            Self::SystemScopes => "system.scopes",
            Self::SystemRenewSecret => "system.renew_secret",
            Self::SystemLink => "system.link",
            Self::SystemUnlink => "system.unlink",
            Self::UserAdd => "user.add",
            Self::UserActivate => "user.activate",
            Self::UserDeactivate => "user.deactivate",
            Self::SecretSet => "secret.set",
            Self::SecretRemove => "secret.rm",
            Self::SecretRotateKey => "secret.rotate_key",
            Self::SecretReset => "secret.reset",
        }
    }
}

/// An audit entry to write, made by the rules; the storage writes it in the change's
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// When (Unix seconds).
    pub at: i64,
    /// Who made the change.
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// The system concerned, if any.
    pub system_id: Option<String>,
    /// The user concerned, if any.
    pub user_id: Option<String>,
    /// More about the change, like `name=…`; never a secret.
    pub detail: Option<String>,
}

/// What the token endpoint reads to authenticate a client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Whether the system may get tokens.
    pub active: bool,
    /// The hash of the current secret.
    pub primary: SecretHash,
    /// The hash of the other valid secret: the next one, until a renewal promotes it.
    pub alternate: SecretHash,
    /// The scopes granted to the system, read in the same row as its secrets.
    pub scopes: Vec<String>,
}

/// What one token request reads, in one go.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    /// The system, when the client id names one.
    pub client: Option<Client>,
    /// The internal user the named external user id is linked to, when one was named and linked.
    pub user: Option<User>,
}

/// What an id or a name is, for the message that refuses a malformed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// A system's name.
    SystemName,
    /// An internal user's id.
    UserId,
    /// A role of a user.
    Role,
    /// The user id a system sends.
    ExternalUserId,
    /// A secret's name.
    SecretName,
    /// A token request's client id.
    ClientId,
}

impl Field {
    /// As messages name it, like `system name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemName => "system name",
            Self::UserId => "user id",
            Self::Role => "role",
            Self::ExternalUserId => "external user id",
            Self::SecretName => "secret name",
            Self::ClientId => "client id",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // The fields are what the messages name.
pub enum StoreError {
    /// No system has this id.
    #[error("system {id:?} not found")]
    SystemNotFound { id: String },
    /// No user has this id.
    #[error("user {id:?} not found")]
    UserNotFound { id: String },
    /// The system has no link with `id` (the external user id or the user id it was named by).
    #[error("a link of system {system_id:?} with {id:?} not found")]
    LinkNotFound { system_id: String, id: String },
    /// No secret has this name.
    #[error("secret {name:?} not found")]
    SecretNotFound { name: String },
    /// An id or a name is not 1 to 128 visible ASCII characters.
    #[error("{field} {value:?} must be 1 to 128 visible ASCII characters without spaces")]
    Malformed { field: Field, value: String },
    /// A scope is not an RFC 6749 §3.3 scope token.
    #[error("{scope:?} is not a valid scope (RFC 6749 §3.3)")]
    MalformedScope { scope: String },
    /// Another system has this name.
    #[error("a system named {name:?} exists")]
    SystemExists { name: String },
    /// A user with this id exists.
    #[error("user {id:?} exists")]
    UserExists { id: String },
    /// The system already links the external user or the user.
    #[error("system {system_id:?} already links external user {external_user:?} or user {user_id:?}; unlink first")]
    LinkExists { system_id: String, external_user: String, user_id: String },
    /// A secret sealed under one master key was given to a store whose secrets are sealed
    /// under another.
    #[error("this store's secrets are sealed under another master key")]
    WrongMasterKey,
    /// Re-sealing one secret failed (nothing was changed): the caller's own error.
    #[error(transparent)]
    Reseal(Box<dyn std::error::Error + Send + Sync>),
    /// The database failed: it could not be opened, read or written; says why.
    #[error("identity store: {0}")]
    Unavailable(String),
}

/// A store call in flight.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What [`Store::reseal_secrets`] applies to each secret: a name and its sealed value to the
/// new sealed value.
pub type Reseal<'a> = dyn Fn(&str, &[u8]) -> Result<Vec<u8>, StoreError> + Sync + 'a;

/// Makes a change's audit entry from what the change found in its transaction (the old
/// scopes, the removed link, how many secrets).
pub type AuditOf<'a, T> = dyn Fn(&T) -> AuditRecord + Send + Sync + 'a;

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
/// raced). The rules and their messages are [`Store`]'s.
pub trait Storage: Send + Sync {
    /// Every system, oldest first.
    fn systems(&self) -> StoreFuture<'_, Vec<System>>;
    /// One system, if there is one with this id.
    fn system<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<System>>;
    /// Every user, by id.
    fn users(&self) -> StoreFuture<'_, Vec<User>>;
    /// A system's links, by external user id.
    fn links<'a>(&'a self, system_id: &'a str) -> StoreFuture<'a, Vec<Link>>;
    /// The audit log, oldest first.
    fn audit(&self) -> StoreFuture<'_, Vec<AuditEntry>>;
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
