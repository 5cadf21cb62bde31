//! Why a store call failed: one enum, each variant with its data and today's message.

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
    /// A subscription's id.
    SubscriptionId,
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
            Self::SubscriptionId => "subscription id",
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
    /// No subscription has this id.
    #[error("subscription {id:?} not found")]
    SubscriptionNotFound { id: String },
    /// A subscription with this id exists.
    #[error("subscription {id:?} exists")]
    SubscriptionExists { id: String },
    /// The subscription is cancelled, which is final (as in APIM).
    #[error("subscription {id:?} is cancelled, which is final; create a new subscription instead")]
    SubscriptionCancelled { id: String },
    /// A subscription scope is not `all`, `product:NAME` or `route:NAME`.
    #[error("{scope:?} is not a subscription scope; write all, product:NAME or route:NAME")]
    MalformedSubscriptionScope { scope: String },
    /// A display name is empty, longer than 256 bytes or has control characters.
    #[error("display name {name:?} must be 1 to 256 characters without control characters")]
    MalformedDisplayName { name: String },
    /// The key is already a key of a subscription (this one's other slot or another one): a
    /// presented key must find one subscription. The key itself is never named.
    #[error("the {slot} key of subscription {id:?} is already a key of a subscription; every key must be unique")]
    SubscriptionKeyTaken { id: String, slot: super::subscriptions::KeySlot },
    /// A key given for import cannot be a key. The key itself is never named.
    #[error("the {slot} key of subscription {id:?} is refused: {problem}")]
    BadSubscriptionKey { id: String, slot: super::subscriptions::KeySlot, problem: super::subscriptions::KeyProblem },
    /// The database failed: it could not be opened, read or written; says why.
    #[error("identity store: {0}")]
    Unavailable(String),
}
