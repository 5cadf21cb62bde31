//! Turns a configuration file into a ready [`Runtime`], collecting every error (with its
//! `file:line:column` and a hint) rather than stopping at the first. One file per YAML
//! section; each compiles its part through the shared [`CompileContext`].

mod backends;
mod identity;
mod listeners;
mod policies;
mod routes;

use std::path::Path;

use serde_saphyr::Location;

use super::context::CompileContext;
use super::error::{ConfigError, ConfigErrors};
use super::raw::RawConfig;
use crate::identity::StoreLocation;
use crate::request::client_ip::IpSet;
use crate::request::headers::GatewayHeaders;
use crate::runtime::{Runtime, DEFAULT_DRAIN_TIMEOUT};

/// A compiled configuration and what `check` should warn about.
pub struct Loaded {
    pub runtime: Runtime,
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

/// Reads and parses the file; `hint` says what to do when it cannot be read.
fn read_raw(file: &Path, hint: &str) -> Result<RawConfig, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError::new(file, Location::UNKNOWN, "", format!("cannot read the configuration: {e}")).with_hint(hint)
    })?;
    parse_raw(file, &text)
}

fn parse_raw(file: &Path, text: &str) -> Result<RawConfig, ConfigErrors> {
    serde_saphyr::from_str(text).map_err(|e| parse_error(file, &e).into())
}

/// Where the configuration's `identity.store` lives, read without compiling the rest (for
/// the `systems`, `users` and `audit` commands).
///
/// # Errors
/// The file is unreadable or malformed, has no `identity` section, or a bad store location.
pub fn identity_store(file: &Path) -> Result<StoreLocation, ConfigErrors> {
    let raw = read_raw(file, "pass --config FILE, or --store sqlite:PATH")?;
    let Some(identity) = raw.identity else {
        return Err(ConfigError::new(
            file,
            Location::UNKNOWN,
            "identity",
            "the configuration has no `identity` section",
        )
        .with_hint("add one (see README.md, token issuer), or pass --store sqlite:PATH")
        .into());
    };
    let dir = file.parent().map(Path::to_owned).unwrap_or_default();
    StoreLocation::parse(&identity.value.store.value, &dir)
        .map_err(|e| ConfigError::new(file, identity.value.store.referenced, "identity.store", e.to_string()).into())
}

fn parse_error(file: &Path, error: &serde_saphyr::Error) -> ConfigError {
    let at = error.location().unwrap_or(Location::UNKNOWN);
    let message = error.without_snippet().to_string();
    // The message ends with its own " at line L column C"; the location is printed in front.
    let message = message.split(" at line ").next().unwrap_or(&message).trim().to_owned();
    let hint = if message.contains("unknown field") {
        "remove the key or fix its spelling; the message lists the keys allowed here"
    } else {
        "see the configuration reference in README.md"
    };
    ConfigError::new(file, at, "", message).with_hint(hint)
}

/// Compiles every section, in dependency order: backends and the token issuer first (the
/// policies and routes refer to them), then policies, routes, listeners and the rest.
fn compile(file: &Path, raw: RawConfig) -> Result<Loaded, ConfigErrors> {
    let mut cx = CompileContext::new(file);
    if raw.version.value != 1 {
        cx.error(raw.version.referenced, "version", format!("unsupported version {}", raw.version.value))
            .hint("write `version: 1`");
    }
    let backends = backends::compile(&raw.backends, &mut cx);
    let issuer = raw.identity.as_ref().and_then(|i| identity::compile(i, &raw.listeners, &mut cx));
    cx.issuer = issuer.as_ref().map(|(issuer, _)| issuer.facts());
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
            cx.warn(a.bind.referenced, "admin.bind", format!("the admin listener ({addr}) is reachable beyond this host and has no `allow` list: anyone who reaches it can reload the configuration and read metrics"));
        }
    }
    let collected = cx.finish().map_err(ConfigErrors)?;
    let runtime = Runtime {
        source: file.to_owned(),
        listeners,
        admin,
        admin_allow: IpSet::new(raw.admin.iter().flat_map(|a| a.allow.iter().copied())),
        watch_files: raw.watch_files.unwrap_or(true),
        trusted_proxies: IpSet::new(raw.trusted_proxies.iter().copied()),
        routes: table,
        backends: backends.into_values().collect(),
        policies: policies::sorted(policies),
        gateway_headers,
        drain_timeout: raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
        files: collected.files,
        certificates: collected.certificates,
        issuer: issuer.map(|(issuer, _)| issuer),
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
