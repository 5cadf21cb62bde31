//! `portcullis trace`: a dry run of one request through the real compiled configuration —
//! the route it takes and each policy's decision with its reason, and the final answer. No
//! backend is called; tokens, cookies and secret header values are never printed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use http::{Method, Request, Uri};

use crate::compile;
use crate::redact;
use crate::request::conn::ConnInfo;
use crate::tls::ClientCertInfo;
use crate::tools::dryrun;

/// What `trace` is asked to simulate.
pub(super) struct TraceRequest {
    pub config: PathBuf,
    pub method: String,
    pub url: String,
    pub headers: Vec<String>,
    pub client_ip: IpAddr,
    pub client_cert: Option<PathBuf>,
    pub token: Option<String>,
}

pub(super) fn trace(req: &TraceRequest) -> anyhow::Result<ExitCode> {
    let loaded = match compile::load(&req.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = loaded.runtime;
    let (parts, _) = build_request(req)?.into_parts();
    let conn = ConnInfo {
        listener: runtime.listeners.first().map_or_else(|| "none".into(), |l| l.name.clone()),
        peer: SocketAddr::new(req.client_ip, 0),
        tls_version: Some("TLSv1_3"),
        sni: None,
        client_cert: req.client_cert.as_deref().map(read_cert).transpose()?.map(Arc::new),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(async {
        runtime.start();
        if let Err(e) = runtime.load_keyring().await {
            eprintln!("warning: cannot read the subscription keys: {e}");
        }
        // Remote keys load in the background; give them a moment, as a starting gateway would.
        for _ in 0..100 {
            if runtime.policies.iter().all(|p| p.policy.is_ready()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let query = parts.uri.query().map(|q| format!("?{}", redact::query(q))).unwrap_or_default();
        let mut out = format!("request: {} {}{query} from {}\n", parts.method, parts.uri.path(), req.client_ip);
        if let Some(cert) = &conn.client_cert {
            out += &format!("client certificate: {} (issuer {}), taken as verified\n", cert.subject, cert.issuer);
        }
        let dry = dryrun::run(&runtime, parts, &conn, crate::clock::unix_now()).await;
        out += &dry.describe();
        out
    });
    print!("{}", crate::redact::scrub(&report.to_string()));
    Ok(ExitCode::SUCCESS)
}

fn build_request(req: &TraceRequest) -> anyhow::Result<Request<()>> {
    let uri: Uri = req.url.parse().with_context(|| format!("invalid URL {:?}", req.url))?;
    let method = Method::from_bytes(req.method.as_bytes()).context("invalid method")?;
    let mut builder = Request::builder().method(method).uri(uri.clone());
    if let Some(host) = uri.authority() {
        builder = builder.header(http::header::HOST, host.as_str());
    }
    for header in &req.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("header {header:?} is not `Name: value`");
        };
        builder = builder.header(name.trim(), value.trim());
    }
    if let Some(token) = &req.token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(()).context("cannot build the request")
}

fn read_cert(path: &Path) -> anyhow::Result<ClientCertInfo> {
    let certs = crate::tls::load_certs(path)?;
    Ok(ClientCertInfo::parse(&certs[0])?)
}
