//! RFC 9457 problem details: every answer the gateway itself produces.
//!
//! The client gets `type`, `title`, `status`, `detail` and `instance` (the request id);
//! exact reasons stay in logs and `trace`.

use std::borrow::Cow;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// The media type of problem answers (RFC 9457 §3).
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Base of every problem `type` URI.
pub const TYPE_BASE: &str = "https://portcullis.dev/problems/";

/// An RFC 9457 problem answer: status, type, title and a detail that names no internals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// Short slug, the last part of the `type` URI, e.g. `not-found`.
    pub kind: &'static str,
    /// A short, fixed summary of the kind.
    pub title: &'static str,
    /// What went wrong with this request, for the client.
    pub detail: Cow<'static, str>,
    /// Extra response headers, like `WWW-Authenticate` or `Retry-After`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem of this status and kind.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self { status, kind, title, detail: detail.into(), headers: Vec::new() }
    }

    /// Adds a header to the answer (e.g. `WWW-Authenticate`).
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    /// 404: no route matches.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", "no route matches this request")
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// 408: the client stalled while sending its body.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            "the request body stopped arriving",
        )
    }

    /// 502: the backend failed.
    pub fn bad_gateway() -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway", "the backend could not be reached")
    }

    /// 504: the backend did not answer in time.
    pub fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway-timeout",
            "Gateway timeout",
            "the backend did not answer in time",
        )
    }

    /// 503: the gateway cannot serve this yet (e.g. keys not loaded).
    pub fn service_unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "Service unavailable", detail)
    }

    /// The JSON body, with `instance` set to the request id.
    pub fn to_json(&self, request_id: &str) -> String {
        serde_json::json!({
            "type": format!("{TYPE_BASE}{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": crate::redact::scrub(&self.detail),
            "instance": request_id,
        })
        .to_string()
    }

    /// The answer as sent, with its request id in the body.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut rsp = Response::new(body::full(self.to_json(request_id)));
        *rsp.status_mut() = self.status;
        rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        rsp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            rsp.headers_mut().insert(name, value);
        }
        rsp
    }
}
