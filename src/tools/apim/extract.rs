//! An APIOps extract read into a model: the folder Microsoft's APIOps extractor writes from an
//! APIM instance (`policy.xml`, `products/`, `apis/`, `named values/`, `policy fragments/`,
//! `backends/`, `version sets/`, `subscriptions/`, …; the layout of `SampleArtifacts/` in the
//! Azure/apiops repository).
//!
//! The contract: reading never panics and never guesses. A file that is there but does not
//! parse (JSON, YAML) is an [`ExtractError`] naming it, because skipping it could drop a
//! restriction (a product's policy); a part this reader does not use (tags, loggers,
//! diagnostics, a GraphQL schema) or an expected part that is missing is a [`Finding`] naming
//! its file. Every folder is read in sorted order, so the same extract gives the same model.
//! Policy documents are kept as text: [`super::compose`] parses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Something in the extract that was not read, or is missing, with the file it concerns
/// (relative to the extract's folder) and, when known, the line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The file or folder, relative to the extract.
    pub file: PathBuf,
    /// The line in `file`, when the finding is about one element.
    pub line: Option<u32>,
    /// What was found, lower-case, no trailing period.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Why an extract cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A file or folder could not be read.
    #[error("{}: cannot read", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("{}: not valid JSON: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said (with its line and column).
        message: String,
    },
    /// A YAML specification does not parse.
    #[error("{}: not valid YAML: {message}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The folder has none of the parts of an extract.
    #[error("{}: not an APIOps extract (no policy.xml, apis/ or products/)", path.display())]
    NotExtract {
        /// The folder.
        path: PathBuf,
    },
}

/// A policy document of a scope (global, product, API, operation) or a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// The file, relative to the extract.
    pub path: PathBuf,
    /// Its text.
    pub xml: String,
}

/// A product (`products/<p>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// The folder's name: the product's id.
    pub name: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `subscriptionRequired` (APIM's default when absent: true).
    pub subscription_required: Option<bool>,
    /// `state` (`published`, `notPublished`).
    pub state: Option<String>,
    /// Its `policy.xml`.
    pub policy: Option<PolicyFile>,
    /// The ids of its APIs, sorted.
    pub apis: Vec<String>,
}

/// How versions of a version set are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersioningScheme {
    /// A path segment after the API's path.
    Segment,
    /// A query parameter (`versionQueryName`).
    Query(String),
    /// A header (`versionHeaderName`).
    Header(String),
}

/// A version set (`version sets/<v>/versionSetInformation.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSet {
    /// The folder's name: the version set's id.
    pub name: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `versioningScheme` with its parameter name.
    pub scheme: VersioningScheme,
}

/// One operation of an API's specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecOperation {
    /// `operationId`, which APIM uses as the operation's name (its `operations/<op>/` folder).
    pub id: Option<String>,
    /// The method, upper-case.
    pub method: String,
    /// The path template, as written (`/items/{id}`).
    pub template: String,
}

/// An API (`apis/<api>/`), one revision of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// The folder's name: the API's id (`orders` or `orders;rev=2`).
    pub name: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `type`: `http` when absent; `soap`, `graphql`, `websocket`, … otherwise.
    pub kind: String,
    /// `path`, the URL prefix under the gateway.
    pub path: String,
    /// `serviceUrl`, the backend.
    pub service_url: Option<String>,
    /// `protocols`.
    pub protocols: Vec<String>,
    /// `subscriptionRequired` (APIM's default when absent: true).
    pub subscription_required: Option<bool>,
    /// `subscriptionKeyParameterNames.header`.
    pub key_header: Option<String>,
    /// `subscriptionKeyParameterNames.query`.
    pub key_query: Option<String>,
    /// The version set's id: the last segment of `apiVersionSetId`.
    pub version_set: Option<String>,
    /// `apiVersion`.
    pub api_version: Option<String>,
    /// `apiRevision`.
    pub revision: Option<String>,
    /// `isCurrent`: absent means current for revision 1 (APIOps writes it only when true).
    pub is_current: Option<bool>,
    /// The operations of `specification.yaml|json`, sorted by template then method; `None`
    /// when there is no OpenAPI or Swagger specification.
    pub operations: Option<Vec<SpecOperation>>,
    /// The specification's file, when there is one.
    pub specification: Option<PathBuf>,
    /// Its `policy.xml`.
    pub policy: Option<PolicyFile>,
    /// `operations/<op>/policy.xml`, by operation name.
    pub operation_policies: BTreeMap<String, PolicyFile>,
}

/// What a named value holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedValueKind {
    /// A plain value, written into the policies.
    Plain(String),
    /// `secret: true`: the value is not in the extract.
    Secret,
    /// `keyVault.secretIdentifier`: the value is in Azure Key Vault.
    KeyVault(String),
}

/// A named value (`named values/<n>/namedValueInformation.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedValue {
    /// The folder's name: the named value's id.
    pub name: String,
    /// `displayName`, the name `{{…}}` references use (the id when absent).
    pub display_name: String,
    /// Its value, or where it is kept.
    pub kind: NamedValueKind,
    /// The file it was read from.
    pub file: PathBuf,
}

/// A backend (`backends/<b>/backendInformation.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The folder's name: the id `set-backend-service backend-id` names.
    pub name: String,
    /// `url`.
    pub url: Option<String>,
}

/// A subscription (`subscriptions/<s>/subscriptionInformation.json`); its keys are not in an
/// extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The folder's name.
    pub name: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `scope`: `/apis`, `/apis/<api>`, `/products/<p>` (or a full resource id ending so).
    pub scope: Option<String>,
    /// `state`: `active`, `suspended`, `cancelled`, `expired`, `submitted`, `rejected`.
    pub state: Option<String>,
}

/// An APIOps extract.
#[derive(Debug, Clone, Default)]
pub struct Extract {
    /// The folder it was read from.
    pub root: PathBuf,
    /// The global (all APIs) `policy.xml`.
    pub global_policy: Option<PolicyFile>,
    /// Products by id.
    pub products: BTreeMap<String, Product>,
    /// APIs (each revision its own) by id.
    pub apis: BTreeMap<String, Api>,
    /// Named values by id.
    pub named_values: BTreeMap<String, NamedValue>,
    /// Policy fragments' `policy.xml` by id.
    pub fragments: BTreeMap<String, PolicyFile>,
    /// Backends by id.
    pub backends: BTreeMap<String, Backend>,
    /// Version sets by id.
    pub version_sets: BTreeMap<String, VersionSet>,
    /// Subscriptions by id.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// What was not read or is missing, in the order found.
    pub findings: Vec<Finding>,
}

/// The top-level entries an extract may hold that this reader uses or knows it does not.
const KNOWN: &[&str] = &[
    "policy.xml",
    "products",
    "apis",
    "named values",
    "policy fragments",
    "backends",
    "version sets",
    "subscriptions",
    "tags",
    "loggers",
    "diagnostics",
    "gateways",
    "groups",
    "workspaces",
];

/// Reads the extract in `root`.
///
/// # Errors
/// A file or folder that cannot be read, a JSON or YAML file that does not parse (the error
/// names the file), or a folder that is not an extract.
pub fn read(root: &Path) -> Result<Extract, ExtractError> {
    let mut ex = Extract { root: root.to_owned(), ..Extract::default() };
    let top = entries(root)?;
    if !top.iter().any(|(name, _)| ["policy.xml", "apis", "products"].contains(&name.as_str())) {
        return Err(ExtractError::NotExtract { path: root.to_owned() });
    }
    for (name, _) in &top {
        match name.as_str() {
            "tags" | "loggers" | "diagnostics" | "gateways" | "groups" | "workspaces" => {
                ex.find(name, None, format!("{name}/ not read: no part of the gateway's policy"));
            }
            n if KNOWN.contains(&n) => {}
            _ => ex.find(name, None, "not a part of an APIOps extract this reader knows".into()),
        }
    }
    ex.global_policy = policy(root, Path::new("policy.xml"))?;
    for (name, dir) in dirs(root, "named values")? {
        let file = dir.join("namedValueInformation.json");
        let Some(props) = ex.properties(&file)? else { continue };
        let display_name = text(&props, "displayName").unwrap_or_else(|| name.clone());
        let kind =
            if let Some(id) = props.get("keyVault").and_then(|k| k.get("secretIdentifier")).and_then(Value::as_str) {
                NamedValueKind::KeyVault(id.to_owned())
            } else if props.get("secret").and_then(Value::as_bool) == Some(true) {
                NamedValueKind::Secret
            } else if let Some(value) = text(&props, "value") {
                NamedValueKind::Plain(value)
            } else {
                // Neither a value nor a secret: the extractor writes no value for a secret it
                // cannot read, so the value is treated as one (never written in as empty).
                ex.find_path(&file, None, "no value and not marked secret: treated as a secret".into());
                NamedValueKind::Secret
            };
        ex.named_values.insert(name.clone(), NamedValue { name, display_name, kind, file });
    }
    for (name, dir) in dirs(root, "policy fragments")? {
        match policy(root, &dir.join("policy.xml"))? {
            Some(file) => {
                ex.fragments.insert(name, file);
            }
            None => ex.find_path(&dir, None, "a policy fragment without policy.xml".into()),
        }
    }
    for (name, dir) in dirs(root, "backends")? {
        let file = dir.join("backendInformation.json");
        let Some(props) = ex.properties(&file)? else { continue };
        ex.backends.insert(name.clone(), Backend { name, url: text(&props, "url") });
    }
    for (name, dir) in dirs(root, "version sets")? {
        let file = dir.join("versionSetInformation.json");
        let Some(props) = ex.properties(&file)? else { continue };
        let scheme = match text(&props, "versioningScheme").as_deref() {
            Some("Segment") => VersioningScheme::Segment,
            Some("Query") => VersioningScheme::Query(text(&props, "versionQueryName").unwrap_or_else(|| {
                ex.find_path(&file, None, "a Query version set without versionQueryName: api-version assumed".into());
                "api-version".into()
            })),
            Some("Header") => VersioningScheme::Header(text(&props, "versionHeaderName").unwrap_or_else(|| {
                ex.find_path(&file, None, "a Header version set without versionHeaderName: Api-Version assumed".into());
                "Api-Version".into()
            })),
            other => {
                ex.find_path(
                    &file,
                    None,
                    format!("versioningScheme {other:?} is not Segment, Query or Header: version set not read"),
                );
                continue;
            }
        };
        ex.version_sets.insert(name.clone(), VersionSet { name, display_name: text(&props, "displayName"), scheme });
    }
    for (name, dir) in dirs(root, "products")? {
        let file = dir.join("productInformation.json");
        let Some(props) = ex.properties(&file)? else { continue };
        let apis = ex.product_apis(&dir)?;
        let product = Product {
            display_name: text(&props, "displayName"),
            subscription_required: props.get("subscriptionRequired").and_then(Value::as_bool),
            state: text(&props, "state"),
            policy: policy(root, &dir.join("policy.xml"))?,
            apis,
            name: name.clone(),
        };
        ex.products.insert(name, product);
    }
    for (name, dir) in dirs(root, "apis")? {
        if let Some(api) = ex.api(&name, &dir)? {
            ex.apis.insert(name, api);
        }
    }
    for (name, dir) in dirs(root, "subscriptions")? {
        let file = dir.join("subscriptionInformation.json");
        let Some(props) = ex.properties(&file)? else { continue };
        let subscription = Subscription {
            display_name: text(&props, "displayName"),
            scope: text(&props, "scope"),
            state: text(&props, "state"),
            name: name.clone(),
        };
        ex.subscriptions.insert(name, subscription);
    }
    ex.cross_check();
    Ok(ex)
}

impl Extract {
    fn find(&mut self, file: &str, line: Option<u32>, message: String) {
        self.findings.push(Finding { file: PathBuf::from(file), line, message });
    }

    fn find_path(&mut self, file: &Path, line: Option<u32>, message: String) {
        self.findings.push(Finding { file: file.to_owned(), line, message });
    }

    /// The `properties` object of the JSON file `file` (relative); `None` (and a finding) when
    /// the file is missing.
    fn properties(&mut self, file: &Path) -> Result<Option<Value>, ExtractError> {
        let Some(json) = read_json(&self.root, file)? else {
            self.find_path(file, None, "missing: this part was not read".into());
            return Ok(None);
        };
        match json.get("properties") {
            Some(props @ Value::Object(_)) => Ok(Some(props.clone())),
            _ => {
                self.find_path(file, None, "no \"properties\" object: read as empty".into());
                Ok(Some(Value::Object(serde_json::Map::new())))
            }
        }
    }

    /// A product's APIs: `apis/<api>/` folders (APIOps v6) or an `apis.json` list (earlier
    /// versions).
    fn product_apis(&mut self, dir: &Path) -> Result<Vec<String>, ExtractError> {
        let mut apis: Vec<String> =
            dirs(&self.root, &dir.join("apis").to_string_lossy())?.into_iter().map(|(n, _)| n).collect();
        let list = dir.join("apis.json");
        if let Some(json) = read_json(&self.root, &list)? {
            match json.as_array() {
                Some(items) => {
                    for item in items {
                        let name = item.as_str().or_else(|| item.get("name").and_then(Value::as_str));
                        match name {
                            Some(name) => apis.push(name.to_owned()),
                            None => self.find_path(&list, None, format!("an entry that names no API: {item}")),
                        }
                    }
                }
                None => self.find_path(&list, None, "not a list of API names: not read".into()),
            }
        }
        apis.sort();
        apis.dedup();
        Ok(apis)
    }

    fn api(&mut self, name: &str, dir: &Path) -> Result<Option<Api>, ExtractError> {
        let file = dir.join("apiInformation.json");
        let Some(props) = self.properties(&file)? else { return Ok(None) };
        let keys = props.get("subscriptionKeyParameterNames");
        let key = |which: &str| keys.and_then(|k| k.get(which)).and_then(Value::as_str).map(str::to_owned);
        let kind = text(&props, "type").unwrap_or_else(|| "http".into());
        let mut api = Api {
            name: name.to_owned(),
            display_name: text(&props, "displayName"),
            path: text(&props, "path").unwrap_or_default(),
            service_url: text(&props, "serviceUrl"),
            protocols: props
                .get("protocols")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            subscription_required: props.get("subscriptionRequired").and_then(Value::as_bool),
            key_header: key("header"),
            key_query: key("query"),
            version_set: text(&props, "apiVersionSetId")
                .and_then(|id| id.trim_end_matches('/').rsplit('/').next().map(str::to_owned)),
            api_version: text(&props, "apiVersion"),
            revision: text(&props, "apiRevision"),
            is_current: props.get("isCurrent").and_then(Value::as_bool),
            operations: None,
            specification: None,
            policy: policy(&self.root, &dir.join("policy.xml"))?,
            operation_policies: BTreeMap::new(),
            kind,
        };
        let mut others = Vec::new();
        for (entry, path) in entries(&self.root.join(dir))? {
            match entry.as_str() {
                "specification.yaml" | "specification.yml" | "specification.json" => {
                    let rel = dir.join(&entry);
                    api.operations = Some(self.specification(&rel, &path)?);
                    api.specification = Some(rel);
                }
                e if e.starts_with("specification.") => others.push(dir.join(e)),
                _ => {}
            }
        }
        for spec in others {
            self.find_path(
                &spec,
                None,
                format!("a {} API's specification: not an OpenAPI document, not read", api.kind),
            );
        }
        if api.kind != "http" {
            self.find_path(&file, None, format!("type {:?}: only HTTP APIs described by OpenAPI are read", api.kind));
        } else if api.operations.is_none() {
            self.find_path(
                dir,
                None,
                "no specification.yaml or specification.json: the API's operations are unknown".into(),
            );
        }
        for (op, op_dir) in dirs(&self.root, &dir.join("operations").to_string_lossy())? {
            match policy(&self.root, &op_dir.join("policy.xml"))? {
                Some(file) => {
                    api.operation_policies.insert(op, file);
                }
                None => self.find_path(&op_dir, None, "an operation folder without policy.xml".into()),
            }
        }
        Ok(Some(api))
    }

    /// The operations of an OpenAPI 3 or Swagger 2 document: methods, templates, operationIds.
    fn specification(&mut self, rel: &Path, path: &Path) -> Result<Vec<SpecOperation>, ExtractError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExtractError::Io { path: rel.to_owned(), source })?;
        let doc: Value = if rel.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .map_err(|e| ExtractError::Json { path: rel.to_owned(), message: e.to_string() })?
        } else {
            serde_saphyr::from_str(&text)
                .map_err(|e| ExtractError::Yaml { path: rel.to_owned(), message: e.to_string() })?
        };
        if doc.get("openapi").is_none() && doc.get("swagger").is_none() {
            self.find_path(rel, None, "neither openapi nor swagger: read as OpenAPI".into());
        }
        let mut out = Vec::new();
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            self.find_path(rel, None, "no paths: the API has no operations".into());
            return Ok(out);
        };
        for (template, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (method, op) in item {
                const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let id = op.get("operationId").and_then(Value::as_str).map(str::to_owned);
                if id.is_none() {
                    self.find_path(
                        rel,
                        None,
                        format!(
                            "{} {template}: no operationId, so no operation policy can be matched to it",
                            method.to_uppercase()
                        ),
                    );
                }
                out.push(SpecOperation { id, method: method.to_uppercase(), template: template.clone() });
            }
        }
        out.sort_by(|a, b| (&a.template, &a.method).cmp(&(&b.template, &b.method)));
        Ok(out)
    }

    /// What refers to something the extract does not hold.
    fn cross_check(&mut self) {
        let mut found = Vec::new();
        for product in self.products.values() {
            for api in &product.apis {
                if !self.apis.contains_key(api) {
                    found.push((
                        PathBuf::from("products").join(&product.name),
                        format!("lists API {api:?}, which the extract does not hold"),
                    ));
                }
            }
        }
        for api in self.apis.values() {
            let dir = PathBuf::from("apis").join(&api.name);
            if let Some(set) = &api.version_set {
                if !self.version_sets.contains_key(set) {
                    found.push((
                        dir.join("apiInformation.json"),
                        format!("version set {set:?} is not in version sets/"),
                    ));
                }
            }
            let ids: Vec<&str> = api.operations.iter().flatten().filter_map(|o| o.id.as_deref()).collect();
            for op in api.operation_policies.keys() {
                if api.operations.is_some() && !ids.contains(&op.as_str()) {
                    found.push((
                        dir.join("operations").join(op),
                        "an operation the specification does not describe: its policy is not used".into(),
                    ));
                }
            }
        }
        for (file, message) in found {
            self.find_path(&file, None, message);
        }
    }

    /// The named value a `{{name}}` reference means: by display name, then by id.
    pub fn named_value(&self, reference: &str) -> Option<&NamedValue> {
        self.named_values.values().find(|v| v.display_name == reference).or_else(|| self.named_values.get(reference))
    }

    /// The products that hold API `api`, sorted. A revision (`api;rev=2`) is in its API's
    /// products.
    pub fn products_of(&self, api: &str) -> Vec<&Product> {
        let base = api.split(";rev=").next().unwrap_or(api);
        self.products.values().filter(|p| p.apis.iter().any(|a| a == api || a == base)).collect()
    }
}

/// A string property.
fn text(props: &Value, key: &str) -> Option<String> {
    props.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The entries of `dir`, sorted by name; empty when it does not exist.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, ExtractError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ExtractError::Io { path: dir.to_owned(), source }),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| ExtractError::Io { path: dir.to_owned(), source })?;
        out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
    }
    out.sort();
    Ok(out)
}

/// The sub-folders of `root/rel`, sorted, as (name, path relative to `root`).
fn dirs(root: &Path, rel: &str) -> Result<Vec<(String, PathBuf)>, ExtractError> {
    Ok(entries(&root.join(rel))?
        .into_iter()
        .filter(|(_, path)| path.is_dir())
        .map(|(name, _)| (name.clone(), Path::new(rel).join(name)))
        .collect())
}

/// The policy document `root/rel`, if it exists.
fn policy(root: &Path, rel: &Path) -> Result<Option<PolicyFile>, ExtractError> {
    match std::fs::read_to_string(root.join(rel)) {
        Ok(xml) => Ok(Some(PolicyFile { path: rel.to_owned(), xml })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ExtractError::Io { path: rel.to_owned(), source }),
    }
}

/// The JSON file `root/rel`, if it exists.
fn read_json(root: &Path, rel: &Path) -> Result<Option<Value>, ExtractError> {
    let text = match std::fs::read_to_string(root.join(rel)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ExtractError::Io { path: rel.to_owned(), source }),
    };
    // The extractor writes a byte-order mark on some platforms.
    let text = text.trim_start_matches('\u{feff}');
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| ExtractError::Json { path: rel.to_owned(), message: e.to_string() })
}
#[cfg(test)]
mod tests;
