//! PKCS#12 (`.pfx`) certificates as the APIM world exports them, made here by `openssl pkcs12
//! -export`: served on a listener, presented to an mTLS backend, listed by `certs check`, and
//! rotated on disk while a request on the old certificate finishes.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::process::Command;

use support::gateway::{admin_get, binary};
use support::{until, Client, Pki, TestBackend, TestGateway};

/// Exports `cert` and `key` of `pki` as `out` with `password` and extra `openssl pkcs12` options.
fn export(pki: &Pki, cert: &str, key: &str, out: &str, password: &str, options: &[&str]) {
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-in", cert, "-inkey", key, "-out", out, "-passout"])
        .arg(format!("pass:{password}"))
        .args(options)
        .current_dir(pki.dir())
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    assert!(status.status.success(), "openssl: {}", String::from_utf8_lossy(&status.stderr));
}

fn listener_config(backend: &str, pfx: &str) -> String {
    format!(
        r#"version: 1
listeners:
  - name: public
    bind: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: {pfx}, password: "${{file:pfx-password}}" }}
admin: {{ bind: "127.0.0.1:0" }}
backends:
  app: {{ urls: ["{backend}"] }}
routes:
  - {{ name: all, match: {{}}, backend: app }}
"#
    )
}

fn check(pki: &Pki) -> (bool, String) {
    let out = Command::new(binary()).args(["check", "--config"]).arg(pki.path("gateway.yaml")).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_serve_pfx_files_of_current_and_legacy_encryption() {
    let pki = Pki::new();
    let backend = TestBackend::start().await;
    pki.write("pfx-password", "pfx-pass-7d2e\n");
    // OpenSSL 3's default (AES-256-CBC, PBKDF2, HMAC-SHA-256), Windows' TripleDES_SHA1, and
    // OpenSSL's -legacy (40-bit RC2 for the certificates, 3DES for the key).
    let kinds: [(&str, &[&str]); 3] = [
        ("aes.pfx", &[]),
        ("3des.pfx", &["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"]),
        ("legacy.pfx", &["-legacy"]),
    ];
    for (file, options) in kinds {
        export(&pki, "server.pem", "server-key.pem", file, "pfx-pass-7d2e", options);
        pki.write("gateway.yaml", &listener_config(&backend.url(), file));
        let (ok, out) = check(&pki);
        assert!(ok, "{file}: {out}");
        let gw = TestGateway::start_file(pki.path("gateway.yaml"));
        assert_eq!(Client::new(gw.addr("public"), &pki).get("/x").await.status, 200, "{file} served");
    }

    let certs =
        Command::new(binary()).args(["certs", "check", "--config"]).arg(pki.path("gateway.yaml")).output().unwrap();
    let table = String::from_utf8_lossy(&certs.stdout);
    assert!(table.contains("legacy.pfx") && table.contains("CN=localhost"), "{table}");

    pki.write("pfx-password", "not-the-password");
    let (ok, out) = check(&pki);
    assert!(!ok && out.contains("gateway.yaml:7:") && out.contains("wrong password"), "{out}");
    assert!(!out.contains("pfx-pass-7d2e"), "{out}");
    pki.write("gateway.yaml", &listener_config(&backend.url(), "server.pem"));
    let (ok, out) = check(&pki);
    assert!(!ok && out.contains("a password is for a PKCS#12 (.pfx, .p12) file"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_client_pfx_rotates_while_requests_on_the_old_one_finish() {
    let pki = Pki::new();
    let backend = TestBackend::start_tls(&pki).await;
    pki.write("pfx-password", "client-pass");
    export(&pki, "client.pem", "client-key.pem", "client.pfx", "client-pass", &[]);
    let yaml = format!(
        r#"version: 1
listeners:{listener}
admin: {{ bind: "127.0.0.1:0" }}
backends:
  app:
    urls: ["https://localhost:{port}"]
    timeout: 10s
    tls: {{ trusted_cas: ca.pem, client_cert: client.pfx, client_password: "${{file:pfx-password}}" }}
routes:
  - {{ name: all, match: {{}}, backend: app }}
"#,
        listener = support::pki::listener("", ""),
        port = backend.addr.port(),
    );
    let gw = TestGateway::start(&yaml, &pki);
    let client = Client::new(gw.addr("public"), &pki);
    assert_eq!(client.get("/first").await.status, 200);
    assert_eq!(backend.last().client_cert.as_deref(), Some("O=Example,CN=test-client"));
    let series = || async {
        let m = admin_get(gw.addr("admin"), "/metrics").await;
        m.lines().filter(|l| l.starts_with("portcullis_certificate_expiry_seconds{certificate=\"client.pfx\"")).count()
    };
    assert_eq!(series().await, 1);

    // A slow request on the old certificate, then the new certificate lands on disk.
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get("/slow?ms=2500").await })
    };
    until("the slow request reached the backend", async || backend.received().len() == 2).await;
    export(&pki, "someone.pem", "someone-key.pem", "client.pfx.new", "client-pass", &[]);
    std::fs::rename(pki.path("client.pfx.new"), pki.path("client.pfx")).unwrap();
    until("the reload presents the new certificate", async || {
        let rsp = client.get("/after").await;
        rsp.status == 200 && backend.last().client_cert.as_deref() == Some("O=Example,CN=someone-else")
    })
    .await;
    assert_eq!(series().await, 2, "the old and the new certificate, while the old one is in use");

    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "the request on the old certificate finished");
    let on_slow = backend.received().into_iter().find(|r| r.target.starts_with("/slow")).unwrap();
    assert_eq!(on_slow.client_cert.as_deref(), Some("O=Example,CN=test-client"));
    until("only the new certificate is shown once the old configuration is done", async || series().await == 1).await;
}
