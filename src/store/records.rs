//! The issuer's data records, as the rules and the storages pass them.

use super::secret::SecretHash;

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

impl AuditEntry {
    /// The subscription a `subscription.*` entry is about (its detail's leading `id=…`):
    /// what a watcher re-reads after the entry. None for other entries.
    pub fn subscription_id(&self) -> Option<&str> {
        if !self.action.starts_with("subscription.") {
            return None;
        }
        let detail = self.detail.as_deref()?.strip_prefix("id=")?;
        Some(detail.split(' ').next().unwrap_or(detail))
    }
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
    /// `subscription.create`
    SubscriptionCreate,
    /// `subscription.suspend`
    SubscriptionSuspend,
    /// `subscription.activate`
    SubscriptionActivate,
    /// `subscription.cancel`
    SubscriptionCancel,
    /// `subscription.regenerate`
    SubscriptionRegenerate,
    /// `subscription.delete`
    SubscriptionDelete,
    /// `subscription.import`
    SubscriptionImport,
    /// `subscription.expiry`
    SubscriptionExpiry,
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
            Self::SubscriptionCreate => "subscription.create",
            Self::SubscriptionSuspend => "subscription.suspend",
            Self::SubscriptionActivate => "subscription.activate",
            Self::SubscriptionCancel => "subscription.cancel",
            Self::SubscriptionRegenerate => "subscription.regenerate",
            Self::SubscriptionDelete => "subscription.delete",
            Self::SubscriptionImport => "subscription.import",
            Self::SubscriptionExpiry => "subscription.expiry",
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
