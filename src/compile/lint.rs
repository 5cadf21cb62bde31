//! The semantic lint of `check`: configurations that load but do something an operator
//! rarely means. Each is a warning (an error under `check --strict`) at the place to change,
//! saying why it matters and how to fix it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde_saphyr::Location;

use crate::config::context::CompileContext;
use http::HeaderName;

use crate::compile::raw::{ClientAuthMode, RawConfig};
use crate::policy::rate_limit::KeyList;
use crate::policy::{NamedPolicy, Policy, PolicyMode};
use crate::request::headers::GatewayHeaders;

/// Runs every lint over the file as written and its compiled policies.
pub(super) fn lint(
    raw: &RawConfig,
    policies: &HashMap<String, Arc<NamedPolicy>>,
    owned: &GatewayHeaders,
    cx: &mut CompileContext,
) {
    trusted_proxies(raw, cx);
    policy_settings(raw, cx);
    client_chosen_keys(raw, owned, cx);
    route_chains(raw, policies, cx);
    plain_backends(raw, cx);
}

/// `trusted_proxies` that cover every address let any client pick its own address.
fn trusted_proxies(raw: &RawConfig, cx: &mut CompileContext) {
    for (i, net) in raw.trusted_proxies.iter().enumerate() {
        if net.value.prefix_len() == 0 {
            cx.warn(net.referenced, format!("trusted_proxies[{i}]"), format!("{} trusts every address as a proxy: any client can choose the address ip_filter, rate limits and the logs see (X-Forwarded-For)", net.value))
                .hint("list only your load balancers' addresses, like 10.1.0.0/16");
        }
    }
}

/// Settings of one policy that defeat it or are easy to forget.
fn policy_settings(raw: &RawConfig, cx: &mut CompileContext) {
    for (name, spanned) in &raw.policies {
        let at = spanned.referenced;
        let p = &spanned.value;
        if p.mode == PolicyMode::Report {
            cx.warn(at, format!("policies.{name}.mode"), format!("policy {name:?} is in report mode: its denials are logged and counted, not enforced"))
                .hint("switch it to `mode: enforce` once `portcullis_policy_decisions_total{outcome=~\"report_.*\"}` shows only what it should refuse");
        }
        if let Some(cors) = &p.cors {
            let wildcards: Vec<&str> = cors
                .allowed_origins
                .iter()
                .map(String::as_str)
                .filter(|o| o.starts_with("*.") || o.contains("://*."))
                .collect();
            if cors.allow_credentials && !wildcards.is_empty() {
                cx.warn(at, format!("policies.{name}.cors.allowed_origins"), format!("{wildcards:?} with allow_credentials: any subdomain (one taken over, one a user may publish on) can make credentialed calls on behalf of your users"))
                    .hint("list the exact origins that need credentials, or drop allow_credentials");
            }
        }
        if let Some(filter) = &p.ip_filter {
            let everything = |n: &IpNet| n.prefix_len() == 0;
            if filter.allow.iter().any(everything) || (filter.allow.is_empty() && filter.deny.is_empty()) {
                cx.warn(at, format!("policies.{name}.ip_filter.allow"), format!("ip_filter {name:?} allows every address{}", if filter.deny.is_empty() { "" } else { " not denied" }))
                    .hint("list the networks that may call, like [203.0.113.0/24]; an empty or 0.0.0.0/0 allow list filters nothing");
            }
        }
    }
}

/// A budget keyed only by headers the client writes: every new value is a fresh budget.
/// Headers the gateway sets (forwarded claims, certificate summaries) are not the client's.
fn client_chosen_keys(raw: &RawConfig, owned: &GatewayHeaders, cx: &mut CompileContext) {
    for (name, spanned) in &raw.policies {
        let Some(limit) = &spanned.value.rate_limit else { continue };
        let parts: Vec<&str> = match &limit.key.value {
            KeyList::One(part) => vec![part],
            KeyList::Many(parts) => parts.iter().map(String::as_str).collect(),
        };
        let headers: Vec<&str> = parts.iter().filter_map(|p| p.strip_prefix("header:")).collect();
        let client_written = headers.iter().all(|h| HeaderName::try_from(*h).is_ok_and(|h| !owned.owns(&h)));
        if !headers.is_empty() && client_written && parts.iter().all(|p| p.starts_with("header:") || *p == "route") {
            cx.warn(limit.key.referenced, format!("policies.{name}.rate_limit.key"), format!("rate_limit {name:?} is keyed only by {}, which the client writes: every new value buys a fresh budget", headers.join(", ")))
                .hint("add client_ip or a verified claim to the key, like `key: [client_ip, \"header:X-Api-Key\"]`, or key by a header a jwt policy forwards");
        }
    }
}

/// Chains that refuse what they mean to allow: `client_cert` where no certificate is asked
/// for, a token check before the `cors` policy that answers preflights.
fn route_chains(raw: &RawConfig, policies: &HashMap<String, Arc<NamedPolicy>>, cx: &mut CompileContext) {
    let no_client_auth: Vec<&str> = raw
        .listeners
        .iter()
        .filter_map(|l| {
            let tls = l.value.tls.as_ref()?;
            let asks = tls.client_auth.as_ref().is_some_and(|c| c.mode.value != ClientAuthMode::None);
            (!asks).then_some(l.value.name.as_str())
        })
        .collect();
    for (i, spanned) in raw.routes.iter().enumerate() {
        let route = &spanned.value;
        let chain: Vec<(&Arc<NamedPolicy>, Location, String)> = raw
            .default_policies
            .iter()
            .map(|n| (n, spanned.referenced, "default_policies".to_owned()))
            .chain(
                route.policies.iter().enumerate().map(|(j, n)| (n, n.referenced, format!("routes[{i}].policies[{j}]"))),
            )
            .filter_map(|(name, at, path)| policies.get(&name.value).map(|p| (p, at, path)))
            .collect();
        for (named, at, path) in &chain {
            if matches!(named.policy, Policy::ClientCert(_)) && !no_client_auth.is_empty() {
                cx.warn(*at, path, format!("route {:?} requires a client certificate (policy {:?}), but listener {} does not ask for one (client_auth: none): every request there is refused", route.name, named.name, no_client_auth.join(", ")))
                    .hint("set `tls.client_auth: { mode: optional, trusted_cas: … }` on the listener");
            }
        }
        let Some(cors_at) = chain.iter().position(|(p, ..)| matches!(p.policy, Policy::Cors(_))) else { continue };
        for (named, at, path) in &chain[..cors_at] {
            if matches!(named.policy, Policy::Jwt(_) | Policy::Authorize(_)) {
                cx.warn(*at, path, format!("route {:?}: {} policy {:?} runs before cors policy {:?}: a browser's preflight carries no token, so it is refused before cors can answer it", route.name, named.policy.kind(), named.name, chain[cors_at].0.name))
                    .hint("list the cors policy first on the route");
            }
        }
    }
}

/// `http://` to another host sends requests, tokens and forwarded claims in the clear.
fn plain_backends(raw: &RawConfig, cx: &mut CompileContext) {
    for (name, spanned) in &raw.backends {
        for (i, url) in spanned.value.urls.iter().enumerate() {
            let Ok(uri) = url.value.parse::<http::Uri>() else { continue };
            if uri.scheme_str() != Some("http") {
                continue;
            }
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            let loopback =
                host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                cx.warn(url.referenced, format!("backends.{name}.urls[{i}]"), format!("{} is plain HTTP to another host: requests, tokens and forwarded claims cross the network unencrypted", url.value))
                    .hint("use https:// (with `tls.trusted_cas` for a private CA), or keep plain HTTP to loopback only");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::load_text;

    /// The warnings of a file with one TLS listener (`client_auth` as given) and `rest`, as
    /// `line: path: message`; the file must load.
    fn warnings(client_auth: &str, rest: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        crate::tools::pki::ensure_dev_material(&dir.path().join("certs"), false).unwrap();
        let yaml = format!(
            "version: 1\nlisteners:\n  - name: public\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{{ cert: certs/server.pem, key: certs/server-key.pem }}]\n{client_auth}backends:\n  app: {{ urls: [\"http://127.0.0.1:7071\"] }}\n{rest}"
        );
        let loaded = load_text(&dir.path().join("gateway.yaml"), &yaml).unwrap_or_else(|e| panic!("{e}"));
        for w in &loaded.warnings {
            assert!(w.hint.is_some(), "every warning says how to fix it: {w}");
        }
        loaded.warnings.iter().map(|w| format!("{}: {}: {}", w.line, w.path, w.message)).collect()
    }

    fn one(found: &[String], line: u64, needle: &str) {
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with(&format!("{line}: ")) && found[0].contains(needle), "{needle}: {found:#?}");
    }

    const ASKS: &str = "      client_auth: { mode: optional, trusted_cas: certs/client-ca.pem }\n";

    #[test]
    fn a_clean_file_has_no_warnings() {
        let rest = "policies:\n  c: { cors: { allowed_origins: [https://a.example] } }\n  j: { jwt: { issuers: [https://idp], audiences: [api://a], algorithms: [ES256], keys: [certs/token-signing.pub.pem] } }\nroutes:\n  - { name: r, match: {}, policies: [c, j], backend: app }\n";
        assert_eq!(warnings(ASKS, rest), Vec::<String>::new());
    }

    #[test]
    fn trusted_proxies_that_cover_everything() {
        one(&warnings(ASKS, "trusted_proxies: [10.0.0.0/8, \"::/0\"]\n"), 10, "trusts every address as a proxy");
    }

    #[test]
    fn wildcard_origins_with_credentials() {
        let rest =
            "policies:\n  c: { cors: { allowed_origins: [\"https://*.example.com\"], allow_credentials: true } }\n";
        one(&warnings(ASKS, rest), 11, "with allow_credentials");
    }

    #[test]
    fn an_ip_filter_that_allows_everything() {
        one(&warnings(ASKS, "policies:\n  f: { ip_filter: { allow: [0.0.0.0/0] } }\n"), 11, "allows every address");
        one(&warnings(ASKS, "policies:\n  f: { ip_filter: {} }\n"), 11, "allows every address");
    }

    #[test]
    fn a_client_cert_policy_on_a_listener_that_asks_for_none() {
        let rest = "policies:\n  m: { client_cert: { identities: [{ subject: \"CN=x\" }] } }\nroutes:\n  - { name: r, match: {}, policies: [m], backend: app }\n";
        one(&warnings("", rest), 12, "does not ask for one");
        assert_eq!(warnings(ASKS, rest), Vec::<String>::new());
    }

    #[test]
    fn a_token_check_before_the_cors_policy() {
        let rest = "policies:\n  c: { cors: { allowed_origins: [https://a.example] } }\n  j: { jwt: { issuers: [https://idp], audiences: [api://a], algorithms: [ES256], keys: [certs/token-signing.pub.pem] } }\nroutes:\n  - { name: r, match: {}, policies: [j, c], backend: app }\n";
        one(&warnings(ASKS, rest), 14, "runs before cors policy \"c\"");
    }

    #[test]
    fn plain_http_to_another_host() {
        let rest = "  far: { urls: [\"http://10.2.3.4:80\", \"http://localhost:81\", \"https://10.2.3.4\"] }\n";
        one(&warnings(ASKS, rest), 10, "plain HTTP to another host");
    }

    #[test]
    fn a_budget_keyed_only_by_a_header_the_client_writes() {
        let limit = |key: &str| format!("policies:\n  l: {{ rate_limit: {{ key: {key}, rate: 10/s }} }}\n");
        one(&warnings(ASKS, &limit("\"header:X-Api-Key\"")), 11, "keyed only by X-Api-Key, which the client writes");
        one(&warnings(ASKS, &limit("[\"header:X-A\", route]")), 11, "keyed only by X-A");
        assert_eq!(warnings(ASKS, &limit("[client_ip, \"header:X-Api-Key\"]")), Vec::<String>::new());
        let forwarded = "policies:\n  j: { jwt: { issuers: [https://idp], audiences: [api://a], algorithms: [ES256], keys: [certs/token-signing.pub.pem], forward_claims: { sub: X-User-Id } } }\n  l: { rate_limit: { key: \"header:X-User-Id\", rate: 10/s } }\n";
        assert_eq!(warnings(ASKS, forwarded), Vec::<String>::new(), "a header the gateway sets is not the client's");
    }

    #[test]
    fn a_policy_in_report_mode() {
        one(
            &warnings(ASKS, "policies:\n  f: { mode: report, ip_filter: { allow: [10.0.0.0/8] } }\n"),
            11,
            "is in report mode",
        );
    }

    #[test]
    fn a_certificate_that_expires_soon() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tools::pki::Ca::new("soon CA").unwrap();
        let leaf = ca.issue(&crate::tools::pki::LeafKind::Server(&["localhost"]), 10).unwrap();
        std::fs::write(dir.path().join("soon.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.path().join("soon-key.pem"), &leaf.key_pem).unwrap();
        let yaml = "version: 1\nlisteners:\n  - name: public\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{ cert: soon.pem, key: soon-key.pem }]\n";
        let loaded = load_text(&dir.path().join("gateway.yaml"), yaml).unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        let w = &loaded.warnings[0];
        assert_eq!((w.line, w.path.as_str()), (6, "listeners[0].tls.certificates[0].cert"));
        assert!(w.message.contains("expires in 9 days") || w.message.contains("expires in 10 days"), "{w}");
    }
}
