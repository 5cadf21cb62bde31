//! TLS for the listeners (rustls server with SNI certificate selection, minimum version, ALPN
//! h2 + http/1.1, client certificates verified at the handshake against trusted CAs and CRLs)
//! and for backends (rustls client with private CAs and a client certificate).

pub mod client_cert;
pub mod dn;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

pub use client_cert::ClientCertInfo;

/// The one crypto provider the gateway uses for TLS, token signatures and secrets alike
/// (aws-lc-rs; see the README's dependency table).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why a certificate, key or TLS configuration could not be used. Messages name the file,
/// never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CRL file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file, as it was opened.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A certificate file is not valid PEM.
    #[error("{} is not a PEM certificate file: {reason}", path.display())]
    NotPem {
        /// The certificate file.
        path: PathBuf,
        /// The PEM parser's complaint.
        reason: String,
    },
    /// A PEM file parsed but holds no `CERTIFICATE` block.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// A key file holds no PKCS#8, PKCS#1 or SEC1 private key in PEM.
    #[error("{} holds no usable PEM private key: {reason}", path.display())]
    NoKey {
        /// The key file.
        path: PathBuf,
        /// The PEM parser's complaint.
        reason: String,
    },
    /// A PKCS#12 (`.pfx`, `.p12`) file that cannot be opened.
    #[error("{}: {reason}", path.display())]
    Pkcs12 {
        /// The file.
        path: PathBuf,
        /// Why it cannot be opened.
        reason: String,
    },
    /// The key's type is unsupported, or it does not belong to the certificate.
    #[error("certificate and key do not fit together: {0}")]
    KeyMismatch(rustls::Error),
    /// rustls refused a certificate as a trust anchor.
    #[error("not a usable CA certificate: {0}")]
    BadCa(rustls::Error),
    /// A certificate's DER could not be parsed as X.509 (reading its DNS names for SNI).
    #[error("unreadable certificate: {0}")]
    Unparsable(#[from] client_cert::NotX509),
    /// A listener was given no certificate to serve.
    #[error("at least one certificate is needed")]
    NoCertificates,
    /// The crypto provider cannot offer the requested protocol versions.
    #[error("cannot offer these TLS versions: {0}")]
    Versions(rustls::Error),
    /// The client certificate verifier rejected its CAs or CRLs.
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// Reads every certificate of a PEM file.
///
/// # Errors
/// The file is unreadable, not PEM, or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read(path)?, path)
}

/// Every certificate of PEM text read from `path`.
///
/// # Errors
/// Not PEM, or no certificate.
pub fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem { path: path.to_owned(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// The file is unreadable or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .map_err(|e| TlsError::NoKey { path: path.to_owned(), reason: e.to_string() })
}

/// Whether a certificate file is PKCS#12 (`.pfx`, `.p12`) rather than PEM.
pub fn is_pkcs12(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"))
}

/// The certificate chain (leaf first) and private key of PKCS#12 bytes read from `path`, as
/// Windows (`Export-PfxCertificate`) and OpenSSL (`openssl pkcs12 -export`) write them:
/// AES-256-CBC with PBKDF2 and an HMAC-SHA-256 MAC, or the legacy 3DES and 40-bit RC2 with
/// an HMAC-SHA-1 MAC.
///
/// # Errors
/// Not PKCS#12, a wrong password, an unsupported scheme, or no key with its certificate.
pub fn parse_pkcs12(
    der: &[u8],
    password: &str,
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    use p12_keystore::error::Error as P12;
    let fail = |reason: String| TlsError::Pkcs12 { path: path.to_owned(), reason };
    let store =
        p12_keystore::KeyStore::from_pkcs12(der, password, p12_keystore::Pkcs12ImportPolicy::Strict).map_err(|e| {
            fail(match e {
                P12::MacError(_) => "wrong password, or the file is damaged (its integrity check fails)".to_owned(),
                P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => format!(
                    "{e}: re-export it with AES-256 (`openssl pkcs12 -export -keypbe AES-256-CBC -certpbe AES-256-CBC`)"
                ),
                other => format!("not a usable PKCS#12 file: {other}"),
            })
        })?;
    let (_, chain) =
        store.private_key_chain().ok_or_else(|| fail("holds no private key with its certificate".to_owned()))?;
    let certs: Vec<CertificateDer<'static>> =
        chain.certs().iter().map(|c| CertificateDer::from(c.as_der().to_vec())).collect();
    if certs.is_empty() {
        return Err(fail("holds no certificate for its private key".to_owned()));
    }
    let key = PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into());
    Ok((certs, key))
}

/// Reads a certificate revocation list, PEM or DER.
///
/// # Errors
/// The file is unreadable.
pub fn load_crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, TlsError> {
    let bytes = read(path)?;
    match CertificateRevocationListDer::from_pem_slice(&bytes) {
        Ok(crl) => Ok(crl),
        Err(_) => Ok(CertificateRevocationListDer::from(bytes)),
    }
}

/// A certificate the configuration uses, and where, for expiry tracking.
#[derive(Clone, Debug)]
pub struct CertificateInUse {
    /// The PEM file, resolved against the configuration file's directory.
    pub path: PathBuf,
    /// Where in the configuration, like `listeners[0].tls.certificates[0].cert`.
    pub usage: String,
    /// The certificate's subject, RFC 4514 form.
    pub subject: String,
    /// The serial number, upper-case hex: tells a renewed certificate in the same file apart.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

fn root_store(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(TlsError::BadCa)?;
    }
    Ok(roots)
}

/// Binds a certificate chain to its key, checking that they belong together.
///
/// # Errors
/// The key type is unsupported or does not match the certificate.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::KeyMismatch)?;
    Ok(Arc::new(certified))
}

/// What a listener asks of client certificates at the handshake.
pub enum ClientAuth {
    /// Ask for no client certificate.
    None,
    /// Verify a presented certificate against `cas` and `crls`; `required` refuses a
    /// handshake without one.
    Verify {
        /// The CAs a client certificate must chain to.
        cas: Vec<CertificateDer<'static>>,
        /// Revocation lists checked against the presented chain.
        crls: Vec<CertificateRevocationListDer<'static>>,
        /// Refuse the handshake when the client presents no certificate.
        required: bool,
    },
}

/// Builds a listener's TLS configuration. The first certificate is the default; the others
/// are chosen by SNI against their DNS names.
///
/// # Errors
/// A certificate or CA is unusable, or the versions cannot be offered.
pub fn server_config(
    certificates: Vec<Arc<CertifiedKey>>,
    tls13_only: bool,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions).map_err(TlsError::Versions)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Verify { cas, crls, required } => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(cas)?), provider()).with_crls(crls);
            let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(TlsError::Verifier)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(certificates)?));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Picks a certificate by the client's SNI name: exact DNS names first, then `*.domain`
/// wildcards, then the default (the first certificate).
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn new(certificates: Vec<Arc<CertifiedKey>>) -> Result<Self, TlsError> {
        let default = certificates.first().cloned().ok_or(TlsError::NoCertificates)?;
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for key in &certificates {
            let names = client_cert::dns_names(&key.cert[0])?;
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(domain) => wildcard.entry(domain.to_owned()).or_insert_with(|| key.clone()),
                    None => exact.entry(name).or_insert_with(|| key.clone()),
                };
            }
        }
        Ok(Self { exact, wildcard, default })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        // rustls hands over the SNI name already lower-cased and validated.
        if let Some(key) = self.exact.get(name) {
            return Some(key.clone());
        }
        let parent = name.split_once('.').map(|(_, parent)| parent);
        Some(parent.and_then(|p| self.wildcard.get(p)).unwrap_or(&self.default).clone())
    }
}

/// Which CAs a TLS client trusts.
pub enum Roots {
    /// The operating system's roots.
    System,
    /// The system's roots plus these (e.g. an issuer's private CA for key fetches).
    SystemAnd(Vec<CertificateDer<'static>>),
    /// Only these (a backend's private CA).
    Only(Vec<CertificateDer<'static>>),
}

/// A TLS client configuration, presenting `client_cert` when a server asks. ALPN is left to
/// the connector that uses it.
///
/// # Errors
/// A CA is unusable.
pub fn client_config(roots: Roots, client_cert: Option<Arc<CertifiedKey>>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match roots {
        Roots::Only(cas) => root_store(cas)?,
        Roots::System | Roots::SystemAnd(_) => {
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if let Roots::SystemAnd(extra) = roots {
                for cert in extra {
                    store.add(cert).map_err(TlsError::BadCa)?;
                }
            }
            store
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?
        .with_root_certificates(roots);
    let config = match client_cert {
        Some(key) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(key))),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Presents one client certificate to every server that asks.
#[derive(Debug)]
pub struct FixedClientCert(pub Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
