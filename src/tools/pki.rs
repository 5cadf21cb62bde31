//! Development key material made with rcgen: a CA, server and client certificates, and a
//! token-signing key. Used by `certs dev`, `demo` and the tests; never for production.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority that can issue leaves.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    params: CertificateParams,
    key: KeyPair,
}

/// An issued certificate and its private key, PEM.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Its serial number, big-endian bytes (for CRLs).
    pub serial: Vec<u8>,
}

/// What a leaf certificate is for.
pub enum LeafKind<'a> {
    /// A server certificate for these DNS names and IP addresses.
    Server(&'a [&'a str]),
    /// A client certificate with this subject common name and organization.
    Client {
        /// The subject's CN.
        common_name: &'a str,
        /// The subject's O.
        organization: &'a str,
    },
}

fn name(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

impl Ca {
    /// A new self-signed CA, valid from yesterday for ten years.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name, "portcullis development");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self { cert_pem, params, key })
    }

    /// Issues a leaf valid from yesterday for `days` days (negative: already expired).
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn issue(&self, kind: &LeafKind<'_>, days: i64) -> Result<Leaf, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        self.issue_between(kind, now - Duration::days(1).max(Duration::days(1 - days)), now + Duration::days(days))
    }

    /// Issues a leaf valid from `not_before` to `not_after` (a short-lived one, for tests).
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn issue_between(
        &self,
        kind: &LeafKind<'_>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Leaf, rcgen::Error> {
        let mut params = match kind {
            LeafKind::Server(names) => {
                let mut p = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
                p.distinguished_name = name(names.first().copied().unwrap_or("server"), "portcullis development");
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p
            }
            LeafKind::Client { common_name, organization } => {
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                p.distinguished_name = name(common_name, organization);
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p
            }
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let mut serial: [u8; 16] = crate::id::random_bytes();
        serial[0] &= 0x7f; // a positive INTEGER
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial: serial.to_vec() })
    }

    /// A certificate revocation list, valid for a week, revoking these serials.
    ///
    /// # Errors
    /// Signing failed.
    pub fn crl(&self, revoked: &[&[u8]]) -> Result<String, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        params.signed_by(&issuer)?.pem()
    }
}

/// The files `certs dev` writes, relative to its directory.
pub const DEV_FILES: [&str; 9] = [
    "ca.pem",
    "server.pem",
    "server-key.pem",
    "client-ca.pem",
    "client.pem",
    "client-key.pem",
    "other-client.pem",
    "other-client-key.pem",
    "token-signing-key.pem",
];

/// Creates the development material in `dir` unless every file is already there.
/// Returns whether anything was written.
///
/// Server certificates are signed by `ca.pem` (trust it with `curl --cacert`); client
/// certificates by `client-ca.pem`, which listeners trust; `other-client.pem` comes from a CA
/// nobody trusts. The token-signing key is ECDSA P-256 (ES256), with `token-signing.pub.pem`.
///
/// # Errors
/// Generation failed or a file could not be written.
pub fn ensure_dev_material(dir: &Path, force: bool) -> anyhow::Result<bool> {
    if !force && DEV_FILES.iter().all(|f| dir.join(f).exists()) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let server_ca = Ca::new("portcullis dev CA")?;
    let client_ca = Ca::new("portcullis dev client CA")?;
    let stranger_ca = Ca::new("untrusted CA")?;
    let server = server_ca.issue(&LeafKind::Server(&["localhost", "127.0.0.1", "::1"]), 825)?;
    let client = client_ca.issue(&LeafKind::Client { common_name: "demo-client", organization: "Example" }, 825)?;
    let other = stranger_ca.issue(&LeafKind::Client { common_name: "demo-client", organization: "Example" }, 825)?;
    let signing = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let files: [(&str, &str); 10] = [
        ("ca.pem", &server_ca.cert_pem),
        ("server.pem", &server.cert_pem),
        ("server-key.pem", &server.key_pem),
        ("client-ca.pem", &client_ca.cert_pem),
        ("client.pem", &client.cert_pem),
        ("client-key.pem", &client.key_pem),
        ("other-client.pem", &other.cert_pem),
        ("other-client-key.pem", &other.key_pem),
        ("token-signing-key.pem", &signing.serialize_pem()),
        ("token-signing.pub.pem", &signing.public_key_pem()),
    ];
    for (file, pem) in files {
        write_private(&dir.join(file), pem)?;
    }
    Ok(true)
}

/// Writes a file readable by its owner only (keys live next to certificates).
fn write_private(path: &PathBuf, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}
