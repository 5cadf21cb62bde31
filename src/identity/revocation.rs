//! Revocations: the changes in the issuer's store that end what its tokens granted — a
//! system deactivated or its secrets renewed, a user deactivated or unlinked from a system.
//! Tokens stay valid to their `exp` for plain requests (as an OAuth 2.0 access token does);
//! a long-lived connection opened with one ends (README: WebSockets).

use crate::policy::context::Grant;
use crate::store::{AuditAction, AuditEntry};

/// One change that ended the grants of tokens issued up to `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// When the change was made (Unix seconds): tokens issued later are not affected.
    pub at: i64,
    /// The system whose tokens it ends, or any system's.
    pub system: Option<String>,
    /// The user whose tokens it ends, or any user's (never both `None`).
    pub user: Option<String>,
}

impl Revocation {
    /// The revocation an audit entry records, if it records one.
    pub fn of(entry: &AuditEntry) -> Option<Self> {
        let is = |action: AuditAction| entry.action == action.as_str();
        let (system, user) = if is(AuditAction::SystemDeactivate) || is(AuditAction::SystemRenewSecret) {
            (Some(entry.system_id.clone()?), None)
        } else if is(AuditAction::UserDeactivate) {
            (None, Some(entry.user_id.clone()?))
        } else if is(AuditAction::SystemUnlink) {
            (Some(entry.system_id.clone()?), Some(entry.user_id.clone()?))
        } else {
            return None;
        };
        Some(Self { at: entry.at, system, user })
    }

    /// Whether it ends `grant`: a token of its system and user issued no later than it.
    pub fn revokes(&self, grant: &Grant) -> bool {
        grant.issued_at <= self.at
            && self.system.as_ref().is_none_or(|s| *s == grant.system)
            && self.user.as_ref().is_none_or(|u| grant.user.as_ref() == Some(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: AuditAction, system: Option<&str>, user: Option<&str>) -> AuditEntry {
        AuditEntry {
            seq: 1,
            at: 1_000,
            actor: "ops".into(),
            action: action.as_str().into(),
            system_id: system.map(Into::into),
            user_id: user.map(Into::into),
            detail: None,
        }
    }

    fn grant(system: &str, user: Option<&str>, issued_at: i64) -> Grant {
        Grant { system: system.into(), user: user.map(Into::into), issued_at }
    }

    #[test]
    fn each_revoking_change_ends_exactly_the_grants_it_names_issued_before_it() {
        let deactivated = Revocation::of(&entry(AuditAction::SystemDeactivate, Some("s-1"), None)).unwrap();
        assert!(deactivated.revokes(&grant("s-1", None, 999)));
        assert!(deactivated.revokes(&grant("s-1", Some("u-1"), 1_000)), "every user of the system");
        assert!(!deactivated.revokes(&grant("s-1", None, 1_001)), "a token issued after the change");
        assert!(!deactivated.revokes(&grant("s-10", None, 999)), "another system, even one sharing a prefix");

        let renewed = Revocation::of(&entry(AuditAction::SystemRenewSecret, Some("s-1"), None)).unwrap();
        assert!(renewed.revokes(&grant("s-1", None, 999)));

        let user = Revocation::of(&entry(AuditAction::UserDeactivate, None, Some("u-1"))).unwrap();
        assert!(user.revokes(&grant("s-1", Some("u-1"), 999)));
        assert!(user.revokes(&grant("s-2", Some("u-1"), 999)), "through any system");
        assert!(!user.revokes(&grant("s-1", None, 999)), "the system's own tokens");
        assert!(!user.revokes(&grant("s-1", Some("u-2"), 999)));

        let unlinked = Revocation::of(&entry(AuditAction::SystemUnlink, Some("s-1"), Some("u-1"))).unwrap();
        assert!(unlinked.revokes(&grant("s-1", Some("u-1"), 999)));
        assert!(!unlinked.revokes(&grant("s-2", Some("u-1"), 999)), "the user through another system");
    }

    #[test]
    fn other_changes_revoke_nothing() {
        for action in [
            AuditAction::SystemCreate,
            AuditAction::SystemActivate,
            AuditAction::UserActivate,
            AuditAction::SystemScopes,
            AuditAction::SecretSet,
        ] {
            assert_eq!(Revocation::of(&entry(action, Some("s-1"), Some("u-1"))), None, "{}", action.as_str());
        }
        assert_eq!(Revocation::of(&entry(AuditAction::SystemDeactivate, None, None)), None, "no system named");
    }
}
