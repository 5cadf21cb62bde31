//! `portcullis check`: compile the whole configuration without binding ports, and lint it.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use crate::compile;
use crate::policy::Policy;
use crate::runtime::Runtime;
use crate::store::{KeySlot, SubscriptionScope, SubscriptionState, WEAK_KEY_BITS};

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
            for warning in subscription_warnings(rt) {
                eprintln!("warning: {warning}");
            }
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

/// What `check` says of the store's subscriptions when the configuration checks keys: keys
/// estimated below 128 bits, scopes naming a product or a route the configuration lacks.
/// They are data, not configuration: printed, never errors under `--strict`.
fn subscription_warnings(rt: &Runtime) -> Vec<String> {
    let Some(issuer) = &rt.issuer else { return Vec::new() };
    let products = rt.policies.iter().find_map(|p| match &p.policy {
        Policy::SubscriptionKey(keys) => Some(keys.products().clone()),
        _ => None,
    });
    let Some(products) = products else { return Vec::new() };
    let subscriptions = match crate::store::block_on(issuer.store.subscriptions()) {
        Ok(subscriptions) => subscriptions,
        Err(e) => return vec![format!("cannot read the subscriptions to check them: {e}")],
    };
    let routes: HashSet<&str> = rt.routes.routes.iter().map(|r| &*r.name).collect();
    let mut warnings = Vec::new();
    for s in subscriptions.iter().filter(|s| s.state != SubscriptionState::Cancelled) {
        for slot in [KeySlot::Primary, KeySlot::Secondary] {
            let key = s.key(slot);
            if key.is_weak() {
                warnings.push(format!(
                    "subscription {}: its {slot} key is estimated at {} bits, below {WEAK_KEY_BITS}; once its callers can move, `portcullis subscriptions regenerate {} --{slot}`",
                    s.id, key.bits, s.id
                ));
            }
        }
        let unknown = match &s.scope {
            SubscriptionScope::Product(p) if !products.contains_key(p) => Some("product"),
            SubscriptionScope::Route(r) if !routes.contains(r.as_str()) => Some("route"),
            _ => None,
        };
        if let Some(what) = unknown {
            warnings.push(format!(
                "subscription {}: its scope {} names no {what} of this configuration, so its keys open nothing",
                s.id, s.scope
            ));
        }
    }
    warnings
}
