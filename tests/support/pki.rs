//! Certificates for tests, written into a temporary directory that also holds the
//! configuration, so configs name them by bare file name.

use std::path::{Path, PathBuf};

use portcullis::tools::pki::{Ca, LeafKind};
use tempfile::TempDir;

pub struct Pki {
    pub dir: TempDir,
    /// Signs server certificates; clients trust it.
    pub ca_pem: String,
}

impl Pki {
    /// Files: `ca.pem`; `server.pem`/`server-key.pem` (localhost, 127.0.0.1);
    /// `alt.pem`/`alt-key.pem` (alt.test); `client-ca.pem`; `client.pem`/`client-key.pem`
    /// (CN=test-client,O=Example); `stranger.pem`/`stranger-key.pem` (same subject, from a CA
    /// nobody trusts); `gateway-client.pem`/`gateway-client-key.pem` (CN=gateway, signed by
    /// the client CA: what the gateway presents to mTLS backends); `expired.pem`,
    /// `revoked.pem` (listed in `client-crl.pem`) and `someone.pem` (CN=someone-else), each
    /// with its `-key.pem`, all from the client CA. Names (RFC 4514 order): `svc.pem`
    /// (O=Contoso,CN=svc), `look-alike.pem` (O=Fabrikam,CN=svc\, O=Contoso: a CN that reads like
    /// a second RDN), `crlf.pem` (O=Contoso,CN=svc\0D\0AX-Injected: 1 Müller), also from the
    /// client CA, each with its `-key.pem`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("test server CA").expect("ca");
        let client_ca = Ca::new("test client CA").expect("client ca");
        let server = ca.issue(&LeafKind::Server(&["localhost", "127.0.0.1"]), 90).expect("server");
        let alt = ca.issue(&LeafKind::Server(&["alt.test"]), 90).expect("alt");
        let client = client_ca
            .issue(&LeafKind::Client { common_name: "test-client", organization: "Example" }, 90)
            .expect("client");
        let stranger = Ca::new("untrusted CA")
            .expect("stranger ca")
            .issue(&LeafKind::Client { common_name: "test-client", organization: "Example" }, 90)
            .expect("stranger");
        let gateway_client = client_ca
            .issue(&LeafKind::Client { common_name: "gateway", organization: "Example" }, 90)
            .expect("gateway client");
        let pki = Self { dir, ca_pem: ca.cert_pem.clone() };
        pki.write("stranger.pem", &stranger.cert_pem);
        pki.write("stranger-key.pem", &stranger.key_pem);
        let expired = client_ca
            .issue(&LeafKind::Client { common_name: "test-client", organization: "Example" }, -1)
            .expect("expired");
        let revoked = client_ca
            .issue(&LeafKind::Client { common_name: "test-client", organization: "Example" }, 90)
            .expect("revoked");
        let someone = client_ca
            .issue(&LeafKind::Client { common_name: "someone-else", organization: "Example" }, 90)
            .expect("someone");
        pki.write("expired.pem", &expired.cert_pem);
        pki.write("expired-key.pem", &expired.key_pem);
        pki.write("revoked.pem", &revoked.cert_pem);
        pki.write("revoked-key.pem", &revoked.key_pem);
        for (file, common_name, organization) in [
            ("svc", "svc", "Contoso"),
            ("look-alike", "svc, O=Contoso", "Fabrikam"),
            ("crlf", "svc\r\nX-Injected: 1 M\u{fc}ller", "Contoso"),
        ] {
            let leaf = client_ca.issue(&LeafKind::Client { common_name, organization }, 90).expect(file);
            pki.write(&format!("{file}.pem"), &leaf.cert_pem);
            pki.write(&format!("{file}-key.pem"), &leaf.key_pem);
        }
        pki.write("someone.pem", &someone.cert_pem);
        pki.write("someone-key.pem", &someone.key_pem);
        pki.write("client-crl.pem", &client_ca.crl(&[&revoked.serial]).expect("crl"));
        pki.write("gateway-client.pem", &gateway_client.cert_pem);
        pki.write("gateway-client-key.pem", &gateway_client.key_pem);
        pki.write("ca.pem", &ca.cert_pem);
        pki.write("server.pem", &server.cert_pem);
        pki.write("server-key.pem", &server.key_pem);
        pki.write("alt.pem", &alt.cert_pem);
        pki.write("alt-key.pem", &alt.key_pem);
        pki.write("client-ca.pem", &client_ca.cert_pem);
        pki.write("client.pem", &client.cert_pem);
        pki.write("client-key.pem", &client.key_pem);
        pki
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).expect("read test file")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A listener block serving `server.pem` on an ephemeral loopback port.
pub const TLS_LISTENER: &str = r#"
  - name: public
    bind: 127.0.0.1:0
    tls:
      certificates:
        - { cert: server.pem, key: server-key.pem }
"#;

/// A `public` listener block serving `server.pem` on an ephemeral port, with extra lines under
/// `tls:` (indented 6 spaces) and `limits` (a YAML flow mapping, or empty).
pub fn listener(extra_tls: &str, limits: &str) -> String {
    let limits = if limits.is_empty() { String::new() } else { format!("\n    limits: {limits}") };
    format!(
        "\n  - name: public\n    bind: 127.0.0.1:0\n    tls:\n      certificates: [{{ cert: server.pem, key: server-key.pem }}]{extra_tls}{limits}\n"
    )
}

/// One catch-all route to `backend` behind one `public` listener with `limits`.
pub fn one_route(backend: &str, limits: &str) -> String {
    format!(
        "version: 1\nlisteners:{}backends:\n  app: {{ urls: [\"{backend}\"] }}\nroutes:\n  - {{ name: all, match: {{}}, backend: app }}\n",
        listener("", limits)
    )
}
