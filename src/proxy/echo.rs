//! The built-in `echo` backend: answers 200 with what it received, as JSON. Bodies are
//! streamed and counted, and only their first 64 KiB are kept, so a large upload costs no
//! memory.

use http::{header, HeaderValue, Response};
use http_body_util::BodyExt;

use super::Outbound;
use crate::body::{self, Body};

const KEEP_BODY_BYTES: usize = 64 << 10;

pub(super) async fn answer(out: Outbound<'_>) -> Response<Body> {
    let mut body = out.body;
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            break;
        };
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
            let room = KEEP_BODY_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = out
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into()))
        .collect();
    let json = serde_json::json!({
        "method": out.method.as_str(),
        "path": out.path,
        "query": out.query,
        "headers": headers,
        "body_bytes": total,
        "body": String::from_utf8_lossy(&kept),
    });
    let mut rsp = Response::new(body::full(json.to_string()));
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}
