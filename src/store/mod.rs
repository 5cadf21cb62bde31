//! What the token issuer keeps: external systems with their two secret hashes, internal
//! users, the links between them, the append-only audit log, the sealed values of the
//! secret store, and the gateway's subscriptions with their key hashes ([`subscriptions`]) —
//! in an embedded SQLite file ([`sqlite`]) or a shared PostgreSQL database ([`postgres`]).
//!
//! Two layers: [`Store`] ([`rules`]) holds the issuer's rules — which ids are well formed,
//! what must exist, what is unique, which audit entry each change writes and every error a
//! caller sees — once; a [`Storage`] ([`storage`]) only stores, each change in one
//! transaction with the audit entry the rules made. Every call is a future: blocking callers
//! (the CLI, the configuration compiler) bridge at their own edge ([`block_on`],
//! [`BlockingStore`]). [`records`] are the data, [`error`] the one error type; [`AuditWatch`] reads the audit log as
//! the change feed other instances follow.

mod blocking;
pub mod error;
mod location;
pub mod postgres;
pub mod records;
pub mod rules;
pub mod secret;
pub mod sqlite;
pub mod storage;
pub mod subscriptions;
mod watch;

pub use blocking::{block_on, BlockingStore};
pub use error::{Field, StoreError};
pub use location::{LocationError, StoreLocation};
pub use records::{AuditAction, AuditEntry, AuditRecord, Client, Link, LinkRef, Lookup, SealedSecret, System, User};
pub use rules::subscriptions::{CreatedSubscription, Imported, ImportedSubscription};
pub use rules::{check_id, check_scopes, Store};
pub use secret::{random_bytes, NewSecret, SecretHash, SecretHasher, SecretSlot, MAX_SECRET_BYTES};
pub use storage::{AuditOf, Entity, LinkWrite, Reseal, Storage, StoreFuture, SubscriptionChange, SubscriptionCheck};
pub use subscriptions::{
    estimate_bits, generate_key, KeyInfo, KeyProblem, KeySlot, NewKey, Owner, Subscription, SubscriptionScope,
    SubscriptionState, WEAK_KEY_BITS,
};
pub use watch::AuditWatch;
