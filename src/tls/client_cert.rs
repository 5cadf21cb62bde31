//! The client certificate a connection presented, verified at the handshake and parsed once
//! per connection into what policies and forwarded headers need.

use std::fmt::Write as _;

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::dn::Dn;

/// Summary of a verified client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertInfo {
    /// The subject name, rendered as RFC 4514 does (most specific RDN first, values escaped),
    /// e.g. `CN=apim-client,O=Example`; for logs and `trace`. Matching uses `subject_name`.
    pub subject: String,
    /// The issuer's name, rendered as `subject` is.
    pub issuer: String,
    /// The subject name, parsed.
    pub subject_name: Dn,
    /// The issuer's name, parsed.
    pub issuer_name: Dn,
    /// Upper-case hex, no separators.
    pub serial: String,
    /// SHA-256 of the DER certificate, upper-case hex.
    pub thumbprint_sha256: String,
    /// The DNS names of the subject alternative name extension, as written.
    pub dns_names: Vec<String>,
    /// The URIs of the subject alternative name extension (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

/// DER bytes that are no X.509 certificate.
#[derive(Debug, thiserror::Error)]
#[error("not an X.509 certificate: {0}")]
pub struct NotX509(pub String);

impl ClientCertInfo {
    /// Parses the end-entity certificate.
    ///
    /// # Errors
    /// The DER is not an X.509 certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, NotX509> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| NotX509(e.to_string()))?;
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        let subject_name = Dn::from_x509(cert.subject());
        let issuer_name = Dn::from_x509(cert.issuer());
        Ok(Self {
            subject: subject_name.to_string(),
            issuer: issuer_name.to_string(),
            subject_name,
            issuer_name,
            serial: hex_upper(cert.raw_serial()),
            thumbprint_sha256: hex_upper(&Sha256::digest(der.as_ref())),
            dns_names,
            uris,
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// The DNS names a certificate is valid for (its SAN DNS entries).
///
/// # Errors
/// The DER is not an X.509 certificate.
pub fn dns_names(der: &CertificateDer<'_>) -> Result<Vec<String>, NotX509> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| NotX509(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push((*n).to_owned());
            }
        }
    }
    Ok(names)
}

fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}
