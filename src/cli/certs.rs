//! `portcullis certs dev`: development key material.

use std::path::Path;
use std::process::ExitCode;

use crate::pki;

pub fn dev(dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if pki::ensure_dev_material(dir, force)? {
        println!("created development certificates in {}:", dir.display());
    } else {
        println!("development certificates already in {} (use --force to replace them):", dir.display());
    }
    for file in pki::DEV_FILES {
        println!("  {}", dir.join(file).display());
    }
    Ok(ExitCode::SUCCESS)
}
