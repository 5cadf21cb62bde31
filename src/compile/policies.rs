//! `policies:`: each named policy is exactly one kind, compiled by its own file through the
//! shared context.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_saphyr::Spanned;

use crate::compile::raw;
use crate::config::context::{CompileContext, Invalid};
use crate::policy::{Authorize, ClientCert, Cors, HeaderRules, IpFilter, Jwt, NamedPolicy, Policy, RateLimit};

pub(super) fn compile(
    raw: &BTreeMap<String, Spanned<raw::PolicyConfig>>,
    cx: &mut CompileContext,
) -> HashMap<String, Arc<NamedPolicy>> {
    let mut out = HashMap::new();
    for (name, spanned) in raw {
        if let Ok(policy) = one(name, spanned, cx) {
            out.insert(name.clone(), Arc::new(NamedPolicy::new(name, spanned.value.mode, policy)));
        }
    }
    out
}

/// Compiles one policy of exactly one kind.
fn one(name: &str, spanned: &Spanned<raw::PolicyConfig>, cx: &mut CompileContext) -> Result<Policy, Invalid> {
    let p = &spanned.value;
    let path = format!("policies.{name}");
    let kinds = [
        p.headers.is_some(),
        p.cors.is_some(),
        p.ip_filter.is_some(),
        p.jwt.is_some(),
        p.client_cert.is_some(),
        p.authorize.is_some(),
        p.rate_limit.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        cx.error(spanned.referenced, &path, "a policy has exactly one kind").hint(
            "one of headers, cors, ip_filter, jwt, client_cert, authorize, rate_limit; write several policies to combine them",
        );
        return Err(Invalid);
    }
    let mark = cx.mark();
    let (kind, compiled) = if let Some(c) = &p.headers {
        cx.enter(name, format!("{path}.headers"), spanned.referenced);
        ("headers", HeaderRules::compile(c, cx).map(Policy::Headers))
    } else if let Some(c) = &p.cors {
        cx.enter(name, format!("{path}.cors"), spanned.referenced);
        ("cors", Cors::compile(c, cx).map(Policy::Cors))
    } else if let Some(c) = &p.ip_filter {
        cx.enter(name, format!("{path}.ip_filter"), spanned.referenced);
        ("ip_filter", IpFilter::compile(c, cx).map(Policy::IpFilter))
    } else if let Some(c) = &p.jwt {
        cx.enter(name, format!("{path}.jwt"), spanned.referenced);
        let jwt = Jwt::compile(c, cx);
        if jwt.as_ref().is_ok_and(|jwt| !jwt.checks_audience()) {
            cx.warn(
                spanned.referenced,
                format!("{path}.jwt.audiences"),
                "no `audiences`: a token this issuer made for any other API (or an ID token) is accepted here",
            )
            .hint("list this API's audience, like `audiences: [api://config]`");
        }
        ("jwt", jwt.map(Policy::Jwt))
    } else if let Some(c) = &p.client_cert {
        cx.enter(name, format!("{path}.client_cert"), spanned.referenced);
        ("client_cert", ClientCert::compile(c, cx).map(Policy::ClientCert))
    } else if let Some(c) = &p.authorize {
        cx.enter(name, format!("{path}.authorize"), spanned.referenced);
        ("authorize", Authorize::compile(c, cx).map(Policy::Authorize))
    } else if let Some(c) = &p.rate_limit {
        cx.enter(name, format!("{path}.rate_limit"), spanned.referenced);
        ("rate_limit", RateLimit::compile(c, cx).map(Policy::RateLimit))
    } else {
        unreachable!("exactly one kind was checked above")
    };
    cx.hint_since(mark, &format!("see the {kind} section of README.md"));
    compiled
}

/// Every named policy, by name.
pub(super) fn sorted(policies: HashMap<String, Arc<NamedPolicy>>) -> Vec<Arc<NamedPolicy>> {
    let mut out: Vec<_> = policies.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
