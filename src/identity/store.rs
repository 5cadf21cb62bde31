//! What the token issuer keeps: external systems with their two secret hashes, internal
//! users, the links between them, the append-only audit log, and the sealed values of the
//! secret store ([`crate::secrets`]) — behind [`IdentityStore`], so that a shared PostgreSQL
//! store can sit beside the embedded SQLite one ([`super::sqlite`], [`super::postgres`]).
//! The token endpoint's calls, [`IdentityStore::lookup`] and [`IdentityStore::secret_used`],
//! are futures; every other call blocks and belongs to the CLI and to loading the
//! configuration.

use std::future::Future;
use std::pin::Pin;

pub use super::secret::SecretSlot;
use super::secret::{SecretHash, SecretHasher};

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
    /// Nonce, ciphertext and tag (see [`crate::secrets`]).
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

/// One audit-log entry. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The entry's sequence number, increasing.
    pub seq: i64,
    /// When it was written (Unix seconds).
    pub at: i64,
    /// Who made the change (`--actor`, or the OS user).
    pub actor: String,
    /// What was done, like `system.create` or `user.add`.
    pub action: String,
    /// The system concerned, if any.
    pub system_id: Option<String>,
    /// The user concerned, if any.
    pub user_id: Option<String>,
    /// More about the change, like `name=…` or `roles=…`.
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

/// A store read in flight.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named system, user or link does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change would break a uniqueness rule, or an id or name is malformed.
    #[error("{0}")]
    Conflict(String),
    /// The database failed: it could not be opened, read or written.
    #[error("identity store: {0}")]
    Backend(String),
}

/// The token issuer's store. Every change is written together with its audit entry.
pub trait IdentityStore: Send + Sync {
    /// Hashes secrets with the store's own key.
    fn hasher(&self) -> &SecretHasher;

    /// Creates an active system with its two secret hashes and its granted scopes (which
    /// the caller checked against the configuration).
    ///
    /// # Errors
    /// A system with this name exists, a scope is malformed, or the store failed.
    fn create_system(
        &self,
        name: &str,
        primary: &SecretHash,
        alternate: &SecretHash,
        scopes: &[String],
        actor: &str,
    ) -> Result<System, StoreError>;
    /// # Errors
    /// The store failed.
    fn systems(&self) -> Result<Vec<System>, StoreError>;
    /// # Errors
    /// The store failed.
    fn system(&self, id: &str) -> Result<Option<System>, StoreError>;
    /// # Errors
    /// No such system, or the store failed.
    fn set_system_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError>;
    /// Replaces the scopes granted to the system (which the caller checked against the
    /// configuration), with an audit entry naming the old and the new ones. Returns the old.
    ///
    /// # Errors
    /// No such system, a scope is malformed, or the store failed.
    fn set_system_scopes(&self, id: &str, scopes: &[String], actor: &str) -> Result<Vec<String>, StoreError>;
    /// Voids the primary secret, promotes the alternate, stores `new_alternate`.
    ///
    /// # Errors
    /// No such system, or the store failed.
    fn renew_secret(&self, id: &str, new_alternate: &SecretHash, actor: &str) -> Result<(), StoreError>;
    /// # Errors
    /// A user with this id exists, or the store failed.
    fn add_user(&self, id: &str, roles: &[String], actor: &str) -> Result<User, StoreError>;
    /// # Errors
    /// The store failed.
    fn users(&self) -> Result<Vec<User>, StoreError>;
    /// # Errors
    /// No such user, or the store failed.
    fn set_user_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError>;
    /// # Errors
    /// No such system or user; the system already links this user or this external user.
    fn link(&self, system_id: &str, external_user: &str, user_id: &str, actor: &str) -> Result<(), StoreError>;
    /// # Errors
    /// No such link, or the store failed.
    fn unlink(&self, system_id: &str, link: LinkRef<'_>, actor: &str) -> Result<Link, StoreError>;
    /// # Errors
    /// The store failed.
    fn links(&self, system_id: &str) -> Result<Vec<Link>, StoreError>;
    /// The audit log, oldest first.
    ///
    /// # Errors
    /// The store failed.
    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// A system's active flag and secret hashes and, when `external_user` is named, the
    /// internal user it is linked to: everything a token request reads, without blocking the
    /// caller's thread. Resolves to an error when the store failed.
    fn lookup<'a>(&'a self, system_id: &'a str, external_user: Option<&'a str>) -> StoreFuture<'a, Lookup>;
    /// Records that `slot` of the system got a token at `minute` (Unix seconds), unless a
    /// later use is already recorded. Coarse on purpose: callers write at most once a minute.
    fn secret_used<'a>(&'a self, system_id: &'a str, slot: SecretSlot, minute: i64) -> StoreFuture<'a, ()>;

    /// Every sealed value of the secret store, by name.
    ///
    /// # Errors
    /// The store failed.
    fn secrets(&self) -> Result<Vec<SealedSecret>, StoreError>;
    /// The master key's check value the secrets are sealed under, if any secret was ever set.
    ///
    /// # Errors
    /// The store failed.
    fn secrets_key_check(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets one secret (new or replaced), sealed under the key whose check value is
    /// `key_check`, which becomes the store's when it has none.
    ///
    /// # Errors
    /// The store's secrets are sealed under another key (`Conflict`), or the store failed.
    fn put_secret(&self, name: &str, sealed: &[u8], key_check: &[u8], actor: &str) -> Result<(), StoreError>;
    /// # Errors
    /// No such secret, or the store failed.
    fn remove_secret(&self, name: &str, actor: &str) -> Result<(), StoreError>;
    /// Re-seals every secret in one transaction: `reseal` turns a name and its sealed value
    /// into the new sealed value; `key_check` becomes the store's. Returns how many.
    ///
    /// # Errors
    /// `reseal` failed for one (nothing is changed), or the store failed.
    fn reseal_secrets(&self, reseal: &Reseal<'_>, key_check: &[u8], actor: &str) -> Result<usize, StoreError>;
    /// Deletes every secret and the key check: for a store copied from another environment,
    /// whose master key is not here. Returns how many were deleted.
    ///
    /// # Errors
    /// The store failed.
    fn reset_secrets(&self, actor: &str) -> Result<usize, StoreError>;
    /// Records that a configuration load resolved these secrets at `at` (Unix seconds).
    ///
    /// # Errors
    /// The store failed.
    fn secrets_used(&self, names: &[String], at: i64) -> Result<(), StoreError>;
}

/// What [`IdentityStore::reseal_secrets`] applies to each secret.
pub type Reseal<'a> = dyn Fn(&str, &[u8]) -> Result<Vec<u8>, StoreError> + Sync + 'a;

/// The meta key under which the secret store's key check value is kept.
pub const KEY_CHECK: &str = "secrets_key_check";

/// Why a secret cannot be set: the store's secrets are sealed under another master key.
pub const WRONG_KEY: &str = "this store's secrets are sealed under another master key";

impl System {
    /// A new, active system named `name`, with a fresh UUID v4 id.
    ///
    /// # Errors
    /// The name is malformed.
    pub fn new(name: &str) -> Result<Self, StoreError> {
        check_id("system name", name)?;
        Ok(Self {
            id: crate::id::uuid_v4(),
            name: name.to_owned(),
            active: true,
            created_at: now(),
            secrets_renewed_at: None,
            primary_used_at: None,
            alternate_used_at: None,
            scopes: Vec::new(),
        })
    }
}

impl User {
    /// A new, active user.
    ///
    /// # Errors
    /// The id or a role is malformed.
    pub fn new(id: &str, roles: &[String]) -> Result<Self, StoreError> {
        check_id("user id", id)?;
        for role in roles {
            check_id("role", role)?;
        }
        Ok(Self { id: id.to_owned(), roles: roles.to_vec(), active: true, created_at: now() })
    }
}

/// The columns both stores select for a [`System`], a [`User`] and a [`Link`], in order.
pub const SYSTEM_COLUMNS: &str =
    "id, name, active, created_at, secrets_renewed_at, primary_used_at, alternate_used_at, scopes";
/// See [`SYSTEM_COLUMNS`].
pub const USER_COLUMNS: &str = "id, roles, active, created_at";
/// See [`SYSTEM_COLUMNS`].
pub const LINK_COLUMNS: &str = "system_id, external_user, user_id, created_at";

/// Unix seconds, as the stores keep times.
pub fn now() -> i64 {
    crate::clock::unix_now() as i64
}

/// Ids and names: 1 to 128 visible ASCII characters.
///
/// # Errors
/// Says what `what` must look like.
pub fn check_id(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Conflict(format!(
            "{what} {value:?} must be 1 to 128 visible ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// Granted scopes as both stores keep them: space-separated, as in a token's `scope` claim
/// (RFC 6749 §3.3), so a scope never holds a space.
pub fn scopes_column(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// The granted scopes of a stored `scopes` column.
pub fn parse_scopes(column: &str) -> Vec<String> {
    column.split_whitespace().map(str::to_owned).collect()
}

/// Checks scopes to grant (RFC 6749 §3.3 scope tokens, as `identity.scopes` allows them),
/// dropping repeats; the order given is kept.
///
/// # Errors
/// Names the malformed scope.
pub fn check_scopes(scopes: &[String]) -> Result<Vec<String>, StoreError> {
    let mut checked: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            return Err(StoreError::Conflict(format!("{scope:?} is not a valid scope (RFC 6749 §3.3)")));
        }
        if !checked.contains(scope) {
            checked.push(scope.clone());
        }
    }
    Ok(checked)
}

/// Scopes for the audit log and messages: `[read,write]`, `[]` for none.
pub fn scopes_shown(scopes: &[String]) -> String {
    format!("[{}]", scopes.join(","))
}
