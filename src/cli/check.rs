//! `portcullis check`: compile the whole configuration without binding ports, and lint it.

use std::path::Path;
use std::process::ExitCode;

use crate::compile;

/// With `strict`, warnings are errors.
pub(super) fn check(config_file: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    match compile::load(config_file) {
        Ok(loaded) if strict && !loaded.warnings.is_empty() => {
            for warning in &loaded.warnings {
                eprintln!("error: {warning}");
            }
            eprintln!("{}: {} error(s) (warnings, under --strict)", config_file.display(), loaded.warnings.len());
            Ok(ExitCode::FAILURE)
        }
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            let rt = &loaded.runtime;
            println!(
                "{}: ok ({} listeners, {} routes, {} backends, {} warnings)",
                config_file.display(),
                rt.listeners.len(),
                rt.routes.routes.len(),
                rt.backends.len(),
                loaded.warnings.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", config_file.display(), errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
