//! `portcullis run`: serve until SIGTERM or Ctrl-C, then drain.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::server::{self, Server};

pub fn run(config_file: &Path, logging: &super::Logging) -> anyhow::Result<ExitCode> {
    super::init_logging(logging)?;
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
    serve(loaded.runtime, |_| {})
}

/// Starts the gateway on a multi-threaded runtime, calls `started` once every listener is
/// bound, and drains on SIGTERM or Ctrl-C.
pub(super) fn serve(runtime: crate::runtime::Runtime, started: impl FnOnce(&Server)) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let server = Server::start(runtime).await?;
        started(&server);
        server::termination_signal().await;
        tracing::info!("shutting down");
        let drained = server.shutdown().await;
        Ok(if drained { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}
