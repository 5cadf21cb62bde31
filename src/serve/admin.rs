//! The admin listener: `GET /healthz` (the process answers), `GET /readyz` (every backend has
//! a healthy url, every `jwt` policy has keys), `GET /metrics` (Prometheus) and
//! `POST /reload`. Plain HTTP; bind it to loopback.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::serve::gateway::Gateway;

/// Serves the admin endpoints on `tcp` until `stopped` turns true.
pub async fn serve(
    tcp: TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let stream = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let allow = &gateway.runtime().admin_allow;
                    if !allow.is_empty() && !allow.contains(peer.ip()) {
                        tracing::warn!(client.addr = %peer, "admin connection refused: not in admin.allow");
                        continue;
                    }
                    stream
                }
                Err(_) => continue,
            },
            _ = stopped.changed() => return,
        };
        let gateway = gateway.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let gateway = gateway.clone();
                async move {
                    if req.method() == Method::POST && req.uri().path() == "/reload" {
                        return Ok::<_, Infallible>(reload(&gateway).await);
                    }
                    Ok(answer(&gateway, &req))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            let _ = watcher.watch(conn).await;
        });
    }
}

/// `POST /reload`: 200 with a summary, or 400 with the configuration errors (the previous
/// configuration keeps serving).
async fn reload(gateway: &Gateway) -> Response<Body> {
    let (status, json) = match gateway.reload().await {
        Ok(summary) => (StatusCode::OK, serde_json::json!({ "status": "reloaded", "summary": summary })),
        Err(errors) => {
            (StatusCode::BAD_REQUEST, serde_json::json!({ "status": "refused", "errors": errors.to_string() }))
        }
    };
    json_response(status, &json)
}

fn json_response(status: StatusCode, json: &serde_json::Value) -> Response<Body> {
    let mut rsp = Response::new(body::full(json.to_string()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

fn answer(gateway: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let (status, json) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut rsp = Response::new(body::full(crate::telemetry::metrics().render()));
            rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            return rsp;
        }
        (&Method::GET, "/healthz") => (StatusCode::OK, serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => {
            let runtime = gateway.runtime();
            let not_ready = runtime.not_ready();
            if not_ready.is_empty() {
                (StatusCode::OK, serde_json::json!({ "status": "ready" }))
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": "not ready", "reasons": not_ready }))
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "not found: try /healthz, /readyz, /metrics or POST /reload" }),
        ),
    };
    json_response(status, &json)
}
