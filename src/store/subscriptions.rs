//! Subscriptions as data (issue 25): what a caller's subscription key grants — a scope (every
//! route, a product or one route), a state, an optional expiry and owner — and its two keys
//! (primary and secondary, as in Azure API Management), each stored only as an HMAC-SHA-256
//! under the store's own key ([`super::secret`]). Products are configuration; subscriptions
//! are data.
//!
//! New keys are 256 random bits written as 64 lower-case hex characters. Imported keys are
//! kept as the callers hold them (any visible ASCII, up to [`MAX_SECRET_BYTES`]); their
//! strength is estimated from their alphabet ([`estimate_bits`]) so that listings can warn
//! below [`WEAK_KEY_BITS`].

use super::secret::{random_bytes, SecretHash, SecretHasher, MAX_SECRET_BYTES};

/// Below this estimated strength a key is reported as weak.
pub const WEAK_KEY_BITS: u32 = 128;

pub use crate::subscription::{Scope as SubscriptionScope, Slot as KeySlot, State as SubscriptionState};

/// Who a subscription belongs to: informative, never checked against the systems and users
/// of the store (an imported APIM user need not exist here).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An external system, by id.
    System(String),
    /// A user, by id.
    User(String),
}

impl Owner {
    /// Parses `system:ID` or `user:ID`, as stored.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("system", id)) if !id.is_empty() => Some(Self::System(id.to_owned())),
            Some(("user", id)) if !id.is_empty() => Some(Self::User(id.to_owned())),
            _ => None,
        }
    }

    /// The owner's id.
    pub fn id(&self) -> &str {
        match self {
            Self::System(id) | Self::User(id) => id,
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System(id) => write!(f, "system:{id}"),
            Self::User(id) => write!(f, "user:{id}"),
        }
    }
}

/// What is known of one key, never the key itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// When the key was made or imported (Unix seconds).
    pub created_at: i64,
    /// When the gateway last accepted it (Unix seconds, to the minute), if ever.
    pub used_at: Option<i64>,
    /// Its estimated strength ([`estimate_bits`]).
    pub bits: u32,
}

impl KeyInfo {
    /// Whether the key is below [`WEAK_KEY_BITS`].
    pub fn is_weak(&self) -> bool {
        self.bits < WEAK_KEY_BITS
    }
}

/// One subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Its id: a UUID v4 when created here, APIM's `name` when imported.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// What its keys open.
    pub scope: SubscriptionScope,
    /// Its state as stored; see [`Self::state_at`] for the state in force.
    pub state: SubscriptionState,
    /// When its keys stop being accepted (Unix seconds), if ever.
    pub expires_at: Option<i64>,
    /// Who it belongs to, if anyone.
    pub owner: Option<Owner>,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// The primary key.
    pub primary: KeyInfo,
    /// The secondary key.
    pub secondary: KeyInfo,
}

impl Subscription {
    /// The state in force at `now` (Unix seconds): the stored state, except that an active or
    /// suspended subscription whose expiry is at or before `now` is expired. Cancelled stays
    /// cancelled.
    pub fn state_at(&self, now: i64) -> SubscriptionState {
        match (self.state, self.expires_at) {
            (SubscriptionState::Active | SubscriptionState::Suspended, Some(at)) if at <= now => {
                SubscriptionState::Expired
            }
            (state, _) => state,
        }
    }

    /// Whether its keys are accepted at `now`, in its scope.
    pub fn is_usable_at(&self, now: i64) -> bool {
        self.state_at(now) == SubscriptionState::Active
    }

    /// One key's information.
    pub fn key(&self, slot: KeySlot) -> &KeyInfo {
        match slot {
            KeySlot::Primary => &self.primary,
            KeySlot::Secondary => &self.secondary,
        }
    }
}

/// A new subscription key, to be shown once and then dropped.
pub struct NewKey {
    /// 64 lower-case hex characters (256 random bits).
    pub text: String,
    /// Its hash under the store's key, the only form that is stored.
    pub hash: SecretHash,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey").finish_non_exhaustive()
    }
}

/// A fresh 256-bit random key in hex, and its hash.
///
/// # Panics
/// When the operating system has no random numbers to give.
pub fn generate_key(hasher: &SecretHasher) -> NewKey {
    let text = hex(&random_bytes::<32>());
    let hash = hasher.hash(&text);
    NewKey { text, hash }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]).map(char::from).collect()
}

/// Why a key given for import cannot be a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// It is empty.
    Empty,
    /// It is longer than [`MAX_SECRET_BYTES`] (the length given).
    TooLong(usize),
    /// It has a byte that is not visible ASCII: it could not travel in a header.
    NotVisibleAscii,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong(len) => write!(f, "it is {len} bytes long, more than the {MAX_SECRET_BYTES} allowed"),
            Self::NotVisibleAscii => f.write_str("it has characters other than visible ASCII"),
        }
    }
}

/// Checks a key given for import (never shown in the answer).
///
/// # Errors
/// What is wrong with it.
pub fn check_key(key: &str) -> Result<(), KeyProblem> {
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if key.len() > MAX_SECRET_BYTES {
        return Err(KeyProblem::TooLong(key.len()));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyProblem::NotVisibleAscii);
    }
    Ok(())
}

/// A key's estimated strength in bits, from the smallest alphabet it fits, assuming each
/// character is random: hex 4 bits a character, decimal 3, base64 (standard or url, padding
/// ignored) 6, anything else 5 — below visible ASCII's 6.5, on purpose: an estimate that
/// must not flatter.
pub fn estimate_bits(key: &str) -> u32 {
    let body = key.trim_end_matches('=');
    let per_char = if body.bytes().all(|b| b.is_ascii_digit()) {
        3
    } else if body.bytes().all(|b| b.is_ascii_hexdigit()) {
        4
    } else if body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')) {
        6
    } else {
        5
    };
    u32::try_from(body.len()).unwrap_or(u32::MAX).saturating_mul(per_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_states_slots_and_owners_read_back_what_they_write() {
        for scope in [
            SubscriptionScope::All,
            SubscriptionScope::Product("starter".into()),
            SubscriptionScope::Route("echo".into()),
        ] {
            assert_eq!(SubscriptionScope::parse(&scope.to_string()), Some(scope));
        }
        for bad in ["", "any", "product:", "route:two words", "product", "all:x"] {
            assert_eq!(SubscriptionScope::parse(bad), None, "{bad:?}");
        }
        for state in ["active", "suspended", "cancelled", "expired"] {
            assert_eq!(SubscriptionState::parse(state).unwrap().as_str(), state);
        }
        assert_eq!(SubscriptionState::parse("submitted"), None);
        assert_eq!(KeySlot::parse("secondary"), Some(KeySlot::Secondary));
        assert_eq!(Owner::parse("user:alice"), Some(Owner::User("alice".into())));
        assert_eq!(Owner::parse("group:x"), None);
    }

    fn subscription(state: SubscriptionState, expires_at: Option<i64>) -> Subscription {
        let key = KeyInfo { created_at: 1, used_at: None, bits: 256 };
        Subscription {
            id: "s".into(),
            name: "S".into(),
            scope: SubscriptionScope::All,
            state,
            expires_at,
            owner: None,
            created_at: 1,
            primary: key,
            secondary: key,
        }
    }

    #[test]
    fn a_passed_expiry_expires_an_active_or_suspended_subscription_but_not_a_cancelled_one() {
        let active = subscription(SubscriptionState::Active, Some(100));
        assert_eq!(active.state_at(99), SubscriptionState::Active);
        assert!(active.is_usable_at(99));
        assert_eq!(active.state_at(100), SubscriptionState::Expired);
        assert!(!active.is_usable_at(100));
        assert_eq!(subscription(SubscriptionState::Suspended, Some(1)).state_at(5), SubscriptionState::Expired);
        assert_eq!(subscription(SubscriptionState::Cancelled, Some(1)).state_at(5), SubscriptionState::Cancelled);
        assert_eq!(subscription(SubscriptionState::Expired, None).state_at(5), SubscriptionState::Expired);
        assert_eq!(subscription(SubscriptionState::Active, None).state_at(i64::MAX), SubscriptionState::Active);
    }

    #[test]
    fn new_keys_are_256_bit_hex_and_estimates_do_not_flatter() {
        let hasher = SecretHasher::new(b"k");
        let (a, b) = (generate_key(&hasher), generate_key(&hasher));
        assert_eq!(a.text.len(), 64);
        assert!(a.text.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a.text, b.text);
        assert_eq!(hasher.hash(&a.text), a.hash);
        assert_eq!(estimate_bits(&a.text), 256);
        assert_eq!(estimate_bits("0123456789abcdef0123456789abcdef"), 128, "APIM's own 32-hex keys");
        assert_eq!(estimate_bits("12345678"), 24);
        assert_eq!(estimate_bits("dGhpcyBpcyBhIGtleQ=="), 18 * 6);
        assert_eq!(estimate_bits("pa$$word!"), 45);
        assert_eq!(check_key(""), Err(KeyProblem::Empty));
        assert_eq!(check_key(&"a".repeat(MAX_SECRET_BYTES + 1)), Err(KeyProblem::TooLong(MAX_SECRET_BYTES + 1)));
        assert_eq!(check_key("with space"), Err(KeyProblem::NotVisibleAscii));
        assert_eq!(check_key(&"a".repeat(MAX_SECRET_BYTES)), Ok(()));
    }
}
