//! Subscriptions as the gateway checks them (README: Subscription keys): every key an
//! instance knows, by its keyed hash, in a [`Keyring`] swapped whole when the store changes,
//! so that a check reads memory only — one HMAC and one map lookup, no lock, no store call.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use aws_lc_rs::hmac;
use tokio::sync::mpsc;

/// What a subscription's keys open.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every route (`all`).
    All,
    /// The routes of one product, a named set of routes in the configuration (`product:NAME`).
    Product(String),
    /// One route, by name (`route:NAME`).
    Route(String),
}

impl Scope {
    /// Parses `all`, `product:NAME` or `route:NAME` (a name is 1 to 128 visible ASCII
    /// characters); None otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        let named = |name: &str| {
            (!name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic()))
                .then(|| name.to_owned())
        };
        match text.split_once(':') {
            None if text == "all" => Some(Self::All),
            Some(("product", name)) => named(name).map(Self::Product),
            Some(("route", name)) => named(name).map(Self::Route),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Product(p) => write!(f, "product:{p}"),
            Self::Route(r) => write!(f, "route:{r}"),
        }
    }
}

/// Whether a subscription's keys are accepted. APIM's states, less the two of its approval
/// workflow (`submitted`, `rejected`), which are never imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Its keys are accepted (within their scope, until the expiry).
    Active,
    /// Refused for now; `activate` brings it back.
    Suspended,
    /// Refused for good: final, as in APIM (a new subscription is the way back).
    Cancelled,
    /// Refused: its expiry passed (stored so, or computed by `state_at`).
    Expired,
}

impl State {
    /// `active`, `suspended`, `cancelled` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Reads what [`Self::as_str`] writes.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Suspended, Self::Cancelled, Self::Expired].into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of a subscription's two keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// APIM's `primaryKey`.
    Primary,
    /// APIM's `secondaryKey`.
    Secondary,
}

impl Slot {
    /// `primary` or `secondary`, as stored, audited and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }

    /// The slot [`Self::as_str`] names.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Primary, Self::Secondary].into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One subscription, as a key check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Its id (APIM's subscription name when imported).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// What its keys open.
    pub scope: Scope,
    /// Its stored state.
    pub state: State,
    /// When it expires (Unix seconds), if it does.
    pub expires_at: Option<i64>,
}

impl Subscription {
    /// Its state at `now` (Unix seconds): expired once its expiry time passed, unless it was
    /// cancelled.
    pub fn state_at(&self, now: i64) -> State {
        match self.expires_at {
            Some(at) if self.state != State::Cancelled && now >= at => State::Expired,
            _ => self.state,
        }
    }
}

/// Products: the routes each one names.
pub type Products = HashMap<String, HashSet<String>>;

/// A key the ring knows: its subscription and which key it is.
#[derive(Debug)]
pub struct KnownKey {
    /// The subscription the key belongs to.
    pub subscription: Arc<Subscription>,
    /// Which of its keys.
    pub slot: Slot,
    /// The minute (Unix seconds, to the minute) its last use was noted.
    noted: AtomicI64,
}

/// A use of a key to record in the store (at most one a minute per key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUse {
    /// The subscription.
    pub id: String,
    /// Which key.
    pub slot: Slot,
    /// The minute it was used (Unix seconds).
    pub minute: i64,
}

/// One reading of every key in the store.
#[derive(Debug, Default)]
struct Snapshot {
    by_hash: HashMap<[u8; 32], KnownKey>,
}

/// Every subscription key an instance knows, by HMAC-SHA-256 under the store's key.
pub struct Keyring {
    key: hmac::Key,
    snapshot: ArcSwapOption<Snapshot>,
    /// When the store was last read in full or for changes (Unix seconds; 0: never).
    refreshed: AtomicI64,
    uses: mpsc::UnboundedSender<KeyUse>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.snapshot.load().as_ref().map(|s| s.by_hash.len());
        f.debug_struct("Keyring").field("keys", &keys).finish_non_exhaustive()
    }
}

/// What a key check found.
#[derive(Debug)]
pub enum Lookup {
    /// The key is known.
    Known(Arc<Subscription>, Slot),
    /// No subscription has this key.
    Unknown,
    /// The ring was never loaded, or not refreshed for longer than allowed.
    Stale,
}

impl Keyring {
    /// An empty ring hashing with the store's HMAC key; uses of keys go to the returned
    /// receiver, for the store.
    pub fn new(hash_key: hmac::Key) -> (Self, mpsc::UnboundedReceiver<KeyUse>) {
        let (uses, rx) = mpsc::unbounded_channel();
        (Self { key: hash_key, snapshot: ArcSwapOption::empty(), refreshed: AtomicI64::new(0), uses }, rx)
    }

    /// Replaces every key with those of `keys` (hash, subscription, slot), read at `now`.
    pub fn load(&self, keys: impl IntoIterator<Item = ([u8; 32], Arc<Subscription>, Slot)>, now: i64) {
        let by_hash = keys
            .into_iter()
            .map(|(hash, subscription, slot)| (hash, KnownKey { subscription, slot, noted: AtomicI64::new(0) }))
            .collect();
        self.snapshot.store(Some(Arc::new(Snapshot { by_hash })));
        self.refreshed.store(now, Ordering::Relaxed);
    }

    /// The store was read at `now` and nothing changed.
    pub fn still_fresh(&self, now: i64) {
        self.refreshed.store(now, Ordering::Relaxed);
    }

    /// Whether the ring holds a reading of the store.
    pub fn is_loaded(&self) -> bool {
        self.snapshot.load().is_some()
    }

    /// The keyed hash of a presented key.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.key, key.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(tag.as_ref());
        hash
    }

    /// Finds `key` at `now`, when the ring was refreshed within `stale_after` seconds; notes
    /// its use once a minute.
    pub fn find(&self, key: &str, now: i64, stale_after: i64) -> Lookup {
        let guard = self.snapshot.load();
        let Some(snapshot) = guard.as_ref() else { return Lookup::Stale };
        if now.saturating_sub(self.refreshed.load(Ordering::Relaxed)) > stale_after {
            return Lookup::Stale;
        }
        let Some(known) = snapshot.by_hash.get(&self.hash(key)) else { return Lookup::Unknown };
        let minute = now - now.rem_euclid(60);
        if known.noted.fetch_max(minute, Ordering::Relaxed) < minute {
            let _ = self.uses.send(KeyUse { id: known.subscription.id.clone(), slot: known.slot, minute });
        }
        Lookup::Known(known.subscription.clone(), known.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(id: &str, state: State, expires_at: Option<i64>) -> Arc<Subscription> {
        Arc::new(Subscription { id: id.into(), name: id.into(), scope: Scope::All, state, expires_at })
    }

    fn ring() -> (Keyring, mpsc::UnboundedReceiver<KeyUse>) {
        Keyring::new(hmac::Key::new(hmac::HMAC_SHA256, b"store key"))
    }

    #[test]
    fn scopes_and_states_read_back_what_they_write() {
        for scope in [Scope::All, Scope::Product("portal".into()), Scope::Route("orders".into())] {
            assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
        }
        for bad in ["", "product:", "route", "api:x", "All"] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
        for state in [State::Active, State::Suspended, State::Cancelled, State::Expired] {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn an_active_subscription_expires_at_its_time() {
        let s = subscription("s", State::Active, Some(100));
        assert_eq!((s.state_at(99), s.state_at(100)), (State::Active, State::Expired));
        assert_eq!(subscription("s", State::Suspended, Some(100)).state_at(200), State::Expired);
        assert_eq!(subscription("s", State::Cancelled, Some(100)).state_at(200), State::Cancelled);
    }

    #[test]
    fn a_key_is_found_by_its_hash_until_the_ring_goes_stale() {
        let (ring, mut uses) = ring();
        assert!(matches!(ring.find("k1", 1_000, 60), Lookup::Stale), "never loaded");
        let sub = subscription("s-1", State::Active, None);
        ring.load([(ring.hash("k1"), sub.clone(), Slot::Primary), (ring.hash("k2"), sub, Slot::Secondary)], 1_000);
        assert!(matches!(ring.find("k2", 1_010, 60), Lookup::Known(s, Slot::Secondary) if s.id == "s-1"));
        assert!(matches!(ring.find("k3", 1_010, 60), Lookup::Unknown));
        assert!(matches!(ring.find("K1", 1_010, 60), Lookup::Unknown), "keys are case-sensitive");
        assert!(matches!(ring.find("k1", 1_061, 60), Lookup::Stale), "not refreshed for over a minute");
        ring.still_fresh(1_061);
        assert!(matches!(ring.find("k1", 1_061, 60), Lookup::Known(..)));
        // One use noted per key and minute.
        let noted: Vec<KeyUse> = std::iter::from_fn(|| uses.try_recv().ok()).collect();
        assert_eq!(
            noted,
            [
                KeyUse { id: "s-1".into(), slot: Slot::Secondary, minute: 960 },
                KeyUse { id: "s-1".into(), slot: Slot::Primary, minute: 1_020 },
            ]
        );
    }
}
