//! The issuer's signing key: an ECDSA P-256 (ES256) or Ed25519 (EdDSA) private key in a
//! PKCS#8 PEM file, its public JWK with an RFC 7638 thumbprint as `kid`, and token signing.

use std::path::Path;

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The issuer's private key, with its public JWK, ready to sign tokens.
pub struct SigningKey {
    /// `ES256` for a P-256 key, `EdDSA` for an Ed25519 key.
    pub algorithm: Algorithm,
    /// The RFC 7638 thumbprint of the public key, base64url: the `kid` of tokens and of the JWK.
    pub kid: String,
    /// The public key as a JWK (with `kid`, `use` and `alg`).
    pub jwk: Value,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("algorithm", &self.algorithm).field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// A signing key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The key file could not be read or holds no PEM private key.
    #[error(transparent)]
    Unreadable(#[from] crate::tls::TlsError),
    /// The key is PEM but not PKCS#8 (for example PKCS#1 or SEC1).
    #[error("{} is not a PKCS#8 key (\"BEGIN PRIVATE KEY\"); convert it with `openssl pkcs8 -topk8 -nocrypt`", .0.display())]
    NotPkcs8(std::path::PathBuf),
    /// The PKCS#8 key is neither ECDSA P-256 nor Ed25519.
    #[error("{} is neither an ECDSA P-256 (ES256) nor an Ed25519 key", .0.display())]
    Unsupported(std::path::PathBuf),
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// Unreadable, not PKCS#8, or neither P-256 nor Ed25519.
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let der = match crate::tls::load_key(path)? {
            PrivateKeyDer::Pkcs8(der) => der,
            _ => return Err(SigningKeyError::NotPkcs8(path.to_owned())),
        };
        let der = der.secret_pkcs8_der();
        let (algorithm, members, key) =
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
                // An uncompressed point: 0x04, then x and y.
                let point = pair.public_key().as_ref();
                let (x, y) = point[1..].split_at(32);
                let members = json!({"crv": "P-256", "kty": "EC", "x": b64(x), "y": b64(y)});
                (Algorithm::ES256, members, EncodingKey::from_ec_der(der))
            } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                let members = json!({"crv": "Ed25519", "kty": "OKP", "x": b64(pair.public_key().as_ref())});
                (Algorithm::EdDSA, members, EncodingKey::from_ed_der(der))
            } else {
                return Err(SigningKeyError::Unsupported(path.to_owned()));
            };
        let (kid, jwk) = public_jwk(algorithm, members);
        Ok(Self { algorithm, kid, jwk, key })
    }

    /// Signs `claims` as an RFC 9068 access token (`typ: at+jwt`).
    ///
    /// # Errors
    /// Signing failed (a broken key).
    pub fn sign(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// A public key published beside the signing key — another instance's key, or the next key
/// of a rotation — so that tokens it signs verify wherever this issuer's JWKS is trusted.
#[derive(Clone, Debug)]
pub struct PublishedKey {
    /// `ES256` or `EdDSA`.
    pub algorithm: Algorithm,
    /// The public JWK, with its RFC 7638 thumbprint as `kid`.
    pub jwk: Value,
}

impl PublishedKey {
    /// Reads a PEM public key (`BEGIN PUBLIC KEY`, P-256 or Ed25519), or the public half of
    /// a PKCS#8 private key.
    ///
    /// # Errors
    /// Unreadable, or not a P-256 or Ed25519 key.
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        use rustls_pki_types::pem::PemObject;
        use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
        use x509_parser::prelude::FromDer;
        let pem = std::fs::read(path).map_err(|e| crate::tls::TlsError::Read { path: path.to_owned(), source: e })?;
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            let key = SigningKey::load(path)?;
            return Ok(Self { algorithm: key.algorithm, jwk: key.jwk });
        }
        let unsupported = || SigningKeyError::Unsupported(path.to_owned());
        let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|_| unsupported())?;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).map_err(|_| unsupported())?;
        let point = spki.subject_public_key.data.as_ref();
        let (algorithm, members) = if spki.algorithm.algorithm == OID_SIG_ED25519 && point.len() == 32 {
            (Algorithm::EdDSA, json!({"crv": "Ed25519", "kty": "OKP", "x": b64(point)}))
        } else if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
            && spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()) == Some(OID_EC_P256)
            && point.len() == 65
            && point[0] == 4
        {
            let (x, y) = point[1..].split_at(32);
            (Algorithm::ES256, json!({"crv": "P-256", "kty": "EC", "x": b64(x), "y": b64(y)}))
        } else {
            return Err(unsupported());
        };
        Ok(Self { algorithm, jwk: public_jwk(algorithm, members).1 })
    }
}

/// The JWK of a public key from its required members, with its RFC 7638 thumbprint (SHA-256
/// of the members in lexicographic order without whitespace; serde_json's maps are ordered
/// by key) as `kid`.
fn public_jwk(algorithm: Algorithm, members: Value) -> (String, Value) {
    let kid = b64(&Sha256::digest(members.to_string().as_bytes()));
    let mut jwk = members;
    jwk["kid"] = Value::String(kid.clone());
    jwk["use"] = Value::String("sig".into());
    jwk["alg"] = Value::String(if algorithm == Algorithm::ES256 { "ES256" } else { "EdDSA" }.into());
    (kid, jwk)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
        let members = json!({"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(b64(&Sha256::digest(members.to_string().as_bytes())), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
