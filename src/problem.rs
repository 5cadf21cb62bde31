//! RFC 9457 problem details: every answer the gateway itself produces.
//!
//! The client gets `type`, `title`, `status`, `detail` and `instance` (the request id);
//! exact reasons stay in logs and `trace`.

use std::borrow::Cow;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// Base of every problem `type` URI.
pub const TYPE_BASE: &str = "https://portcullis.dev/problems/";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// Short slug, the last part of the `type` URI, e.g. `not-found`.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: Cow<'static, str>,
    /// Extra response headers, like `WWW-Authenticate` or `Retry-After`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self { status, kind, title, detail: detail.into(), headers: Vec::new() }
    }

    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", "no route matches this request")
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            "the request body stopped arriving",
        )
    }

    pub fn bad_gateway() -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway", "the backend could not be reached")
    }

    pub fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway-timeout",
            "Gateway timeout",
            "the backend did not answer in time",
        )
    }

    pub fn service_unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "Service unavailable", detail)
    }

    /// The JSON body, with `instance` set to the request id.
    pub fn to_json(&self, request_id: &str) -> String {
        serde_json::json!({
            "type": format!("{TYPE_BASE}{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "instance": request_id,
        })
        .to_string()
    }

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
