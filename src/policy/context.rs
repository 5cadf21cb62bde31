//! What policies see of a request, and what they leave for later ones and the log.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::conn::ConnInfo;
use crate::route::pattern::Params;

/// Verified token claims.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// One request as the policy chain sees it.
pub struct RequestContext<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// The client address (the peer, or the one a trusted proxy vouches for).
    pub client_ip: IpAddr,
    /// The connection the request came on.
    pub conn: &'a ConnInfo,
    /// The normalized path.
    pub path: &'a str,
    /// The values of the route template's `{param}` segments.
    pub params: &'a Params,
    /// Unix seconds when the request arrived: every time check of the chain uses it.
    pub now: u64,
    /// The allowed `Origin` a CORS policy echoes on the response.
    pub cors_origin: Option<HeaderValue>,
    /// Claims of the verified token, once a `jwt` policy passed.
    pub claims: Option<Arc<Claims>>,
}

impl<'a> RequestContext<'a> {
    /// The context of one request arriving at `now` (Unix seconds).
    pub fn new(
        request_id: &'a str,
        client_ip: IpAddr,
        conn: &'a ConnInfo,
        path: &'a str,
        params: &'a Params,
        now: u64,
    ) -> Self {
        Self { request_id, client_ip, conn, path, params, now, cors_origin: None, claims: None }
    }
}
