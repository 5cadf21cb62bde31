//! Why a bearer token was refused: one variant per exact cause, for logs, metrics and
//! `trace`. The client learns only "invalid", "expired", "insufficient" or "unavailable".

use http::header::{self, HeaderValue};
use http::StatusCode;

use crate::problem::Problem;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Why a `jwt` policy refused a request.
pub enum Refusal {
    /// No `Authorization: Bearer` token.
    MissingToken,
    /// Longer than `MAX_TOKEN_BYTES`.
    TokenTooLarge,
    /// Not three base64url parts, or a header without a known `alg`, or unreadable claims.
    Malformed,
    /// A key in the header (`jwk`, `jku`, `x5u`, `x5c`): never trusted.
    EmbeddedKey,
    /// A `crit` extension this policy does not understand (RFC 7515 §4.1.11).
    CriticalExtension,
    /// An `alg` outside the configured list.
    AlgNotAllowed,
    /// The signature does not verify with any candidate key.
    BadSignature,
    /// A `kid` none of the keys has, even after a refresh.
    UnknownKid,
    /// No key of the token's algorithm family.
    NoKey,
    /// `exp`, `iss` or (with audiences) `aud` is missing.
    MissingClaim,
    /// Past `exp` plus the clock skew.
    Expired,
    /// Before `nbf` less the clock skew.
    NotYetValid,
    /// `iss` is not a configured issuer.
    WrongIssuer,
    /// `aud` names no configured audience.
    WrongAudience,
    /// Verified, but `require_claims` does not hold.
    ClaimsNotSatisfied,
    /// The key set has not been loaded yet.
    KeysUnavailable,
}

impl Refusal {
    /// The reason, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::TokenTooLarge => "token_too_large",
            Self::Malformed => "malformed",
            Self::EmbeddedKey => "embedded_key",
            Self::CriticalExtension => "critical_extension",
            Self::AlgNotAllowed => "alg_not_allowed",
            Self::BadSignature => "bad_signature",
            Self::UnknownKid => "unknown_kid",
            Self::NoKey => "no_key",
            Self::MissingClaim => "missing_claim",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::ClaimsNotSatisfied => "claims_not_satisfied",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// 401 with a `WWW-Authenticate` challenge (RFC 6750 §3), 403 for insufficient claims,
    /// 503 while keys are missing.
    pub fn problem(self) -> Problem {
        let (status, kind, title, detail, challenge) = match self {
            Self::KeysUnavailable => {
                return Problem::service_unavailable("token verification keys are not loaded yet");
            }
            Self::ClaimsNotSatisfied => (
                StatusCode::FORBIDDEN,
                "insufficient-claims",
                "Insufficient permissions",
                "the access token does not grant this request",
                "Bearer error=\"insufficient_scope\"",
            ),
            Self::Expired => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "Invalid access token",
                "the access token has expired",
                "Bearer error=\"invalid_token\", error_description=\"the access token expired\"",
            ),
            Self::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "Invalid access token",
                "a valid bearer access token is required",
                "Bearer",
            ),
            _ => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "Invalid access token",
                "a valid bearer access token is required",
                "Bearer error=\"invalid_token\"",
            ),
        };
        Problem::new(status, kind, title, detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
    }
}
