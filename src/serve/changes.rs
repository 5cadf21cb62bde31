//! Following the issuer's store: every instance sharing a store reads the audit entries
//! written since it last looked, every [`POLL`], and applies what they change. Revocations
//! (a system deactivated or its secrets renewed, a user deactivated or unlinked) end the
//! long-lived connections their tokens opened ([`crate::serve::credential`]).

use std::sync::Arc;
use std::time::Duration;

use crate::identity::revocation::Revocation;
use crate::identity::Issuer;
use crate::serve::gateway::Gateway;
use crate::store::AuditWatch;

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
                gateway.tunnels.set_revocations(Vec::new());
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
            gateway.tunnels.set_revocations(self.revocations.clone());
        }
    }
}
