//! The encrypted secret store (`secrets:`): named values such as backend API keys and key
//! passwords, referenced as `${secret:NAME}` anywhere `${env:}` works and resolved when the
//! configuration loads. They live in the token issuer's store (the same SQLite file or
//! PostgreSQL database, so one backup and one audit log; `secrets.store` puts them elsewhere),
//! each sealed with AES-256-GCM under a master key that never sits beside them: it comes from
//! the environment, a file, or a systemd credential.
//!
//! Two keys are derived from the master key: one seals values, the other makes the store's
//! key check, a value that tells "wrong master key" (a database copied to another
//! environment) from damaged data. A value's name is its associated data, so sealed values
//! cannot be swapped between names.

use std::collections::HashMap;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Deserialize;

use serde_saphyr::Spanned;

use crate::config::values::{Located, ValueRef};
use crate::store::{random_bytes, Store, StoreError};

/// The `secrets:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Where the sealed values are (`sqlite:PATH` or `postgres://…`); default: `identity.store`.
    pub store: Option<Located>,
    /// The master key, 32 bytes in base64 (`portcullis secrets gen-key`), by reference only:
    /// `${env:NAME}`, `${file:path}` or `${credential:NAME}`.
    pub master_key: Spanned<ValueRef>,
}

/// Why the secret store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The master key is not 32 bytes of base64.
    #[error("the master key must be 32 bytes in base64 (44 characters); `portcullis secrets gen-key` makes one")]
    BadKey,
    /// The store's secrets were sealed under another master key.
    #[error(
        "the master key does not open this store's secrets: they were sealed under another key (a database \
         copied from another environment?); give the key they were sealed with, or run `portcullis secrets reset` \
         here and set each secret again"
    )]
    WrongKey,
    /// A sealed value does not open although the key is right: it was changed or damaged.
    #[error("secret {0:?} is damaged or was altered in the database; set it again")]
    Damaged(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The master key, ready to seal and open values.
pub struct MasterKey {
    seal: LessSafeKey,
    check: Vec<u8>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Reads a base64 key (standard or URL-safe, padded or not) of 32 bytes.
    ///
    /// # Errors
    /// Not base64, or not 32 bytes.
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| SecretsError::BadKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::BadKey)?;
        let derive = |purpose: &str| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &bytes), purpose.as_bytes()).as_ref().to_vec()
        };
        let seal =
            UnboundKey::new(&AES_256_GCM, &derive("portcullis secrets: sealing")).map_err(|_| SecretsError::BadKey)?;
        Ok(Self { seal: LessSafeKey::new(seal), check: derive("portcullis secrets: key check") })
    }

    /// A fresh random key, in base64.
    pub fn generate() -> String {
        STANDARD.encode(random_bytes::<32>())
    }

    /// The value that tells this key from others, kept in the store beside the secrets.
    pub fn check(&self) -> &[u8] {
        &self.check
    }

    /// Seals `value` under the name `name`: a random nonce, then ciphertext and tag.
    ///
    /// # Panics
    /// When the operating system has no random numbers to give.
    pub fn seal(&self, name: &str, value: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        let mut out = Vec::with_capacity(NONCE_LEN + value.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let tag = self
            .seal
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), aad(name), &mut out[NONCE_LEN..])
            .expect("AES-GCM seals any length this store holds");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a value sealed under `name`.
    ///
    /// # Errors
    /// The value was sealed under another key or name, or altered.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let damaged = || SecretsError::Damaged(name.to_owned());
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(damaged());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut body = body.to_vec();
        let len = self.seal.open_in_place(nonce, aad(name), &mut body).map_err(|_| damaged())?.len();
        body.truncate(len);
        Ok(body)
    }
}

/// The associated data of a value: its name, so a value moved to another name does not open.
fn aad(name: &str) -> Aad<Vec<u8>> {
    Aad::from([b"portcullis-secret:".as_slice(), name.as_bytes()].concat())
}

/// The secret store as a configuration load sees it: every value, opened once.
pub struct Vault {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("names", &self.values.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens every value of `store` with `key`.
    ///
    /// # Errors
    /// The key is not the one the values were sealed under, a value is damaged or not UTF-8,
    /// or the store failed.
    pub async fn open(store: &Store, key: &MasterKey) -> Result<Self, SecretsError> {
        verify_key(store, key).await?;
        let mut values = HashMap::new();
        for secret in store.secrets().await? {
            let value = key.open(&secret.name, &secret.sealed)?;
            let value = String::from_utf8(value).map_err(|_| SecretsError::Damaged(secret.name.clone()))?;
            values.insert(secret.name, value);
        }
        Ok(Self { values })
    }

    /// The values by name.
    pub fn into_values(self) -> HashMap<String, String> {
        self.values
    }
}

/// Checks `key` against the store's key check (a store without secrets takes any key).
///
/// # Errors
/// The store's secrets were sealed under another key, or the store failed.
pub async fn verify_key(store: &Store, key: &MasterKey) -> Result<(), SecretsError> {
    match store.secrets_key_check().await? {
        Some(check) if check != key.check() => Err(SecretsError::WrongKey),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::parse(&MasterKey::generate()).unwrap()
    }

    #[test]
    fn values_open_only_under_their_name_and_key() {
        let (k, other) = (key(), key());
        let sealed = k.seal("backend-api-key", b"s3cr3t");
        assert_eq!(k.open("backend-api-key", &sealed).unwrap(), b"s3cr3t");
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"), "sealed, not encoded");
        assert_ne!(k.seal("backend-api-key", b"s3cr3t"), sealed, "a fresh nonce each time");
        assert!(matches!(k.open("other-name", &sealed), Err(SecretsError::Damaged(_))), "swapped between names");
        assert!(other.open("backend-api-key", &sealed).is_err(), "another key");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(k.open("backend-api-key", &altered).is_err());
        assert!(k.open("backend-api-key", &sealed[..10]).is_err());
        assert_ne!(k.check(), other.check());
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::parse(&URL_SAFE_NO_PAD.encode([7u8; 32])).is_ok());
        assert!(matches!(MasterKey::parse(&STANDARD.encode([7u8; 16])), Err(SecretsError::BadKey)));
        assert!(matches!(MasterKey::parse("not base64 at all!"), Err(SecretsError::BadKey)));
        assert!(format!("{:?}", key()).contains("redacted"));
    }
}
