//! What every part of the configuration is compiled with: where errors go (each at its
//! `file:line:column`), the files read (each read once and watched for changes), the
//! certificates in use (for expiry tracking) and what is known so far (the gateway's own
//! token issuer).
//!
//! The contract for a policy, a backend or any other section is
//! `compile(&Config, &mut CompileContext) -> Result<Self, Invalid>`: report every problem
//! found through the context, then return [`Invalid`] if any was.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use serde_saphyr::Location;

use super::error::ConfigError;
use super::values::{Located, UnresolvedValue, ValueRef};
use crate::tls::{self, CertificateInUse, ClientCertInfo, TlsError};

/// Proof that at least one error was reported to the [`CompileContext`]: what a section's
/// `compile` returns when it cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// What a `jwt` policy with `issuers: [self]` needs to know of the gateway's own issuer.
#[derive(Clone, Debug)]
pub struct IssuerFacts {
    /// `iss`, without a trailing `/`.
    pub issuer: String,
    /// The `aud` of its tokens.
    pub audience: String,
    /// The algorithms of its published keys, the one it signs with first.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// The JWKS document the issuer publishes.
    pub jwks: Arc<[u8]>,
    /// The subscription keys of its store, for `subscription_key` policies.
    pub keyring: Arc<crate::subscription::Keyring>,
}

/// Where the part being compiled sits in the document, for errors about its fields.
#[derive(Clone, Debug)]
struct Scope {
    name: String,
    path: String,
    at: Location,
}

impl Default for Scope {
    fn default() -> Self {
        Self { name: String::new(), path: String::new(), at: Location::UNKNOWN }
    }
}

/// Certificates expiring within this many days are a warning of `check`.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Collects errors and warnings, reads files once, tracks certificates.
pub struct CompileContext {
    file: PathBuf,
    dir: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    files: Vec<PathBuf>,
    certificates: Vec<CertificateInUse>,
    /// Every file read so far, by full path.
    read: HashMap<PathBuf, Result<Arc<[u8]>, Arc<std::io::Error>>>,
    scope: Scope,
    /// The gateway's own token issuer, once compiled.
    pub issuer: Option<IssuerFacts>,
    /// The configuration's products: the routes each names.
    pub products: Arc<crate::subscription::Products>,
    /// Whether the file has an `identity` section (compiled or not): a broken one is
    /// reported once, not again where `self` is named.
    pub identity_declared: bool,
    /// The secret store's values, when the file has a usable `secrets` section.
    pub secrets: Option<HashMap<String, String>>,
    /// Whether the file has a `secrets` section (usable or not): a broken one is reported
    /// once, not again at every `${secret:}`.
    pub secrets_declared: bool,
    /// The names `${secret:}` references resolved.
    used_secrets: Vec<String>,
    /// Every value read from outside the file (`${env:}`, `${file:}`, `${credential:}`,
    /// `${secret:}`): kept out of everything the gateway writes.
    resolved: Vec<String>,
}

/// What a compiled configuration leaves besides its runtime.
pub struct Collected {
    /// What `check` warns about.
    pub warnings: Vec<ConfigError>,
    /// The configuration file and every file it references.
    pub files: Vec<PathBuf>,
    /// Every certificate in use, for expiry tracking.
    pub certificates: Vec<CertificateInUse>,
    /// The names of the secret store's values the configuration uses.
    pub used_secrets: Vec<String>,
}

impl CompileContext {
    /// A context for the configuration `file`; paths in it are relative to its folder.
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_owned(),
            dir: file.parent().map(Path::to_owned).unwrap_or_default(),
            errors: Vec::new(),
            warnings: Vec::new(),
            files: vec![file.to_owned()],
            certificates: Vec::new(),
            read: HashMap::new(),
            scope: Scope::default(),
            issuer: None,
            products: Arc::default(),
            identity_declared: false,
            secrets: None,
            secrets_declared: false,
            used_secrets: Vec::new(),
            resolved: Vec::new(),
        }
    }

    /// A context for compiling one part on its own (tests, benchmarks, fuzzing): the part is
    /// called `name`, and the paths it names are relative to `dir`.
    pub fn standalone(dir: &Path, name: &str) -> Self {
        let mut cx = Self::new(&dir.join("standalone.yaml"));
        cx.enter(name, format!("policies.{name}"), Location::UNKNOWN);
        cx
    }

    /// The configuration file's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reports an error at `at`, about the document path `path`; add a hint to it.
    pub fn error(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) -> &mut ConfigError {
        self.errors.push(ConfigError::new(&self.file, at, path, message));
        self.errors.last_mut().expect("just pushed")
    }

    /// Reports a warning: `check` prints it, `--strict` refuses it.
    pub fn warn(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) -> &mut ConfigError {
        self.warnings.push(ConfigError::new(&self.file, at, path, message));
        self.warnings.last_mut().expect("just pushed")
    }

    /// Compiles the part called `name` at document path `path` (written at `at`): errors of
    /// [`Self::field_error`] name it.
    pub fn enter(&mut self, name: &str, path: impl Into<String>, at: Location) {
        self.scope = Scope { name: name.to_owned(), path: path.into(), at };
    }

    /// Where the part being compiled is written.
    pub fn at(&self) -> Location {
        self.scope.at
    }

    /// The name of the part being compiled, like a policy's.
    pub fn name(&self) -> &str {
        &self.scope.name
    }

    /// Sets `hint` on every error reported since `mark` that has none.
    pub fn hint_since(&mut self, mark: usize, hint: &str) {
        for error in &mut self.errors[mark..] {
            if error.hint.is_none() {
                error.hint = Some(hint.to_owned());
            }
        }
    }

    /// Reports an error about `field` of the part being compiled, at the part's location.
    pub fn field_error(&mut self, field: &str, message: impl Into<String>) -> &mut ConfigError {
        let at = self.scope.at;
        self.field_error_at(at, field, message)
    }

    /// Reports an error about `field` of the part being compiled, written at `at`.
    pub fn field_error_at(&mut self, at: Location, field: &str, message: impl Into<String>) -> &mut ConfigError {
        let path = if field.is_empty() { self.scope.path.clone() } else { format!("{}.{field}", self.scope.path) };
        self.error(at, path, message)
    }

    /// How many errors were reported so far: pass it to [`Self::valid_since`].
    pub fn mark(&self) -> usize {
        self.errors.len()
    }

    /// `Err(Invalid)` if an error was reported since `mark`.
    ///
    /// # Errors
    /// See above.
    pub fn valid_since(&self, mark: usize) -> Result<(), Invalid> {
        if self.errors.len() == mark {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// The full path of a file the configuration names; it is watched for changes.
    pub fn path(&mut self, file: &str) -> PathBuf {
        let full = self.dir.join(file);
        if !self.files.contains(&full) {
            self.files.push(full.clone());
        }
        full
    }

    /// The content of a file the configuration names, read once however often it is named.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read(&mut self, file: &str) -> Result<Arc<[u8]>, Arc<std::io::Error>> {
        let full = self.path(file);
        self.read.entry(full).or_insert_with_key(|full| std::fs::read(full).map(Arc::from).map_err(Arc::new)).clone()
    }

    /// Resolves an inline value or a `${env:}`, `${file:}` (watched), `${credential:}` or
    /// `${secret:}` reference; every resolved reference is concealed from what is written.
    ///
    /// # Errors
    /// The variable is unset or the file unreadable; the message names which, never the value.
    pub fn value(&mut self, value: &ValueRef) -> Result<String, UnresolvedValue> {
        let resolved = match value {
            ValueRef::Literal(text) => return Ok(text.clone()),
            ValueRef::File(file) => {
                self.path(file);
                value.resolve(&self.dir)?
            }
            ValueRef::Secret(name) => {
                let Some(secrets) = &self.secrets else {
                    return Err(if self.secrets_declared {
                        UnresolvedValue::SecretStoreUnusable
                    } else {
                        UnresolvedValue::NoSecretStore(name.clone())
                    });
                };
                let found = secrets.get(name).ok_or_else(|| UnresolvedValue::UnknownSecret(name.clone()))?.clone();
                if !self.used_secrets.contains(name) {
                    self.used_secrets.push(name.clone());
                }
                found
            }
            _ => value.resolve(&self.dir)?,
        };
        self.resolved.push(resolved.clone());
        Ok(resolved)
    }

    /// Every value read from outside the file so far: never to be written anywhere.
    pub fn concealed(&self) -> &[String] {
        &self.resolved
    }

    /// Keeps `value`, a secret held some other way, out of everything the gateway writes.
    pub fn conceal(&mut self, value: &str) {
        self.resolved.push(value.to_owned());
    }

    /// The certificates of a PEM file, registered for expiry tracking under `usage` (like
    /// `listeners[0].tls.certificates[0].cert`). A failure is reported at the file's reference.
    ///
    /// # Errors
    /// The file is unreadable or holds no certificate (already reported).
    pub fn certs(&mut self, file: &Located, usage: &str) -> Result<Vec<CertificateDer<'static>>, Invalid> {
        let full = self.dir.join(&file.value);
        let parsed = match self.read(&file.value) {
            Ok(pem) => tls::parse_certs(&pem, &full),
            Err(e) => Err(TlsError::Read { path: full.clone(), source: std::io::Error::new(e.kind(), e.to_string()) }),
        };
        match parsed {
            Ok(certs) => {
                self.track(file, usage, &certs);
                Ok(certs)
            }
            Err(e) => {
                self.error(file.referenced, usage, e.to_string()).hint(
                    "paths are relative to the configuration file; `portcullis certs dev` creates development certificates",
                );
                Err(Invalid)
            }
        }
    }

    /// Registers certificates read from `file` for expiry tracking under `usage`, and warns
    /// about those close to expiry.
    fn track(&mut self, file: &Located, usage: &str, certs: &[CertificateDer<'static>]) {
        let full = self.dir.join(&file.value);
        for der in certs {
            if let Ok(info) = ClientCertInfo::parse(der) {
                self.warn_if_expiring(file.referenced, usage, &info);
                self.certificates.push(CertificateInUse {
                    path: full.clone(),
                    usage: usage.to_owned(),
                    subject: info.subject,
                    serial: info.serial,
                    not_after: info.not_after,
                });
            }
        }
    }

    /// The certificate chain and key of a PKCS#12 file, opened with `password`; the chain is
    /// registered for expiry tracking under `usage`. A failure is reported at the file.
    ///
    /// # Errors
    /// Unreadable, a wrong password, or unusable (already reported).
    pub fn pkcs12(
        &mut self,
        file: &Located,
        password: &str,
        usage: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, rustls_pki_types::PrivateKeyDer<'static>), Invalid> {
        let full = self.dir.join(&file.value);
        let opened = match self.read(&file.value) {
            Ok(der) => tls::parse_pkcs12(&der, password, &full),
            Err(e) => Err(TlsError::Read { path: full, source: std::io::Error::new(e.kind(), e.to_string()) }),
        };
        match opened {
            Ok((certs, key)) => {
                self.track(file, usage, &certs);
                Ok((certs, key))
            }
            Err(e) => {
                self.error(file.referenced, usage, e.to_string());
                Err(Invalid)
            }
        }
    }

    /// A certificate that expires within [`EXPIRY_WARNING_DAYS`] (or has expired) is a warning
    /// at the file that names it.
    fn warn_if_expiring(&mut self, at: Location, usage: &str, info: &ClientCertInfo) {
        let days = (info.not_after - crate::clock::unix_now() as i64).div_euclid(86_400);
        if days >= EXPIRY_WARNING_DAYS {
            return;
        }
        let when = if days < 0 { format!("expired {} days ago", -days) } else { format!("expires in {days} days") };
        self.warn(at, usage, format!("certificate {:?} {when}", info.subject)).hint(
            "renew it before it expires; `portcullis certs check` lists every certificate in use with its expiry",
        );
    }

    /// The errors, in file order, if there were any; else what a runtime keeps.
    ///
    /// # Errors
    /// Every error reported.
    pub fn finish(mut self) -> Result<Collected, Vec<ConfigError>> {
        // Consequences of a broken `secrets` section; that section's error says it all.
        let consequence = UnresolvedValue::SecretStoreUnusable.to_string();
        self.errors.retain(|e| !e.message.ends_with(&consequence));
        if self.errors.is_empty() {
            Ok(Collected {
                warnings: self.warnings,
                files: self.files,
                certificates: self.certificates,
                used_secrets: self.used_secrets,
            })
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(self.errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_once_however_often_it_is_named_and_watched_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "first").unwrap();
        let mut cx = CompileContext::standalone(dir.path(), "p");
        assert_eq!(&*cx.read("ca.pem").unwrap(), b"first");
        std::fs::write(dir.path().join("ca.pem"), "second").unwrap();
        assert_eq!(&*cx.read("ca.pem").unwrap(), b"first", "the second reference reads nothing");
        assert!(cx.read("absent.pem").is_err());
        let collected = cx.finish().unwrap();
        let watched: Vec<_> = collected.files.iter().filter_map(|f| f.file_name()).collect();
        assert_eq!(watched, ["standalone.yaml", "ca.pem", "absent.pem"]);
    }

    #[test]
    fn errors_since_a_mark_make_a_part_invalid_and_get_the_section_hint() {
        let mut cx = CompileContext::standalone(Path::new("."), "p");
        cx.enter("p", "policies.p.cors", Location::UNKNOWN);
        let mark = cx.mark();
        assert_eq!(cx.valid_since(mark), Ok(()));
        cx.field_error("allowed_origins", "bad origin");
        cx.field_error("max_age", "bad age").hint("own hint");
        assert_eq!(cx.valid_since(mark), Err(Invalid));
        cx.hint_since(mark, "see the cors section");
        let errors = cx.finish().err().unwrap();
        assert_eq!(errors[0].path, "policies.p.cors.allowed_origins");
        assert_eq!(errors[0].hint.as_deref(), Some("see the cors section"));
        assert_eq!(errors[1].hint.as_deref(), Some("own hint"), "a hint given is kept");
    }
}
