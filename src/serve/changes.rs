//! Following the issuer's store: every instance sharing a store reads the audit entries
//! written since it last looked, every [`POLL`], and applies what they change:
//! - revocations (a system deactivated or its secrets renewed, a user deactivated or
//!   unlinked) end the long-lived connections their tokens opened
//!   ([`crate::serve::credential`]);
//! - a change to a subscription reloads the keyring, so a regenerated, suspended or
//!   cancelled key is refused within a poll and a read;
//! - the keys' uses go to the store, once a minute per key at most.
//!
//! A read that succeeds keeps the keyring fresh; past a policy's `stale_after` without one,
//! keys are refused with 503.

use std::sync::Arc;
use std::time::Duration;

use crate::identity::revocation::Revocation;
use crate::identity::Issuer;
use crate::serve::gateway::Gateway;
use crate::store::AuditWatch;
use crate::subscription::KeyUse;

/// How often the store's audit log is read: a change reaches every instance within this
/// and one read.
pub const POLL: Duration = Duration::from_millis(500);

/// How long a revocation stays in force (seconds): longer than the tokens it can revoke live
/// (`token_ttl` is at most 24 h) with any clock skew.
const KEEP: i64 = 48 * 3600;

/// Follows the store of the runtime's issuer, whichever runtime is current, until the
/// server stops.
pub async fn follow(gateway: Arc<Gateway>) {
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut following: Option<Following> = None;
    loop {
        ticks.tick().await;
        let Some(issuer) = gateway.runtime().issuer.clone() else {
            if following.take().is_some() {
                gateway.tunnels.revocations().set(Vec::new());
            }
            continue;
        };
        // A reload opens the store anew: read it from its start again.
        let state = match following.take() {
            Some(f) if Arc::ptr_eq(&f.issuer, &issuer) => following.insert(f),
            _ => following.insert(Following::new(issuer)),
        };
        state.poll(&gateway).await;
    }
}

/// What the follower knows of one issuer's store.
struct Following {
    issuer: Arc<Issuer>,
    watch: AuditWatch,
    revocations: Vec<Revocation>,
    /// The last read failed (logged once per outage).
    failing: bool,
}

impl Following {
    fn new(issuer: Arc<Issuer>) -> Self {
        if let Some(uses) = issuer.take_key_uses() {
            tokio::spawn(record_key_uses(issuer.clone(), uses));
        }
        Self { issuer, watch: AuditWatch::new(), revocations: Vec::new(), failing: false }
    }

    async fn poll(&mut self, gateway: &Gateway) {
        let entries = match self.watch.poll(&self.issuer.store).await {
            Ok(entries) => entries,
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "cannot read the issuer's store for changes; retrying");
                }
                self.failing = true;
                return;
            }
        };
        if std::mem::take(&mut self.failing) {
            tracing::info!("the issuer's store can be read for changes again");
        }
        let keyring = &self.issuer.keyring;
        let subscriptions_changed = entries.iter().any(|e| e.action.starts_with("subscription."));
        // The first read returns the whole log: the keyring is read again once, so that no
        // change between its first reading and this one is missed.
        if subscriptions_changed || !keyring.is_loaded() {
            if let Err(e) = self.issuer.load_keyring().await {
                tracing::warn!(error = %e, "cannot read the subscription keys; retrying");
                self.failing = true;
            }
        } else {
            keyring.still_fresh(crate::clock::unix_now() as i64);
        }
        let oldest = crate::clock::unix_now() as i64 - KEEP;
        let before = self.revocations.len();
        self.revocations.retain(|r| r.at >= oldest);
        let pruned = self.revocations.len() != before;
        let fresh: Vec<Revocation> = entries.iter().filter_map(Revocation::of).filter(|r| r.at >= oldest).collect();
        for r in &fresh {
            tracing::debug!(system = r.system.as_deref(), user = r.user.as_deref(), at = r.at, "revocation in force");
        }
        if pruned || !fresh.is_empty() {
            self.revocations.extend(fresh);
            gateway.tunnels.revocations().set(self.revocations.clone());
        }
    }
}

/// Records each key use in the store, for `subscriptions list` (not audited). A failed write
/// is logged and dropped: the next minute's use writes again.
async fn record_key_uses(issuer: Arc<Issuer>, mut uses: tokio::sync::mpsc::UnboundedReceiver<KeyUse>) {
    while let Some(KeyUse { id, slot, minute }) = uses.recv().await {
        if let Err(e) = issuer.store.subscription_key_used(&id, slot, minute).await {
            tracing::warn!(error = %e, subscription = %id, "could not record a subscription key's use");
        }
    }
}
