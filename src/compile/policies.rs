//! `policies:`: each named policy is exactly one kind, compiled by its own file through the
//! shared context (`policy_kinds!` generates the dispatch).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_saphyr::Spanned;

use crate::compile::raw;
use crate::config::context::CompileContext;
use crate::policy::NamedPolicy;

pub(super) fn compile(
    raw: &BTreeMap<String, Spanned<raw::PolicyConfig>>,
    cx: &mut CompileContext,
) -> HashMap<String, Arc<NamedPolicy>> {
    let mut out = HashMap::new();
    for (name, spanned) in raw {
        if let Ok(policy) = spanned.value.compile(name, spanned.referenced, cx) {
            out.insert(name.clone(), Arc::new(NamedPolicy::new(name, spanned.value.mode, policy)));
        }
    }
    out
}

/// Every named policy, by name.
pub(super) fn sorted(policies: HashMap<String, Arc<NamedPolicy>>) -> Vec<Arc<NamedPolicy>> {
    let mut out: Vec<_> = policies.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
