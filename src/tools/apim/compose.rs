//! The effective policy document of each operation of an [`Extract`], composed as APIM
//! composes its scopes: global (all APIs) → product → API → operation.
//!
//! The rules, from the APIM policy reference ("Set or edit policies", "base", "Include
//! fragment", "Named values"):
//!
//! - Each section (`inbound`, `backend`, `outbound`, `on-error`) composes on its own. A scope's
//!   section runs its own elements in order; its `<base/>` runs the enclosing scope's effective
//!   section at that position (first, last or in the middle). A section without `<base/>`
//!   drops its parents' section entirely. A scope without a policy document is transparent (as
//!   if every section held only `<base/>`); a document that omits a section is read the same
//!   way, the stricter reading, and reported.
//! - The product scope is the product whose subscription the call presents: APIM applies the
//!   policy of that one product (a key scoped to the API or to all APIs applies none). So an
//!   operation is composed once without a product and once per product that holds its API, and
//!   an API in several products is reported: which product's chain runs is decided per call.
//! - `<include-fragment fragment-id="x"/>` is replaced by the children of fragment `x`'s
//!   `<fragment>`. Fragments do not nest: an `<include-fragment>` or `<base/>` inside a
//!   fragment is kept as written (the single-document importer leaves it out) and reported, as
//!   is a missing fragment.
//! - `{{name}}` in attribute values and text is replaced: a plain named value by its value, a
//!   secret or Key Vault one by `${secret:NAME}` (listed in [`Composition::secrets`] so the
//!   store can be filled with `portcullis secrets set NAME`); an unknown one is kept and
//!   reported. The configuration reads `${secret:NAME}` only as a whole value: a marker inside
//!   a longer one (`Bearer ${secret:token}`) is text to the loader, for the translation to
//!   leave out.
//!
//! Every element of the output is written on a line of its own, and [`Origin`]s map each such
//! line back to the file and line it came from, so a report can point at `file:line`.
//! Comments are dropped. The output is deterministic: the extract's maps are sorted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use roxmltree::{Document, Node};

use super::extract::{Api, Extract, Finding, NamedValueKind, PolicyFile, SpecOperation, VersioningScheme};
use super::ApiSettings;

/// The sections of a policy document, in the order they are written.
pub const SECTIONS: [&str; 4] = ["inbound", "backend", "outbound", "on-error"];

/// Where an element of a composed document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its line in the composed document.
    pub line: u32,
    /// The file it was read from, relative to the extract.
    pub file: PathBuf,
    /// Its line there.
    pub source_line: u32,
}

/// The version an operation answers to, from its API's version set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// How the version is told apart.
    pub scheme: VersioningScheme,
    /// The API's `apiVersion` (empty for the original, unversioned API).
    pub value: String,
}

/// One operation's effective policy, in one product context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposedOperation {
    /// The API's id (`orders`, `orders;rev=2`).
    pub api: String,
    /// The operation's name (its `operationId`), when the specification gives one.
    pub operation: Option<String>,
    /// The product whose policy is composed in; `None`: a key scoped to the API or to all
    /// APIs, or no key.
    pub product: Option<String>,
    /// The method, upper-case.
    pub method: String,
    /// The URL template under the gateway: the API's `path`, the version segment for a
    /// `Segment` version set, and the operation's template.
    pub template: String,
    /// Where requests go: the `base-url`, or the URL of the backend `backend-id` names, of the
    /// last `set-backend-service` directly in the composed `inbound` or `backend` section;
    /// else the API's `serviceUrl`. (One inside `<choose>` is conditional: not taken here.)
    /// `None` when that element names an unknown backend or is an expression (reported).
    pub backend_url: Option<String>,
    /// The backend (`backends/<b>/`) `backend_url` comes from, when one does.
    pub backend_id: Option<String>,
    /// The API's subscription settings (`subscriptionRequired` defaults to true, as in APIM).
    pub settings: ApiSettings,
    /// The version, when the API is in a version set.
    pub version: Option<Version>,
    /// Whether this is the API's current revision (the one APIM serves).
    pub is_current: bool,
    /// The composed `<policies>` document.
    pub xml: String,
    /// Where each element of `xml` came from, by line, ascending.
    pub origins: Vec<Origin>,
}

impl ComposedOperation {
    /// The origin of the element on `line` of [`Self::xml`], or of the nearest one above it.
    pub fn origin(&self, line: u32) -> Option<&Origin> {
        self.origins.iter().rev().find(|o| o.line <= line)
    }
}

/// A secret or Key Vault named value the composed documents refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The named value's display name, as `{{…}}` references it.
    pub named_value: String,
    /// The Key Vault secret identifier, for a Key Vault named value.
    pub key_vault: Option<String>,
    /// The file it is described in.
    pub file: PathBuf,
}

/// Every operation of an extract, composed.
#[derive(Debug, Clone, Default)]
pub struct Composition {
    /// By API, operation (specification order) and product (none first).
    pub operations: Vec<ComposedOperation>,
    /// By store name (the `NAME` of `${secret:NAME}`).
    pub secrets: BTreeMap<String, SecretRef>,
    /// What was not composed as written, sorted, each once.
    pub findings: Vec<Finding>,
}

/// Why an extract cannot be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A policy document or fragment is not well-formed XML.
    #[error("{}: not well-formed XML: {message}", path.display())]
    Xml {
        /// The file.
        path: PathBuf,
        /// What the parser said (with its line and column).
        message: String,
    },
    /// The root element is not the one the file must have.
    #[error("{}:{line}: the root element is <{found}>, not <{expected}>", path.display())]
    Root {
        /// The file.
        path: PathBuf,
        /// The root element's line.
        line: u32,
        /// Its name.
        found: String,
        /// `policies`, or `fragment` for a fragment.
        expected: &'static str,
    },
}

/// A parsed policy document or fragment.
struct Parsed<'a> {
    file: &'a Path,
    doc: Document<'a>,
}

impl Parsed<'_> {
    fn line(&self, node: Node<'_, '_>) -> u32 {
        self.doc.text_pos_at(node.range().start).row
    }

    fn section(&self, name: &str) -> Option<Node<'_, '_>> {
        self.doc.root_element().children().find(|n| n.is_element() && n.tag_name().name() == name)
    }
}

fn parse<'a>(file: &'a PolicyFile, expected: &'static str) -> Result<Parsed<'a>, ComposeError> {
    let xml = file.xml.trim_start_matches('\u{feff}');
    let doc =
        Document::parse(xml).map_err(|e| ComposeError::Xml { path: file.path.clone(), message: e.to_string() })?;
    let root = doc.root_element();
    if root.tag_name().name() != expected {
        return Err(ComposeError::Root {
            path: file.path.clone(),
            line: doc.text_pos_at(root.range().start).row,
            found: root.tag_name().name().to_owned(),
            expected,
        });
    }
    Ok(Parsed { file: &file.path, doc })
}

/// Composes every operation of every API in `ex`.
///
/// # Errors
/// A policy document or fragment that is not well-formed XML, or whose root is not
/// `<policies>` (`<fragment>` for a fragment); the error names the file.
pub fn compose(ex: &Extract) -> Result<Composition, ComposeError> {
    let global = ex.global_policy.as_ref().map(|f| parse(f, "policies")).transpose()?;
    let mut products = BTreeMap::new();
    for (name, product) in &ex.products {
        if let Some(file) = &product.policy {
            products.insert(name.as_str(), parse(file, "policies")?);
        }
    }
    let mut fragments = BTreeMap::new();
    for (name, file) in &ex.fragments {
        fragments.insert(name.as_str(), parse(file, "fragment")?);
    }
    let mut cx = Context { ex, fragments: &fragments, findings: BTreeSet::new(), secrets: BTreeMap::new() };
    let mut operations = Vec::new();
    for api in ex.apis.values() {
        let Some(spec) = &api.operations else { continue };
        if api.kind != "http" {
            continue;
        }
        let api_doc = api.policy.as_ref().map(|f| parse(f, "policies")).transpose()?;
        let mut op_docs = BTreeMap::new();
        for (name, file) in &api.operation_policies {
            op_docs.insert(name.as_str(), parse(file, "policies")?);
        }
        let in_products = ex.products_of(&api.name);
        if in_products.len() > 1 {
            let names: Vec<&str> = in_products.iter().map(|p| p.name.as_str()).collect();
            cx.find(
                &Path::new("apis").join(&api.name),
                None,
                format!(
                    "in products {}: composed once per product and once without one, as APIM applies the policy of the product whose subscription key a call presents",
                    names.join(", ")
                ),
            );
        }
        let contexts: Vec<Option<&str>> =
            std::iter::once(None).chain(in_products.iter().map(|p| Some(p.name.as_str()))).collect();
        for op in spec {
            let op_doc = op.id.as_deref().and_then(|id| op_docs.get(id));
            for product in &contexts {
                let product_doc = product.and_then(|p| products.get(p));
                let chain: Vec<&Parsed<'_>> =
                    [global.as_ref(), product_doc, api_doc.as_ref(), op_doc].into_iter().flatten().collect();
                let (xml, origins) = cx.document(&chain);
                let mut composed = operation(ex, api, op, product.map(str::to_owned), xml, origins);
                cx.backend(&mut composed);
                operations.push(composed);
            }
        }
    }
    Ok(Composition { operations, secrets: cx.secrets, findings: cx.findings.into_iter().collect() })
}

fn operation(
    ex: &Extract,
    api: &Api,
    op: &SpecOperation,
    product: Option<String>,
    xml: String,
    origins: Vec<Origin>,
) -> ComposedOperation {
    let version = api
        .version_set
        .as_ref()
        .and_then(|set| ex.version_sets.get(set))
        .map(|set| Version { scheme: set.scheme.clone(), value: api.api_version.clone().unwrap_or_default() });
    let mut prefix: Vec<&str> = vec![api.path.trim_matches('/')];
    if let Some(Version { scheme: VersioningScheme::Segment, value }) = &version {
        // APIM keeps the version out of `path` and serves `path/version`; an extract whose
        // path already ends with the version (hand-written ones do) is not given it twice.
        if !value.is_empty() && !api.path.trim_end_matches('/').ends_with(&format!("/{value}")) {
            prefix.push(value);
        }
    }
    let prefix: Vec<&str> = prefix.into_iter().filter(|s| !s.is_empty()).collect();
    let template = format!("/{}/{}", prefix.join("/"), op.template.trim_start_matches('/')).replace("//", "/");
    ComposedOperation {
        api: api.name.clone(),
        operation: op.id.clone(),
        product,
        method: op.method.clone(),
        template,
        backend_url: api.service_url.clone(),
        backend_id: None,
        settings: ApiSettings {
            subscription_required: Some(api.subscription_required.unwrap_or(true)),
            subscription_key_header: api.key_header.clone(),
            subscription_key_query: api.key_query.clone(),
        },
        version,
        is_current: api.is_current.unwrap_or(!api.name.contains(";rev=")),
        xml,
        origins,
    }
}

struct Context<'a, 'f> {
    ex: &'a Extract,
    fragments: &'f BTreeMap<&'a str, Parsed<'a>>,
    findings: BTreeSet<Finding>,
    secrets: BTreeMap<String, SecretRef>,
}

/// A composed document being written.
struct Writer {
    out: String,
    line: u32,
    origins: Vec<Origin>,
}

impl Writer {
    fn push(&mut self, text: &str) {
        self.line += u32::try_from(text.matches('\n').count()).unwrap_or(u32::MAX);
        self.out.push_str(text);
    }

    fn indent(&mut self, depth: usize) {
        self.out.push_str(&"    ".repeat(depth));
    }
}

impl Context<'_, '_> {
    fn find(&mut self, file: &Path, line: Option<u32>, message: String) {
        self.findings.insert(Finding { file: file.to_owned(), line, message });
    }

    /// Sets the backend of `op` from its last unconditional `set-backend-service`.
    fn backend(&mut self, op: &mut ComposedOperation) {
        let Ok(doc) = Document::parse(&op.xml) else { return };
        let last = doc
            .root_element()
            .children()
            .filter(|n| n.has_tag_name("inbound") || n.has_tag_name("backend"))
            .flat_map(|section| section.children().filter(|n| n.has_tag_name("set-backend-service")))
            .last();
        let Some(el) = last else { return };
        let at = op.origin(doc.text_pos_at(el.range().start).row).cloned();
        if let Some(id) = el.attribute("backend-id") {
            match self.ex.backends.get(id).and_then(|b| b.url.clone()) {
                Some(url) => {
                    op.backend_url = Some(url);
                    op.backend_id = Some(id.to_owned());
                }
                None => {
                    op.backend_url = None;
                    if let Some(at) = at {
                        let message = format!(
                            "<set-backend-service backend-id={id:?}>: no such backend (or no url) in backends/: the backend is unknown"
                        );
                        self.find(&at.file, Some(at.source_line), message);
                    }
                }
            }
        } else if let Some(url) = el.attribute("base-url") {
            if url.trim_start().starts_with('@') {
                op.backend_url = None;
                if let Some(at) = at {
                    let message =
                        "<set-backend-service base-url=\"@…\">: a policy expression: the backend is unknown".into();
                    self.find(&at.file, Some(at.source_line), message);
                }
            } else {
                op.backend_url = Some(url.to_owned());
            }
        }
    }

    /// The effective document of the scopes in `chain`, outermost first.
    fn document(&mut self, chain: &[&Parsed<'_>]) -> (String, Vec<Origin>) {
        let mut w = Writer { out: String::new(), line: 1, origins: Vec::new() };
        w.push("<policies>\n");
        for section in SECTIONS {
            w.indent(1);
            w.push(&format!("<{section}>\n"));
            self.section(&mut w, chain, section, 2);
            w.indent(1);
            w.push(&format!("</{section}>\n"));
        }
        w.push("</policies>\n");
        (w.out, w.origins)
    }

    /// The effective `section` of the innermost scope of `chain`.
    fn section(&mut self, w: &mut Writer, chain: &[&Parsed<'_>], section: &str, depth: usize) {
        let Some((scope, parents)) = chain.split_last() else { return };
        let Some(node) = scope.section(section) else {
            self.find(scope.file, None, format!("no <{section}>: composed as if it held only <base/>"));
            self.section(w, parents, section, depth);
            return;
        };
        for child in node.children().filter(Node::is_element) {
            if child.tag_name().name() == "base" {
                // In the outermost scope, `<base/>` includes nothing.
                self.section(w, parents, section, depth);
            } else {
                self.element(w, scope, child, false, depth);
            }
        }
    }

    /// Writes `el` of `from`, fragments inlined and named values resolved.
    fn element(&mut self, w: &mut Writer, from: &Parsed<'_>, el: Node<'_, '_>, in_fragment: bool, depth: usize) {
        let name = el.tag_name().name();
        let line = from.line(el);
        if name == "include-fragment" && !in_fragment {
            let id = el.attribute("fragment-id").unwrap_or_default();
            let fragments = self.fragments;
            if let Some(fragment) = fragments.get(id) {
                for child in fragment.doc.root_element().children().filter(Node::is_element) {
                    self.element(w, fragment, child, true, depth);
                }
                return;
            }
            self.find(
                from.file,
                Some(line),
                format!(
                    "<include-fragment fragment-id={id:?}>: no such fragment in policy fragments/; kept as written"
                ),
            );
        } else if name == "include-fragment" {
            self.find(
                from.file,
                Some(line),
                "<include-fragment> inside a fragment: fragments do not nest in APIM; kept as written".into(),
            );
        } else if name == "base" {
            self.find(from.file, Some(line), "<base/> not directly in a section: kept as written".into());
        }
        w.origins.push(Origin { line: w.line, file: from.file.to_owned(), source_line: line });
        w.indent(depth);
        w.push(&format!("<{name}"));
        for attr in el.attributes() {
            let value = self.resolve(from, el, attr.value());
            w.push(&format!(" {}=\"{}\"", attr.name(), escape(&value, true)));
        }
        let children: Vec<Node<'_, '_>> = el
            .children()
            .filter(|n| n.is_element() || (n.is_text() && !n.text().unwrap_or_default().trim().is_empty()))
            .collect();
        if children.is_empty() {
            w.push(" />\n");
        } else if children.iter().all(|n| n.is_text()) {
            let text: String = children.iter().filter_map(|n| n.text()).collect();
            let text = self.resolve(from, el, &text);
            w.push(&format!(">{}</{name}>\n", escape(&text, false)));
        } else {
            w.push(">\n");
            for child in children {
                if child.is_element() {
                    self.element(w, from, child, in_fragment, depth + 1);
                } else {
                    let text = self.resolve(from, el, child.text().unwrap_or_default().trim());
                    w.indent(depth + 1);
                    w.push(&format!("{}\n", escape(&text, false)));
                }
            }
            w.indent(depth);
            w.push(&format!("</{name}>\n"));
        }
    }

    /// `text` with its `{{name}}` references replaced.
    fn resolve(&mut self, from: &Parsed<'_>, el: Node<'_, '_>, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open + 2..].find("}}") else { break };
            out.push_str(&rest[..open]);
            let reference = rest[open + 2..open + 2 + close].trim();
            let whole = &rest[open..open + 2 + close + 2];
            rest = &rest[open + 2 + close + 2..];
            match self.ex.named_value(reference) {
                Some(value) => match &value.kind {
                    NamedValueKind::Plain(v) => out.push_str(v),
                    NamedValueKind::Secret | NamedValueKind::KeyVault(_) => {
                        let name = store_name(&value.display_name);
                        out.push_str(&format!("${{secret:{name}}}"));
                        self.secrets.entry(name).or_insert_with(|| SecretRef {
                            named_value: value.display_name.clone(),
                            key_vault: match &value.kind {
                                NamedValueKind::KeyVault(id) => Some(id.clone()),
                                _ => None,
                            },
                            file: value.file.clone(),
                        });
                    }
                },
                None => {
                    out.push_str(whole);
                    self.find(
                        from.file,
                        Some(from.line(el)),
                        format!("{{{{{reference}}}}}: no such named value in named values/; kept as written"),
                    );
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// The secret store's name for a named value: its display name, with characters other than
/// letters, digits, `.`, `_` and `-` as `_`.
fn store_name(display: &str) -> String {
    display.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

/// XML-escapes `text` (and `"` in an attribute).
fn escape(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' if attribute => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
