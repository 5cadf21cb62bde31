//! JWS signature verification with keys parsed once, when they are loaded (aws-lc-rs).
//!
//! jsonwebtoken parses a key on every verification (its pure-Rust backend takes ~190 µs for
//! RS256; ring, which also parses the modulus per call, ~18 µs) and decodes the header twice
//! and the claims twice per token. A key parsed once for each algorithm of its family
//! verifies RS256 in ~14 µs; the policy splits and decodes each part of the token once and
//! checks the registered claims itself ([`super::claims`]). jsonwebtoken still reads keys
//! (PEM, JWK) and signs (the token issuer, the demo, tests).

use std::sync::OnceLock;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::Error;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// Installs jsonwebtoken's crypto provider for this process (once; later calls do nothing):
/// signing uses its aws-lc-rs backend; its verifiers refuse every signature, so that
/// a `jsonwebtoken::decode` added by mistake can never accept a token.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory: jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory,
        verifier_factory: refusing_verifier,
        jwk_utils: jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.jwk_utils.clone(),
    });
    let _ = provider.install_default();
}

struct Refuse(Algorithm);

fn refusing_verifier(alg: &Algorithm, _key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    Ok(Box::new(Refuse(*alg)))
}

impl JwtVerifier for Refuse {
    fn algorithm(&self) -> Algorithm {
        self.0
    }
}

impl signature::Verifier<Vec<u8>> for Refuse {
    fn verify(&self, _message: &[u8], _signature: &Vec<u8>) -> Result<(), signature::Error> {
        Err(signature::Error::new())
    }
}

/// One key, parsed for each algorithm of its family that it can verify.
pub struct Verifiers(Vec<(Algorithm, Verifier)>);

enum Verifier {
    Public(ParsedPublicKey),
    Hmac(Box<aws_lc_rs::hmac::Key>),
}

fn rsa_params(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

const RSA: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];
const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

impl Verifiers {
    /// Parses `key` for every algorithm of its family; an algorithm the key cannot serve
    /// (an ES384 token for a P-256 key, an RSA key under 2048 bits) gets no verifier.
    pub fn new(key: &DecodingKey) -> Self {
        let mut out = Vec::new();
        match (key.family(), key.kind()) {
            (AlgorithmFamily::Rsa, kind) => {
                for alg in RSA {
                    let params = rsa_params(alg).expect("an RSA algorithm");
                    let parsed = match kind {
                        // PKCS#1 RSAPublicKey DER, from a PEM file.
                        DecodingKeyKind::SecretOrDer(der) => ParsedPublicKey::new(params, der).ok(),
                        DecodingKeyKind::RsaModulusExponent { n, e } => {
                            RsaPublicKeyComponents { n, e }.to_parsed_public_key(params).ok()
                        }
                    };
                    out.extend(parsed.map(|p| (alg, Verifier::Public(p))));
                }
            }
            // An uncompressed point; its curve decides the algorithm.
            (AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
                let curves: [(Algorithm, &'static dyn sig::VerificationAlgorithm); 2] = [
                    (Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED),
                    (Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED),
                ];
                for (alg, algorithm) in curves {
                    out.extend(ParsedPublicKey::new(algorithm, point).ok().map(|p| (alg, Verifier::Public(p))));
                }
            }
            (AlgorithmFamily::Ed, DecodingKeyKind::SecretOrDer(raw)) => {
                out.extend(
                    ParsedPublicKey::new(&sig::ED25519, raw).ok().map(|p| (Algorithm::EdDSA, Verifier::Public(p))),
                );
            }
            (AlgorithmFamily::Hmac, DecodingKeyKind::SecretOrDer(secret)) => {
                for alg in HMAC {
                    let algorithm = match alg {
                        Algorithm::HS256 => aws_lc_rs::hmac::HMAC_SHA256,
                        Algorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                        _ => aws_lc_rs::hmac::HMAC_SHA512,
                    };
                    out.push((alg, Verifier::Hmac(Box::new(aws_lc_rs::hmac::Key::new(algorithm, secret)))));
                }
            }
            _ => {}
        }
        Self(out)
    }

    /// Whether `signature` over `message` verifies with this key under `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.0.iter().find(|(a, _)| *a == alg).is_some_and(|(_, verifier)| match verifier {
            Verifier::Public(key) => key.verify_sig(message, signature).is_ok(),
            Verifier::Hmac(key) => aws_lc_rs::hmac::verify(key, message, signature).is_ok(),
        })
    }

    /// Whether the key can verify anything at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
