//! The issuer's rules, written once above any [`Storage`]: ids and names well formed, scopes
//! valid and without repeats, what must exist, what a duplicate is, which audit entry each
//! change writes, and every error a caller sees.

use std::sync::Arc;

use super::error::{Field, StoreError};
use super::records::{AuditAction, AuditEntry, AuditRecord, Link, LinkRef, Lookup, SealedSecret, System, User};
use super::secret::{SecretHash, SecretHasher, SecretSlot};
use super::storage::{now, Entity, LinkWrite, Reseal, Storage};

/// The token issuer's store: the rules over one [`Storage`], with the store's own secret
/// hasher. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    storage: Arc<dyn Storage>,
    hasher: Arc<SecretHasher>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// An audit entry written now.
fn record(actor: &str, action: AuditAction, system_id: Option<&str>, user_id: Option<&str>) -> AuditRecord {
    AuditRecord {
        at: now(),
        actor: actor.to_owned(),
        action,
        system_id: system_id.map(str::to_owned),
        user_id: user_id.map(str::to_owned),
        detail: None,
    }
}

impl AuditRecord {
    fn detail(self, detail: String) -> Self {
        Self { detail: Some(detail), ..self }
    }
}

impl Store {
    /// The rules over `storage`, hashing secrets with the store's key `hash_key`.
    pub fn new(storage: Arc<dyn Storage>, hash_key: &[u8]) -> Self {
        Self { storage, hasher: Arc::new(SecretHasher::new(hash_key)) }
    }

    /// Hashes secrets with the store's own key.
    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    /// Creates an active system with its two secret hashes and its granted scopes (which
    /// the caller checked against the configuration; repeats are dropped).
    ///
    /// # Errors
    /// The name or a scope is malformed, a system with this name exists, or the store failed.
    pub async fn create_system(
        &self,
        name: &str,
        primary: &SecretHash,
        alternate: &SecretHash,
        scopes: &[String],
        actor: &str,
    ) -> Result<System, StoreError> {
        let scopes = check_scopes(scopes)?;
        check_id(Field::SystemName, name)?;
        let system = System {
            id: crate::id::uuid_v4(),
            name: name.to_owned(),
            active: true,
            created_at: now(),
            secrets_renewed_at: None,
            primary_used_at: None,
            alternate_used_at: None,
            scopes,
        };
        let audit = record(actor, AuditAction::SystemCreate, Some(&system.id), None)
            .detail(format!("name={name} scopes={}", scopes_shown(&system.scopes)));
        if !self.storage.insert_system(&system, primary, alternate, &audit).await? {
            return Err(StoreError::SystemExists { name: name.to_owned() });
        }
        Ok(system)
    }

    /// Every system, oldest first.
    ///
    /// # Errors
    /// The store failed.
    pub async fn systems(&self) -> Result<Vec<System>, StoreError> {
        self.storage.systems().await
    }

    /// # Errors
    /// The store failed.
    pub async fn system(&self, id: &str) -> Result<Option<System>, StoreError> {
        self.storage.system(id).await
    }

    /// # Errors
    /// No such system, or the store failed.
    pub async fn set_system_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        let action = if active { AuditAction::SystemActivate } else { AuditAction::SystemDeactivate };
        let audit = record(actor, action, Some(id), None);
        if !self.storage.set_active(Entity::System, id, active, &audit).await? {
            return Err(StoreError::SystemNotFound { id: id.to_owned() });
        }
        Ok(())
    }

    /// Replaces the scopes granted to the system (which the caller checked against the
    /// configuration), with an audit entry naming the old and the new ones. Returns the old.
    ///
    /// # Errors
    /// A scope is malformed, no such system, or the store failed.
    pub async fn set_system_scopes(&self, id: &str, scopes: &[String], actor: &str) -> Result<Vec<String>, StoreError> {
        let scopes = check_scopes(scopes)?;
        let audit = |old: &[String]| {
            record(actor, AuditAction::SystemScopes, Some(id), None).detail(format!(
                "scopes={} was={}",
                scopes_shown(&scopes),
                scopes_shown(old)
            ))
        };
        match self.storage.replace_scopes(id, &scopes, &audit).await? {
            Some(old) => Ok(old),
            None => Err(StoreError::SystemNotFound { id: id.to_owned() }),
        }
    }

    /// Voids the primary secret, promotes the alternate, stores `new_alternate`.
    ///
    /// # Errors
    /// No such system, or the store failed.
    pub async fn renew_secret(&self, id: &str, new_alternate: &SecretHash, actor: &str) -> Result<(), StoreError> {
        let audit = record(actor, AuditAction::SystemRenewSecret, Some(id), None);
        if !self.storage.renew_secret(id, new_alternate, &audit).await? {
            return Err(StoreError::SystemNotFound { id: id.to_owned() });
        }
        Ok(())
    }

    /// Adds an active user.
    ///
    /// # Errors
    /// The id or a role is malformed, a user with this id exists, or the store failed.
    pub async fn add_user(&self, id: &str, roles: &[String], actor: &str) -> Result<User, StoreError> {
        check_id(Field::UserId, id)?;
        for role in roles {
            check_id(Field::Role, role)?;
        }
        let user = User { id: id.to_owned(), roles: roles.to_vec(), active: true, created_at: now() };
        let audit = record(actor, AuditAction::UserAdd, None, Some(id)).detail(format!("roles={}", roles.join(",")));
        if !self.storage.insert_user(&user, &audit).await? {
            return Err(StoreError::UserExists { id: id.to_owned() });
        }
        Ok(user)
    }

    /// Every user, by id.
    ///
    /// # Errors
    /// The store failed.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.storage.users().await
    }

    /// # Errors
    /// No such user, or the store failed.
    pub async fn set_user_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        let action = if active { AuditAction::UserActivate } else { AuditAction::UserDeactivate };
        let audit = record(actor, action, None, Some(id));
        if !self.storage.set_active(Entity::User, id, active, &audit).await? {
            return Err(StoreError::UserNotFound { id: id.to_owned() });
        }
        Ok(())
    }

    /// Maps the system's `external_user` to the internal user `user_id`.
    ///
    /// # Errors
    /// The external user id is malformed; no such system or user; the system already links
    /// this user or this external user; or the store failed.
    pub async fn link(
        &self,
        system_id: &str,
        external_user: &str,
        user_id: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        check_id(Field::ExternalUserId, external_user)?;
        let link = Link {
            system_id: system_id.to_owned(),
            external_user: external_user.to_owned(),
            user_id: user_id.to_owned(),
            created_at: now(),
        };
        let audit = record(actor, AuditAction::SystemLink, Some(system_id), Some(user_id))
            .detail(format!("external_user={external_user}"));
        match self.storage.insert_link(&link, &audit).await? {
            LinkWrite::Linked => Ok(()),
            LinkWrite::NoSystem => Err(StoreError::SystemNotFound { id: system_id.to_owned() }),
            LinkWrite::NoUser => Err(StoreError::UserNotFound { id: user_id.to_owned() }),
            LinkWrite::Taken => Err(StoreError::LinkExists {
                system_id: link.system_id,
                external_user: link.external_user,
                user_id: link.user_id,
            }),
        }
    }

    /// Removes one link; returns it.
    ///
    /// # Errors
    /// No such link, or the store failed.
    pub async fn unlink(&self, system_id: &str, link: LinkRef<'_>, actor: &str) -> Result<Link, StoreError> {
        let audit = |found: &Link| {
            record(actor, AuditAction::SystemUnlink, Some(system_id), Some(&found.user_id))
                .detail(format!("external_user={}", found.external_user))
        };
        match self.storage.delete_link(system_id, link, &audit).await? {
            Some(found) => Ok(found),
            None => Err(StoreError::LinkNotFound { system_id: system_id.to_owned(), id: link.id().to_owned() }),
        }
    }

    /// A system's links, by external user id.
    ///
    /// # Errors
    /// The store failed.
    pub async fn links(&self, system_id: &str) -> Result<Vec<Link>, StoreError> {
        self.storage.links(system_id).await
    }

    /// The audit log, oldest first.
    ///
    /// # Errors
    /// The store failed.
    pub async fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.storage.audit(0).await
    }

    /// The audit log's entries after sequence number `seq`, oldest first: what changed since
    /// a watcher last looked ([`crate::store`] has no other change feed).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn audit_after(&self, seq: i64) -> Result<Vec<AuditEntry>, StoreError> {
        self.storage.audit(seq).await
    }

    /// A system's active flag and secret hashes and, when `external_user` is named, the
    /// internal user it is linked to: everything a token request reads, without blocking the
    /// caller's thread.
    ///
    /// # Errors
    /// The store failed.
    pub async fn lookup(&self, system_id: &str, external_user: Option<&str>) -> Result<Lookup, StoreError> {
        self.storage.lookup(system_id, external_user).await
    }

    /// Records that `slot` of the system got a token at `minute` (Unix seconds), unless a
    /// later use is already recorded. Coarse on purpose: callers write at most once a minute.
    ///
    /// # Errors
    /// The store failed.
    pub async fn secret_used(&self, system_id: &str, slot: SecretSlot, minute: i64) -> Result<(), StoreError> {
        self.storage.secret_used(system_id, slot, minute).await
    }

    /// Every sealed value of the secret store, by name.
    ///
    /// # Errors
    /// The store failed.
    pub async fn secrets(&self) -> Result<Vec<SealedSecret>, StoreError> {
        self.storage.secrets().await
    }

    /// The master key's check value the secrets are sealed under, if any secret was ever set.
    ///
    /// # Errors
    /// The store failed.
    pub async fn secrets_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.storage.secrets_key_check().await
    }

    /// Sets one secret (new or replaced), sealed under the key whose check value is
    /// `key_check`, which becomes the store's when it has none.
    ///
    /// # Errors
    /// The name is malformed, the store's secrets are sealed under another key, or the store
    /// failed.
    pub async fn put_secret(&self, name: &str, sealed: &[u8], key_check: &[u8], actor: &str) -> Result<(), StoreError> {
        check_id(Field::SecretName, name)?;
        let audit = record(actor, AuditAction::SecretSet, None, None).detail(format!("name={name}"));
        if !self.storage.put_secret(name, sealed, key_check, &audit).await? {
            return Err(StoreError::WrongMasterKey);
        }
        Ok(())
    }

    /// # Errors
    /// No such secret, or the store failed.
    pub async fn remove_secret(&self, name: &str, actor: &str) -> Result<(), StoreError> {
        let audit = record(actor, AuditAction::SecretRemove, None, None).detail(format!("name={name}"));
        if !self.storage.delete_secret(name, &audit).await? {
            return Err(StoreError::SecretNotFound { name: name.to_owned() });
        }
        Ok(())
    }

    /// Re-seals every secret in one transaction: `reseal` turns a name and its sealed value
    /// into the new sealed value; `key_check` becomes the store's. Returns how many.
    ///
    /// # Errors
    /// `reseal` failed for one (nothing is changed), or the store failed.
    pub async fn reseal_secrets(
        &self,
        reseal: &Reseal<'_>,
        key_check: &[u8],
        actor: &str,
    ) -> Result<usize, StoreError> {
        let audit =
            |count: &usize| record(actor, AuditAction::SecretRotateKey, None, None).detail(format!("secrets={count}"));
        self.storage.reseal_secrets(reseal, key_check, &audit).await
    }

    /// Deletes every secret and the key check: for a store copied from another environment,
    /// whose master key is not here. Returns how many were deleted.
    ///
    /// # Errors
    /// The store failed.
    pub async fn reset_secrets(&self, actor: &str) -> Result<usize, StoreError> {
        let audit =
            |count: &usize| record(actor, AuditAction::SecretReset, None, None).detail(format!("secrets={count}"));
        self.storage.reset_secrets(&audit).await
    }

    /// Records that a configuration load resolved these secrets at `at` (Unix seconds).
    ///
    /// # Errors
    /// The store failed.
    pub async fn secrets_used(&self, names: &[String], at: i64) -> Result<(), StoreError> {
        self.storage.secrets_used(names, at).await
    }
}

/// Ids and names: 1 to 128 visible ASCII characters.
///
/// # Errors
/// Says what `field` must look like.
pub fn check_id(field: Field, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Malformed { field, value: value.to_owned() });
    }
    Ok(())
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
            return Err(StoreError::MalformedScope { scope: scope.clone() });
        }
        if !checked.contains(scope) {
            checked.push(scope.clone());
        }
    }
    Ok(checked)
}

/// Scopes for the audit log: `[read,write]`, `[]` for none.
fn scopes_shown(scopes: &[String]) -> String {
    format!("[{}]", scopes.join(","))
}

pub mod subscriptions;

#[cfg(test)]
mod tests;
