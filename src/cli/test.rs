//! `portcullis test`: runs fixture files of requests and expectations through the real
//! compiled configuration, offline, and reports each case; exit 1 when any fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::compile;
use crate::tools::fixture::mint::Minter;
use crate::tools::fixture::report::{self, FileResults};
use crate::tools::fixture::run::{self as cases, CaseResult};
use crate::tools::fixture::Fixture;

/// How the results are written.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum Format {
    /// One line per case, a diff and a trace per failure, a closing count.
    Text,
    /// JUnit XML.
    Junit,
    /// JSON.
    Json,
}

pub(super) fn test(config_file: &Path, fixtures: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let files = match fixtures {
        [] => default_fixtures(config_file)?,
        given => given.to_vec(),
    };
    if files.is_empty() {
        eprintln!("no fixtures: give fixture files, or put them in {}", tests_dir(config_file).display());
        return Ok(ExitCode::FAILURE);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let now = crate::clock::unix_now();
    let mut results = Vec::new();
    let mut broken = false;
    for file in &files {
        let fixture = match Fixture::read(file) {
            Ok(fixture) => fixture,
            Err(e) => {
                eprintln!("{e}");
                broken = true;
                continue;
            }
        };
        if fixtures.is_empty() && !fixture.is_for(config_file) {
            continue;
        }
        match rt.block_on(run_file(config_file, fixture, now)) {
            Ok(file_results) => results.push(file_results),
            Err(errors) => {
                for e in errors {
                    eprintln!("{e}");
                }
                broken = true;
            }
        }
    }
    let out = match format {
        Format::Text => report::text(&results),
        Format::Junit => report::junit(&results),
        Format::Json => report::json(&results),
    };
    print!("{}", crate::redact::scrub(&out));
    let (_, failed) = report::counts(&results);
    Ok(if failed > 0 || broken { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Compiles the configuration afresh for one fixture file and runs its cases.
async fn run_file(config_file: &Path, fixture: Fixture, now: u64) -> Result<FileResults, Vec<String>> {
    let minter = Minter::new(&fixture)?;
    let loaded = compile::load(config_file).map_err(|errors| vec![errors.to_string()])?;
    let runtime = Arc::new(loaded.runtime);
    cases::override_keys(&runtime, &fixture, &minter)?;
    start_remote_keys(&runtime).await;
    runtime.load_keyring().await.map_err(|e| vec![format!("cannot read the subscription keys: {e}")])?;
    let file = fixture.file.clone();
    let cases: Vec<CaseResult> = cases::run(runtime, Arc::new(fixture), Arc::new(minter), now).await;
    Ok(FileResults { file, cases })
}

/// Starts the key fetches that no fixture key stands in for, and gives them a moment, as a
/// starting gateway would.
async fn start_remote_keys(runtime: &crate::runtime::Runtime) {
    let mut waiting = false;
    for named in &runtime.policies {
        if let crate::policy::Policy::Jwt(jwt) = &named.policy {
            for provider in jwt.providers.iter().filter(|p| p.keys.current().is_none()) {
                provider.keys.start();
                waiting = true;
            }
        }
    }
    for _ in 0..if waiting { 100 } else { 0 } {
        if runtime.policies.iter().all(|p| p.policy.is_ready()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn tests_dir(config_file: &Path) -> PathBuf {
    config_file.parent().unwrap_or(Path::new(".")).join("tests")
}

/// `tests/*.yaml` beside the configuration, sorted.
fn default_fixtures(config_file: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = tests_dir(config_file);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}
