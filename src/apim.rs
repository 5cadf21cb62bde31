//! `portcullis import-apim`: an Azure API Management policy document turned into a portcullis
//! configuration. What has an equivalent is translated (`cors`, `ip-filter`, `validate-jwt`,
//! `validate-azure-ad-token`, `validate-client-certificate`, `rate-limit-by-key`,
//! `quota-by-key`, `set-header`, `set-backend-service`); every element, attribute and policy
//! expression (`@(...)`, `@{...}`) that has none becomes a YAML comment naming it and its line
//! in the XML, and is counted, so that `--strict` can refuse a partial translation. Named
//! values (`{{name}}`) become `${env:NAME}` where the configuration reads references.

use std::fmt::Write as _;
use std::net::IpAddr;

use roxmltree::{Document, Node};

/// The translation of one policy document.
pub struct Imported {
    /// The portcullis configuration, with comments.
    pub yaml: String,
    /// How many elements, attributes or expressions were left out.
    pub left_out: usize,
}

/// Why a document cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// The root element is not `<policies>`.
    #[error("line {0}: the root element is <{1}>, not <policies>")]
    NotPolicies(u32, String),
}

/// One translated policy.
struct PolicyOut {
    name: String,
    /// The YAML under the policy's name (indented four spaces).
    body: String,
    /// Comments above it.
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
}

/// The header edits of one side, gathered into one `headers` policy.
#[derive(Default)]
struct HeaderEdits {
    /// The policy they make, once there is one.
    policy: Option<usize>,
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

/// Translates `xml`, read from `source` (named in the header comment).
///
/// # Errors
/// The document is not XML or not a policy document.
pub fn import(xml: &str, source: &str) -> Result<Imported, ImportError> {
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
    };
    if root.tag_name().name() != "policies" {
        return Err(ImportError::NotPolicies(im.line(root), root.tag_name().name().to_owned()));
    }
    for section in root.children().filter(Node::is_element) {
        match section.tag_name().name() {
            "inbound" => im.section(section, Side::Inbound),
            "backend" => im.section(section, Side::Backend),
            "outbound" => im.section(section, Side::Outbound),
            "on-error" => im.on_error(section),
            other => im.leave(section, &format!("<{other}>"), "not a policy section"),
        }
    }
    Ok(Imported { yaml: im.render(source), left_out: im.left_out })
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
        match self.building {
            Some(i) => self.policies[i].notes.push(note),
            None => self.notes.push(note),
        }
    }

    /// A note that is no loss (how a construct maps), on the file.
    fn note(&mut self, node: Node<'_, '_>, text: &str) {
        self.notes.push(format!("line {}: {text}", self.line(node)));
    }

    fn section(&mut self, section: Node<'_, '_>, side: Side) {
        for el in section.children().filter(Node::is_element) {
            self.building = None;
            let name = el.tag_name().name();
            match (name, side) {
                ("base", _) => self.note(el, "<base/>: in APIM the enclosing scope's policies (all APIs, product) run here; add their portcullis policies to the route, or to default_policies"),
                ("forward-request", Side::Backend) => {
                    self.unknown_attributes(el, &["timeout", "follow-redirects", "buffer-request-body", "buffer-response", "fail-on-error-status-code", "http-version"]);
                    if let Some(t) = el.attribute("timeout").and_then(|t| t.trim().parse::<u64>().ok()) {
                        self.backend_timeout = Some(format!("{t}s"));
                    }
                    for attr in ["follow-redirects", "buffer-request-body", "buffer-response", "fail-on-error-status-code", "http-version"] {
                        if let Some(v) = el.attribute(attr) {
                            self.leave(el, &format!("<forward-request {attr}=\"{v}\">"), "portcullis streams bodies and passes redirects and errors through");
                        }
                    }
                }
                ("set-backend-service", _) => self.backend_service(el),
                ("set-header", Side::Inbound | Side::Backend) => self.set_header(el, true),
                ("set-header", Side::Outbound) => self.set_header(el, false),
                ("cors", Side::Inbound) => self.cors(el),
                ("ip-filter", Side::Inbound) => self.ip_filter(el),
                ("validate-jwt", Side::Inbound) => self.validate_jwt(el),
                ("validate-azure-ad-token", Side::Inbound) => self.validate_azure_ad_token(el),
                ("validate-client-certificate", Side::Inbound) => self.client_certificate(el),
                ("rate-limit-by-key", Side::Inbound) => self.rate_limit(el, false),
                ("quota-by-key", Side::Inbound) => self.rate_limit(el, true),
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

    /// Starts a policy called `name` (made unique); its body is written by the caller.
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
        self.policies.push(PolicyOut { name: unique, body: String::new(), notes: Vec::new() });
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

    /// A literal value: expressions are left out (`None`).
    fn literal(&mut self, node: Node<'_, '_>, what: &str, value: &str) -> Option<String> {
        let value = value.trim();
        if value.starts_with("@(") || value.starts_with("@{") {
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

    /// The texts of the `tag` children of `parent`'s `list` child, literals only.
    fn list(&mut self, parent: Node<'_, '_>, list: &str, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        for container in parent.children().filter(|n| n.has_tag_name(list)) {
            for item in container.children().filter(|n| n.has_tag_name(tag)) {
                if let Some(v) = self.literal(item, &format!("<{tag}>"), item.text().unwrap_or_default()) {
                    out.push(v);
                }
            }
        }
        out
    }

    fn cors(&mut self, el: Node<'_, '_>) {
        let i = self.start("cors", true);
        self.unknown_attributes(el, &["allow-credentials", "terminate-unmatched-request"]);
        let origins = self.list(el, "allowed-origins", "origin");
        let methods = self.list(el, "allowed-methods", "method");
        let headers = self.list(el, "allowed-headers", "header");
        let expose = self.list(el, "expose-headers", "header");
        let max_age = el
            .children()
            .find(|n| n.has_tag_name("allowed-methods"))
            .and_then(|m| m.attribute("preflight-result-max-age"));
        let mut body = format!("      allowed_origins: {}\n", flow(&origins));
        if methods.iter().any(|m| m == "*") {
            body += "      allowed_methods: [GET, HEAD, POST, PUT, PATCH, DELETE]   # APIM's `*`\n";
        } else if !methods.is_empty() {
            body += &format!("      allowed_methods: {}\n", flow(&methods));
        }
        if headers.iter().any(|h| h == "*") {
            self.leave(el, "<allowed-headers><header>*</header>", "list the request headers a preflight may ask for");
        } else if !headers.is_empty() {
            body += &format!("      allowed_headers: {}\n", flow(&headers));
        }
        if !expose.is_empty() {
            body += &format!("      expose_headers: {}\n", flow(&expose));
        }
        if el.attribute("allow-credentials") == Some("true") {
            body += "      allow_credentials: true\n";
        }
        if let Some(age) = max_age {
            body += &format!("      max_age: {}s\n", age.trim());
        }
        // APIM refuses unmatched preflights and passes other requests; terminate-unmatched-request
        // defaults to true there.
        let terminate = el.attribute("terminate-unmatched-request") != Some("false");
        body += &format!("      terminate_unmatched: {terminate}\n");
        self.policies[i].body = format!("    cors:\n{body}");
    }

    fn ip_filter(&mut self, el: Node<'_, '_>) {
        let i = self.start("ip-filter", true);
        self.unknown_attributes(el, &["action"]);
        let action = el.attribute("action").unwrap_or("allow");
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
        let key = if action == "forbid" { "deny" } else { "allow" };
        self.policies[i].body = format!("    ip_filter:\n      {key}: {}\n", flow(&nets));
    }

    /// `validate-jwt` and `validate-azure-ad-token` share the token source and claim rules.
    fn token_source(&mut self, el: Node<'_, '_>, body: &mut String) {
        if let Some(header) = el.attribute("header-name") {
            if !header.eq_ignore_ascii_case("authorization") {
                *body += &format!("      token_from: {}\n", quote(&format!("header:{header}")));
            }
        }
        if let Some(query) = el.attribute("query-parameter-name") {
            *body += &format!("      token_from: {}\n", quote(&format!("query:{query}")));
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

    fn required_claims(&mut self, el: Node<'_, '_>, body: &mut String) {
        let mut rules = Vec::new();
        for claims in el.children().filter(|n| n.has_tag_name("required-claims")) {
            for claim in claims.children().filter(|n| n.has_tag_name("claim")) {
                let Some(name) = claim.attribute("name") else { continue };
                if claim.attribute("separator").is_some() {
                    self.leave(claim, "<claim separator=…>", "portcullis reads arrays and space-separated strings");
                }
                let values: Vec<String> = claim
                    .children()
                    .filter(|n| n.has_tag_name("value"))
                    .filter_map(|v| self.literal(v, "<value>", v.text().unwrap_or_default()))
                    .collect();
                if values.is_empty() {
                    self.leave(
                        claim,
                        &format!("<claim name=\"{name}\"> without values"),
                        "portcullis requires claims to hold given values",
                    );
                    continue;
                }
                let all = claim.attribute("match") == Some("all");
                rules.push(format!(
                    "{}: {{ {}: {} }}",
                    quote(name),
                    if all { "all_of" } else { "any_of" },
                    flow(&values)
                ));
            }
        }
        if !rules.is_empty() {
            *body += &format!("      require_claims: {{ {} }}\n", rules.join(", "));
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
        let mut body = String::new();
        let issuers = self.list(el, "issuers", "issuer");
        let audiences = self.list(el, "audiences", "audience");
        body += &format!("      issuers: {}\n", flow(&issuers));
        if !audiences.is_empty() {
            body += &format!("      audiences: {}\n", flow(&audiences));
        }
        let openid: Vec<Node<'_, '_>> = el.children().filter(|n| n.has_tag_name("openid-config")).collect();
        let keys: Vec<Node<'_, '_>> = el
            .children()
            .filter(|n| n.has_tag_name("issuer-signing-keys"))
            .flat_map(|k| k.children().filter(|n| n.has_tag_name("key")))
            .collect();
        if let Some(config) = openid.first() {
            if let Some(url) = config.attribute("url").and_then(|u| self.literal(*config, "<openid-config url>", u)) {
                body += &format!("      openid_config: {}\n      algorithms: [RS256]   # what Entra ID and most providers sign with; adjust to yours\n", quote(&url));
            }
            for extra in &openid[1..] {
                self.leave(*extra, "a second <openid-config>", "write a jwt policy with `providers`, one per provider");
            }
        } else if let Some(key) = keys.first() {
            if key.attributes().len() == 0 {
                body += "      algorithms: [HS256]\n      secret: \"${env:JWT_SECRET}\"   # the key, base64-decoded, at least 32 bytes\n";
                self.note(
                    *key,
                    "<issuer-signing-keys><key>: a symmetric key; set JWT_SECRET to it (decoded), never inline",
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
            body += &format!("      clock_skew: {}s\n", skew.trim());
        }
        if el.attribute("require-expiration-time") == Some("false") {
            self.leave(el, "require-expiration-time=\"false\"", "portcullis always requires exp");
        }
        if el.attribute("require-signed-tokens") == Some("false") {
            self.leave(el, "require-signed-tokens=\"false\"", "portcullis never accepts unsigned tokens");
        }
        self.token_source(el, &mut body);
        self.required_claims(el, &mut body);
        self.policies[i].body = format!("    jwt:\n{body}");
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
        let mut body = String::new();
        match el.attribute("tenant-id").and_then(|t| self.literal(el, "tenant-id", t)) {
            Some(tenant) => {
                body += &format!(
                    "      issuers: [{}, {}]\n      openid_config: {}\n      algorithms: [RS256]\n",
                    quote(&format!("https://login.microsoftonline.com/{tenant}/v2.0")),
                    quote(&format!("https://sts.windows.net/{tenant}/")),
                    quote(&format!("https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"))
                );
            }
            None => self.leave(el, "<validate-azure-ad-token> without a literal tenant-id", "name the tenant"),
        }
        let mut audiences = self.list(el, "audiences", "audience");
        for app in self.list(el, "backend-application-ids", "application-id") {
            audiences.push(format!("api://{app}"));
            audiences.push(app);
        }
        if !audiences.is_empty() {
            body += &format!("      audiences: {}\n", flow(&audiences));
        }
        let clients = self.list(el, "client-application-ids", "application-id");
        self.token_source(el, &mut body);
        self.required_claims(el, &mut body);
        if !clients.is_empty() {
            // v2.0 tokens name the calling application in `azp` (v1.0: `appid`).
            let rule = format!("azp: {{ any_of: {} }}", flow(&clients));
            match body.find("      require_claims: { ") {
                Some(at) => body.insert_str(at + "      require_claims: { ".len(), &format!("{rule}, ")),
                None => body += &format!("      require_claims: {{ {rule} }}\n"),
            }
        }
        self.policies[i].body = format!("    jwt:\n{body}");
    }

    fn client_certificate(&mut self, el: Node<'_, '_>) {
        let i = self.start("client-cert", true);
        self.client_auth = true;
        self.unknown_attributes(
            el,
            &["validate-revocation", "validate-trust", "validate-not-before", "validate-not-after", "ignore-error"],
        );
        if el.attribute("ignore-error") == Some("true") {
            self.leave(el, "ignore-error=\"true\"", "portcullis refuses a request whose certificate fails");
        }
        self.note(el, "validate-client-certificate: the listener verifies trust, dates and revocation at the handshake (tls.client_auth: trusted_cas, crls)");
        let mut identities = Vec::new();
        for identity in el.descendants().filter(|n| n.has_tag_name("identity")) {
            let mut fields = Vec::new();
            for attr in identity.attributes() {
                let value = attr.value().trim();
                match attr.name() {
                    "subject" => fields.push(format!("subject: {}", quote(value))),
                    "issuer-subject" => fields.push(format!("issuer: {}", quote(value))),
                    "serial-number" => fields.push(format!("serial: {}", quote(&value.to_ascii_uppercase()))),
                    "dns-name" => fields.push(format!("dns_name: {}", quote(value))),
                    "common-name" => fields.push(format!(
                        "subject: {}   # APIM matched the common name only: complete the subject",
                        quote(&format!("CN={}", crate::tls::dn::escape_value(value)))
                    )),
                    "thumbprint" => self.leave(
                        identity,
                        &format!("thumbprint=\"{value}\""),
                        "APIM thumbprints are SHA-1; portcullis matches thumbprint_sha256",
                    ),
                    other => self.leave(identity, &format!("<identity {other}=…>"), "no portcullis equivalent"),
                }
            }
            if !fields.is_empty() {
                identities.push(format!("        - {{ {} }}\n", fields.join(", ")));
            }
        }
        let mut body = String::from("    client_cert:\n      identities:\n");
        if identities.is_empty() {
            self.leave(
                el,
                "<validate-client-certificate> identities",
                "none could be translated; list the identities to admit",
            );
            body += "        - { subject: \"CN=replace-me\" }\n";
        }
        for identity in identities {
            body += &identity;
        }
        self.policies[i].body = body;
    }

    fn rate_limit(&mut self, el: Node<'_, '_>, quota: bool) {
        let i = self.start(if quota { "quota" } else { "rate-limit" }, true);
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
        self.unknown_attributes(el, known);
        for attr in [
            "increment-condition",
            "increment-count",
            "bandwidth",
            "first-period-start",
            "retry-after-variable-name",
            "remaining-calls-variable-name",
        ] {
            if let Some(v) = el.attribute(attr) {
                self.leave(el, &format!("{attr}={v:?}"), "no portcullis equivalent: every request counts one");
            }
        }
        if ["retry-after-header-name", "remaining-calls-header-name", "total-calls-header-name"]
            .iter()
            .any(|a| el.attribute(*a).is_some())
        {
            self.note(el, "the *-header-name attributes: portcullis sends Retry-After and the IETF RateLimit / RateLimit-Policy fields");
        }
        let key = match el.attribute("counter-key") {
            Some(expr) => counter_key(expr).unwrap_or_else(|| {
                self.leave(
                    el,
                    &format!("counter-key={expr:?}"),
                    "only the client address, a header or a token claim translate; client_ip is used instead",
                );
                "client_ip".to_owned()
            }),
            None => "client_ip".to_owned(),
        };
        let calls: Option<u64> = el.attribute("calls").and_then(|c| c.trim().parse().ok());
        let period: Option<u64> = el.attribute("renewal-period").and_then(|p| p.trim().parse().ok());
        let budget = match (calls, period, quota) {
            (Some(calls), Some(period), false) if period > 0 => {
                // APIM's sliding window of `calls` per `period`: a burst of `calls`, refilled evenly.
                let rate = if period % 3600 == 0 || (calls * 3600) % period == 0 {
                    format!("{}/h", calls * 3600 / period)
                } else {
                    format!("{}/h", (calls * 3600).div_ceil(period))
                };
                Some(format!("rate: {rate}, burst: {calls}"))
            }
            (Some(calls), Some(period), true) => match period {
                3600 => Some(format!("quota: {calls}/hour")),
                86_400 => Some(format!("quota: {calls}/day")),
                p if (2_419_200..=2_678_400).contains(&p) => Some(format!("quota: {calls}/month")),
                other => {
                    self.leave(el, &format!("renewal-period=\"{other}\""), "quotas renew per UTC hour, day or month");
                    None
                }
            },
            _ => {
                self.leave(el, "calls / renewal-period", "give both as whole numbers");
                None
            }
        };
        let budget = budget.unwrap_or_else(|| "rate: 1000/h".to_owned());
        self.policies[i].body = format!("    rate_limit: {{ key: {}, {budget} }}\n", quote(&key));
    }

    fn set_header(&mut self, el: Node<'_, '_>, request: bool) {
        self.unknown_attributes(el, &["name", "exists-action"]);
        let Some(name) = el.attribute("name") else {
            return self.leave(el, "<set-header> without name", "name the header");
        };
        let existing = if request { self.request.policy } else { self.response.policy };
        let policy = match existing {
            Some(i) => i,
            None => self.start(if request { "request-headers" } else { "response-headers" }, true),
        };
        self.building = Some(policy);
        let edit = match el.attribute("exists-action").unwrap_or("override") {
            "delete" => Some((name.to_owned(), None)),
            "override" => {
                let values: Vec<Node<'_, '_>> = el.children().filter(|n| n.has_tag_name("value")).collect();
                let text = values.first().and_then(|v| v.text()).unwrap_or_default().trim();
                if values.len() != 1 {
                    self.leave(
                        el,
                        &format!("<set-header name=\"{name}\"> with {} values", values.len()),
                        "portcullis sets one value",
                    );
                    None
                } else if text.starts_with("@(") || text.starts_with("@{") {
                    self.leave(
                        values[0],
                        &format!("<set-header name=\"{name}\"> value {text:?}"),
                        "a policy expression (C#) has no portcullis equivalent",
                    );
                    None
                } else if let Some(named) = named_value(text) {
                    let env = env_name(&named);
                    self.note(
                        values[0],
                        &format!("named value {{{{{named}}}}} → ${{env:{env}}}: set it in the gateway's environment"),
                    );
                    Some((name.to_owned(), Some(format!("${{env:{env}}}"))))
                } else {
                    Some((name.to_owned(), Some(text.to_owned())))
                }
            }
            other => {
                self.leave(
                    el,
                    &format!("<set-header name=\"{name}\" exists-action=\"{other}\">"),
                    "portcullis replaces (override) or removes (delete) a header",
                );
                None
            }
        };
        let edits = if request { &mut self.request } else { &mut self.response };
        edits.policy = Some(policy);
        match edit {
            Some((name, Some(value))) => edits.set.push((name, value)),
            Some((name, None)) => edits.remove.push(name),
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

    /// The whole configuration: listener, backend, policies, one route.
    fn render(&self, source: &str) -> String {
        let mut out = format!("# Imported from {source} by `portcullis import-apim`.\n");
        let _ = writeln!(
            out,
            "# {} element(s), attribute(s) or expression(s) were left out: see the `not translated` notes.",
            self.left_out
        );
        out.push_str("# Review it, then `portcullis check` it; the listener and certificates are placeholders.\n");
        for note in &self.notes {
            let _ = writeln!(out, "# {note}");
        }
        out.push_str("version: 1\n\nlisteners:\n  - name: public\n    bind: 127.0.0.1:8443\n    tls:\n      certificates:\n        - { cert: ../certs/dev/server.pem, key: ../certs/dev/server-key.pem }\n");
        if self.client_auth {
            out.push_str("      client_auth: { mode: optional, trusted_cas: ../certs/dev/client-ca.pem }\n");
        }
        out.push_str("\nbackends:\n  api:\n");
        match &self.backend {
            Some(url) => {
                let _ = writeln!(out, "    urls: [{}]", quote(url));
            }
            None => out.push_str(
                "    urls: [\"http://127.0.0.1:8080\"]   # no set-backend-service: the API's web service URL\n",
            ),
        }
        if let Some(timeout) = &self.backend_timeout {
            let _ = writeln!(out, "    timeout: {timeout}");
        }
        if !self.policies.is_empty() {
            out.push_str("\npolicies:\n");
        }
        for policy in &self.policies {
            for note in &policy.notes {
                let _ = writeln!(out, "  # {note}");
            }
            let _ = writeln!(out, "  {}:", policy.name);
            out.push_str(&policy.body);
            for (side, edits) in [("request", &self.request), ("response", &self.response)] {
                if edits.policy.is_some_and(|i| self.policies[i].name == policy.name) {
                    out.push_str(&render_headers(side, edits));
                }
            }
        }
        let _ = write!(
            out,
            "\nroutes:\n  - name: api\n    match: {{}}\n    policies: {}\n    backend: api\n",
            flow(&self.chain)
        );
        out
    }
}

/// A `headers` policy for one side's edits.
fn render_headers(side: &str, edits: &HeaderEdits) -> String {
    let mut out = format!("    headers:\n      {side}:\n");
    if !edits.remove.is_empty() {
        let _ = writeln!(out, "        remove: {}", flow(&edits.remove));
    }
    if !edits.set.is_empty() {
        out.push_str("        set:\n");
        for (name, value) in &edits.set {
            let _ = writeln!(out, "          {}: {}", quote(name), quote(value));
        }
    }
    if edits.remove.is_empty() && edits.set.is_empty() {
        out.push_str("        set: {}   # nothing translated\n");
    }
    out
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

/// The portcullis key for the APIM counter-key expressions that have one.
fn counter_key(expr: &str) -> Option<String> {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    if compact == "@(context.Request.IpAddress)" {
        return Some("client_ip".into());
    }
    if let Some(rest) = compact.strip_prefix("@(context.Request.Headers.GetValueOrDefault(\"") {
        let (name, tail) = rest.split_once('"')?;
        if tail == ",\"\"))" || tail == "))" {
            return Some(format!("header:{name}"));
        }
        if name.eq_ignore_ascii_case("authorization") {
            let claim = tail.strip_prefix(",\"\").AsJwt()?.")?.strip_suffix(')')?;
            return match claim {
                "Subject" => Some("claim:sub".into()),
                _ => None,
            };
        }
    }
    None
}

/// One address as a host network.
fn host_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The fewest CIDR networks that cover `from..=to` exactly.
fn range_to_cidrs(from: IpAddr, to: IpAddr) -> Option<Vec<String>> {
    let (start, end, bits, v4) = match (from, to) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32, true),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32, false),
        _ => return None,
    };
    if start > end {
        return None;
    }
    let mut out = Vec::new();
    let mut at = start;
    loop {
        // The largest block aligned at `at` that stays within `end`.
        let mut size = if at == 0 { bits } else { at.trailing_zeros().min(bits) };
        while size > 0 && at.checked_add((1u128 << size) - 1).is_none_or(|last| last > end) {
            size -= 1;
        }
        let net = if v4 {
            format!("{}/{}", std::net::Ipv4Addr::from(at as u32), 32 - size)
        } else {
            format!("{}/{}", std::net::Ipv6Addr::from(at), 128 - size)
        };
        out.push(net);
        let last = at + ((1u128 << size) - 1);
        if last >= end {
            return Some(out);
        }
        at = last + 1;
    }
}

/// A YAML double-quoted string.
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// A YAML flow sequence of quoted strings.
fn flow(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_ranges_become_the_fewest_covering_networks() {
        let r = |a: &str, b: &str| range_to_cidrs(a.parse().unwrap(), b.parse().unwrap()).unwrap();
        assert_eq!(r("203.0.113.0", "203.0.113.255"), ["203.0.113.0/24"]);
        assert_eq!(r("10.0.0.1", "10.0.0.6"), ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]);
        assert_eq!(r("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(r("2001:db8::", "2001:db8::ffff"), ["2001:db8::/112"]);
        assert!(range_to_cidrs("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_none());
        assert!(range_to_cidrs("10.0.0.1".parse().unwrap(), "::1".parse().unwrap()).is_none());
    }

    #[test]
    fn a_common_name_becomes_a_subject_with_its_commas_escaped() {
        let xml = r#"<policies><inbound><validate-client-certificate><identities>
            <identity common-name="svc, O=Contoso" /></identities></validate-client-certificate></inbound></policies>"#;
        let yaml = import(xml, "t.xml").unwrap().yaml;
        assert!(yaml.contains(r#"subject: "CN=svc\\, O=Contoso""#), "{yaml}");
    }

    #[test]
    fn counter_keys_translate_when_they_name_a_request_fact() {
        assert_eq!(counter_key("@(context.Request.IpAddress)").as_deref(), Some("client_ip"));
        assert_eq!(
            counter_key("@(context.Request.Headers.GetValueOrDefault(\"X-Api-Key\",\"\"))").as_deref(),
            Some("header:X-Api-Key")
        );
        assert_eq!(
            counter_key("@(context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Subject)")
                .as_deref(),
            Some("claim:sub")
        );
        assert_eq!(counter_key("@(context.Subscription.Id)"), None);
    }
}
