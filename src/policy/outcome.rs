//! What policies decide, as types: a [`Decision`] per policy and request, a [`Denial`] that
//! names the exact reason (its label for logs and metrics and its problem for the client come
//! from one `match` in the policy's own file), and the [`Outcome`] recorded for each policy
//! that ran.

use http::Response;

use std::sync::Arc;

use super::{authorize, client_cert, cors, ip_filter, jwt, rate_limit};
use crate::body::Body;
use crate::problem::Problem;

/// What a policy decided about one request.
pub enum Decision {
    /// Go on to the next policy, then the backend.
    Continue,
    /// Go on: the named rule of the policy granted the request.
    Granted(Arc<str>),
    /// Answer now with this response (not a refusal: e.g. a CORS preflight).
    Answer(Response<Body>),
    /// Refuse the request for this reason.
    Deny(Denial),
}

impl From<Result<(), Denial>> for Decision {
    fn from(result: Result<(), Denial>) -> Self {
        match result {
            Ok(()) => Self::Continue,
            Err(denial) => Self::Deny(denial),
        }
    }
}

/// The exact cause of a refusal. The client only sees [`Denial::problem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// Refused by a `cors` policy.
    Cors(cors::Refusal),
    /// Refused by an `ip_filter` policy.
    IpFilter(ip_filter::Refusal),
    /// Refused by a `jwt` policy.
    Jwt(jwt::Refusal),
    /// Refused by a `client_cert` policy.
    ClientCert(client_cert::Refusal),
    /// Refused by an `authorize` policy.
    Authorize(authorize::Refusal),
    /// Refused by a `rate_limit` policy.
    RateLimit(rate_limit::Refusal),
}

impl Denial {
    /// The reason, like `expired` or `origin_not_allowed`, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cors(r) => r.label(),
            Self::IpFilter(r) => r.label(),
            Self::Jwt(r) => r.label(),
            Self::ClientCert(r) => r.label(),
            Self::Authorize(r) => r.label(),
            Self::RateLimit(r) => r.label(),
        }
    }

    /// The RFC 9457 answer; it names no policy internals.
    pub fn problem(self) -> Problem {
        match self {
            Self::Cors(r) => r.problem(),
            Self::IpFilter(r) => r.problem(),
            Self::Jwt(r) => r.problem(),
            Self::ClientCert(r) => r.problem(),
            Self::Authorize(r) => r.problem(),
            Self::RateLimit(r) => r.problem(),
        }
    }
}

/// What one policy's decision was, as recorded for the access log, metrics and `trace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The policy let the request through.
    Allowed,
    /// The gateway answered itself (a CORS preflight).
    Answered,
    /// Refused: the request stopped here.
    Denied(Denial),
    /// Would have been refused, but the policy is in `report` mode: recorded, not enforced.
    Reported(Denial),
}

impl Outcome {
    /// `allowed`, `answered`, or the denial reason (also in report mode).
    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Answered => "answered",
            Self::Denied(d) | Self::Reported(d) => d.label(),
        }
    }

    /// A denial that report mode let through.
    pub fn report_only(self) -> bool {
        matches!(self, Self::Reported(_))
    }
}
