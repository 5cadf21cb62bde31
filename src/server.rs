//! The running gateway: binds every listener of a [`Runtime`], holds the current runtime
//! for requests to load, and shuts down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::runtime::Runtime;
use crate::tls::ClientCertInfo;
use crate::{admin, listener};

/// What is known about one client connection, shared by its requests.
#[derive(Debug)]
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub peer: SocketAddr,
    /// `TLSv1_3`, `TLSv1_2`; `None` on a plain listener.
    pub tls_version: Option<&'static str>,
    pub sni: Option<String>,
    /// The verified client certificate, parsed once per connection.
    pub client_cert: Option<Arc<ClientCertInfo>>,
}

/// The configuration requests run against, swappable as a whole.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
}

impl Gateway {
    pub fn new(runtime: Runtime) -> Self {
        Self { runtime: ArcSwap::from_pointee(runtime) }
    }

    /// The current runtime; a request keeps the one it started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }
}

/// A started gateway.
pub struct Server {
    pub gateway: Arc<Gateway>,
    addrs: HashMap<String, SocketAddr>,
    stop: watch::Sender<bool>,
    accept_loops: JoinSet<()>,
    graceful: Arc<GracefulShutdown>,
}

impl Server {
    /// Binds every listener (and the admin listener) and starts serving.
    ///
    /// # Errors
    /// A bind failed; its listener is named.
    pub async fn start(runtime: Runtime) -> io::Result<Self> {
        runtime.start();
        let gateway = Arc::new(Gateway::new(runtime));
        let runtime = gateway.runtime();
        let (stop, stopped) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let mut accept_loops = JoinSet::new();
        let mut addrs = HashMap::new();
        for spec in &runtime.listeners {
            let tcp = bind(spec.bind, &spec.name).await?;
            let addr = tcp.local_addr()?;
            tracing::info!(listener.name = %spec.name, listener.addr = %addr, "listening");
            addrs.insert(spec.name.to_string(), addr);
            accept_loops.spawn(listener::serve(
                tcp,
                spec.name.clone(),
                gateway.clone(),
                stopped.clone(),
                graceful.clone(),
            ));
        }
        if let Some(bind_addr) = runtime.admin {
            let tcp = bind(bind_addr, "admin").await?;
            let addr = tcp.local_addr()?;
            tracing::info!(listener.name = "admin", listener.addr = %addr, "listening");
            addrs.insert("admin".to_owned(), addr);
            accept_loops.spawn(admin::serve(tcp, gateway.clone(), stopped.clone(), graceful.clone()));
        }
        tracing::info!(config = %runtime.source.display(), "ready");
        Ok(Self { gateway, addrs, stop, accept_loops, graceful })
    }

    /// The bound address of a listener (`admin` for the admin listener).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs.get(listener).copied()
    }

    /// Stops accepting, then waits up to the configured drain timeout for open requests.
    /// Returns whether every connection finished in time.
    pub async fn shutdown(mut self) -> bool {
        let deadline = self.gateway.runtime().drain_timeout;
        let _ = self.stop.send(true);
        while self.accept_loops.join_next().await.is_some() {}
        tracing::info!(deadline_ms = deadline.as_millis() as u64, "draining connections");
        // The accept loops held the only other references; they have ended.
        let Ok(graceful) = Arc::try_unwrap(self.graceful) else {
            return false;
        };
        let drained = tokio::time::timeout(deadline, graceful.shutdown()).await.is_ok();
        if drained {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!("drain deadline reached; closing the remaining connections");
        }
        drained
    }
}

async fn bind(addr: SocketAddr, name: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("listener {name}: cannot bind {addr}: {e}")))
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Default drain deadline when the configuration names none.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
