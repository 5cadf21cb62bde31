//! The running gateway: binds every listener of a [`Runtime`], holds the current runtime
//! for requests to load, and shuts down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{admin, listener};
use crate::compile;
use crate::runtime::Runtime;
use crate::serve::gateway::{Gateway, ReloadError, ReloadRequest};
use crate::telemetry::metrics;
use crate::telemetry::metrics::ExpirySeries;

/// One accept loop.
struct Loop {
    /// The configured address (port 0 stays 0), to tell whether a reload changed it.
    bind: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the reload task and the server share.
struct Inner {
    gateway: Arc<Gateway>,
    graceful: Arc<GracefulShutdown>,
    loops: tokio::sync::Mutex<HashMap<String, Loop>>,
    addrs: std::sync::Mutex<HashMap<String, SocketAddr>>,
}

/// A started gateway.
pub struct Server {
    /// The runtime holder the listeners serve from; reload through it.
    pub gateway: Arc<Gateway>,
    inner: Arc<Inner>,
    /// Reload, SIGHUP and file-watch tasks.
    tasks: Vec<JoinHandle<()>>,
    terminate: Option<Signal>,
}

#[cfg(unix)]
type Signal = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Signal = ();

/// SIGHUP and SIGTERM streams, registered at once.
struct Signals {
    hangup: Option<Signal>,
    terminate: Option<Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self { hangup: signal(SignalKind::hangup()).ok(), terminate: signal(SignalKind::terminate()).ok() }
        }
        #[cfg(not(unix))]
        Self { hangup: None, terminate: None }
    }
}

impl Server {
    /// Binds every listener (and the admin listener), starts serving, and starts the reload
    /// machinery: SIGHUP, `POST /reload` and, when `watch` is set, file changes.
    ///
    /// # Errors
    /// A bind failed; its listener is named.
    pub async fn start(runtime: Runtime) -> io::Result<Self> {
        runtime.start();
        load_keyring(&runtime).await;
        export_certificate_expiry(&runtime);
        let gateway = Arc::new(Gateway::new(runtime));
        let runtime = gateway.runtime();
        let inner = Arc::new(Inner {
            gateway: gateway.clone(),
            graceful: Arc::new(GracefulShutdown::new()),
            loops: tokio::sync::Mutex::new(HashMap::new()),
            addrs: std::sync::Mutex::new(HashMap::new()),
        });
        {
            let mut loops = inner.loops.lock().await;
            for (name, bind_addr) in endpoints(&runtime) {
                let tcp = bind(bind_addr, &name).await?;
                let lp = inner.spawn_loop(&name, bind_addr, tcp)?;
                loops.insert(name, lp);
            }
        }
        let (tx, rx) = mpsc::channel(8);
        gateway.accept_reloads(tx);
        let mut tasks = vec![tokio::spawn(reload_loop(inner.clone(), rx))];
        // Signal handlers are in place before `ready`: a SIGHUP or SIGTERM sent right after
        // it must reload or stop the gateway, not kill it with the default action.
        let signals = Signals::install();
        tasks.push(tokio::spawn(reload_on_sighup(gateway.clone(), signals.hangup)));
        tasks.push(tokio::spawn(reload_on_file_change(gateway.clone())));
        tasks.push(tokio::spawn(crate::serve::changes::follow(gateway.clone())));
        let event_loop = tokio::runtime::Handle::current();
        let (flavor, workers) = match event_loop.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => ("single", 1),
            _ => ("work_stealing", event_loop.metrics().num_workers()),
        };
        tracing::info!(config = %runtime.source.display(), event_loop = flavor, workers, "ready");
        Ok(Self { gateway, inner, tasks, terminate: signals.terminate })
    }

    /// Waits for SIGTERM or Ctrl-C.
    pub async fn terminated(&mut self) {
        #[cfg(unix)]
        if let Some(term) = &mut self.terminate {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }

    /// The bound address of a listener (`admin` for the admin listener).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.inner.addrs.lock().ok()?.get(listener).copied()
    }

    /// Stops accepting, then waits up to the configured drain timeout for open requests.
    /// Returns whether every connection finished in time.
    pub async fn shutdown(self) -> bool {
        let deadline = self.gateway.runtime().drain_timeout;
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let loops: Vec<Loop> = self.inner.loops.lock().await.drain().map(|(_, l)| l).collect();
        for l in &loops {
            let _ = l.stop.send(true);
        }
        for l in loops {
            let _ = l.task.await;
        }
        tracing::info!(deadline_ms = deadline.as_millis() as u64, "draining connections");
        // Upgraded connections get `1001 going away` at the deadline; their close frames get
        // a moment past it to go out.
        let tunnels = self.gateway.tunnels.clone();
        tunnels.drain(deadline);
        let tunnels_closed = async {
            let open = tunnels.open();
            if open > 0 {
                tracing::info!(open, "closing upgraded connections at the drain deadline");
            }
            tokio::time::timeout(deadline + TUNNEL_CLOSE_GRACE, tunnels.closed()).await.is_ok()
        };
        // The accept loops and the reload task held the only other references; they ended.
        let Some(graceful) = Arc::into_inner(self.inner).and_then(|inner| Arc::into_inner(inner.graceful)) else {
            return false;
        };
        let (drained, tunnels_closed) =
            tokio::join!(async { tokio::time::timeout(deadline, graceful.shutdown()).await.is_ok() }, tunnels_closed);
        let drained = drained && tunnels_closed;
        if drained {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!("drain deadline reached; closing the remaining connections");
        }
        drained
    }
}

/// How long past the drain deadline upgraded connections have to send their close frames.
const TUNNEL_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Every address a runtime serves on: its listeners, then `admin`.
fn endpoints(runtime: &Runtime) -> Vec<(String, SocketAddr)> {
    let mut out: Vec<(String, SocketAddr)> = runtime.listeners.iter().map(|l| (l.name.to_string(), l.bind)).collect();
    out.extend(runtime.admin.map(|a| ("admin".to_owned(), a)));
    out
}

impl Inner {
    fn spawn_loop(&self, name: &str, bind_addr: SocketAddr, tcp: TcpListener) -> io::Result<Loop> {
        let addr = tcp.local_addr()?;
        tracing::info!(listener.name = %name, listener.addr = %addr, "listening");
        if let Ok(mut addrs) = self.addrs.lock() {
            addrs.insert(name.to_owned(), addr);
        }
        let (stop, stopped) = watch::channel(false);
        let task = if name == "admin" {
            tokio::spawn(admin::serve(tcp, self.gateway.clone(), stopped, self.graceful.clone()))
        } else {
            tokio::spawn(listener::serve(tcp, name.into(), self.gateway.clone(), stopped, self.graceful.clone()))
        };
        Ok(Loop { bind: bind_addr, stop, task })
    }

    /// Builds the new configuration completely, binds what is new, then swaps it in:
    /// requests in flight finish on the old one, unchanged listeners keep their sockets,
    /// removed ones stop accepting and drain.
    async fn reload(&self) -> Result<String, ReloadError> {
        let source = self.gateway.runtime().source.clone();
        // Reading files, certificates and the identity store blocks; requests keep flowing.
        let file = source.clone();
        let loaded = tokio::task::spawn_blocking(move || compile::load(&file))
            .await
            .map_err(|e| ReloadError::Panicked(e.to_string()))??;
        for warning in &loaded.warnings {
            tracing::warn!(warning = %warning, "configuration warning");
        }
        let runtime = loaded.runtime;
        let mut loops = self.loops.lock().await;
        let wanted = endpoints(&runtime);
        let mut fresh = Vec::new();
        for (name, bind_addr) in &wanted {
            if loops.get(name).is_some_and(|l| l.bind == *bind_addr) {
                continue;
            }
            let tcp = bind(*bind_addr, name).await?;
            fresh.push((name.clone(), *bind_addr, tcp));
        }
        runtime.start();
        load_keyring(&runtime).await;
        export_certificate_expiry(&runtime);
        let (listeners, routes) = (runtime.listeners.len(), runtime.routes.routes.len());
        let drain_timeout = runtime.drain_timeout;
        self.gateway.swap(runtime);
        // Upgraded connections opened on the previous configuration close (`1001 going away`)
        // once `drain_timeout` passed, not at once.
        self.gateway.tunnels.drain(drain_timeout);
        let stale: Vec<String> = loops
            .iter()
            .filter(|(name, l)| !wanted.iter().any(|(n, b)| n == *name && *b == l.bind))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(l) = loops.remove(&name) {
                tracing::info!(listener.name = %name, "listener removed; draining its connections");
                let _ = l.stop.send(true);
                if let Ok(mut addrs) = self.addrs.lock() {
                    addrs.remove(&name);
                }
            }
        }
        for (name, bind_addr, tcp) in fresh {
            let lp = self.spawn_loop(&name, bind_addr, tcp)?;
            loops.insert(name, lp);
        }
        Ok(format!("reloaded {}: {listeners} listeners, {routes} routes", source.display()))
    }
}

/// Reads the issuer store's subscription keys before the runtime serves, on the gateway's
/// own event loop (the store's connections belong to it). A failure is logged; keys are
/// then refused with 503 until [`crate::serve::changes`] reads them.
async fn load_keyring(runtime: &Runtime) {
    if let Err(e) = runtime.load_keyring().await {
        tracing::error!(error = %e, "cannot read the subscription keys; they are refused until the store answers");
    }
}

/// Serializes reloads: one at a time, in the order asked.
async fn reload_loop(inner: Arc<Inner>, mut requests: mpsc::Receiver<ReloadRequest>) {
    while let Some(reply) = requests.recv().await {
        let outcome = inner.reload().await;
        match &outcome {
            Ok(summary) => {
                metrics().config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(summary = %summary, "configuration reloaded");
            }
            Err(errors) => {
                metrics().config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(errors = %errors, "configuration reload refused; the previous configuration keeps serving");
            }
        }
        let _ = reply.send(outcome);
    }
}

async fn reload_on_sighup(gateway: Arc<Gateway>, hangup: Option<Signal>) {
    #[cfg(unix)]
    if let Some(mut hup) = hangup {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let _ = gateway.reload().await;
        }
    }
}

/// How often watched files are checked, and how long they must stay unchanged before a
/// reload (an editor writes a file in several steps).
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_millis(300);

/// Reloads when the configuration file or any file it references changes.
async fn reload_on_file_change(gateway: Arc<Gateway>) {
    let mut seen = snapshot(&gateway.runtime().files);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if !gateway.runtime().watch_files {
            continue;
        }
        let files = gateway.runtime().files.clone();
        let mut now = snapshot(&files);
        if now == seen {
            continue;
        }
        // Debounce: wait until the files stop changing.
        loop {
            tokio::time::sleep(SETTLE).await;
            let settled = snapshot(&files);
            if settled == now {
                break;
            }
            now = settled;
        }
        tracing::info!("configuration files changed: reloading");
        let _ = gateway.reload().await;
        // After a refused reload the runtime and its file list are unchanged, so a fix to
        // the same files is picked up next.
        seen = snapshot(&gateway.runtime().files);
    }
}

/// Per file: modification time, length and inode. The inode tells a file replaced by another
/// one — a Kubernetes ConfigMap update swaps a `..data` symlink to a new folder — even where
/// time and length happen to agree.
type Stamp = Vec<Option<(std::time::SystemTime, u64, u64)>>;

fn snapshot(files: &[std::path::PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))).collect()
}

/// Certificates closer than this to expiry are warned about at start and reload.
const EXPIRY_WARNING_SECONDS: i64 = 30 * 86_400;

/// Shows `portcullis_certificate_expiry_seconds` for every certificate the runtime uses, for
/// as long as the runtime lives.
fn export_certificate_expiry(runtime: &Runtime) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut series = Vec::with_capacity(runtime.certificates.len());
    for cert in &runtime.certificates {
        let label =
            cert.path.file_name().map_or_else(|| cert.path.display().to_string(), |f| f.to_string_lossy().into_owned());
        let left = cert.not_after - now;
        series.push(ExpirySeries::hold(&label, &cert.usage, &cert.serial, left));
        if left < EXPIRY_WARNING_SECONDS {
            tracing::warn!(certificate = %cert.path.display(), usage = %cert.usage, subject = %cert.subject, days_left = left.div_euclid(86_400), "certificate expires soon");
        }
    }
    let _ = runtime.expiry_series.set(series);
}

async fn bind(addr: SocketAddr, name: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("listener {name}: cannot bind {addr}: {e}")))
}
