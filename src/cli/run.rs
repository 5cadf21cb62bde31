//! `portcullis run`: serve until SIGTERM or Ctrl-C, then drain.

use std::num::NonZeroUsize;
use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::server::Server;

pub(super) fn run(config_file: &Path, globals: &super::Globals) -> anyhow::Result<ExitCode> {
    super::init_logging(globals)?;
    let loaded = match config::load(config_file) {
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

/// The tokio runtime for `--workers`: one event loop without work stealing for 1, else a
/// multi-threaded runtime with that many workers (default: one per CPU the process may use).
pub(super) fn event_loop(workers: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers.map(NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
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
        Ok(if drained { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}
