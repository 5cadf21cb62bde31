//! Real signing keys of every family, tokens signed with them, forged tokens, and a real
//! HTTPS JWKS / OpenID discovery server whose keys can rotate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::Pki;

/// A signing key with its public half as PEM and as a JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: Value,
}

fn rsa_2048() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
}

fn rsa_other() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
}

impl SigningKey {
    /// RS*/PS* (`other` picks a second, different RSA key), ES256, ES384 or EdDSA.
    pub fn new(alg: Algorithm, kid: &str) -> Self {
        Self::generate(alg, kid, false)
    }

    pub fn other_rsa(alg: Algorithm, kid: &str) -> Self {
        Self::generate(alg, kid, true)
    }

    fn generate(alg: Algorithm, kid: &str, other: bool) -> Self {
        let (private_pem, public_pem, jwk) = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let key = if other { rsa_other() } else { rsa_2048() };
                let public = key.to_public_key();
                let jwk = json!({
                    "kty": "RSA", "kid": kid, "use": "sig",
                    "n": B64.encode(public.n().to_bytes_be()), "e": B64.encode(public.e().to_bytes_be()),
                });
                (
                    key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                    public.to_public_key_pem(LineEnding::LF).unwrap(),
                    jwk,
                )
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let (rc, crv, len) = if alg == Algorithm::ES256 {
                    (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32)
                } else {
                    (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48)
                };
                let pair = rcgen::KeyPair::generate_for(rc).unwrap();
                let point = pair.public_key_raw(); // 0x04 || x || y
                let jwk = json!({
                    "kty": "EC", "kid": kid, "use": "sig", "crv": crv,
                    "x": B64.encode(&point[1..1 + len]), "y": B64.encode(&point[1 + len..]),
                });
                (pair.serialize_pem(), pair.public_key_pem(), jwk)
            }
            Algorithm::EdDSA => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
                let jwk = json!({ "kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519", "x": B64.encode(pair.public_key_raw()) });
                (pair.serialize_pem(), pair.public_key_pem(), jwk)
            }
            other => panic!("no test key for {other:?}"),
        };
        Self { alg, kid: kid.to_owned(), private_pem, public_pem, jwk }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).unwrap(),
        }
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }

    /// Signs `claims` under a header given as raw JSON (members jsonwebtoken's `Header` lacks,
    /// like `crit`).
    pub fn sign_raw_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding_key(), self.alg).unwrap();
        format!("{message}.{signature}")
    }

    /// Signs with a custom header (e.g. `typ: at+jwt`, or a `jwk`/`jku` an attacker adds).
    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Valid claims for issuer `https://idp.test` and audience `api://portcullis`.
pub fn claims() -> Value {
    json!({ "iss": "https://idp.test", "aud": "api://portcullis", "sub": "user-1", "exp": now() + 600, "iat": now(), "roles": ["Config.Read"] })
}

/// HS256 signed with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// `alg: none`, no signature.
pub fn unsigned(claims: &Value) -> String {
    format!("{}.{}.", B64.encode(br#"{"alg":"none","typ":"JWT"}"#), B64.encode(claims.to_string()))
}

/// The token with its payload replaced by `claims`, signature kept.
pub fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2])
}

/// A real HTTPS server publishing `/jwks.json` and `/.well-known/openid-configuration`.
pub struct JwksServer {
    pub addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(pki: &Pki, keys: &[&SigningKey]) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(pki.path("server.pem")).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(pki.path("server-key.pem")).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let published = Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (state, counter) = (published.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { continue };
                let (acceptor, state, counter) = (acceptor.clone(), state.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => {
                                json!({ "issuer": "https://idp.test", "jwks_uri": format!("https://localhost:{}/jwks.json", addr.port()) })
                            }
                            _ => {
                                counter.fetch_add(1, Ordering::SeqCst);
                                json!({ "keys": *state.lock().unwrap() })
                            }
                        };
                        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string())))))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, keys: published, hits, task }
    }

    pub fn jwks_url(&self) -> String {
        format!("https://localhost:{}/jwks.json", self.addr.port())
    }

    pub fn discovery_url(&self) -> String {
        format!("https://localhost:{}/.well-known/openid-configuration", self.addr.port())
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// How many times the JWKS document was fetched.
    pub fn fetches(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
