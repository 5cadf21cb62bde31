//! Turns a configuration file — the YAML contract of [`raw`] — into a ready [`Runtime`],
//! collecting every error (with its `file:line:column` and a hint) rather than stopping at
//! the first. One file per YAML section; each compiles its part through the shared
//! [`CompileContext`]. Loading builds everything (certificates, keys, routes, backends)
//! without binding a port, so `check` and a reload see exactly what `run` would.

pub mod raw;

mod backends;
mod identity;
mod lint;
mod listeners;
mod policies;
pub mod products;
mod routes;
mod secrets;

use std::path::Path;
use std::sync::Arc;

use serde_saphyr::Location;

use crate::config::context::CompileContext;
use crate::config::error::{ConfigError, ConfigErrors};
use crate::request::client_ip::IpSet;
use crate::request::headers::GatewayHeaders;
use crate::runtime::{Runtime, DEFAULT_DRAIN_TIMEOUT};
use crate::store::StoreLocation;
use raw::RawConfig;

/// A compiled configuration and what `check` should warn about.
pub struct Loaded {
    /// The compiled configuration.
    pub runtime: Runtime,
    /// What `check` warns about (and `--strict` refuses).
    pub warnings: Vec<ConfigError>,
}

/// Reads, parses and compiles a configuration file.
///
/// # Errors
/// Every problem found, each with its location in the file.
pub fn load(file: &Path) -> Result<Loaded, ConfigErrors> {
    let raw = read_raw(file, "check the path given to --config")?;
    compile(file, raw)
}

/// Parses and compiles `text` as if it were the content of `file` (paths in it are
/// relative to `file`'s folder).
///
/// # Errors
/// As [`load`].
pub fn load_text(file: &Path, text: &str) -> Result<Loaded, ConfigErrors> {
    let raw = parse_raw(file, text)?;
    compile(file, raw)
}

/// Parses `text` against the configuration contract, without compiling it: every key known,
/// every value of its type; no file is read and no reference resolved (`import-apim` reads its
/// output back with it).
///
/// # Errors
/// What the parser refused, with its location.
pub fn parse_text(file: &Path, text: &str) -> Result<(), ConfigErrors> {
    parse_raw(file, text).map(drop)
}

/// Reads and parses the file; `hint` says what to do when it cannot be read.
fn read_raw(file: &Path, hint: &str) -> Result<RawConfig, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError::new(file, Location::UNKNOWN, "", format!("cannot read the configuration: {e}")).with_hint(hint)
    })?;
    parse_raw(file, &text)
}

fn parse_raw(file: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    serde_saphyr::from_str(text).map_err(|e| ConfigError::from_parse(file, &e).into())
}

/// Where the configuration's `identity.store` lives, read without compiling the rest (for
/// the `systems`, `users` and `audit` commands).
///
/// # Errors
/// The file is unreadable or malformed, has no `identity` section, or a bad store location.
pub fn identity_store(file: &Path) -> Result<StoreLocation, ConfigErrors> {
    let raw = read_raw(file, "pass --config FILE, or --store sqlite:PATH or --store postgres://USER@HOST/DATABASE")?;
    let Some(identity) = raw.identity else {
        return Err(ConfigError::new(
            file,
            Location::UNKNOWN,
            "identity",
            "the configuration has no `identity` section",
        )
        .with_hint("add one (see README.md, token issuer), or pass --store sqlite:PATH or --store postgres://…")
        .into());
    };
    let dir = file.parent().map(Path::to_owned).unwrap_or_default();
    StoreLocation::parse(&identity.value.store.value, &dir)
        .map_err(|e| ConfigError::new(file, identity.value.store.referenced, "identity.store", e.to_string()).into())
}

/// The scopes the configuration's `identity.scopes` offers, read without compiling the rest
/// (for granting them with `systems create --scopes` and `systems scopes --set`).
///
/// # Errors
/// The file is unreadable or malformed, or has no `identity` section.
pub fn identity_scopes(file: &Path) -> Result<Vec<String>, ConfigErrors> {
    let raw = read_raw(file, "pass --config FILE: the scopes granted must be in its identity.scopes")?;
    match raw.identity {
        Some(identity) => Ok(identity.value.scopes),
        None => {
            Err(ConfigError::new(file, Location::UNKNOWN, "identity", "the configuration has no `identity` section")
                .into())
        }
    }
}

/// The secret store's location and master key as the configuration names them, read without
/// compiling the rest (for the `secrets` command).
///
/// # Errors
/// The file is unreadable or malformed, has no `secrets` section, the key cannot be read, or
/// the store location is bad.
pub fn secret_store(file: &Path) -> Result<(StoreLocation, String), ConfigErrors> {
    let raw = read_raw(file, "pass --config FILE")?;
    let Some(section) = &raw.secrets else {
        return Err(ConfigError::new(file, Location::UNKNOWN, "secrets", "the configuration has no `secrets` section")
            .with_hint("add `secrets: { master_key: ${env:PORTCULLIS_MASTER_KEY} }` (see README.md, secrets)")
            .into());
    };
    let dir = file.parent().map(Path::to_owned).unwrap_or_default();
    let key_ref = &section.value.master_key;
    let key = key_ref
        .value
        .resolve(&dir)
        .map_err(|e| ConfigError::new(file, key_ref.referenced, "secrets.master_key", e.to_string()))?;
    let location = match (&section.value.store, &raw.identity) {
        (Some(store), _) => store,
        (None, Some(identity)) => &identity.value.store,
        (None, None) => {
            return Err(ConfigError::new(
                file,
                section.referenced,
                "secrets",
                "no `store`, and no `identity.store` to share",
            )
            .into())
        }
    };
    let store = StoreLocation::parse(&location.value, &dir)
        .map_err(|e| ConfigError::new(file, location.referenced, "secrets.store", e.to_string()))?;
    Ok((store, key))
}

/// Compiles every section, in dependency order: backends and the token issuer first (the
/// policies and routes refer to them), then policies, routes, listeners and the rest.
fn compile(file: &Path, raw: RawConfig) -> Result<Loaded, ConfigErrors> {
    let mut cx = CompileContext::new(file);
    if raw.version.value != 1 {
        cx.error(raw.version.referenced, "version", format!("unsupported version {}", raw.version.value))
            .hint("write `version: 1`");
    }
    let secret_store = secrets::compile(&raw, &mut cx);
    let backends = backends::compile(&raw.backends, &mut cx);
    cx.identity_declared = raw.identity.is_some();
    let issuer = raw.identity.as_ref().and_then(|i| identity::compile(i, &raw.listeners, &mut cx));
    cx.issuer = issuer.as_ref().map(|(issuer, _)| issuer.facts());
    cx.products = Arc::new(products::compile(&raw.products, &raw.routes, &mut cx));
    let policies = policies::compile(&raw.policies, &mut cx);
    let mut gateway_headers = GatewayHeaders::default();
    for policy in policies.values() {
        for name in policy.policy.forwarded_headers() {
            gateway_headers.insert(name.clone());
        }
    }
    let declared = routes::Declared { policies: &raw.policies, backends: &raw.backends };
    let defaults = routes::references(&raw.default_policies, "default_policies", &policies, &declared, &mut cx);
    let mut table = routes::compile(&raw.routes, &defaults, &policies, &backends, &declared, &mut cx);
    if let Some((issuer, listener)) = &issuer {
        identity::warn_about_default_jwt(&raw.default_policies, &policies, &mut cx);
        // The issuer's endpoints come first on its listener, through the default policies only.
        let mut routes = identity::routes(issuer.clone(), listener, &defaults);
        routes.append(&mut table.routes);
        table.routes = routes;
    }
    let listeners = listeners::compile(&raw.listeners, &mut cx);
    let admin = raw.admin.as_ref().and_then(|a| listeners::socket_addr(&a.bind, "admin.bind", &mut cx));
    if let (Some(addr), Some(a)) = (admin, &raw.admin) {
        if !addr.ip().is_loopback() && a.allow.is_empty() {
            cx.warn(a.bind.referenced, "admin.bind", format!("the admin listener ({addr}) is reachable beyond this host and has no `allow` list: anyone who reaches it can reload the configuration and read metrics"))
                .hint("bind it to 127.0.0.1, or add `allow: [your monitoring network]`");
        }
    }
    lint::lint(&raw, &policies, &gateway_headers, &mut cx);
    crate::redact::conceal(cx.concealed());
    let collected = cx.finish().map_err(ConfigErrors)?;
    if let Some(store) = secret_store.filter(|_| !collected.used_secrets.is_empty()) {
        if let Err(e) = store.secrets_used(&collected.used_secrets, crate::clock::unix_now() as i64) {
            tracing::warn!(error = %e, "could not record which secrets the configuration uses");
        }
    }
    let runtime = Runtime {
        source: file.to_owned(),
        listeners,
        admin,
        admin_allow: IpSet::new(raw.admin.iter().flat_map(|a| a.allow.iter().copied())),
        watch_files: raw.watch_files.unwrap_or(true),
        trusted_proxies: IpSet::new(raw.trusted_proxies.iter().map(|net| net.value)),
        forwarded_header: raw.forwarded_header,
        routes: table,
        backends: backends.into_values().collect(),
        policies: policies::sorted(policies),
        gateway_headers,
        drain_timeout: raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
        files: collected.files,
        certificates: collected.certificates,
        issuer: issuer.map(|(issuer, _)| issuer),
        expiry_series: std::sync::OnceLock::new(),
    };
    Ok(Loaded { runtime, warnings: collected.warnings })
}

/// Names, sorted and joined for a hint: `a, b, c`, or `(none)`.
fn sorted_keys<'k>(keys: impl Iterator<Item = &'k String>) -> String {
    let mut keys: Vec<&str> = keys.map(String::as_str).collect();
    keys.sort_unstable();
    if keys.is_empty() {
        "(none)".to_owned()
    } else {
        keys.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        match load_text(&dir.path().join("gateway.yaml"), yaml) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0,
        }
    }

    /// `line:column path: message` of each error.
    fn located(yaml: &str) -> Vec<String> {
        errors(yaml).iter().map(|e| format!("{}:{} {}: {}", e.line, e.column, e.path, e.message)).collect()
    }

    const HEAD: &str = "version: 1\nbackends:\n  echo: { builtin: echo }\n";

    #[test]
    fn a_valid_file_compiles_and_each_mistake_is_one_error_at_its_place() {
        let good = format!("{HEAD}routes:\n  - {{ name: a, match: {{ path_prefix: /a }}, backend: echo }}\n");
        assert_eq!(located(&good), Vec::<String>::new());
        let bad = format!(
            "{HEAD}  app: {{ urls: [\"ftp://x\"] }}\nroutes:\n  - {{ name: a, match: {{ path: \"/a/{{}}\" }}, policies: [nope], backend: echo }}\n"
        );
        let found = located(&bad);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("4:17 backends.app.urls[0]: url \"ftp://x\""), "{found:#?}");
        assert!(found[1].starts_with("6:31 routes[0].match.path: invalid parameter"), "{found:#?}");
        assert!(found[2].starts_with("6:53 routes[0].policies[0]: unknown policy \"nope\""), "{found:#?}");
    }

    #[test]
    fn a_broken_policy_is_reported_once_not_again_where_it_is_used() {
        let yaml = format!(
            "{HEAD}policies:\n  two: {{ cors: {{ allowed_origins: [\"*\"], allow_credentials: true }}, ip_filter: {{}} }}\nroutes:\n  - {{ name: a, match: {{}}, policies: [two], backend: echo }}\n"
        );
        let found = errors(&yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].message, "a policy has exactly one kind");
    }

    #[test]
    fn policy_errors_name_their_field_and_point_to_the_policy_or_the_field() {
        let yaml = format!(
            "{HEAD}policies:\n  portal:\n    cors: {{ allowed_origins: [\"https://*.a.*.com\"] }}\n  api:\n    jwt:\n      issuers: [https://idp]\n      algorithms: [RS256]\n      keys: [missing.pem]\n"
        );
        let found = errors(&yaml);
        assert_eq!(found.len(), 2, "{found:#?}");
        let (jwt, cors) = (&found[1], &found[0]);
        assert_eq!((cors.path.as_str(), cors.line), ("policies.portal.cors.allowed_origins", 6));
        assert_eq!(cors.hint.as_deref(), Some("see the cors section of README.md"));
        assert_eq!(
            (jwt.path.as_str(), jwt.line, jwt.column),
            ("policies.api.jwt.keys[0]", 11, 14),
            "at the file's name"
        );
        assert!(jwt.message.contains("missing.pem"), "{}", jwt.message);
    }

    #[test]
    fn a_route_accepts_websocket_upgrades_only_and_h2c_is_an_error_that_says_why() {
        let good = format!(
            "{HEAD}routes:\n  - {{ name: a, match: {{}}, backend: echo, upgrades: [WebSocket] }}\n  - {{ name: b, match: {{ path: /b }}, backend: echo }}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_text(&dir.path().join("gateway.yaml"), &good).unwrap();
        let websocket: Vec<bool> = loaded.runtime.routes.routes.iter().map(|r| r.websocket).collect();
        assert_eq!(websocket, [true, false]);
        let bad =
            format!("{HEAD}routes:\n  - {{ name: a, match: {{}}, backend: echo, upgrades: [websocket, h2c, foo] }}\n");
        let found = errors(&bad);
        let at: Vec<String> =
            found.iter().map(|e| format!("{}:{} {}: {}", e.line, e.column, e.path, e.message)).collect();
        assert_eq!(
            at,
            [
                "5:64 routes[0].upgrades[1]: h2c upgrades are never passed to a backend",
                "5:69 routes[0].upgrades[2]: unknown upgrade \"foo\""
            ]
        );
        assert!(found[0].hint.as_deref().is_some_and(|h| h.contains("smuggling")), "{:?}", found[0].hint);
    }

    #[test]
    fn websocket_limits_have_defaults_and_are_warned_about_without_the_upgrade() {
        let yaml = format!(
            "{HEAD}routes:\n  - {{ name: a, match: {{ path: /a }}, backend: echo, upgrades: [websocket], websocket: {{ idle_timeout: 300ms, max_message_bytes: 64KiB, close_on_credential_expiry: false }} }}\n  - {{ name: b, match: {{ path: /b }}, backend: echo, upgrades: [websocket] }}\n  - {{ name: c, match: {{ path: /c }}, backend: echo, websocket: {{ max_lifetime: 1h }} }}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_text(&dir.path().join("gateway.yaml"), &yaml).unwrap();
        let limits: Vec<_> = loaded.runtime.routes.routes.iter().map(|r| r.tunnel).collect();
        let d = crate::route::TunnelLimits::default();
        assert_eq!(
            limits[0],
            crate::route::TunnelLimits {
                idle_timeout: std::time::Duration::from_millis(300),
                max_message_bytes: 64 * 1024,
                close_on_credential_expiry: false,
                ..d
            }
        );
        assert_eq!((limits[1], d.max_message_bytes, d.close_on_credential_expiry), (d, 1 << 20, true));
        assert_eq!(limits[2].max_lifetime, std::time::Duration::from_secs(3600));
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].message.contains("without `upgrades: [websocket]`"), "{}", loaded.warnings[0]);
        assert!(
            errors(&format!(
                "{HEAD}routes:\n  - {{ name: a, match: {{}}, backend: echo, websocket: {{ idle: 1s }} }}\n"
            ))
            .len()
                == 1
        );
    }

    #[test]
    fn warnings_do_not_fail_the_load() {
        let yaml = format!(
            "{HEAD}routes:\n  - {{ name: all, match: {{}}, backend: echo }}\n  - {{ name: never, match: {{ path_prefix: /x }}, backend: echo }}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let loaded = load_text(&dir.path().join("gateway.yaml"), &yaml).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].message.contains("\"never\" is never reached"), "{}", loaded.warnings[0]);
        assert_eq!(loaded.runtime.routes.routes.len(), 2);
    }
}
