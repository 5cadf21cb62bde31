//! `portcullis demo`: development certificates, the demo configuration in front of the
//! built-in echo backend, and ready-to-paste `curl` commands built from the bound addresses.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use crate::{config, pki};

pub fn demo(config_file: &Path, certs: &Path, log_level: &str) -> anyhow::Result<ExitCode> {
    if pki::ensure_dev_material(certs, false)? {
        eprintln!("created development certificates in {}", certs.display());
    }
    let loaded = match config::load(config_file) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    super::init_logging(log_level);
    super::run::serve(loaded.runtime, |server| {
        let https = server.local_addr("public").map(|a| format!("https://localhost:{}", a.port()));
        let plain = server.local_addr("plain");
        let admin = server.local_addr("admin");
        eprintln!("{}", commands(certs, https.as_deref(), plain, admin));
    })
}

fn commands(certs: &Path, https: Option<&str>, plain: Option<SocketAddr>, admin: Option<SocketAddr>) -> String {
    let c = certs.display();
    let mut out = String::from("\nportcullis demo is running. Try (Ctrl-C stops it):\n\n");
    if let Some(base) = https {
        let curl = format!("curl -sS --cacert {c}/ca.pem");
        out += &format!("# allowed: the echo backend answers with what it received\n{curl} {base}/echo/hello\n\n");
        out += &format!(
            "# allowed with a client certificate\n{curl} --cert {c}/client.pem --key {c}/client-key.pem {base}/echo/with-cert\n\n"
        );
        out += &format!(
            "# the response-side header rule removed the backend's X-Powered-By\n{curl} -i {base}/echo/headers\n\n"
        );
        out += &format!("# no route: 404 problem+json\n{curl} -i {base}/nowhere\n\n");
        out += &format!("# an encoded slash cannot sneak past routing: 400\n{curl} -i {base}/echo/a%2fb\n\n");
    }
    if let Some(addr) = plain {
        out += &format!(
            "# plain HTTP only redirects to HTTPS\ncurl -sS -i http://localhost:{}/echo/hello\n\n",
            addr.port()
        );
    }
    if let Some(addr) = admin {
        out += &format!("# health and readiness\ncurl -sS http://{addr}/readyz\n");
    }
    out
}
