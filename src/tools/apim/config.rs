//! A whole APIOps extract as one portcullis configuration (`import-apim DIR --out OUTDIR`):
//! each operation of each API's current revision, composed without a product (what a key
//! scoped to the API or to all APIs runs), becomes a route `<api>.<operation>` matching its
//! method and URL template, with its backend and the translation of its composed document as
//! its chain; each product opens the routes of its APIs. Beside the configuration: the
//! subscriptions for `portcullis subscriptions import` (without their keys, which an extract
//! does not hold), the `portcullis secrets set` commands, and a report of every finding and
//! note with the `file:line` it came from.
//!
//! Not routed yet, and listed as left out: the operations of revisions that are not current,
//! and product compositions whose document differs from the no-product one (the chain a
//! product's key runs).
//!
//! Deterministic: the same extract gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::compose::{ComposedOperation, Composition, Version};
use super::extract::{Extract, VersioningScheme};
use super::out::{self, Entries, Noted};
use super::{identity_placeholder, listener_placeholder, read_back, translate, ImportError};

/// The files of an imported extract, by name, and what they leave out.
#[derive(Debug)]
pub struct Written {
    /// `gateway.yaml`, `subscriptions.json`, `secrets.sh`, `REPORT.md`, in that order.
    pub files: Vec<(&'static str, String)>,
    /// Elements, attributes or expressions left out of the routes' translations.
    pub left_out: usize,
    /// Findings of the extract and the composition.
    pub findings: usize,
    /// Compositions not routed (revisions that are not current, product-specific chains).
    pub not_routed: usize,
}

impl Written {
    /// Whether anything was approximated or left out (`--strict` refuses it).
    pub fn is_partial(&self) -> bool {
        self.left_out > 0 || self.findings > 0 || self.not_routed > 0
    }
}

/// The placeholder URL of a backend an operation's composition does not say.
const PLACEHOLDER_URL: &str = "http://127.0.0.1:8080";

/// A route's translated policy, before it is named.
struct Pending {
    /// The route's index.
    route: usize,
    /// Its name in its document's translation.
    local: String,
    noted: Noted<out::Policy>,
    /// Its YAML, notes included: identical policies are shared.
    key: String,
    in_chain: bool,
}

/// One routed operation.
struct Routed<'c> {
    name: String,
    op: &'c ComposedOperation,
    chain: Vec<String>,
    backend: (String, Option<String>),
    strip_prefix: Option<String>,
    /// Notes, each `file:line: …` when its line is known.
    notes: Vec<String>,
    left_out: usize,
}

/// Writes the configuration and its companions for `ex`, composed as `c`; `source` names the
/// extract in the files' headers.
///
/// # Errors
/// A composed document does not translate, or (an importer bug) the configuration does not
/// read back.
pub fn write(ex: &Extract, c: &Composition, source: &str) -> Result<Written, ImportError> {
    let mut routes: Vec<Routed<'_>> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut client_auth = false;
    let mut names = BTreeSet::new();
    let mut ops: Vec<&ComposedOperation> =
        c.operations.iter().filter(|o| o.is_current && o.product.is_none()).collect();
    ops.sort_by_key(|op| route_order(op));
    for op in ops {
        let name = unique(&mut names, &route_name(op));
        let mut t = translate(&op.xml, &op.settings)?;
        client_auth |= t.client_auth;
        resolved_backend(op, &mut t);
        let mut notes: Vec<String> = t.notes.iter().map(|n| located(op, n)).collect();
        for (local, mut noted) in std::mem::take(&mut t.policies) {
            for note in &mut noted.notes {
                *note = located(op, note);
            }
            let key = serde_saphyr::to_string(&noted).map_err(|e| ImportError::Unreadable(e.to_string()))?;
            let in_chain = t.chain.contains(&local);
            pending.push(Pending { route: routes.len(), local, noted, key, in_chain });
        }
        let url = match &op.backend_url {
            Some(url) => url.clone(),
            None => {
                notes.push(format!(
                    "the backend is not known (an expression or an unknown backend-id): {PLACEHOLDER_URL} is a placeholder"
                ));
                PLACEHOLDER_URL.to_owned()
            }
        };
        let strip_prefix = api_prefix(ex, op);
        routes.push(Routed {
            name,
            op,
            chain: Vec::new(),
            backend: (url, t.backend_timeout.clone()),
            strip_prefix,
            notes,
            left_out: t.left_out,
        });
    }

    // A policy several routes would hold identically (notes included) is written once, named
    // after its kind; any other is `ROUTE.KIND`.
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pending {
        *uses.entry(p.key.clone()).or_default() += 1;
    }
    let mut shared: BTreeMap<String, String> = BTreeMap::new();
    let mut policy_names = BTreeSet::new();
    let mut policies: Vec<(String, Noted<out::Policy>)> = Vec::new();
    for p in pending {
        let route = &mut routes[p.route];
        route.notes.extend(p.noted.notes.iter().map(|n| format!("{}.{}: {n}", route.name, p.local)));
        let name = if uses[&p.key] > 1 {
            match shared.get(&p.key) {
                Some(name) => name.clone(),
                None => {
                    let name = unique(&mut policy_names, &p.local);
                    shared.insert(p.key, name.clone());
                    policies.push((name.clone(), p.noted));
                    name
                }
            }
        } else {
            let name = unique(&mut policy_names, &format!("{}.{}", route.name, p.local));
            policies.push((name.clone(), p.noted));
            name
        };
        if p.in_chain {
            route.chain.push(name);
        }
    }

    // One backend per distinct URL (and timeout), named after its host.
    let distinct: BTreeSet<&(String, Option<String>)> = routes.iter().map(|r| &r.backend).collect();
    let mut backend_names = BTreeSet::new();
    let mut backends: BTreeMap<&(String, Option<String>), String> = BTreeMap::new();
    for key in distinct {
        backends.insert(key, unique(&mut backend_names, &backend_name(&key.0)));
    }

    // A product that opens no route is not written (`check` refuses one): it is reported.
    let mut products = Vec::new();
    let mut empty_products = Vec::new();
    for (id, product) in &ex.products {
        let opened: Vec<String> =
            routes.iter().filter(|r| product.apis.contains(&r.op.api)).map(|r| r.name.clone()).collect();
        if opened.is_empty() {
            empty_products.push(format!("product {id}: none of its APIs has a routed operation; not written"));
            continue;
        }
        products.push((sanitize(id), out::Product { display_name: product.display_name.clone(), routes: opened }));
    }

    let document = out::Document {
        version: 1,
        listeners: vec![listener_placeholder(client_auth)],
        identity: routes.iter().any(|r| r.op.settings.subscription_required == Some(true)).then(identity_placeholder),
        backends: Entries(
            backends
                .iter()
                .map(|((url, timeout), name)| {
                    (name.clone(), out::Backend { urls: vec![url.clone()], timeout: timeout.clone() })
                })
                .collect(),
        ),
        policies: Entries(policies),
        products: Entries(products),
        routes: routes
            .iter()
            .map(|r| out::Route {
                name: r.name.clone(),
                matcher: out::Match { path: Some(r.op.template.clone()), methods: vec![r.op.method.clone()] },
                policies: r.chain.clone(),
                backend: backends[&r.backend].clone(),
                rewrite: r.strip_prefix.clone().map(|strip_prefix| out::Rewrite { strip_prefix }),
            })
            .collect(),
    };

    let mut not_routed = not_routed(c);
    not_routed.extend(empty_products);
    let left_out: usize = routes.iter().map(|r| r.left_out).sum();
    let findings: Vec<String> = ex.findings.iter().chain(&c.findings).map(ToString::to_string).collect();
    let header = vec![
        format!("Imported from the APIOps extract {source} by `portcullis import-apim --out`."),
        format!(
            "{} route(s); {left_out} element(s), attribute(s) or expression(s) left out, {} finding(s), {} composition(s) not routed: see REPORT.md.",
            routes.len(),
            findings.len(),
            not_routed.len()
        ),
        "Review it, then `portcullis check` it; the listener, certificates and identity store are placeholders.".to_owned(),
    ];
    let yaml = out::to_yaml(&header, &document).map_err(|e| ImportError::Unreadable(e.to_string()))?;
    read_back(&yaml).map_err(ImportError::Unreadable)?;

    let report = report(source, &routes, &findings, &not_routed, ex, c, left_out);
    let written = Written {
        files: vec![
            ("gateway.yaml", yaml),
            ("subscriptions.json", subscriptions(ex)),
            ("secrets.sh", secrets(c)),
            ("REPORT.md", report),
        ],
        left_out,
        findings: findings.len(),
        not_routed: not_routed.len(),
    };
    Ok(written)
}

/// The order routes are written in, which is the order they are matched in: a literal segment
/// before a `{param}` at the same position, so `/orders/latest` wins over `/orders/{id}`.
fn route_order(op: &ComposedOperation) -> (Vec<(bool, String)>, String, String, Option<String>) {
    let segments = op.template.split('/').map(|s| (s.starts_with('{'), s.to_owned())).collect();
    (segments, op.method.clone(), op.api.clone(), op.operation.clone())
}

/// `<api>.<operation>`, or `<api>.<method>` without an operationId, in the characters a
/// name keeps readable.
fn route_name(op: &ComposedOperation) -> String {
    let operation = op.operation.clone().unwrap_or_else(|| op.method.to_ascii_lowercase());
    format!("{}.{}", sanitize(&op.api), sanitize(&operation))
}

/// Letters, digits, `-`, `_` and `.` kept; anything else `-`.
fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    if s.is_empty() {
        "unnamed".to_owned()
    } else {
        s
    }
}

/// `name`, or `name-2`, `name-3`… when taken; recorded in `taken`.
fn unique(taken: &mut BTreeSet<String>, name: &str) -> String {
    let mut candidate = name.to_owned();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// A backend's name: its URL's host (`orders.internal.example`).
fn backend_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    sanitize(&host.replace(':', "-"))
}

/// The part of the URL template the API adds (`/orders`, `/catalog/v2`): stripped before
/// forwarding, as APIM forwards the operation's path under the backend's URL.
fn api_prefix(ex: &Extract, op: &ComposedOperation) -> Option<String> {
    let api = ex.apis.get(&op.api)?;
    let mut prefix = String::new();
    let path = api.path.trim_matches('/');
    if !path.is_empty() {
        prefix = format!("/{path}");
    }
    if let Some(Version { scheme: VersioningScheme::Segment, value }) = &op.version {
        let with = format!("{prefix}/{value}");
        if !value.is_empty() && (op.template == with || op.template.starts_with(&format!("{with}/"))) {
            prefix = with;
        }
    }
    (!prefix.is_empty() && (op.template == prefix || op.template.starts_with(&format!("{prefix}/")))).then_some(prefix)
}

/// A `set-backend-service backend-id` the composition resolved (to `backend_url`) is no loss:
/// the translator's notes on it, which count as left out for a document alone, are replaced.
fn resolved_backend(op: &ComposedOperation, t: &mut super::Translation) {
    let (Some(id), Some(url)) = (&op.backend_id, &op.backend_url) else { return };
    let before = t.notes.len();
    t.notes.retain(|n| {
        !n.contains("<set-backend-service backend-id=…> not translated")
            && !n.contains("<set-backend-service> without base-url not translated")
    });
    let dropped = before - t.notes.len();
    if dropped > 0 {
        t.left_out = t.left_out.saturating_sub(dropped);
        t.notes.push(format!("set-backend-service backend-id {id:?}: the backend's URL {url} (backends/{id})"));
    }
}

/// `line N: …` of a composed document as `file:line: …`.
fn located(op: &ComposedOperation, note: &str) -> String {
    let Some((line, text)) = note
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(n, text)| Some((n.parse().ok()?, text)))
    else {
        return note.to_owned();
    };
    match op.origin(line) {
        Some(origin) => format!("{}:{}: {text}", origin.file.display(), origin.source_line),
        None => note.to_owned(),
    }
}

/// The compositions not routed in this phase, each a line saying which and why.
fn not_routed(c: &Composition) -> Vec<String> {
    let mut lines = Vec::new();
    for op in &c.operations {
        let what = format!(
            "{} {} {} ({}{})",
            op.api,
            op.operation.as_deref().unwrap_or("(no operationId)"),
            op.method,
            op.template,
            op.product.as_deref().map(|p| format!(", product {p}")).unwrap_or_default()
        );
        if !op.is_current {
            if op.product.is_none() {
                lines.push(format!("{what}: not the current revision"));
            }
            continue;
        }
        let Some(product) = &op.product else { continue };
        let base = c.operations.iter().find(|o| {
            o.product.is_none()
                && o.api == op.api
                && o.operation == op.operation
                && o.method == op.method
                && o.template == op.template
        });
        if base.is_none_or(|b| b.xml != op.xml) {
            lines.push(format!(
                "{what}: a key of product {product} runs a different chain (the product's policy); the route runs the no-product one"
            ));
        }
    }
    lines
}

/// The subscriptions as `portcullis subscriptions import` reads them, without keys.
fn subscriptions(ex: &Extract) -> String {
    let list: Vec<serde_json::Value> = ex
        .subscriptions
        .values()
        .map(|s| {
            let mut properties = serde_json::Map::new();
            if let Some(name) = &s.display_name {
                properties.insert("displayName".into(), name.clone().into());
            }
            if let Some(scope) = &s.scope {
                properties.insert("scope".into(), scope.clone().into());
            }
            if let Some(state) = &s.state {
                properties.insert("state".into(), state.clone().into());
            }
            serde_json::json!({ "name": s.name, "properties": properties })
        })
        .collect();
    let mut json = serde_json::to_string_pretty(&serde_json::json!({ "value": list })).unwrap_or_default();
    json.push('\n');
    json
}

/// One `portcullis secrets set NAME` line per secret the configuration refers to.
fn secrets(c: &Composition) -> String {
    let mut sh = String::from(
        "#!/bin/sh\n# The secrets the imported configuration refers to as ${secret:NAME}: run each line with the\n# value on standard input. The values are not in an extract and are never written here.\n# The store needs a `secrets:` section (master_key) in gateway.yaml: README, Secrets.\nset -e\n",
    );
    for (name, secret) in &c.secrets {
        let from = match &secret.key_vault {
            Some(id) => format!("the Key Vault secret {id}"),
            None => format!("the secret named value {:?} ({})", secret.named_value, secret.file.display()),
        };
        let _ = writeln!(sh, "# {}\nportcullis secrets --config gateway.yaml set {name}", out::comment_text(&from));
    }
    sh
}

/// `REPORT.md`: a summary, then every finding, every route's notes, what is not routed, and
/// how to finish the subscriptions and secrets.
fn report(
    source: &str,
    routes: &[Routed<'_>],
    findings: &[String],
    not_routed: &[String],
    ex: &Extract,
    c: &Composition,
    left_out: usize,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Import of {source}\n");
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "- {} route(s), {} backend(s) in `gateway.yaml`, {} product(s)",
        routes.len(),
        { routes.iter().map(|r| &r.backend).collect::<BTreeSet<_>>().len() },
        ex.products.len()
    );
    let _ = writeln!(md, "- {left_out} element(s), attribute(s) or expression(s) left out or approximated");
    let _ = writeln!(md, "- {} finding(s) in reading and composing the extract", findings.len());
    let _ = writeln!(md, "- {} composition(s) not routed (revisions, product-specific chains)", not_routed.len());
    let _ = writeln!(
        md,
        "- {} subscription(s) in `subscriptions.json`, {} secret(s) in `secrets.sh`",
        ex.subscriptions.len(),
        c.secrets.len()
    );
    let _ = writeln!(md, "\n## Findings\n");
    if findings.is_empty() {
        md.push_str("None.\n");
    }
    for f in findings {
        let _ = writeln!(md, "- {f}");
    }
    let _ = writeln!(md, "\n## Routes\n");
    for r in routes {
        let _ = writeln!(md, "### `{}`: {} {} → {}\n", r.name, r.op.method, r.op.template, r.backend.0);
        if r.notes.is_empty() {
            md.push_str("Translated in full.\n\n");
        }
        for note in &r.notes {
            let _ = writeln!(md, "- {note}");
        }
        if !r.notes.is_empty() {
            md.push('\n');
        }
    }
    let _ = writeln!(md, "## Not routed (left out)\n");
    if not_routed.is_empty() {
        md.push_str("None.\n");
    }
    for line in not_routed {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(md, "\n## Subscriptions\n");
    md.push_str(
        "An extract holds no keys. For each subscription in `subscriptions.json`, add its keys from the management API's \
`POST …/subscriptions/{name}/listSecrets?api-version=2022-08-01` answer as a sibling `\"listSecrets\": { \"primaryKey\": …, \"secondaryKey\": … }` \
of its `properties`, then run `portcullis subscriptions --config gateway.yaml import subscriptions.json`. \
A subscription scoped to one API opens `route:API`: the routes here are named per operation (`API.OPERATION`), so give it a product instead.\n",
    );
    for s in ex.subscriptions.values() {
        let _ = writeln!(md, "- `{}`: scope {}", s.name, s.scope.as_deref().unwrap_or("(none)"));
    }
    let _ = writeln!(md, "\n## Secrets\n");
    md.push_str("Run `secrets.sh` with each value on standard input (`portcullis secrets set NAME`); the values are not in an extract.\n");
    for (name, secret) in &c.secrets {
        let _ = writeln!(md, "- `{name}`: named value `{}` ({})", secret.named_value, secret.file.display());
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_unique() {
        let mut taken = BTreeSet::new();
        assert_eq!(unique(&mut taken, &sanitize("orders;rev=2")), "orders-rev-2");
        assert_eq!(unique(&mut taken, "a.b"), "a.b");
        assert_eq!(unique(&mut taken, "a.b"), "a.b-2");
        assert_eq!(sanitize(""), "unnamed");
    }

    #[test]
    fn backends_are_named_after_their_host() {
        assert_eq!(backend_name("https://orders.internal.example/api"), "orders.internal.example");
        assert_eq!(backend_name("http://127.0.0.1:8080"), "127.0.0.1-8080");
        assert_eq!(backend_name("https://u:p@h.example"), "h.example");
    }

    #[test]
    fn a_literal_segment_is_routed_before_a_parameter() {
        let op = |template: &str| ComposedOperation {
            api: "a".into(),
            operation: None,
            product: None,
            method: "GET".into(),
            template: template.into(),
            backend_url: None,
            backend_id: None,
            settings: super::super::ApiSettings::default(),
            version: None,
            is_current: true,
            xml: String::new(),
            origins: Vec::new(),
        };
        assert!(route_order(&op("/a/latest")) < route_order(&op("/a/{id}")));
        assert!(route_order(&op("/a/{id}/x")) < route_order(&op("/a/{id}/{y}")));
    }

    #[test]
    fn notes_with_a_line_point_at_their_origin() {
        let op = ComposedOperation {
            api: "a".into(),
            operation: None,
            product: None,
            method: "GET".into(),
            template: "/".into(),
            backend_url: None,
            backend_id: None,
            settings: super::super::ApiSettings::default(),
            version: None,
            is_current: true,
            xml: String::new(),
            origins: vec![super::super::compose::Origin { line: 3, file: "apis/a/policy.xml".into(), source_line: 7 }],
        };
        assert_eq!(located(&op, "line 4: <x> not translated: y"), "apis/a/policy.xml:7: <x> not translated: y");
        assert_eq!(located(&op, "no line"), "no line");
    }
}
