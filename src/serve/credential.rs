//! A long-lived connection ends when its credential does (README: WebSockets): an upgraded
//! connection closes with `1008`, a server-sent-events stream ends, when the token that opened
//! it expires (its `exp` plus the clock skew), when the connection's client certificate
//! expires, or when the gateway's own issuer revokes what the token granted — on any
//! instance sharing its store, within [`crate::serve::changes`]' poll interval.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Response};
use http_body::Frame;
use tokio::time::Instant;

use tokio::sync::watch;

use crate::body::{Body, BoxError};
use crate::identity::revocation::Revocation;
use crate::policy::context::Grant;

/// The issuer's revocations in force, shared by every long-lived connection of a server:
/// the connections whose grant one of them revokes end.
#[derive(Clone)]
pub struct Revocations(Arc<watch::Sender<Arc<[Revocation]>>>);

impl Default for Revocations {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Arc::new([]))))
    }
}

impl Revocations {
    /// Puts `revocations` in force, in place of the previous ones.
    pub fn set(&self, revocations: Vec<Revocation>) {
        self.0.send_replace(revocations.into());
    }

    /// Resolves once a revocation in force revokes `grant`.
    pub async fn revoked(&self, grant: &Grant) {
        let mut rx = self.0.subscribe();
        loop {
            if rx.borrow_and_update().iter().any(|r| r.revokes(grant)) {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Why a credential ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialEnd {
    /// The token's `exp` plus the clock skew passed.
    TokenExpired,
    /// The client certificate's not-after passed.
    CertExpired,
    /// The issuer deactivated the system or the user, renewed the system's secrets, or
    /// unlinked the user.
    Revoked,
}

impl CredentialEnd {
    /// The `reason` label and log field.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TokenExpired => "token_expired",
            Self::CertExpired => "cert_expired",
            Self::Revoked => "revoked",
        }
    }

    /// The reason text of the gateway's `1008` close frame.
    pub fn close_text(self) -> &'static str {
        match self {
            Self::TokenExpired => "token expired",
            Self::CertExpired => "client certificate expired",
            Self::Revoked => "credential revoked",
        }
    }
}

/// What proved a long-lived connection's right to stay open.
#[derive(Clone, Debug, Default)]
pub struct Credential {
    /// Unix seconds past which the token is no longer accepted (`exp` + skew).
    pub token_valid_until: Option<u64>,
    /// The client certificate's not-after (Unix seconds).
    pub cert_not_after: Option<i64>,
    /// Who the gateway's own issuer granted the token to.
    pub grant: Option<Arc<Grant>>,
}

impl Credential {
    /// Whether anything can end it.
    pub fn can_end(&self) -> bool {
        self.token_valid_until.is_some() || self.cert_not_after.is_some() || self.grant.is_some()
    }

    /// Resolves when the credential ends; never when nothing can end it.
    pub async fn ended(self, revocations: Revocations) -> CredentialEnd {
        let token = self.token_valid_until.map(|t| (i64::try_from(t).unwrap_or(i64::MAX), CredentialEnd::TokenExpired));
        let cert = self.cert_not_after.map(|c| (c, CredentialEnd::CertExpired));
        let expiry = token.into_iter().chain(cert).min_by_key(|(at, _)| *at);
        let expired = async {
            match expiry {
                Some((at, end)) => {
                    tokio::time::sleep_until(instant_at(at)).await;
                    end
                }
                None => std::future::pending().await,
            }
        };
        let revoked = async {
            match &self.grant {
                Some(grant) => {
                    revocations.revoked(grant).await;
                    CredentialEnd::Revoked
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            end = expired => end,
            end = revoked => end,
        }
    }
}

/// When a Unix time (seconds) comes, on the tokio clock.
fn instant_at(unix: i64) -> Instant {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    later(Instant::now(), at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// `base + d`, or a century on for a duration too long for the clock.
pub fn later(base: Instant, d: Duration) -> Instant {
    base.checked_add(d).unwrap_or_else(|| base + Duration::from_secs(100 * 365 * 86_400))
}

/// Whether a response is a server-sent-events stream (`text/event-stream`).
pub fn is_event_stream(rsp: &Response<Body>) -> bool {
    rsp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        let essence = v.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("text/event-stream")
    })
}

/// A response body that ends when its credential does: the client sees the stream end as a
/// backend ending it would (an `EventSource` reconnects, and its next request meets the
/// chain again).
pub struct EndsWithCredential {
    inner: Body,
    end: Option<Pin<Box<dyn Future<Output = CredentialEnd> + Send + Sync>>>,
    request_id: String,
    route: Arc<str>,
}

impl EndsWithCredential {
    /// Wraps `inner` so that it ends when `credential` does.
    pub fn wrap(
        inner: Body,
        credential: Credential,
        revocations: Revocations,
        request_id: String,
        route: Arc<str>,
    ) -> Body {
        let end = Box::pin(credential.ended(revocations));
        http_body_util::BodyExt::boxed(Self { inner, end: Some(end), request_id, route })
    }
}

impl http_body::Body for EndsWithCredential {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(end) = self.end.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(end) = end.as_mut().poll(cx) {
            self.end = None;
            tracing::info!(request.id = %self.request_id, route.name = %self.route, reason = end.reason(), "event stream ended: its credential did");
            return Poll::Ready(None);
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.end = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // It may end before the backend's length.
        let mut hint = http_body::SizeHint::new();
        if let Some(upper) = self.inner.size_hint().upper() {
            hint.set_upper(upper);
        }
        hint
    }
}
