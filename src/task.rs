//! Background work owned by a runtime object (health checks, key refreshes): aborted when
//! its owner is dropped, so a reload that replaces the owner stops the old work.

use std::sync::Mutex;

use tokio::task::JoinHandle;

/// A background task aborted when its owner is dropped (or given a new task).
#[derive(Debug, Default)]
pub struct OwnedTask(Mutex<Option<JoinHandle<()>>>);

impl OwnedTask {
    /// Takes ownership of `task`, aborting one set before.
    pub fn set(&self, task: JoinHandle<()>) {
        if let Ok(mut slot) = self.0.lock() {
            if let Some(old) = slot.replace(task) {
                old.abort();
            }
        }
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}
