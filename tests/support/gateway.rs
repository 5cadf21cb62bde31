//! The real gateway binary, started on a configuration written next to the test
//! certificates, with its JSON log lines captured.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::Pki;

pub struct TestGateway {
    pub child: Child,
    /// Bound addresses by listener name, kept current across reloads.
    addrs: Arc<Mutex<HashMap<String, SocketAddr>>>,
    /// Every line the gateway wrote to stdout (JSON logs and access-log lines) and stderr.
    pub logs: Arc<Mutex<Vec<String>>>,
    pub config: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

impl TestGateway {
    /// Writes `yaml` as `gateway.yaml` beside the certificates and runs the gateway on it;
    /// returns once it logged `ready`.
    pub fn start(yaml: &str, pki: &Pki) -> Self {
        let config = pki.write("gateway.yaml", yaml);
        Self::start_file(config)
    }

    pub fn start_file(config: PathBuf) -> Self {
        Self::start_with(config, &[])
    }

    /// Like [`Self::start_file`], with extra command-line arguments.
    pub fn start_with(config: PathBuf, args: &[&str]) -> Self {
        Self::start_under(Command::new(binary()), config, args)
    }

    /// Like [`Self::start_with`], run by `command` (the gateway binary, or a wrapper such as
    /// `taskset -c 0 <binary>`).
    pub fn start_under(mut command: Command, config: PathBuf, args: &[&str]) -> Self {
        let mut child = command
            .args(args)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let addrs = Arc::new(Mutex::new(HashMap::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (sink, live) = (logs.clone(), addrs.clone());
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let json = serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default();
                sink.lock().unwrap().push(line);
                if json["message"] == "listening" {
                    let addr = json["listener.addr"].as_str().unwrap().parse().unwrap();
                    live.lock().unwrap().insert(json["listener.name"].as_str().unwrap().to_owned(), addr);
                }
                // Signalled once the line is in `logs`, so a test can read it at once.
                if json["message"] == "ready" {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(true);
                    }
                }
            }
            if let Some(tx) = ready.take() {
                let _ = tx.send(false);
            }
        });
        let sink = logs.clone();
        let errors = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                sink.lock().unwrap().push(line);
            }
            all
        });
        if ready_rx.recv_timeout(Duration::from_secs(20)) != Ok(true) {
            let _ = child.kill();
            let err = errors.join().unwrap_or_default();
            panic!("the gateway did not start:\n{err}");
        }
        Self { child, addrs, logs, config }
    }

    /// The bound address of a listener; after a reload its log line may still be on its way,
    /// so this waits for it (at most 10 s).
    pub fn addr(&self, listener: &str) -> SocketAddr {
        for _ in 0..1000 {
            if let Some(addr) = self.addrs.lock().unwrap().get(listener) {
                return *addr;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("listener {listener} never logged its address")
    }

    pub fn has_listener(&self, listener: &str) -> bool {
        self.addrs.lock().unwrap().contains_key(listener)
    }

    /// Everything logged so far, one line each.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Asks for a reload on the admin listener; returns the whole HTTP answer.
    pub async fn reload(&self) -> String {
        admin_request(self.addr("admin"), "POST", "/reload").await
    }

    /// Polls the admin listener's `/readyz` until it answers 200 (at most 10 s).
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if admin_get(self.addr("admin"), "/readyz").await.starts_with("HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not become ready: {}", admin_get(self.addr("admin"), "/readyz").await);
    }

    /// The value of one series (name and labels, exactly as exposed) on `/metrics`; 0 when absent.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = admin_get(self.addr("admin"), "/metrics").await;
        metric(&text, series)
    }

    /// Current resident memory of the gateway process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Peak resident memory of the gateway process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET to the admin listener; the whole answer as text.
pub async fn admin_get(addr: SocketAddr, path: &str) -> String {
    admin_request(addr, "GET", path).await
}

pub async fn admin_request(addr: SocketAddr, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The value of `series` in a Prometheus text exposition; 0 when absent.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok())).map_or(0, |v| v as u64)
}
