//! `portcullis import-apim POLICY.xml [--strict] [--subscription-required
//! [--subscription-key-header NAME] [--subscription-key-query NAME] | --no-subscription-required]`:
//! an Azure API Management policy document as a portcullis configuration on stdout; what has no
//! equivalent is a comment naming its line. The API's subscription settings are not in the
//! document: the flags say them.
//! The output has been read back through the configuration contract: when it does not read
//! (an importer bug), nothing is printed but the error, and the exit status is 1.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::tools::apim::ApiSettings;

pub(super) fn import(file: &Path, strict: bool, api: &ApiSettings) -> anyhow::Result<ExitCode> {
    let names = api.subscription_key_header.is_some() || api.subscription_key_query.is_some();
    if names && api.subscription_required != Some(true) {
        anyhow::bail!("--subscription-key-header and --subscription-key-query need --subscription-required");
    }
    if let Some(header) = &api.subscription_key_header {
        if http::HeaderName::from_bytes(header.trim().as_bytes()).is_err() {
            anyhow::bail!("--subscription-key-header {header:?} is not a header name");
        }
    }
    if api.subscription_key_query.as_deref().is_some_and(|q| q.trim().is_empty()) {
        anyhow::bail!("--subscription-key-query needs a name, like subscription-key");
    }
    let xml = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = match crate::tools::apim::import_with(&xml, &file.display().to_string(), api) {
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
