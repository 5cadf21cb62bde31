//! The configuration requests run against, swappable as a whole, and the way to ask the
//! running server for a reload. Listeners and the admin listener hold a [`Gateway`]; the
//! server owns the reload machinery behind it.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::config::error::ConfigErrors;
use crate::runtime::Runtime;

/// The current runtime, swapped whole by a reload: a request keeps the one it started with.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    reloads: OnceLock<mpsc::Sender<ReloadRequest>>,
    /// Every open upgraded connection, for draining.
    pub tunnels: crate::serve::tunnel::Registry,
}

/// A reload asked for by `POST /reload`, SIGHUP or a file change; answered with a summary or
/// why it was refused.
pub type ReloadRequest = oneshot::Sender<Result<String, ReloadError>>;

/// Why a reload did not happen; the previous configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration has errors.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A new or moved listener could not bind its address.
    #[error("{0}")]
    Bind(#[from] std::io::Error),
    /// Building the configuration panicked (a bug: please report it).
    #[error("the configuration build panicked: {0}")]
    Panicked(String),
    /// No server runs (a `Gateway` outside [`crate::serve::server::Server`]).
    #[error("no server is running")]
    NotRunning,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl Gateway {
    /// A gateway serving `runtime`; reloads are refused until a server accepts them.
    pub fn new(runtime: Runtime) -> Self {
        Self { runtime: ArcSwap::from_pointee(runtime), reloads: OnceLock::new(), tunnels: Default::default() }
    }

    /// The current runtime; a request keeps the one it started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Serves `runtime` to every request from now on.
    pub(crate) fn swap(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// Where reload requests go; set once, by the server.
    pub(crate) fn accept_reloads(&self, sender: mpsc::Sender<ReloadRequest>) {
        let _ = self.reloads.set(sender);
    }

    /// Asks the server to reload and waits for the outcome.
    ///
    /// # Errors
    /// The new configuration was refused (the old one keeps serving), or no server runs.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let sender = self.reloads.get().ok_or(ReloadError::NotRunning)?;
        let (reply, answer) = oneshot::channel();
        sender.send(reply).await.map_err(|_| ReloadError::ShuttingDown)?;
        answer.await.map_err(|_| ReloadError::ShuttingDown)?
    }
}
