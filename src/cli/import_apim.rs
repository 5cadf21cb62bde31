//! `portcullis import-apim POLICY.xml [--strict] [--subscription-required
//! [--subscription-key-header NAME] [--subscription-key-query NAME] | --no-subscription-required]`:
//! an Azure API Management policy document as a portcullis configuration on stdout; what has no
//! equivalent is a comment naming its line. The API's subscription settings are not in the
//! document: the flags say them.
//! The output has been read back through the configuration contract: when it does not read
//! (an importer bug), nothing is printed but the error, and the exit status is 1.
//!
//! `portcullis import-apim DIR [--strict]`, DIR an APIOps extract, is a preview: per operation
//! (and product context), its method, URL template, backend and subscription settings and its
//! composed `<policies>` document ([`crate::tools::apim::compose`]); on stderr, what was not read
//! or not composed as written, and the `portcullis secrets set` commands its secret named values
//! need. `--strict` exits 1 when there is any such finding.
//!
//! `portcullis import-apim DIR --out OUTDIR [--strict]` writes the extract as a configuration
//! ([`crate::tools::apim::config`]): `gateway.yaml`, `subscriptions.json`, `secrets.sh` and
//! `REPORT.md`; `--strict` exits 1 when anything is left out, approximated or not routed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::tools::apim::extract::{self, VersioningScheme};
use crate::tools::apim::{compose, ApiSettings};

pub(super) fn import(file: &Path, out: Option<&Path>, strict: bool, api: &ApiSettings) -> anyhow::Result<ExitCode> {
    if file.is_dir() {
        if *api != ApiSettings::default() {
            anyhow::bail!("an extract says each API's subscription settings: drop the --subscription-* flags");
        }
        return match out {
            Some(out) => write(file, out, strict),
            None => preview(file, strict),
        };
    }
    if out.is_some() {
        anyhow::bail!("--out is for an APIOps extract's folder; a policy document's configuration goes to stdout");
    }
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

/// The configuration of the extract in `dir`, and its companions, written into `out`.
fn write(dir: &Path, out: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let ex = extract::read(dir)?;
    let composition = compose::compose(&ex)?;
    let written = match crate::tools::apim::config::write(&ex, &composition, &dir.display().to_string()) {
        Ok(written) => written,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, text) in &written.files {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{}: wrote gateway.yaml, subscriptions.json, secrets.sh and REPORT.md; {} left out, {} finding(s), {} composition(s) not routed (see REPORT.md)",
        out.display(),
        written.left_out,
        written.findings,
        written.not_routed
    );
    Ok(if strict && written.is_partial() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The composed policies of every operation of the extract in `dir`.
fn preview(dir: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let ex = extract::read(dir)?;
    let composition = compose::compose(&ex)?;
    println!(
        "# {}: the composed policies of each operation (a preview: no configuration is written yet)",
        dir.display()
    );
    for op in &composition.operations {
        let mut about = vec![format!("api {}", op.api)];
        about.push(format!("operation {}", op.operation.as_deref().unwrap_or("(no operationId)")));
        about.push(format!("product {}", op.product.as_deref().unwrap_or("(none)")));
        about.push(match (&op.backend_url, &op.backend_id) {
            (Some(url), Some(id)) => format!("backend {url} (backends/{id})"),
            (Some(url), None) => format!("backend {url}"),
            (None, _) => "backend unknown".into(),
        });
        if op.settings.subscription_required == Some(true) {
            let header = op.settings.subscription_key_header.as_deref().unwrap_or("Ocp-Apim-Subscription-Key");
            let query = op.settings.subscription_key_query.as_deref().unwrap_or("subscription-key");
            about.push(format!("subscription key in {header} or ?{query}"));
        } else {
            about.push("no subscription key".into());
        }
        if let Some(version) = &op.version {
            about.push(match &version.scheme {
                VersioningScheme::Segment => format!("version {} in the path", version.value),
                VersioningScheme::Query(name) => format!("version {} in ?{name}", version.value),
                VersioningScheme::Header(name) => format!("version {} in the {name} header", version.value),
            });
        }
        if !op.is_current {
            about.push("not the current revision".into());
        }
        println!("\n## {} {} ({})", op.method, op.template, about.join(", "));
        print!("{}", op.xml);
    }
    let findings: Vec<String> =
        ex.findings.iter().chain(&composition.findings).map(|f| format!("{}/{f}", dir.display())).collect();
    for finding in &findings {
        eprintln!("{finding}");
    }
    for (name, secret) in &composition.secrets {
        let from = match &secret.key_vault {
            Some(id) => format!("the Key Vault secret {id}"),
            None => format!("the secret named value {:?}", secret.named_value),
        };
        eprintln!("portcullis secrets set {name}   # the value of {from}, on standard input");
    }
    Ok(if strict && !findings.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
