//! The `secrets:` section: opens the secret store with its master key before anything that
//! may reference `${secret:NAME}` compiles.
//!
//! The compiler is blocking code, outside any runtime or on a blocking thread of the
//! gateway's (a reload): the store, whose calls are futures, is held as a
//! [`BlockingStore`], whose own runtime lives as long as this compile's use of it.

use crate::compile::raw::{Located, RawConfig};
use crate::config::context::CompileContext;
use crate::config::values::ValueRef;
use crate::secrets::{MasterKey, Vault};
use crate::store::{BlockingStore, StoreError, StoreLocation};

/// The secret store a compile opened, to record afterwards which secrets it used.
pub(super) struct SecretStore(BlockingStore);

impl SecretStore {
    /// Records that the configuration resolved these secrets at `at` (Unix seconds).
    pub(super) fn secrets_used(&self, names: &[String], at: i64) -> Result<(), StoreError> {
        self.0.block_on(self.0.store().secrets_used(names, at))
    }
}

/// Why a `secrets` section has no store.
pub(super) const NO_STORE: &str = "the secret store has no `store` and there is no `identity.store` to share";

/// Where the secrets are: `secrets.store`, else `identity.store`.
pub(super) fn location(raw: &RawConfig) -> Option<&Located> {
    let section = raw.secrets.as_ref()?;
    section.value.store.as_ref().or(raw.identity.as_ref().map(|i| &i.value.store))
}

/// Opens the secret store, if the file has one, and gives its values to `cx`; returns the
/// store, to record afterwards which secrets the configuration used.
pub(super) fn compile(raw: &RawConfig, cx: &mut CompileContext) -> Option<SecretStore> {
    let section = raw.secrets.as_ref()?;
    cx.secrets_declared = true;
    let cfg = &section.value;
    let key_ref = &cfg.master_key;
    if let ValueRef::Literal(_) | ValueRef::Secret(_) = key_ref.value {
        cx.error(key_ref.referenced, "secrets.master_key", "the master key must not sit beside the secrets")
            .hint("write ${env:NAME}, ${file:/path/outside/the/store} or ${credential:NAME} (systemd LoadCredential=)");
        return None;
    }
    let key = match cx
        .value(&key_ref.value)
        .map_err(|e| e.to_string())
        .and_then(|text| MasterKey::parse(&text).map_err(|e| e.to_string()))
    {
        Ok(key) => key,
        Err(e) => {
            cx.error(key_ref.referenced, "secrets.master_key", e);
            return None;
        }
    };
    let Some(location) = location(raw) else {
        cx.error(section.referenced, "secrets", NO_STORE)
            .hint("add `store: sqlite:PATH` (relative to this file) or `store: postgres://…`");
        return None;
    };
    let opened = StoreLocation::parse(&location.value, cx.dir())
        .map_err(|e| e.to_string())
        .and_then(|l| BlockingStore::open(&l).map_err(|e| e.to_string()));
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            cx.error(location.referenced, "secrets.store", e);
            return None;
        }
    };
    match store.block_on(Vault::open(store.store(), &key)) {
        Ok(vault) => {
            let values = vault.into_values();
            // Every value is in memory now, used or not: none may be written anywhere.
            for value in values.values() {
                cx.conceal(value);
            }
            cx.secrets = Some(values);
            Some(SecretStore(store))
        }
        Err(e) => {
            cx.error(key_ref.referenced, "secrets.master_key", e.to_string());
            None
        }
    }
}
