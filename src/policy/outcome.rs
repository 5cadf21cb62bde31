//! What policies decide, as types: a [`Decision`] per policy and request, a [`Denial`] that
//! names the exact reason (its label for logs and metrics and its problem for the client come
//! from one `match` in the policy's own file; `policy_kinds!` declares it), and the
//! [`Outcome`] recorded for each policy that ran.

use http::Response;

use std::sync::Arc;

use super::Denial;
use crate::body::Body;

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
