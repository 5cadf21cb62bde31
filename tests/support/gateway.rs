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
    pub addrs: HashMap<String, SocketAddr>,
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
        let mut child = Command::new(binary())
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut addrs = HashMap::new();
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                    if json["message"] == "listening" {
                        let addr = json["listener.addr"].as_str().unwrap().parse().unwrap();
                        addrs.insert(json["listener.name"].as_str().unwrap().to_owned(), addr);
                    }
                    if json["message"] == "ready" {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Ok(addrs.clone()));
                        }
                    }
                }
                sink.lock().unwrap().push(line);
            }
            if let Some(tx) = ready.take() {
                let _ = tx.send(Err(()));
            }
        });
        let addrs = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(addrs)) => addrs,
            _ => {
                let _ = child.kill();
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut err);
                panic!("the gateway did not start:\n{err}");
            }
        };
        Self { child, addrs, logs, config }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
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

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Peak resident memory of the gateway process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}
