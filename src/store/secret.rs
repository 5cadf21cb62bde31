//! Client secrets: 256 random bits, shown once as base64url, stored only as an
//! HMAC-SHA-256 under the store's own key. A slow password hash buys nothing for secrets
//! this long; the key keeps a copied hash column from being checked against guesses
//! without the key. Comparison is constant-time and always checks both stored secrets.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The longest secret the token endpoint will hash; longer ones are refused unhashed.
pub const MAX_SECRET_BYTES: usize = 256;

/// A stored secret hash (HMAC-SHA-256 tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretHash(pub Vec<u8>);

/// A new secret, to be shown once and then dropped.
pub struct NewSecret {
    /// The secret, base64url without padding (43 characters).
    pub text: String,
    /// Its HMAC-SHA-256 hash, the only form that is stored.
    pub hash: SecretHash,
}

/// Which of a system's two secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretSlot {
    /// The current secret.
    Primary,
    /// The other valid secret: the next one, until a renewal promotes it.
    Alternate,
}

impl SecretSlot {
    /// `primary` or `alternate`, as metrics and listings name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Alternate => "alternate",
        }
    }
}

/// Hashes and checks secrets with one store's key.
pub struct SecretHasher {
    key: hmac::Key,
}

impl SecretHasher {
    /// A hasher keyed with the store's own HMAC key.
    pub fn new(key: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// The HMAC key itself, for a hasher outside the store (the gateway's keyring).
    pub fn hmac_key(&self) -> hmac::Key {
        self.key.clone()
    }

    /// The HMAC-SHA-256 tag of `secret` under the store's key.
    pub fn hash(&self, secret: &str) -> SecretHash {
        SecretHash(hmac::sign(&self.key, secret.as_bytes()).as_ref().to_vec())
    }

    /// A fresh random secret and its hash.
    ///
    /// # Panics
    /// When the operating system has no random numbers to give.
    pub fn generate(&self) -> NewSecret {
        let text = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let hash = self.hash(&text);
        NewSecret { text, hash }
    }

    /// Whether `secret` is one of the two, in time that does not depend on which one
    /// (or whether) it matched.
    pub fn matches_either(&self, secret: &str, primary: &SecretHash, alternate: &SecretHash) -> bool {
        self.matching(secret, primary, alternate).is_some()
    }

    /// Which of the two `secret` is, checking both always, so that the time taken does not
    /// depend on the answer.
    pub fn matching(&self, secret: &str, primary: &SecretHash, alternate: &SecretHash) -> Option<SecretSlot> {
        let first = hmac::verify(&self.key, secret.as_bytes(), &primary.0).is_ok();
        let second = hmac::verify(&self.key, secret.as_bytes(), &alternate.0).is_ok();
        match (first, second) {
            (true, _) => Some(SecretSlot::Primary),
            (false, true) => Some(SecretSlot::Alternate),
            (false, false) => None,
        }
    }
}

/// Random bytes from the operating system.
///
/// # Panics
/// When the operating system has no random numbers to give.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_checked_against_either_hash() {
        let hasher = SecretHasher::new(b"store key");
        let (a, b) = (hasher.generate(), hasher.generate());
        assert_eq!(a.text.len(), 43, "256 bits in base64url");
        assert_ne!(a.text, b.text);
        assert!(hasher.matches_either(&a.text, &a.hash, &b.hash));
        assert!(hasher.matches_either(&b.text, &a.hash, &b.hash));
        assert!(!hasher.matches_either("guess", &a.hash, &b.hash));
        assert!(!hasher.matches_either(&a.text[..42], &a.hash, &b.hash));
        let other_store = SecretHasher::new(b"another key");
        assert!(!other_store.matches_either(&a.text, &a.hash, &b.hash), "hashes are keyed per store");
    }
}
