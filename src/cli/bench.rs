//! `portcullis bench`: load-test a policy chain. Against `--url` (or the scenario's
//! `target`), or, with `--config`, against a gateway it starts itself from that file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::ServerName;

use crate::runtime::ListenerKind;
use crate::serve::access::{set_sink, AccessSink};
use crate::serve::server::Server;
use crate::tools::loadtest::{self, Plan, Target};

pub(super) struct BenchArgs {
    pub scenario: PathBuf,
    pub url: Option<String>,
    pub config: Option<PathBuf>,
    pub json: bool,
    pub workers: Option<std::num::NonZeroUsize>,
}

pub(super) fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let scenario = loadtest::Scenario::load(&args.scenario)?;
    let rt = super::run::event_loop(args.workers)?;
    rt.block_on(async {
        // Kept alive for the run; the process exits right after, so no drain is needed.
        let mut _server = None;
        let target = match (&args.url, &scenario.target, &args.config) {
            (Some(url), _, _) | (None, Some(url), None) => {
                Target::resolve(url, scenario.tls.server_name.as_deref()).await?
            }
            (None, _, Some(config)) => {
                let (started, target) = start_gateway(config, scenario.tls.server_name.as_deref()).await?;
                _server = Some(started);
                target
            }
            (None, None, None) => {
                anyhow::bail!("give --url, a `target:` in the scenario, or --config to start a gateway")
            }
        };
        eprintln!("bench: {} connections → {} ({})", scenario.connections, target.authority, target.addr);
        let plan = Arc::new(Plan::new(&scenario, target)?);
        let report = loadtest::run(&scenario, plan, !args.json).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.table());
        }
        Ok(if report.pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// Starts the gateway of `config` in this process, quietly, and targets its first TLS
/// listener.
async fn start_gateway(config: &Path, server_name: Option<&str>) -> anyhow::Result<(Server, Target)> {
    set_sink(AccessSink::Off);
    let loaded = crate::compile::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = loaded
        .runtime
        .listeners
        .iter()
        .find(|l| matches!(l.kind, ListenerKind::Tls(_)))
        .map(|l| l.name.to_string())
        .context("the configuration has no TLS listener to load-test")?;
    let server = Server::start(loaded.runtime).await?;
    let addr = server.local_addr(&name).context("the listener did not bind")?;
    let host = server_name.unwrap_or("localhost").to_owned();
    let target =
        Target { addr, authority: format!("{host}:{}", addr.port()), server_name: ServerName::try_from(host)? };
    Ok((server, target))
}
