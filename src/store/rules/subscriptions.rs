//! The rules of subscriptions (issue 25): what is well formed, which changes a state allows
//! (cancelled is final, as in APIM), which audit entry each change writes — every change to a
//! subscription or its keys writes one, since other instances learn of changes from the
//! audit log ([`Store::audit_after`]) — and that a key opens at most one subscription.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{check_id, record, Store};
use crate::store::error::{Field, StoreError};
use crate::store::records::{AuditAction, AuditRecord};
use crate::store::secret::{SecretHash, SecretHasher};
use crate::store::storage::now;
use crate::store::subscriptions::{
    check_key, estimate_bits, generate_key, KeyInfo, KeySlot, NewKey, Owner, Subscription, SubscriptionScope,
    SubscriptionState,
};

/// A subscription just created, with its two keys: shown once, never stored in clear.
#[derive(Debug)]
pub struct CreatedSubscription {
    /// The subscription as stored.
    pub subscription: Subscription,
    /// Its primary key.
    pub primary: NewKey,
    /// Its secondary key.
    pub secondary: NewKey,
}

/// A subscription to import with the keys its callers hold (from APIM: the contract and its
/// `listSecrets` answer).
#[derive(Clone)]
pub struct ImportedSubscription {
    /// Its id (APIM's `name`).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// What its keys open.
    pub scope: SubscriptionScope,
    /// Its state.
    pub state: SubscriptionState,
    /// Its expiry (Unix seconds), if any.
    pub expires_at: Option<i64>,
    /// Its owner, if any.
    pub owner: Option<Owner>,
    /// When it was created (Unix seconds), if known; else now.
    pub created_at: Option<i64>,
    /// The primary key, as callers send it.
    pub primary_key: String,
    /// The secondary key, as callers send it.
    pub secondary_key: String,
}

impl std::fmt::Debug for ImportedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedSubscription")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Imported {
    /// A new subscription.
    Created(Subscription),
    /// The subscription with this id, replaced.
    Updated(Subscription),
}

impl Imported {
    /// The subscription as stored.
    pub fn subscription(&self) -> &Subscription {
        match self {
            Self::Created(s) | Self::Updated(s) => s,
        }
    }
}

/// A display name: 1 to 256 bytes, no control characters.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(StoreError::MalformedDisplayName { name: name.to_owned() });
    }
    Ok(())
}

/// A scope built in code is checked as a written one is.
fn check_scope(scope: &SubscriptionScope) -> Result<(), StoreError> {
    let written = scope.to_string();
    if SubscriptionScope::parse(&written).as_ref() != Some(scope) {
        return Err(StoreError::MalformedSubscriptionScope { scope: written });
    }
    Ok(())
}

fn check_owner(owner: Option<&Owner>) -> Result<(), StoreError> {
    match owner {
        Some(Owner::System(id)) => check_id(Field::SystemName, id),
        Some(Owner::User(id)) => check_id(Field::UserId, id),
        None => Ok(()),
    }
}

/// A time for the audit log: Unix seconds, or `none`.
fn shown(at: Option<i64>) -> String {
    at.map_or_else(|| "none".to_owned(), |at| at.to_string())
}

/// A subscription change's audit entry, naming the subscription as `id=…` first.
fn subscription_record(actor: &str, action: AuditAction, id: &str, more: &str) -> AuditRecord {
    let detail = if more.is_empty() { format!("id={id}") } else { format!("id={id} {more}") };
    record(actor, action, None, None).detail(detail)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Refuses a change to a cancelled subscription.
fn not_cancelled(s: &Subscription) -> Result<(), StoreError> {
    if s.state == SubscriptionState::Cancelled {
        return Err(StoreError::SubscriptionCancelled { id: s.id.clone() });
    }
    Ok(())
}

impl Store {
    /// The store's key hasher, to hash a presented subscription key without a store round
    /// trip (the gateway's snapshot keys its map by [`SecretHash`]).
    pub fn key_hasher(&self) -> Arc<SecretHasher> {
        self.hasher.clone()
    }

    /// Creates an active subscription with two new 256-bit random keys, returned once.
    ///
    /// # Errors
    /// The name, scope or owner is malformed, or the store failed.
    pub async fn create_subscription(
        &self,
        name: &str,
        scope: SubscriptionScope,
        owner: Option<Owner>,
        expires_at: Option<i64>,
        actor: &str,
    ) -> Result<CreatedSubscription, StoreError> {
        check_name(name)?;
        check_scope(&scope)?;
        check_owner(owner.as_ref())?;
        let (primary, secondary) = (generate_key(&self.hasher), generate_key(&self.hasher));
        let at = now();
        let key = |k: &NewKey| KeyInfo { created_at: at, used_at: None, bits: estimate_bits(&k.text) };
        let subscription = Subscription {
            id: crate::id::uuid_v4(),
            name: name.to_owned(),
            scope,
            state: SubscriptionState::Active,
            expires_at,
            owner,
            created_at: at,
            primary: key(&primary),
            secondary: key(&secondary),
        };
        let mut more = format!("name={:?} scope={}", subscription.name, subscription.scope);
        if let Some(owner) = &subscription.owner {
            more.push_str(&format!(" owner={owner}"));
        }
        if expires_at.is_some() {
            more.push_str(&format!(" expires_at={}", shown(expires_at)));
        }
        let audit = subscription_record(actor, AuditAction::SubscriptionCreate, &subscription.id, &more);
        if !self.storage.insert_subscription(&subscription, &primary.hash, &secondary.hash, &audit).await? {
            return Err(StoreError::SubscriptionExists { id: subscription.id });
        }
        Ok(CreatedSubscription { subscription, primary, secondary })
    }

    /// Every subscription, oldest first (never a key).
    ///
    /// # Errors
    /// The store failed.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.storage.subscriptions().await
    }

    /// One subscription, if there is one with this id.
    ///
    /// # Errors
    /// The store failed.
    pub async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        self.storage.subscription(id).await
    }

    /// Every key hash with its slot and its subscription, in one read: what the gateway
    /// builds its hash → subscription map from. A hash appears once.
    ///
    /// # Errors
    /// The store failed.
    pub async fn subscription_keys(&self) -> Result<Vec<(SecretHash, KeySlot, Subscription)>, StoreError> {
        self.storage.subscription_keys().await
    }

    /// Moves a subscription to `state`, unless it is cancelled; audited with the old state.
    async fn set_subscription_state(
        &self,
        id: &str,
        state: SubscriptionState,
        action: AuditAction,
        actor: &str,
    ) -> Result<Subscription, StoreError> {
        // What the transaction found, for the audit entry.
        let was = Mutex::new(None);
        let change = |s: &Subscription| {
            not_cancelled(s)?;
            *lock(&was) = Some(s.state);
            Ok(Subscription { state, ..s.clone() })
        };
        let audit = |s: &Subscription| {
            let old = lock(&was).map_or("?", SubscriptionState::as_str);
            subscription_record(actor, action, &s.id, &format!("state={} was={old}", s.state))
        };
        match self.storage.update_subscription(id, &change, &audit).await? {
            Some(s) => Ok(s),
            None => Err(StoreError::SubscriptionNotFound { id: id.to_owned() }),
        }
    }

    /// Suspends a subscription: its keys are refused until it is activated.
    ///
    /// # Errors
    /// No such subscription, it is cancelled, or the store failed.
    pub async fn suspend_subscription(&self, id: &str, actor: &str) -> Result<Subscription, StoreError> {
        self.set_subscription_state(id, SubscriptionState::Suspended, AuditAction::SubscriptionSuspend, actor).await
    }

    /// Activates a suspended (or expired) subscription. An expiry that has passed still
    /// refuses its keys: move it with [`Self::set_subscription_expiry`].
    ///
    /// # Errors
    /// No such subscription, it is cancelled (final), or the store failed.
    pub async fn activate_subscription(&self, id: &str, actor: &str) -> Result<Subscription, StoreError> {
        self.set_subscription_state(id, SubscriptionState::Active, AuditAction::SubscriptionActivate, actor).await
    }

    /// Cancels a subscription, for good: as in APIM, a cancelled subscription is never
    /// activated again (create a new one); it can still be shown and deleted.
    ///
    /// # Errors
    /// No such subscription, it is already cancelled, or the store failed.
    pub async fn cancel_subscription(&self, id: &str, actor: &str) -> Result<Subscription, StoreError> {
        self.set_subscription_state(id, SubscriptionState::Cancelled, AuditAction::SubscriptionCancel, actor).await
    }

    /// Sets (`Some`) or clears (`None`) a subscription's expiry (Unix seconds).
    ///
    /// # Errors
    /// No such subscription, it is cancelled, or the store failed.
    pub async fn set_subscription_expiry(
        &self,
        id: &str,
        expires_at: Option<i64>,
        actor: &str,
    ) -> Result<Subscription, StoreError> {
        let was = Mutex::new(None);
        let change = |s: &Subscription| {
            not_cancelled(s)?;
            *lock(&was) = Some(s.expires_at);
            Ok(Subscription { expires_at, ..s.clone() })
        };
        let audit = |s: &Subscription| {
            let old = lock(&was).flatten();
            subscription_record(
                actor,
                AuditAction::SubscriptionExpiry,
                &s.id,
                &format!("expires_at={} was={}", shown(s.expires_at), shown(old)),
            )
        };
        match self.storage.update_subscription(id, &change, &audit).await? {
            Some(s) => Ok(s),
            None => Err(StoreError::SubscriptionNotFound { id: id.to_owned() }),
        }
    }

    /// Replaces one key with a new 256-bit random key, returned once; the other key keeps
    /// working, so callers rotate without downtime (as in APIM).
    ///
    /// # Errors
    /// No such subscription, it is cancelled, or the store failed.
    pub async fn regenerate_subscription_key(
        &self,
        id: &str,
        slot: KeySlot,
        actor: &str,
    ) -> Result<NewKey, StoreError> {
        let key = generate_key(&self.hasher);
        let audit = subscription_record(actor, AuditAction::SubscriptionRegenerate, id, &format!("slot={slot}"));
        let check = |s: &Subscription| not_cancelled(s);
        let bits = estimate_bits(&key.text);
        if !self.storage.replace_subscription_key(id, slot, &key.hash, bits, &check, &audit).await? {
            return Err(StoreError::SubscriptionNotFound { id: id.to_owned() });
        }
        Ok(key)
    }

    /// Deletes a subscription and its keys (any state).
    ///
    /// # Errors
    /// No such subscription, or the store failed.
    pub async fn delete_subscription(&self, id: &str, actor: &str) -> Result<(), StoreError> {
        let audit = subscription_record(actor, AuditAction::SubscriptionDelete, id, "");
        if !self.storage.delete_subscription(id, &audit).await? {
            return Err(StoreError::SubscriptionNotFound { id: id.to_owned() });
        }
        Ok(())
    }

    /// Imports one subscription with the keys its callers hold. A subscription with this id
    /// is replaced in place — name, scope, state, expiry, owner and keys; its creation time,
    /// and the dates of a key that did not change, are kept — so that re-running a migration
    /// is safe. Audited as `subscription.import` with `created` or `updated`.
    ///
    /// # Errors
    /// The id, name, scope, owner or a key is malformed or too long; both keys are the same,
    /// or a key is another subscription's; or the store failed. Nothing is written then.
    pub async fn import_subscription(
        &self,
        import: &ImportedSubscription,
        actor: &str,
    ) -> Result<Imported, StoreError> {
        check_id(Field::SubscriptionId, &import.id)?;
        check_name(&import.name)?;
        check_scope(&import.scope)?;
        check_owner(import.owner.as_ref())?;
        for (slot, key) in [(KeySlot::Primary, &import.primary_key), (KeySlot::Secondary, &import.secondary_key)] {
            check_key(key).map_err(|problem| StoreError::BadSubscriptionKey {
                id: import.id.clone(),
                slot,
                problem,
            })?;
        }
        if import.primary_key == import.secondary_key {
            return Err(StoreError::SubscriptionKeyTaken { id: import.id.clone(), slot: KeySlot::Secondary });
        }
        let at = now();
        let key = |text: &str| KeyInfo { created_at: at, used_at: None, bits: estimate_bits(text) };
        let subscription = Subscription {
            id: import.id.clone(),
            name: import.name.clone(),
            scope: import.scope.clone(),
            state: import.state,
            expires_at: import.expires_at,
            owner: import.owner.clone(),
            created_at: import.created_at.unwrap_or(at),
            primary: key(&import.primary_key),
            secondary: key(&import.secondary_key),
        };
        let (primary, secondary) = (self.hasher.hash(&import.primary_key), self.hasher.hash(&import.secondary_key));
        let audit = |replaced: &bool| {
            subscription_record(
                actor,
                AuditAction::SubscriptionImport,
                &subscription.id,
                &format!(
                    "{} scope={} state={}",
                    if *replaced { "updated" } else { "created" },
                    subscription.scope,
                    subscription.state
                ),
            )
        };
        let replaced = self.storage.import_subscription(&subscription, &primary, &secondary, &audit).await?;
        let stored = self.storage.subscription(&subscription.id).await?.unwrap_or(subscription);
        Ok(if replaced { Imported::Updated(stored) } else { Imported::Created(stored) })
    }

    /// Records that `slot` of the subscription was accepted at `minute` (Unix seconds),
    /// unless a later use is already recorded. Coarse on purpose: callers write at most once a
    /// minute per key.
    ///
    /// # Errors
    /// The store failed.
    pub async fn subscription_key_used(&self, id: &str, slot: KeySlot, minute: i64) -> Result<(), StoreError> {
        self.storage.subscription_key_used(id, slot, minute).await
    }
}

#[cfg(test)]
mod tests;
