//! The bridge for blocking callers — the CLI and the configuration compiler — to the
//! store's futures.
//!
//! The compiler runs outside any runtime (`portcullis run`, `check`) or on a blocking thread
//! of the gateway's runtime (a hot reload), and tests call it from async code; blocking on
//! the caller's own runtime could deadlock (a current-thread runtime cannot drive the
//! connection it waits for) or panic (a worker thread may not block). So the work runs on a
//! current-thread runtime of its own — on a scoped helper thread when the caller is inside a
//! runtime — which works from anywhere.
//!
//! PostgreSQL connections (deadpool, tokio-postgres) live on the runtime that made them. The
//! bridge's runtime must therefore never be gone while its connections are still in use:
//! [`block_on`]'s runtime ends with its call, so use it only for work that leaves no
//! connection behind, like opening a store (which keeps none) for the gateway, whose later
//! calls then connect on the gateway's runtime; [`BlockingStore`] keeps its runtime as long
//! as its store, for a caller that makes several calls.

use std::future::Future;

use tokio::runtime::Runtime;

use super::error::StoreError;
use super::location::StoreLocation;
use super::rules::Store;

/// A current-thread runtime with I/O and timers.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts (it needs no threads, only an epoll and a timer)")
}

/// Runs `work` on `runtime`, from a helper thread when this thread is inside another runtime.
fn run_on<F>(runtime: &Runtime, work: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(work);
    }
    std::thread::scope(|s| {
        s.spawn(|| runtime.block_on(work)).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `work` to completion on a runtime of its own that ends with it, blocking this
/// thread; inside or outside another runtime. Anything `work` connects does not outlive it.
/// Inside a runtime, the helper thread both makes and drops the runtime: dropping one where
/// blocking is not allowed panics.
pub fn block_on<F>(work: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime().block_on(work);
    }
    std::thread::scope(|s| {
        s.spawn(|| runtime().block_on(work)).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A store for a blocking caller that makes several calls: its runtime lives as long as the
/// store, so a connection made by one call serves the next.
pub struct BlockingStore {
    store: Store,
    /// Shut down in the background when dropped (which may happen inside a runtime, where a
    /// runtime cannot be dropped).
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for BlockingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingStore").field("store", &self.store).finish_non_exhaustive()
    }
}

impl BlockingStore {
    /// Opens the store at `location`, on the store's own runtime.
    ///
    /// # Errors
    /// See [`StoreLocation::open`].
    pub fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        let runtime = runtime();
        let store = run_on(&runtime, location.open())?;
        Ok(Self { store, runtime: Some(runtime) })
    }

    /// The store, whose calls [`Self::block_on`] runs.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `work` (calls on [`Self::store`]) to completion, blocking this thread.
    pub fn block_on<F>(&self, work: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        run_on(self.runtime.as_ref().expect("the runtime lives as long as the store"), work)
    }
}

impl Drop for BlockingStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::block_on;

    #[test]
    fn blocks_outside_a_runtime() {
        assert_eq!(block_on(async { 7 }), 7);
    }

    // A reload compiles on a blocking thread, `portcullis test` inside its event loop: both
    // must wait for the store, and leave no runtime to drop where blocking is not allowed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn blocks_inside_a_runtime_and_drops_its_own_elsewhere() {
        assert_eq!(
            block_on(async {
                tokio::task::yield_now().await;
                7
            }),
            7
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn blocks_inside_a_current_thread_runtime() {
        assert_eq!(block_on(async { 7 }), 7);
    }
}
