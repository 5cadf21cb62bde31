//! The body type that flows through the gateway both ways, and a size limit that counts
//! bytes as they stream past instead of buffering them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// The error type of every body the gateway streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request and response body the gateway handles.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of these bytes, all at once.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A body without bytes.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Boxes a hyper body, erasing its error type.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// The body grew past the configured `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    /// The configured `max_body_bytes`.
    pub limit: u64,
}

/// No body bytes arrived within `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes arrived for {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// How a client's request body ended, when it did not end well: always the client's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BodyFault {
    /// Over `max_body_bytes` (413).
    TooLarge = 1,
    /// Malformed chunked framing, or the body was cut short (400).
    Malformed = 2,
    /// Stalled longer than `body_read_timeout` between bytes (408).
    TimedOut = 3,
}

/// What a request body did while streaming: bytes read, and how it failed, if it did.
#[derive(Debug, Default)]
pub struct BodyStats {
    bytes: AtomicU64,
    fault: AtomicU8,
    /// The body's reader is waiting for the client right now.
    waiting: AtomicBool,
}

impl BodyStats {
    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Why the client's body failed, if it did: the answer is then the client's fault,
    /// whatever the backend connection reported.
    pub fn fault(&self) -> Option<BodyFault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(BodyFault::TooLarge),
            2 => Some(BodyFault::Malformed),
            3 => Some(BodyFault::TimedOut),
            _ => None,
        }
    }

    /// Whether the body was waiting for the client's bytes when last polled: a backend
    /// timeout meanwhile is the client's doing.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    fn set(&self, fault: BodyFault) {
        self.fault.store(fault as u8, Ordering::Relaxed);
    }
}

/// Times how long a body keeps its reader waiting: armed when a poll first finds no data,
/// disarmed by the next frame, so time when nobody reads does not count. The timer is
/// allocated only once a body has kept its reader waiting.
pub struct Stall {
    idle: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl Stall {
    /// A timer that fires once a body has kept its reader waiting for `idle`.
    pub fn new(idle: Duration) -> Self {
        Self { idle, deadline: None, waiting: false }
    }

    /// How long a body may stall between bytes.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Records a poll of the body; true once it has been pending for longer than `idle`.
    pub fn timed_out<T>(&mut self, polled: &Poll<T>, cx: &mut Context<'_>) -> bool {
        let was_waiting = std::mem::replace(&mut self.waiting, polled.is_pending());
        if polled.is_ready() {
            return false;
        }
        let idle = self.idle;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if !was_waiting {
            deadline.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        deadline.as_mut().poll(cx).is_ready()
    }
}

/// Passes a body through while counting into `stats`; past `limit` bytes it fails with
/// [`BodyTooLarge`], after `idle` without a byte with [`BodyTimedOut`], and a failure of the
/// client's stream is recorded as [`BodyFault::Malformed`].
pub struct LimitedBody<B> {
    inner: B,
    limit: u64,
    stall: Stall,
    stats: Arc<BodyStats>,
}

impl<B> LimitedBody<B> {
    /// Wraps `inner`: at most `limit` bytes, at most `idle` between bytes, counted into `stats`.
    pub fn new(inner: B, limit: u64, idle: Duration, stats: Arc<BodyStats>) -> Self {
        Self { inner, limit, stall: Stall::new(idle), stats }
    }
}

impl<B> http_body::Body for LimitedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.stats.waiting.store(polled.is_pending(), Ordering::Relaxed);
        if this.stall.timed_out(&polled, cx) {
            this.stats.set(BodyFault::TimedOut);
            return Poll::Ready(Some(Err(BodyTimedOut(this.stall.idle()).into())));
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = this.stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if total > this.limit {
                        this.stats.set(BodyFault::TooLarge);
                        return Poll::Ready(Some(Err(BodyTooLarge { limit: this.limit }.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.stats.set(BodyFault::Malformed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
