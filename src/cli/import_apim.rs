//! `portcullis import-apim POLICY.xml [--strict]`: an Azure API Management policy document as
//! a portcullis configuration on stdout; what has no equivalent is a comment naming its line.
//! The output has been read back through the configuration contract: when it does not read
//! (an importer bug), nothing is printed but the error, and the exit status is 1.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub(super) fn import(file: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let xml = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = match crate::tools::apim::import(&xml, &file.display().to_string()) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    print!("{}", imported.yaml);
    if imported.left_out > 0 {
        eprintln!(
            "{}: {} element(s), attribute(s) or expression(s) left out (see the `not translated` comments)",
            file.display(),
            imported.left_out
        );
    }
    Ok(if strict && imported.left_out > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
