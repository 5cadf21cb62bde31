//! A real `redis-server` on a free loopback port, in a temporary directory, stopped when
//! dropped. It can be stopped and started again on the same port, to test an outage.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// `--tls-*` arguments when the server speaks TLS only.
    tls: Vec<String>,
}

impl RedisServer {
    /// Starts a server; panics, naming the fix, when `redis-server` is not installed.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { child: None, port, dir: tempfile::tempdir().unwrap(), tls: Vec::new() };
        server.resume();
        server
    }

    /// Starts a server that speaks TLS only (`rediss://localhost:PORT`), with the test
    /// server certificate of `pki`.
    pub fn start_tls(pki: &super::Pki) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = |file: &str| pki.path(file).to_string_lossy().into_owned();
        let tls = vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server-key.pem"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let mut server = Self { child: None, port, dir: tempfile::tempdir().unwrap(), tls };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub fn resume(&mut self) {
        let plain_port = if self.tls.is_empty() { self.port.to_string() } else { "0".into() };
        let child = Command::new("redis-server")
            .args(["--port", &plain_port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.tls)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test, or apt-get install -y redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server: connections drop, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server answers PING (a TLS server: accepts connections).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        if !self.tls.is_empty() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
