//! `portcullis import-apim`: an Azure API Management policy document turned into a portcullis
//! configuration. What has an equivalent is translated (`cors`, `ip-filter`, `validate-jwt`,
//! `validate-azure-ad-token`, `validate-client-certificate`, `rate-limit-by-key`,
//! `quota-by-key`, `rate-limit`, `quota`, `set-header`, `set-backend-service`) — and, when the
//! API requires a subscription ([`ApiSettings`], not part of a policy document), a
//! `subscription_key` policy first in the chain; every element, attribute and policy
//! expression (`@(...)`, `@{...}`) that has none becomes a YAML comment naming it and its line
//! in the XML, and is counted, so that `--strict` can refuse a partial translation. Named
//! values (`{{name}}`) become `${env:NAME}` where the configuration reads references.
//!
//! The contract: a translation never admits what APIM refused. Where portcullis cannot say
//! exactly what APIM said, it says something stricter and counts the difference as left out
//! (a claim rule whose values were dropped, a counter keyed on an unvalidated subscription key,
//! a header APIM overwrote with an expression is removed instead). The output is built as data
//! ([`out`]), serialized as YAML with the notes as comment lines of their own, and parsed back
//! through the configuration contract before it is returned: what `import` returns is always a
//! configuration `check` can read.
//!
//! A whole instance, as the APIOps extractor writes it, is read by [`extract`] and each
//! operation's effective document (global → product → API → operation through `<base/>`,
//! fragments inlined, named values resolved) composed by [`compose`], for this translation.

mod cidr;
pub mod compose;
pub mod config;
pub mod extract;
mod out;

use std::net::IpAddr;
use std::path::Path;

use roxmltree::{Document, Node};

use self::cidr::{host_net, range_to_cidrs};
use self::out::{Entries, Noted, Policy};

/// The translation of one policy document.
#[derive(Debug)]
pub struct Imported {
    /// The portcullis configuration, with comments.
    pub yaml: String,
    /// How many elements, attributes or expressions were left out.
    pub left_out: usize,
}

/// Why a document cannot be translated.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// The root element is not `<policies>`.
    #[error("line {0}: the root element is <{1}>, not <policies>")]
    NotPolicies(u32, String),
    /// The translation is not a configuration the loader reads: a bug in the importer.
    #[error("the translation does not read back as a configuration (an importer bug, please report it): {0}")]
    Unreadable(String),
}

/// What APIM keeps in the API's definition rather than in its policy document: whether a
/// subscription key is required, and where it is read from. Given by the `import-apim` flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// `subscriptionRequired`: `Some(true)` puts a `subscription_key` policy first in the chain
    /// and counts per-subscription budgets by `subscription`; `None` (not said) and
    /// `Some(false)` check no key.
    pub subscription_required: Option<bool>,
    /// `subscriptionKeyParameterNames.header` (default `Ocp-Apim-Subscription-Key`).
    pub subscription_key_header: Option<String>,
    /// `subscriptionKeyParameterNames.query` (default `subscription-key`).
    pub subscription_key_query: Option<String>,
}

impl ApiSettings {
    fn subscription_required(&self) -> bool {
        self.subscription_required == Some(true)
    }

    /// The header and query names a counter key reads the subscription key from: APIM's
    /// defaults and the API's own, lower-case.
    fn key_names(&self) -> Vec<String> {
        let mut names = vec![SUBSCRIPTION_HEADER.to_owned(), SUBSCRIPTION_QUERY.to_owned()];
        for name in self.subscription_key_header.iter().chain(&self.subscription_key_query) {
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// One translated policy.
struct PolicyOut {
    name: String,
    /// Its content; `None` for a `headers` policy until [`Importer::document`] fills it.
    policy: Option<Policy>,
    /// Comment lines above it.
    notes: Vec<String>,
}

struct Importer<'d, 'i> {
    doc: &'d Document<'i>,
    policies: Vec<PolicyOut>,
    chain: Vec<String>,
    notes: Vec<String>,
    left_out: usize,
    backend: Option<String>,
    /// `forward-request timeout`, in seconds.
    backend_timeout: Option<String>,
    client_auth: bool,
    /// The policy an element is being translated into: its notes go above it.
    building: Option<usize>,
    /// `set-header` edits of the inbound (request) and outbound (response) sides.
    request: HeaderEdits,
    response: HeaderEdits,
    /// The API's settings around the document.
    api: ApiSettings,
}

/// The header edits of one side, gathered into one `headers` policy.
#[derive(Default)]
struct HeaderEdits {
    /// The policy they make, once there is one.
    policy: Option<usize>,
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

/// Translates `xml`, read from `source` (named in the header comment), saying nothing of the
/// API's subscription settings.
///
/// # Errors
/// The document is not XML or not a policy document; or (a bug) the translation does not read
/// back as a configuration.
pub fn import(xml: &str, source: &str) -> Result<Imported, ImportError> {
    import_with(xml, source, &ApiSettings::default())
}

/// Translates `xml`, read from `source`, for an API with the settings `api`.
///
/// # Errors
/// As [`import`].
pub fn import_with(xml: &str, source: &str, api: &ApiSettings) -> Result<Imported, ImportError> {
    let mut translation = translate(xml, api)?;
    let yaml = render(&mut translation, api, source)?;
    Ok(Imported { yaml, left_out: translation.left_out })
}

/// One document's translation as data, to be written alone ([`import_with`]) or merged into a
/// configuration of many routes ([`config`]).
struct Translation {
    /// The policies, by name (unique within the document), with their notes.
    policies: Vec<(String, Noted<Policy>)>,
    /// The route's chain, by policy name.
    chain: Vec<String>,
    /// Notes on the document as a whole, each `line N: …` when it has a line.
    notes: Vec<String>,
    /// How many elements, attributes or expressions were left out.
    left_out: usize,
    /// The `set-backend-service base-url`, when literal.
    backend: Option<String>,
    /// `forward-request timeout`, as a duration.
    backend_timeout: Option<String>,
    /// Whether a client certificate is asked for.
    client_auth: bool,
}

/// Translates `xml` for an API with the settings `api`, as data.
///
/// # Errors
/// The document is not XML or not a policy document.
fn translate(xml: &str, api: &ApiSettings) -> Result<Translation, ImportError> {
    let doc = Document::parse(xml)?;
    let root = doc.root_element();
    let mut im = Importer {
        doc: &doc,
        policies: Vec::new(),
        chain: Vec::new(),
        notes: Vec::new(),
        left_out: 0,
        backend: None,
        backend_timeout: None,
        client_auth: false,
        building: None,
        request: HeaderEdits::default(),
        response: HeaderEdits::default(),
        api: api.clone(),
    };
    if root.tag_name().name() != "policies" {
        return Err(ImportError::NotPolicies(im.line(root), root.tag_name().name().to_owned()));
    }
    im.subscription_key();
    for section in root.children().filter(Node::is_element) {
        im.building = None;
        match section.tag_name().name() {
            "inbound" => im.section(section, Side::Inbound),
            "backend" => im.section(section, Side::Backend),
            "outbound" => im.section(section, Side::Outbound),
            "on-error" => im.on_error(section),
            other => im.leave(section, &format!("<{other}>"), "not a policy section"),
        }
    }
    Ok(im.finish())
}

/// Reads `yaml` back through the configuration contract (every key known, every value of its
/// type), as `check` does before it compiles.
///
/// # Errors
/// What the loader says, one line per error.
pub fn read_back(yaml: &str) -> Result<(), String> {
    crate::compile::parse_text(Path::new("imported.yaml"), yaml).map(drop).map_err(|errors| errors.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Inbound,
    Backend,
    Outbound,
}

impl Importer<'_, '_> {
    fn line(&self, node: Node<'_, '_>) -> u32 {
        self.doc.text_pos_at(node.range().start).row
    }

    /// Records something left out, as a note on the policy being built (or the file).
    fn leave(&mut self, node: Node<'_, '_>, what: &str, why: &str) {
        self.left_out += 1;
        let note = format!("line {}: {what} not translated: {why}", self.line(node));
        self.push_note(note);
    }

    /// A note that is no loss (how a construct maps), on the file.
    fn note(&mut self, node: Node<'_, '_>, text: &str) {
        self.notes.push(format!("line {}: {text}", self.line(node)));
    }

    /// A note that is no loss, on the policy being built (or the file).
    fn note_here(&mut self, node: Node<'_, '_>, text: &str) {
        let note = format!("line {}: {text}", self.line(node));
        self.push_note(note);
    }

    fn push_note(&mut self, note: String) {
        match self.building {
            Some(i) => self.policies[i].notes.push(note),
            None => self.notes.push(note),
        }
    }

    fn section(&mut self, section: Node<'_, '_>, side: Side) {
        for el in section.children().filter(Node::is_element) {
            self.building = None;
            let name = el.tag_name().name();
            match (name, side) {
                ("base", _) => self.note(el, "<base/>: in APIM the enclosing scope's policies (all APIs, product) run here; add their portcullis policies to the route, or to default_policies"),
                ("forward-request", Side::Backend) => {
                    self.unknown_attributes(el, &["timeout", "follow-redirects", "buffer-request-body", "buffer-response", "fail-on-error-status-code", "http-version"]);
                    if let Some(t) = el.attribute("timeout") {
                        match t.trim().parse::<u64>() {
                            Ok(t) if t > 0 => self.backend_timeout = Some(format!("{t}s")),
                            _ => self.leave(el, &format!("<forward-request timeout={t:?}>"), "give the timeout in whole seconds"),
                        }
                    }
                    for attr in ["follow-redirects", "buffer-request-body", "buffer-response", "fail-on-error-status-code", "http-version"] {
                        if let Some(v) = el.attribute(attr) {
                            self.leave(el, &format!("<forward-request {attr}={v:?}>"), "portcullis streams bodies and passes redirects and errors through");
                        }
                    }
                    self.unknown_children(el, &[]);
                }
                ("set-backend-service", _) => self.backend_service(el),
                ("set-header", Side::Inbound | Side::Backend) => self.set_header(el, true),
                ("set-header", Side::Outbound) => self.set_header(el, false),
                ("cors", Side::Inbound) => self.cors(el),
                ("ip-filter", Side::Inbound) => self.ip_filter(el),
                ("validate-jwt", Side::Inbound) => self.validate_jwt(el),
                ("validate-azure-ad-token", Side::Inbound) => self.validate_azure_ad_token(el),
                ("validate-client-certificate", Side::Inbound) => self.client_certificate(el),
                ("rate-limit-by-key", Side::Inbound) => self.rate_limit(el, false, true),
                ("quota-by-key", Side::Inbound) => self.rate_limit(el, true, true),
                ("rate-limit", Side::Inbound) => self.rate_limit(el, false, false),
                ("quota", Side::Inbound) => self.rate_limit(el, true, false),
                ("check-header", _) => self.leave(el, "<check-header>", "portcullis has no header check; a jwt policy (token_from: header:NAME) or client_cert covers the usual uses"),
                ("mock-response", _) => self.leave(el, "<mock-response>", "portcullis has no mock answers; a backend `builtin: echo` answers with what it received"),
                (other, _) => self.leave(el, &format!("<{other}>"), "no portcullis equivalent in this section"),
            }
        }
    }

    fn on_error(&mut self, section: Node<'_, '_>) {
        for el in section.children().filter(Node::is_element) {
            match el.tag_name().name() {
                "base" => {}
                other => self.leave(
                    el,
                    &format!("<on-error><{other}>"),
                    "portcullis answers its own errors as RFC 9457 problems",
                ),
            }
        }
    }

    /// Starts a policy called `name` (made unique); its content is set by the caller.
    fn start(&mut self, name: &str, in_chain: bool) -> usize {
        let mut unique = name.to_owned();
        let mut n = 2;
        while self.policies.iter().any(|p| p.name == unique) {
            unique = format!("{name}-{n}");
            n += 1;
        }
        if in_chain {
            self.chain.push(unique.clone());
        }
        self.policies.push(PolicyOut { name: unique, policy: None, notes: Vec::new() });
        self.building = Some(self.policies.len() - 1);
        self.policies.len() - 1
    }

    /// Leaves out every attribute not in `known`.
    fn unknown_attributes(&mut self, el: Node<'_, '_>, known: &[&str]) {
        for attr in el.attributes() {
            if !known.contains(&attr.name()) {
                self.leave(el, &format!("<{} {}=…>", el.tag_name().name(), attr.name()), "no portcullis equivalent");
            }
        }
    }

    /// Leaves out every child element not in `known`: a condition this importer does not read
    /// is never dropped silently.
    fn unknown_children(&mut self, el: Node<'_, '_>, known: &[&str]) {
        for child in el.children().filter(Node::is_element) {
            let name = child.tag_name().name();
            if !known.contains(&name) {
                self.leave(child, &format!("<{}><{name}>", el.tag_name().name()), "no portcullis equivalent");
            }
        }
    }

    /// A literal value: expressions and named values are left out (`None`).
    fn literal(&mut self, node: Node<'_, '_>, what: &str, value: &str) -> Option<String> {
        let value = value.trim();
        if is_expression(value) {
            self.leave(node, &format!("{what} {value:?}"), "a policy expression (C#) has no portcullis equivalent");
            return None;
        }
        if value.contains("{{") {
            self.leave(
                node,
                &format!("{what} {value:?}"),
                "a named value can only stand where the configuration reads ${env:…} (header values, secrets)",
            );
            return None;
        }
        Some(value.to_owned())
    }

    /// A whole number of seconds, or left out.
    fn seconds(&mut self, node: Node<'_, '_>, what: &str, value: &str) -> Option<String> {
        match value.trim().parse::<u64>() {
            Ok(s) => Some(format!("{s}s")),
            Err(_) => {
                self.leave(node, &format!("{what}={value:?}"), "give a whole number of seconds");
                None
            }
        }
    }

    /// The texts of the `tag` children of `parent`'s `list` children, literals only.
    fn list(&mut self, parent: Node<'_, '_>, list: &str, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        for container in parent.children().filter(|n| n.has_tag_name(list)) {
            for item in container.children().filter(Node::is_element) {
                if !item.has_tag_name(tag) {
                    self.leave(item, &format!("<{list}><{}>", item.tag_name().name()), "no portcullis equivalent");
                    continue;
                }
                if let Some(v) = self.literal(item, &format!("<{tag}>"), item.text().unwrap_or_default()) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// APIM checks the subscription key before it runs the API's policies: when the API
    /// requires one, a `subscription_key` policy first in the chain, and the `identity` section
    /// whose store holds the keys (see [`Self::document`]).
    fn subscription_key(&mut self) {
        if !self.api.subscription_required() {
            if self.api.subscription_required.is_none() {
                self.notes.push("the API's subscriptionRequired is not in a policy document: no subscription key is checked; if APIM required one (its default), re-run with --subscription-required (and --subscription-key-header / --subscription-key-query for custom names)".to_owned());
            }
            return;
        }
        let i = self.start("subscription-key", true);
        let header = self.api.subscription_key_header.as_deref().map(str::trim).filter(|h| !h.is_empty());
        let query = self.api.subscription_key_query.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let names = format!(
            "{} header or the {} query parameter",
            header.unwrap_or("Ocp-Apim-Subscription-Key"),
            query.unwrap_or(SUBSCRIPTION_QUERY)
        );
        self.policies[i].notes.extend([
            format!("subscriptionRequired (--subscription-required): translated as subscription_key, first in the chain as APIM checks the key before any policy; the key is read from the {names}, and removed before forwarding"),
            "the keys are the subscriptions in identity.store: `portcullis subscriptions --config THIS.yaml import FILE` keeps the keys APIM's callers hold; a subscription scoped to this API opens route:NAME (name the route like the API), one scoped to a product needs `products: { P: { routes: [api] } }`".to_owned(),
        ]);
        self.policies[i].policy = Some(Policy::subscription_key(out::SubscriptionKey {
            header: header.map(str::to_owned),
            query: query.map(str::to_owned),
        }));
        self.building = None;
    }

    fn cors(&mut self, el: Node<'_, '_>) {
        let i = self.start("cors", true);
        self.unknown_attributes(el, &["allow-credentials", "terminate-unmatched-request"]);
        self.unknown_children(el, &["allowed-origins", "allowed-methods", "allowed-headers", "expose-headers"]);
        let origins = self.list(el, "allowed-origins", "origin");
        let mut methods = self.list(el, "allowed-methods", "method");
        let headers = self.list(el, "allowed-headers", "header");
        let expose = self.list(el, "expose-headers", "header");
        let max_age = el
            .children()
            .find(|n| n.has_tag_name("allowed-methods"))
            .and_then(|m| m.attribute("preflight-result-max-age"))
            .and_then(|age| self.seconds(el, "preflight-result-max-age", age));
        if methods.iter().any(|m| m == "*") {
            self.note_here(
                el,
                "<method>*</method>: APIM's `*` is written as the usual methods; add any other your API takes",
            );
            methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec();
        }
        let allowed_headers = if headers.iter().any(|h| h == "*") {
            self.leave(el, "<allowed-headers><header>*</header>", "list the request headers a preflight may ask for");
            Vec::new()
        } else {
            headers
        };
        // APIM refuses unmatched preflights and passes other requests; terminate-unmatched-request
        // defaults to true there.
        let terminate = el.attribute("terminate-unmatched-request") != Some("false");
        self.policies[i].policy = Some(Policy::cors(out::Cors {
            allowed_origins: origins,
            allowed_methods: methods,
            allowed_headers,
            expose_headers: expose,
            allow_credentials: el.attribute("allow-credentials") == Some("true"),
            max_age,
            terminate_unmatched: terminate,
        }));
    }

    fn ip_filter(&mut self, el: Node<'_, '_>) {
        let i = self.start("ip-filter", true);
        self.unknown_attributes(el, &["action"]);
        let mut nets = Vec::new();
        for child in el.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "address" => match child.text().unwrap_or_default().trim().parse::<IpAddr>() {
                    Ok(ip) => nets.push(host_net(ip)),
                    Err(_) => self.leave(child, "<address>", "not an IP address"),
                },
                "address-range" => {
                    let from = child.attribute("from").and_then(|a| a.trim().parse::<IpAddr>().ok());
                    let to = child.attribute("to").and_then(|a| a.trim().parse::<IpAddr>().ok());
                    match (from, to) {
                        (Some(from), Some(to)) => match range_to_cidrs(from, to) {
                            Some(cidrs) => nets.extend(cidrs),
                            None => self.leave(child, "<address-range>", "from and to must be one family, from ≤ to"),
                        },
                        _ => self.leave(child, "<address-range>", "from and to must be IP addresses"),
                    }
                }
                other => self.leave(child, &format!("<ip-filter><{other}>"), "no portcullis equivalent"),
            }
        }
        let filter = match el.attribute("action") {
            Some("allow") => out::IpFilter { allow: Some(nets), deny: None },
            Some("forbid") => out::IpFilter { allow: None, deny: Some(nets) },
            // Neither list is safe to guess: an allow list of forbidden addresses would admit
            // them. Nothing is admitted until the operator says which it is.
            other => {
                self.leave(
                    el,
                    &format!("<ip-filter action={other:?}>"),
                    "APIM's action is allow or forbid; nothing is admitted until it is given",
                );
                out::IpFilter { allow: Some(Vec::new()), deny: None }
            }
        };
        self.policies[i].policy = Some(Policy::ip_filter(filter));
    }

    /// `validate-jwt` and `validate-azure-ad-token` share the token source and claim rules.
    fn token_source(&mut self, el: Node<'_, '_>, jwt: &mut out::Jwt) {
        let header = el.attribute("header-name").filter(|h| !h.trim().eq_ignore_ascii_case("authorization"));
        let query = el.attribute("query-parameter-name");
        match (header, query) {
            (Some(header), None) => jwt.token_from = Some(format!("header:{}", header.trim())),
            (None, Some(query)) => jwt.token_from = Some(format!("query:{}", query.trim())),
            (Some(_), Some(_)) => self.leave(
                el,
                "header-name and query-parameter-name together",
                "APIM takes one token source; give one of them",
            ),
            (None, None) => {}
        }
        if let Some(value) = el.attribute("token-value") {
            self.leave(
                el,
                &format!("token-value={value:?}"),
                "a policy expression; use header-name or query-parameter-name",
            );
        }
        if let Some(code) = el.attribute("failed-validation-httpcode").filter(|c| c.trim() != "401") {
            self.leave(
                el,
                &format!("failed-validation-httpcode=\"{code}\""),
                "portcullis answers 401 (403 for unmet claims) with WWW-Authenticate",
            );
        }
        if el.attribute("failed-validation-error-message").is_some() {
            self.note(el, "failed-validation-error-message: portcullis answers with an RFC 9457 problem of its own");
        }
        if let Some(name) = el.attribute("output-token-variable-name") {
            self.leave(
                el,
                &format!("output-token-variable-name=\"{name}\""),
                "portcullis has no variables; forward_claims sends claims to the backend as headers",
            );
        }
    }

    /// `<required-claims>`: each claim a rule. APIM's `match` defaults to `all`.
    fn required_claims(&mut self, el: Node<'_, '_>, jwt: &mut out::Jwt) {
        for claims in el.children().filter(|n| n.has_tag_name("required-claims")) {
            for claim in claims.children().filter(Node::is_element) {
                if !claim.has_tag_name("claim") {
                    self.leave(
                        claim,
                        &format!("<required-claims><{}>", claim.tag_name().name()),
                        "no portcullis equivalent",
                    );
                    continue;
                }
                self.unknown_attributes(claim, &["name", "match", "separator"]);
                let Some(name) = claim.attribute("name").map(str::trim) else {
                    self.leave(claim, "<claim> without name", "name the claim");
                    continue;
                };
                let all = match claim.attribute("match").map(str::trim) {
                    None | Some("all") => true,
                    Some("any") => false,
                    Some(other) => {
                        // All of them is the stricter reading.
                        self.leave(
                            claim,
                            &format!("<claim name={name:?} match={other:?}>"),
                            "APIM's match is all or any; all of the values are required",
                        );
                        true
                    }
                };
                let mut values = Vec::new();
                for child in claim.children().filter(Node::is_element) {
                    if !child.has_tag_name("value") {
                        self.leave(child, &format!("<claim><{}>", child.tag_name().name()), "no portcullis equivalent");
                        continue;
                    }
                    // A value left out narrows `any`, and is counted when it widens `all`.
                    if let Some(v) = self.literal(child, "<value>", child.text().unwrap_or_default()) {
                        values.push(v);
                    }
                }
                if values.is_empty() {
                    self.leave(
                        claim,
                        &format!("<claim name={name:?}> without literal values"),
                        "portcullis requires claims to hold given values",
                    );
                    continue;
                }
                let separator = claim.attribute("separator").filter(|s| !s.is_empty()).map(str::to_owned);
                if jwt.require_claims.contains(name) {
                    self.leave(claim, &format!("a second <claim name={name:?}>"), "one rule per claim; merge the two");
                    continue;
                }
                let rule = if all {
                    out::ClaimRule { any_of: None, all_of: Some(values), separator }
                } else {
                    out::ClaimRule { any_of: Some(values), all_of: None, separator }
                };
                jwt.require_claims.0.push((name.to_owned(), rule));
            }
        }
    }

    fn validate_jwt(&mut self, el: Node<'_, '_>) {
        let i = self.start("jwt", true);
        self.unknown_attributes(
            el,
            &[
                "header-name",
                "query-parameter-name",
                "token-value",
                "failed-validation-httpcode",
                "failed-validation-error-message",
                "require-expiration-time",
                "require-scheme",
                "require-signed-tokens",
                "clock-skew",
                "output-token-variable-name",
            ],
        );
        self.unknown_children(
            el,
            &["openid-config", "issuer-signing-keys", "decryption-keys", "audiences", "issuers", "required-claims"],
        );
        let mut jwt = out::Jwt { issuers: self.list(el, "issuers", "issuer"), ..out::Jwt::default() };
        jwt.audiences = self.list(el, "audiences", "audience");
        let openid: Vec<Node<'_, '_>> = el.children().filter(|n| n.has_tag_name("openid-config")).collect();
        let keys: Vec<Node<'_, '_>> = el
            .children()
            .filter(|n| n.has_tag_name("issuer-signing-keys"))
            .flat_map(|k| k.children().filter(|n| n.has_tag_name("key")))
            .collect();
        if let Some(config) = openid.first() {
            if let Some(url) = config.attribute("url").and_then(|u| self.literal(*config, "<openid-config url>", u)) {
                jwt.openid_config = Some(url);
                jwt.algorithms = vec!["RS256".into()];
                self.note_here(
                    *config,
                    "algorithms: RS256 is what Entra ID and most providers sign with; adjust to yours",
                );
            }
            for extra in &openid[1..] {
                self.leave(*extra, "a second <openid-config>", "write a jwt policy with `providers`, one per provider");
            }
        } else if let Some(key) = keys.first() {
            if key.attributes().len() == 0 {
                jwt.algorithms = vec!["HS256".into()];
                jwt.secret = Some("${env:JWT_SECRET}".into());
                self.note_here(
                    *key,
                    "<issuer-signing-keys><key>: a symmetric key; set JWT_SECRET to it (base64-decoded, at least 32 bytes), never inline",
                );
            } else {
                self.leave(
                    *key,
                    "<key certificate-id|n|e>",
                    "give the issuer's public key as `keys: [file.pem]` or its jwks_url",
                );
            }
        } else {
            self.leave(
                el,
                "<validate-jwt> without openid-config or issuer-signing-keys",
                "give the policy a key source (openid_config, jwks_url, keys or secret)",
            );
        }
        for extra in keys.iter().skip(usize::from(openid.is_empty())) {
            self.leave(*extra, "<issuer-signing-keys><key>", "one key source per provider");
        }
        if el.children().any(|n| n.has_tag_name("decryption-keys")) {
            self.leave(el, "<decryption-keys>", "portcullis does not decrypt tokens (JWE)");
        }
        if let Some(skew) = el.attribute("clock-skew") {
            jwt.clock_skew = self.seconds(el, "clock-skew", skew);
        }
        if el.attribute("require-expiration-time") == Some("false") {
            self.leave(el, "require-expiration-time=\"false\"", "portcullis always requires exp");
        }
        if el.attribute("require-signed-tokens") == Some("false") {
            self.leave(el, "require-signed-tokens=\"false\"", "portcullis never accepts unsigned tokens");
        }
        self.token_source(el, &mut jwt);
        self.required_claims(el, &mut jwt);
        self.policies[i].policy = Some(Policy::jwt(jwt));
    }

    fn validate_azure_ad_token(&mut self, el: Node<'_, '_>) {
        let i = self.start("entra-jwt", true);
        self.unknown_attributes(
            el,
            &[
                "tenant-id",
                "header-name",
                "query-parameter-name",
                "token-value",
                "failed-validation-httpcode",
                "failed-validation-error-message",
                "output-token-variable-name",
            ],
        );
        self.unknown_children(
            el,
            &["audiences", "backend-application-ids", "client-application-ids", "required-claims"],
        );
        let mut jwt = out::Jwt::default();
        match el.attribute("tenant-id").and_then(|t| self.literal(el, "tenant-id", t)) {
            Some(tenant) => {
                jwt.issuers = vec![
                    format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                    format!("https://sts.windows.net/{tenant}/"),
                ];
                jwt.openid_config =
                    Some(format!("https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"));
                jwt.algorithms = vec!["RS256".into()];
            }
            None if el.attribute("tenant-id").is_none() => {
                self.leave(el, "<validate-azure-ad-token> without tenant-id", "name the tenant");
            }
            None => {}
        }
        let mut audiences = self.list(el, "audiences", "audience");
        for app in self.list(el, "backend-application-ids", "application-id") {
            audiences.push(format!("api://{app}"));
            audiences.push(app);
        }
        jwt.audiences = audiences;
        let clients = self.list(el, "client-application-ids", "application-id");
        self.token_source(el, &mut jwt);
        self.required_claims(el, &mut jwt);
        if !clients.is_empty() {
            // v2.0 tokens name the calling application in `azp` (v1.0: `appid`).
            if jwt.require_claims.contains("azp") {
                self.leave(
                    el,
                    "<client-application-ids> beside a <claim name=\"azp\">",
                    "one rule per claim; merge the application ids into the azp claim",
                );
            } else {
                let rule = out::ClaimRule { any_of: Some(clients), all_of: None, separator: None };
                jwt.require_claims.0.insert(0, ("azp".to_owned(), rule));
            }
        }
        self.policies[i].policy = Some(Policy::jwt(jwt));
    }

    fn client_certificate(&mut self, el: Node<'_, '_>) {
        let i = self.start("client-cert", true);
        self.client_auth = true;
        self.unknown_attributes(
            el,
            &["validate-revocation", "validate-trust", "validate-not-before", "validate-not-after", "ignore-error"],
        );
        self.unknown_children(el, &["identities"]);
        if el.attribute("ignore-error") == Some("true") {
            self.leave(el, "ignore-error=\"true\"", "portcullis refuses a request whose certificate fails");
        }
        self.note(el, "validate-client-certificate: the listener verifies trust, dates and revocation at the handshake (tls.client_auth: trusted_cas, crls)");
        let mut identities = Vec::new();
        for container in el.children().filter(|n| n.has_tag_name("identities")) {
            for identity in container.children().filter(Node::is_element) {
                if !identity.has_tag_name("identity") {
                    self.leave(
                        identity,
                        &format!("<identities><{}>", identity.tag_name().name()),
                        "no portcullis equivalent",
                    );
                    continue;
                }
                if let Some(id) = self.identity(identity) {
                    identities.push(id);
                }
            }
        }
        if identities.is_empty() {
            self.leave(
                el,
                "<validate-client-certificate> identities",
                "none could be translated; list the identities to admit",
            );
            identities.push(out::Identity { subject: Some("CN=replace-me".into()), ..out::Identity::default() });
        }
        self.policies[i].policy = Some(Policy::client_cert(out::ClientCert { identities }));
    }

    /// One `<identity>`: every attribute must match. One whose condition cannot be kept is
    /// dropped whole (fewer identities admit fewer certificates), never admitted with it missing.
    fn identity(&mut self, identity: Node<'_, '_>) -> Option<out::Identity> {
        let mut id = out::Identity::default();
        let mut complete = true;
        for attr in identity.attributes() {
            let value = attr.value().trim();
            match attr.name() {
                "subject" if id.subject.is_none() => id.subject = Some(value.to_owned()),
                "issuer-subject" => id.issuer = Some(value.to_owned()),
                "serial-number" => id.serial = Some(value.to_ascii_uppercase()),
                "dns-name" => id.dns_name = Some(value.to_owned()),
                "common-name" if id.subject.is_none() => {
                    let subject = format!("CN={}", crate::tls::dn::escape_value(value));
                    self.note_here(identity, &format!("common-name={value:?}: APIM matched the common name only; portcullis matches the whole subject \"{subject}\": complete it"));
                    id.subject = Some(subject);
                }
                "subject" | "common-name" => {
                    self.leave(
                        identity,
                        &format!("<identity> with both subject and common-name ({}={value:?})", attr.name()),
                        "portcullis matches one subject; the identity is dropped",
                    );
                    complete = false;
                }
                "thumbprint" => {
                    self.leave(
                        identity,
                        &format!("thumbprint={value:?}"),
                        "APIM thumbprints are SHA-1; portcullis matches thumbprint_sha256; the identity is dropped",
                    );
                    complete = false;
                }
                other => {
                    self.leave(
                        identity,
                        &format!("<identity {other}=…>"),
                        "no portcullis equivalent; the identity is dropped",
                    );
                    complete = false;
                }
            }
        }
        for name in id.subject.iter().chain(&id.issuer) {
            if let Err(e) = crate::tls::dn::Dn::parse(name) {
                self.leave(identity, &format!("the name {name:?}"), &format!("{e}; the identity is dropped"));
                complete = false;
            }
        }
        (complete && !id.is_empty()).then_some(id)
    }

    /// `rate-limit-by-key` / `quota-by-key` (`by_key`), or APIM's plain `rate-limit` / `quota`,
    /// which count per subscription.
    fn rate_limit(&mut self, el: Node<'_, '_>, quota: bool, by_key: bool) {
        let i = self.start(if quota { "quota" } else { "rate-limit" }, true);
        self.rate_limit_attributes(el, quota, by_key);
        let key = self.rate_limit_key(el, by_key);
        let calls: Option<u32> = el.attribute("calls").and_then(|c| c.trim().parse().ok()).filter(|c| *c > 0);
        let period: Option<u64> = el.attribute("renewal-period").and_then(|p| p.trim().parse().ok()).filter(|p| *p > 0);
        let mut limit = out::RateLimit { key, rate: None, burst: None, quota: None };
        match (calls, period, quota) {
            (Some(calls), Some(period), false) => self.sliding_window(el, calls, period, &mut limit),
            (Some(calls), Some(period), true) => match period {
                3600 => limit.quota = Some(format!("{calls}/hour")),
                86_400 => limit.quota = Some(format!("{calls}/day")),
                p if (2_419_200..=2_678_400).contains(&p) => limit.quota = Some(format!("{calls}/month")),
                other => {
                    self.leave(el, &format!("renewal-period=\"{other}\""), "quotas renew per UTC hour, day or month")
                }
            },
            _ => self.leave(el, "calls / renewal-period", "give both as whole numbers above zero"),
        }
        if limit.rate.is_none() && limit.quota.is_none() {
            // What APIM allowed is unknown: one request an hour until the operator says.
            self.note_here(el, "a placeholder budget of one call an hour: write the real one");
            limit.rate = Some("1/h".into());
            limit.burst = Some(1);
        }
        self.policies[i].policy = Some(Policy::rate_limit(limit));
    }

    /// Flags the attributes of `<rate-limit>` / `<quota>` (and their `-by-key` forms) that
    /// portcullis does not read.
    fn rate_limit_attributes(&mut self, el: Node<'_, '_>, quota: bool, by_key: bool) {
        let known: &[&str] = if quota {
            &[
                "calls",
                "renewal-period",
                "counter-key",
                "increment-condition",
                "increment-count",
                "bandwidth",
                "first-period-start",
            ]
        } else {
            &[
                "calls",
                "renewal-period",
                "counter-key",
                "increment-condition",
                "increment-count",
                "retry-after-header-name",
                "retry-after-variable-name",
                "remaining-calls-header-name",
                "remaining-calls-variable-name",
                "total-calls-header-name",
            ]
        };
        // The plain forms have no counter key, condition nor count of their own.
        let plain_lacks = ["counter-key", "increment-condition", "increment-count", "first-period-start"];
        let known: Vec<&str> = known.iter().copied().filter(|a| by_key || !plain_lacks.contains(a)).collect();
        self.unknown_attributes(el, &known);
        self.unknown_children(el, &[]);
        for attr in [
            "increment-condition",
            "increment-count",
            "bandwidth",
            "first-period-start",
            "retry-after-variable-name",
            "remaining-calls-variable-name",
        ] {
            if let Some(v) = el.attribute(attr).filter(|_| known.contains(&attr)) {
                self.leave(el, &format!("{attr}={v:?}"), "no portcullis equivalent: every request counts one");
            }
        }
        if ["retry-after-header-name", "remaining-calls-header-name", "total-calls-header-name"]
            .iter()
            .any(|a| el.attribute(*a).is_some())
        {
            self.note(el, "the *-header-name attributes: portcullis sends Retry-After and the IETF RateLimit / RateLimit-Policy fields");
        }
    }

    /// The key a `counter-key` translates to (the subscription for the plain forms); the
    /// client address when it does not.
    fn rate_limit_key(&mut self, el: Node<'_, '_>, by_key: bool) -> String {
        let expr = el.attribute("counter-key").unwrap_or_default();
        let key = match by_key {
            true => el.attribute("counter-key").map(|expr| counter_key(expr, &self.api.key_names())),
            false => Some(CounterKey::Subscription),
        };
        let what = match by_key {
            true => format!("counter-key={expr:?}"),
            false => format!("<{}> (per subscription in APIM)", el.tag_name().name()),
        };
        match key {
            Some(CounterKey::Key(key)) => key,
            Some(CounterKey::Subscription) if self.api.subscription_required() => {
                self.note_here(el, &format!("{what}: key: subscription, counted per subscription the subscription_key policy accepted, as in APIM"));
                "subscription".to_owned()
            }
            Some(CounterKey::Subscription) => {
                self.leave(
                    el,
                    &what,
                    "APIM counted per validated subscription; without --subscription-required no key is checked here, and any value of the key would buy a fresh budget; client_ip is used instead",
                );
                "client_ip".to_owned()
            }
            Some(CounterKey::Other) => {
                self.leave(
                    el,
                    &what,
                    "only the client address, a header or a token claim translate; client_ip is used instead",
                );
                "client_ip".to_owned()
            }
            None => "client_ip".to_owned(),
        }
    }

    /// `calls` per `period` seconds as a token bucket that never admits more than APIM's
    /// sliding window would.
    fn sliding_window(&mut self, el: Node<'_, '_>, calls: u32, period: u64, limit: &mut out::RateLimit) {
        // APIM admits at most `calls` in any `period` (a sliding window). A bucket admits
        // its burst plus what refills within the window, so each gets half: a burst of
        // ceil(calls/2) and a refill of floor(calls/2) per period (one call per two
        // periods when calls is 1), rounded down: never more than `calls` in any period,
        // at half APIM's sustained rate.
        let burst = calls.div_ceil(2);
        let (refill, over) = match u64::from(calls / 2) {
            0 => (1, period * 2),
            n => (n, period),
        };
        let per_hour = refill * 3600 / over;
        let rate = match u32::try_from(per_hour) {
            Ok(0) => None,
            Ok(per_hour) => Some(format!("{per_hour}/h")),
            // Beyond a count an hour can hold: per second (at least 2^32 / 3600).
            Err(_) => Some(format!("{}/s", refill / over)),
        };
        match rate {
            Some(rate) => {
                self.note_here(el, &format!("approximated: bursts of {burst} and {rate}, so that no {period} s ever admit more than {calls} calls (APIM's sliding window); the sustained rate is half APIM's"));
                limit.rate = Some(rate);
                limit.burst = Some(burst);
            }
            None => self.leave(
                el,
                &format!("calls=\"{calls}\" renewal-period=\"{period}\""),
                "less than one call an hour: portcullis rates count per second, minute or hour",
            ),
        }
    }

    fn set_header(&mut self, el: Node<'_, '_>, request: bool) {
        self.unknown_attributes(el, &["name", "exists-action"]);
        let Some(name) = el.attribute("name").map(str::trim) else {
            return self.leave(el, "<set-header> without name", "name the header");
        };
        let existing = if request { self.request.policy } else { self.response.policy };
        let policy = match existing {
            Some(i) => i,
            None => self.start(if request { "request-headers" } else { "response-headers" }, true),
        };
        self.building = Some(policy);
        for child in el.children().filter(|n| n.is_element() && !n.has_tag_name("value")) {
            self.leave(child, &format!("<set-header><{}>", child.tag_name().name()), "no portcullis equivalent");
        }
        // APIM replaced the header: when its value cannot be written, the header is removed,
        // so that what the client sent never stands in for it.
        let removed = "the header is removed instead, so that the client's value never reaches the other side";
        let edit = match el.attribute("exists-action").unwrap_or("override") {
            "delete" => Some((name.to_owned(), None)),
            "override" => {
                let values: Vec<Node<'_, '_>> = el.children().filter(|n| n.has_tag_name("value")).collect();
                let text = values.first().and_then(|v| v.text()).unwrap_or_default().trim();
                if values.len() != 1 {
                    self.leave(
                        el,
                        &format!("<set-header name={name:?}> with {} values", values.len()),
                        &format!("portcullis sets one value; {removed}"),
                    );
                    Some((name.to_owned(), None))
                } else if is_expression(text) {
                    self.leave(
                        values[0],
                        &format!("<set-header name={name:?}> value {text:?}"),
                        &format!("a policy expression (C#) has no portcullis equivalent; {removed}"),
                    );
                    Some((name.to_owned(), None))
                } else if let Some(named) = named_value(text) {
                    let env = env_name(&named);
                    self.note(
                        values[0],
                        &format!("named value {{{{{named}}}}} → ${{env:{env}}}: set it in the gateway's environment"),
                    );
                    Some((name.to_owned(), Some(format!("${{env:{env}}}"))))
                } else if text.contains("{{") || text.contains("${") {
                    self.leave(
                        values[0],
                        &format!("<set-header name={name:?}> value {text:?}"),
                        &format!("a named value can only be a header's whole value; {removed}"),
                    );
                    Some((name.to_owned(), None))
                } else {
                    Some((name.to_owned(), Some(text.to_owned())))
                }
            }
            other => {
                self.leave(
                    el,
                    &format!("<set-header name={name:?} exists-action={other:?}>"),
                    "portcullis replaces (override) or removes (delete) a header",
                );
                None
            }
        };
        let edits = if request { &mut self.request } else { &mut self.response };
        edits.policy = Some(policy);
        match edit {
            Some((name, Some(value))) => {
                edits.remove.retain(|r| !r.eq_ignore_ascii_case(&name));
                edits.set.retain(|(s, _)| !s.eq_ignore_ascii_case(&name));
                edits.set.push((name, value));
            }
            Some((name, None)) => {
                edits.set.retain(|(s, _)| !s.eq_ignore_ascii_case(&name));
                if !edits.remove.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
                    edits.remove.push(name);
                }
            }
            None => {}
        }
    }

    fn backend_service(&mut self, el: Node<'_, '_>) {
        self.unknown_attributes(el, &["base-url"]);
        match el.attribute("base-url").and_then(|u| self.literal(el, "base-url", u)) {
            Some(url) => self.backend = Some(url),
            None if el.attribute("base-url").is_none() => {
                self.leave(el, "<set-backend-service> without base-url", "name the backend's URL")
            }
            None => {}
        }
    }

    /// The translation as data: the `headers` policies filled from the gathered edits.
    fn finish(mut self) -> Translation {
        for (request, edits) in [(true, &self.request), (false, &self.response)] {
            let Some(i) = edits.policy else { continue };
            let side = out::HeaderSide {
                remove: edits.remove.clone(),
                set: (!edits.set.is_empty() || edits.remove.is_empty()).then(|| out::Entries(edits.set.clone())),
            };
            let headers = if request {
                out::Headers { request: Some(side), response: None }
            } else {
                out::Headers { request: None, response: Some(side) }
            };
            if edits.set.is_empty() && edits.remove.is_empty() {
                self.policies[i].notes.push("nothing translated: `set: {}`".into());
            }
            self.policies[i].policy = Some(Policy::headers(headers));
        }
        let policies = std::mem::take(&mut self.policies)
            .into_iter()
            .filter_map(|p| Some((p.name, Noted { notes: p.notes, value: p.policy? })))
            .collect();
        Translation {
            policies,
            chain: self.chain,
            notes: self.notes,
            left_out: self.left_out,
            backend: self.backend,
            backend_timeout: self.backend_timeout,
            client_auth: self.client_auth,
        }
    }
}

/// The `identity` section a `subscription_key` policy needs: placeholders.
fn identity_placeholder() -> Noted<out::Issuer> {
    Noted {
        notes: vec![
            "for the subscription_key policy: the subscriptions live in the token issuer's store. Placeholders: point `store` at the store `portcullis subscriptions import` filled (sqlite:PATH or postgres://…); `signing_key` is `portcullis certs dev`'s. With this section the listener also serves the issuer's /oauth2/token and key documents (README: Token issuer)".to_owned(),
        ],
        value: out::Issuer {
            listener: "public".into(),
            issuer: "https://localhost:8443".into(),
            signing_key: "../certs/dev/token-signing-key.pem".into(),
            store: "sqlite:../var/identity.db".into(),
        },
    }
}

/// The placeholder listener, asking for a client certificate when `client_auth`.
fn listener_placeholder(client_auth: bool) -> out::Listener {
    out::Listener {
        name: "public".into(),
        bind: "127.0.0.1:8443".into(),
        tls: out::Tls {
            certificates: vec![out::CertKey {
                cert: "../certs/dev/server.pem".into(),
                key: "../certs/dev/server-key.pem".into(),
            }],
            client_auth: client_auth
                .then(|| out::ClientAuth { mode: "optional", trusted_cas: "../certs/dev/client-ca.pem".into() }),
        },
    }
}

/// The whole configuration of one document as data: listener, backend, policies, one route.
fn document(t: &mut Translation, api: &ApiSettings) -> out::Document {
    let urls = match &t.backend {
        Some(url) => vec![url.clone()],
        None => {
            t.notes
                .push("no set-backend-service: the backend's URL is a placeholder (the API's web service URL)".into());
            vec!["http://127.0.0.1:8080".to_owned()]
        }
    };
    out::Document {
        version: 1,
        identity: api.subscription_required().then(identity_placeholder),
        listeners: vec![listener_placeholder(t.client_auth)],
        backends: Entries(vec![("api".into(), out::Backend { urls, timeout: t.backend_timeout.clone() })]),
        policies: Entries(std::mem::take(&mut t.policies)),
        products: Entries::default(),
        routes: vec![out::Route {
            name: "api".into(),
            matcher: out::Match::default(),
            policies: t.chain.clone(),
            backend: "api".into(),
            rewrite: None,
        }],
    }
}

/// The configuration as YAML, read back through the configuration contract.
fn render(t: &mut Translation, api: &ApiSettings, source: &str) -> Result<String, ImportError> {
    let document = document(t, api);
    let mut header = vec![
        format!("Imported from {source} by `portcullis import-apim`."),
        format!(
            "{} element(s), attribute(s) or expression(s) were left out: see the `not translated` notes.",
            t.left_out
        ),
        "Review it, then `portcullis check` it; the listener and certificates are placeholders.".to_owned(),
    ];
    header.extend(t.notes.iter().cloned());
    let yaml = out::to_yaml(&header, &document).map_err(|e| ImportError::Unreadable(e.to_string()))?;
    read_back(&yaml).map_err(ImportError::Unreadable)?;
    Ok(yaml)
}

/// `@(…)` or `@{…}`: a C# policy expression.
fn is_expression(text: &str) -> bool {
    let text = text.trim_start();
    text.starts_with("@(") || text.starts_with("@{")
}

/// `{{name}}` alone.
fn named_value(text: &str) -> Option<String> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.is_empty() && !inner.contains(['{', '}'])).then(|| inner.to_owned())
}

/// `my-api-key` → `MY_API_KEY`.
fn env_name(named: &str) -> String {
    named.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// What an APIM `counter-key` expression counts by.
#[derive(Debug, PartialEq, Eq)]
enum CounterKey {
    /// A portcullis key with the same meaning.
    Key(String),
    /// The subscription (its key or id): APIM validated it before counting. With a
    /// `subscription_key` policy it is `subscription`; without one, counting by the raw key
    /// would give every invented value a fresh budget.
    Subscription,
    /// Anything else.
    Other,
}

/// The header and query parameter APIM reads subscription keys from.
const SUBSCRIPTION_HEADER: &str = "ocp-apim-subscription-key";
const SUBSCRIPTION_QUERY: &str = "subscription-key";

/// The portcullis key for the APIM counter-key expressions that have one; `key_names` are the
/// lower-case header and query names the subscription key is read from.
fn counter_key(expr: &str, key_names: &[String]) -> CounterKey {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let lower = compact.to_ascii_lowercase();
    if lower.contains("context.subscription") || key_names.iter().any(|name| lower.contains(&format!("\"{name}\""))) {
        return CounterKey::Subscription;
    }
    if compact == "@(context.Request.IpAddress)" {
        return CounterKey::Key("client_ip".into());
    }
    let header =
        compact.strip_prefix("@(context.Request.Headers.GetValueOrDefault(\"").and_then(|rest| rest.split_once('"'));
    if let Some((name, tail)) = header {
        if tail == ",\"\"))" || tail == "))" {
            return CounterKey::Key(format!("header:{name}"));
        }
        if name.eq_ignore_ascii_case("authorization")
            && tail.strip_prefix(",\"\").AsJwt()?.").and_then(|c| c.strip_suffix(')')) == Some("Subject")
        {
            return CounterKey::Key("claim:sub".into());
        }
    }
    CounterKey::Other
}

#[cfg(test)]
mod tests;
