//! The registered claims of a verified token (RFC 7519 §4.1), checked after its signature:
//! `exp` required and not past, `nbf` not in the future (both with the clock skew), `iss` one
//! of the configured issuers, `aud` (a string or an array) naming a configured audience
//! whenever audiences are configured.

use serde_json::{Map, Value};

use super::refusal::Refusal;

/// What a policy requires of the registered claims.
#[derive(Debug)]
pub struct ClaimChecks {
    /// Accepted `iss` values, exactly.
    pub issuers: Vec<String>,
    /// Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

impl ClaimChecks {
    /// The token's `exp` when every check passes at `now` (Unix seconds).
    ///
    /// # Errors
    /// `MissingClaim`, `Malformed` (a registered claim of the wrong type), `Expired`,
    /// `NotYetValid`, `WrongIssuer`, `WrongAudience`.
    pub fn check(&self, claims: &Map<String, Value>, now: u64) -> Result<u64, Refusal> {
        let exp = numeric_date(claims, "exp")?.ok_or(Refusal::MissingClaim)?;
        if exp.saturating_add(self.leeway) < now {
            return Err(Refusal::Expired);
        }
        if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(Refusal::NotYetValid);
        }
        match claims.get("iss") {
            None => return Err(Refusal::MissingClaim),
            Some(Value::String(iss)) if self.issuers.iter().any(|i| i == iss) => {}
            Some(Value::String(_)) => return Err(Refusal::WrongIssuer),
            Some(_) => return Err(Refusal::Malformed),
        }
        if !self.audiences.is_empty() {
            let named = |aud: &str| self.audiences.iter().any(|a| a == aud);
            let ok = match claims.get("aud") {
                None => return Err(Refusal::MissingClaim),
                Some(Value::String(aud)) => named(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(named),
                Some(_) => return Err(Refusal::Malformed),
            };
            if !ok {
                return Err(Refusal::WrongAudience);
            }
        }
        Ok(exp)
    }
}

/// A NumericDate claim: absent, or seconds since the epoch (RFC 7519 §2 allows fractions;
/// they are dropped).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Refusal> {
    let Some(value) = claims.get(name) else { return Ok(None) };
    let seconds = value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f as u64));
    seconds.map(Some).ok_or(Refusal::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn checks() -> ClaimChecks {
        ClaimChecks { issuers: vec!["https://idp".into()], audiences: vec!["api://a".into()], leeway: 60 }
    }

    fn check(claims: Value) -> Result<u64, Refusal> {
        checks().check(claims.as_object().unwrap(), NOW)
    }

    #[test]
    fn each_registered_claim_is_enforced() {
        let ok = json!({ "iss": "https://idp", "aud": "api://a", "exp": NOW + 10 });
        assert_eq!(check(ok), Ok(NOW + 10));
        assert_eq!(check(json!({ "iss": "https://idp", "aud": ["x", "api://a"], "exp": NOW })), Ok(NOW));
        assert_eq!(check(json!({ "iss": "https://idp", "aud": "api://a", "exp": NOW as f64 + 0.5 })), Ok(NOW));
        let cases = [
            (json!({ "iss": "https://idp", "aud": "api://a" }), "missing_claim"),
            (json!({ "iss": "https://idp", "aud": "api://a", "exp": "soon" }), "malformed"),
            (json!({ "iss": "https://idp", "aud": "api://a", "exp": -5 }), "malformed"),
            (json!({ "iss": "https://idp", "aud": "api://a", "exp": -5.5 }), "malformed"),
            (json!({ "iss": "https://idp", "aud": "api://a", "exp": NOW - 61 }), "expired"),
            (json!({ "iss": "https://idp", "aud": "api://a", "exp": NOW + 10, "nbf": NOW + 61 }), "not_yet_valid"),
            (json!({ "aud": "api://a", "exp": NOW + 10 }), "missing_claim"),
            (json!({ "iss": "https://idp.evil", "aud": "api://a", "exp": NOW + 10 }), "wrong_issuer"),
            (json!({ "iss": ["https://idp"], "aud": "api://a", "exp": NOW + 10 }), "malformed"),
            (json!({ "iss": "https://idp", "exp": NOW + 10 }), "missing_claim"),
            (json!({ "iss": "https://idp", "aud": "api://b", "exp": NOW + 10 }), "wrong_audience"),
            (json!({ "iss": "https://idp", "aud": [], "exp": NOW + 10 }), "wrong_audience"),
            (json!({ "iss": "https://idp", "aud": 7, "exp": NOW + 10 }), "malformed"),
        ];
        for (claims, reason) in cases {
            assert_eq!(check(claims.clone()).map_err(Refusal::label), Err(reason), "{claims}");
        }
    }

    #[test]
    fn the_clock_skew_applies_at_both_ends() {
        assert!(check(json!({ "iss": "https://idp", "aud": "api://a", "exp": NOW - 60 })).is_ok());
        let early = json!({ "iss": "https://idp", "aud": "api://a", "exp": NOW + 10, "nbf": NOW + 60 });
        assert!(check(early).is_ok());
        let no_aud = ClaimChecks { audiences: Vec::new(), ..checks() };
        assert!(no_aud.check(json!({ "iss": "https://idp", "exp": NOW }).as_object().unwrap(), NOW).is_ok());
    }
}
