//! `portcullis probe URL`: a health check for images without a shell or curl (the container's
//! `HEALTHCHECK`): one plain-HTTP GET to the admin listener; exit 0 on 200, 1 otherwise.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

pub(super) fn probe(url: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url:?}: the probe speaks plain HTTP to the admin listener, like http://127.0.0.1:9901/healthz");
    };
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority.to_socket_addrs().with_context(|| format!("{authority:?} is not host:port"))?.next();
    let addr = addr.with_context(|| format!("{authority:?} resolves to no address"))?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = tcp.read(&mut head)?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let healthy = status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200");
    if !healthy {
        eprintln!("{url}: {}", status_line.lines().next().unwrap_or("no answer"));
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
