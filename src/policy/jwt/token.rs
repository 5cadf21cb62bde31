//! A compact JWS token taken apart (RFC 7515 §7.1) before any key is used: three base64url
//! parts, a JOSE header that names an algorithm this crate knows and embeds no key, and no
//! `crit` extensions. Pure and allocation-light, so it is fuzzed on its own.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::refusal::Refusal;

/// What the policy reads of a token's JOSE header; `alg: none` and unknown algorithms do
/// not parse.
#[derive(Debug, Deserialize)]
pub struct JoseHeader {
    /// The signing algorithm the token claims (checked against the policy's list).
    pub alg: Algorithm,
    /// The key id, if any.
    pub kid: Option<String>,
    jwk: Option<serde::de::IgnoredAny>,
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    x5c: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

/// A token whose header has been read and whose signature has been decoded.
#[derive(Debug)]
pub struct TokenParts<'t> {
    /// `header.payload`: what the signature covers.
    pub message: &'t str,
    /// The base64url payload: decoded after the signature is verified, or, when a policy has
    /// several providers, before it only to read `iss` and pick the provider.
    pub payload: &'t str,
    /// The JOSE header.
    pub header: JoseHeader,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

impl<'t> TokenParts<'t> {
    /// Splits and reads a token.
    ///
    /// # Errors
    /// `Malformed` (not three base64url parts, or a header that is no JOSE header with a
    /// known `alg`), `EmbeddedKey` (`jwk`, `jku`, `x5u`, `x5c`), `CriticalExtension`.
    pub fn parse(token: &'t str) -> Result<Self, Refusal> {
        let (message, signature) = token.rsplit_once('.').ok_or(Refusal::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(Refusal::Malformed)?;
        if payload.contains('.') {
            return Err(Refusal::Malformed);
        }
        let header: JoseHeader = decode_part(header).ok_or(Refusal::Malformed)?;
        if header.jwk.is_some() || header.jku.is_some() || header.x5u.is_some() || header.x5c.is_some() {
            return Err(Refusal::EmbeddedKey);
        }
        // RFC 7515 §4.1.11: extensions this policy does not understand must be refused.
        if header.crit.is_some() {
            return Err(Refusal::CriticalExtension);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| Refusal::Malformed)?;
        Ok(Self { message, payload, header, signature })
    }

    /// The payload's claims (call only once the signature is verified).
    pub fn claims(&self) -> Option<Map<String, Value>> {
        decode_part(self.payload)
    }
}

/// A base64url JSON part of a token.
fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn each_header_attack_has_its_own_reason() {
        let token = |header: &str| format!("{}.{}.c2ln", b64(header), b64("{}"));
        assert!(TokenParts::parse(&token(r#"{"alg":"RS256","kid":"k"}"#)).is_ok());
        assert_eq!(TokenParts::parse(&token(r#"{"alg":"none"}"#)).unwrap_err(), Refusal::Malformed);
        assert_eq!(TokenParts::parse(&token(r#"{"alg":"RS256","jwk":{}}"#)).unwrap_err(), Refusal::EmbeddedKey);
        assert_eq!(TokenParts::parse(&token(r#"{"alg":"RS256","x5c":[]}"#)).unwrap_err(), Refusal::EmbeddedKey);
        assert_eq!(
            TokenParts::parse(&token(r#"{"alg":"RS256","crit":["b64"]}"#)).unwrap_err(),
            Refusal::CriticalExtension
        );
        assert_eq!(TokenParts::parse("a.b").unwrap_err(), Refusal::Malformed);
        assert_eq!(TokenParts::parse("a.b.c.d").unwrap_err(), Refusal::Malformed);
        assert_eq!(
            TokenParts::parse(&format!("{}.e30.$$", b64(r#"{"alg":"RS256"}"#))).unwrap_err(),
            Refusal::Malformed
        );
    }
}
