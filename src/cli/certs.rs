//! `portcullis certs dev` (development key material) and `portcullis certs check` (every
//! certificate a configuration uses, with its expiry).

use std::path::Path;
use std::process::ExitCode;

use crate::tools::pki;

pub(super) fn dev(dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
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

/// Prints every certificate the configuration uses; exit 1 when any expires within
/// `warn_days` (or has expired).
pub(super) fn check(config_file: &Path, warn_days: i64) -> anyhow::Result<ExitCode> {
    let loaded = match crate::compile::load(config_file) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let mut certs = loaded.runtime.certificates;
    certs.sort_by_key(|c| c.not_after);
    println!("{:>6}  {:<10}  {:<40}  {:<45}  FILE", "DAYS", "EXPIRES", "SUBJECT", "USED AT");
    let mut due = 0;
    for c in &certs {
        let days = (c.not_after - now).div_euclid(86_400);
        let expires = time::OffsetDateTime::from_unix_timestamp(c.not_after)
            .map_or_else(|_| "?".to_owned(), |t| t.date().to_string());
        let flag = if days < 0 {
            " EXPIRED"
        } else if days < warn_days {
            " EXPIRES SOON"
        } else {
            ""
        };
        if days < warn_days {
            due += 1;
        }
        println!("{days:>6}  {expires:<10}  {:<40}  {:<45}  {}{flag}", c.subject, c.usage, c.path.display());
    }
    println!("{} certificates; {due} expire within {warn_days} days", certs.len());
    Ok(if due == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
