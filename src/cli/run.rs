//! `portcullis run`: serve until SIGTERM or Ctrl-C, then drain.

use std::num::NonZeroUsize;
use std::path::Path;
use std::process::ExitCode;

use crate::compile;
use crate::serve::server::Server;

pub(super) fn run(
    config_file: &Path,
    globals: &super::Globals,
    open_files: super::OpenFileLimit,
) -> anyhow::Result<ExitCode> {
    super::init_logging(globals)?;
    match open_files {
        super::OpenFileLimit::Unchanged => {}
        super::OpenFileLimit::Raised { from, to } => {
            tracing::info!(from, to, "raised the open-file limit to its hard limit");
        }
        super::OpenFileLimit::Kept { soft, hard } => {
            tracing::warn!(soft, hard, "could not raise the open-file limit to its hard limit");
        }
    }
    let loaded = match compile::load(config_file) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!(warning = %warning, "configuration warning");
    }
    serve(loaded.runtime, globals.workers, |_| {})
}

/// The tokio runtime for `--workers` (default: one per CPU the process may use, from its
/// affinity mask and cgroup quota): one event loop without work stealing for 1 — like HAProxy's
/// `nbthread 1`, ~10 % cheaper per request than a one-worker work-stealing runtime — else a
/// work-stealing runtime with that many workers.
pub(super) fn event_loop(workers: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers.or_else(|| std::thread::available_parallelism().ok()).map_or(1, NonZeroUsize::get);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build()
}

/// Starts the gateway on `workers` threads (one event loop when 1; default one per CPU),
/// calls `started` once every listener is bound, and drains on SIGTERM or Ctrl-C.
pub(super) fn serve(
    runtime: crate::runtime::Runtime,
    workers: Option<NonZeroUsize>,
    started: impl FnOnce(&Server),
) -> anyhow::Result<ExitCode> {
    event_loop(workers)?.block_on(async move {
        let mut server = Server::start(runtime).await?;
        started(&server);
        server.terminated().await;
        tracing::info!("shutting down");
        let drained = server.shutdown().await;
        crate::serve::access::flush(std::time::Duration::from_secs(2));
        Ok(if drained { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}
