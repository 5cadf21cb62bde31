//! What the chain records of each policy that ran: an [`Outcome`], whose denial names the
//! exact reason (`policy_kinds!` generates [`Denial`] from the kinds' refusals).

use super::kinds::Denial;

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
