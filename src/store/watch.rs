//! The store's change feed: every change writes an audit entry in its own transaction, so an
//! instance that reads the entries it has not seen yet learns every change another instance
//! (or the CLI) made, whatever the storage.

use std::collections::BTreeSet;

use super::error::StoreError;
use super::records::AuditEntry;
use super::rules::Store;

/// How far below the highest sequence number seen a watch reads again: PostgreSQL hands out
/// sequence numbers when a transaction starts writing, so a change can commit after one with
/// a higher number. An entry is returned once, whenever it commits.
const LOOKBACK: i64 = 64;

/// What one watcher has seen of a store's audit log.
#[derive(Debug, Default)]
pub struct AuditWatch {
    /// The highest sequence number seen.
    last: i64,
    /// The numbers seen within [`LOOKBACK`] of `last`.
    seen: BTreeSet<i64>,
}

impl AuditWatch {
    /// A watch that has seen nothing: its first poll returns the whole log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries written since the last poll, oldest first.
    ///
    /// # Errors
    /// When the store cannot be read; the next poll reads them then.
    pub async fn poll(&mut self, store: &Store) -> Result<Vec<AuditEntry>, StoreError> {
        let from = (self.last - LOOKBACK).max(0);
        let read = store.audit_after(from).await?;
        let fresh: Vec<AuditEntry> = read.into_iter().filter(|e| self.seen.insert(e.seq)).collect();
        self.last = fresh.iter().map(|e| e.seq).fold(self.last, i64::max);
        let floor = self.last - LOOKBACK;
        self.seen = self.seen.split_off(&floor);
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{block_on, StoreLocation};

    #[test]
    fn a_watch_returns_each_entry_once_and_then_only_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("identity.db"));
        block_on(async {
            let store = location.open().await.unwrap();
            let mut watch = AuditWatch::new();
            assert!(watch.poll(&store).await.unwrap().is_empty());
            store.add_user("u-1", &[], "ops").await.unwrap();
            store.add_user("u-2", &[], "ops").await.unwrap();
            let first: Vec<_> = watch.poll(&store).await.unwrap().into_iter().map(|e| e.user_id).collect();
            assert_eq!(first, [Some("u-1".to_owned()), Some("u-2".to_owned())]);
            assert!(watch.poll(&store).await.unwrap().is_empty(), "seen entries are not returned again");
            store.set_user_active("u-1", false, "ops").await.unwrap();
            let next = watch.poll(&store).await.unwrap();
            assert_eq!(next.len(), 1);
            assert_eq!(next[0].action, "user.deactivate");
        });
    }
}
