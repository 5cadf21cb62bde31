//! `portcullis demo`: development certificates, the demo configuration in front of the
//! built-in echo backend, and ready-to-paste `curl` commands built from the bound addresses:
//! allowed requests and requests refused by IP, CORS, JWT and client certificate.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::compile;
use crate::store::{block_on, Store};
use crate::tools::pki;

pub(super) fn demo(config_file: &Path, certs: &Path, globals: &super::Globals) -> anyhow::Result<ExitCode> {
    if pki::ensure_dev_material(certs, false)? {
        eprintln!("created development certificates in {}", certs.display());
    }
    let loaded = match compile::load(config_file) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let token = demo_token(certs)?;
    let client = match &loaded.runtime.issuer {
        // On a store of its own, opened and dropped on this edge's runtime: the issuer's
        // store makes its connections on the gateway's runtime, which `serve` starts.
        Some(_) => {
            let location = compile::identity_store(config_file).map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(block_on(async { demo_client(&location.open().await?).await })?)
        }
        None => None,
    };
    super::init_logging(globals)?;
    super::run::serve(loaded.runtime, globals.workers, |server| {
        let https = server.local_addr("public").map(|a| format!("https://localhost:{}", a.port()));
        let (plain, admin) = (server.local_addr("plain"), server.local_addr("admin"));
        eprintln!("{}", commands(certs, https.as_deref(), plain, admin, &token, client.as_ref()));
    })
}

/// The demo's client of the token issuer: `demo-app`, created on the first run; later runs
/// renew its secret, because a secret is never shown twice. Returns its id and a secret.
async fn demo_client(store: &Store) -> anyhow::Result<(String, String)> {
    const NAME: &str = "demo-app";
    const ACTOR: &str = "portcullis demo";
    let secret = store.hasher().generate();
    let existing = store.systems().await?.into_iter().find(|s| s.name == NAME);
    let id = match existing {
        Some(system) => {
            store.renew_secret(&system.id, &secret.hash, ACTOR).await?;
            if !system.active {
                store.set_system_active(&system.id, true, ACTOR).await?;
            }
            system.id
        }
        None => {
            let alternate = store.hasher().generate();
            store.create_system(NAME, &secret.hash, &alternate.hash, &[], ACTOR).await?.id
        }
    };
    Ok((id, secret.text))
}

/// A token the demo's `jwt` policy accepts for an hour, signed with the dev signing key.
fn demo_token(certs: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(certs.join("token-signing-key.pem")).context("reading the dev token-signing key")?;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).context("the dev token-signing key is not ES256")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": "https://portcullis.demo", "aud": "api://demo", "sub": "demo-user",
        "roles": ["Demo.Read"], "iat": now, "exp": now + 3600,
    });
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key)?)
}

fn commands(
    certs: &Path,
    https: Option<&str>,
    plain: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    token: &str,
    client: Option<&(String, String)>,
) -> String {
    let c = certs.display();
    let mut out = String::from("\nportcullis demo is running. Try these (Ctrl-C stops it):\n");
    let mut add = |what: &str, command: String| {
        let _ = write!(out, "\n# {what}\n{command}\n");
    };
    if let Some(base) = https {
        let curl = format!("curl -sS -i --cacert {c}/ca.pem");
        let cert = format!("--cert {c}/client.pem --key {c}/client-key.pem");
        let portal = "-H 'Origin: https://portal.example.com'";
        add("allowed (200): the echo backend answers with what it received", format!("{curl} {base}/echo/hello"));
        add(
            "allowed (200): a valid token from the portal's origin",
            format!("{curl} {portal} -H 'Authorization: Bearer {token}' {base}/api/items"),
        );
        add("denied by JWT (401): no token", format!("{curl} {portal} {base}/api/items"));
        add(
            "denied by CORS (403): an origin that only looks like the portal's",
            format!("{curl} -H 'Origin: https://evilportal.example.com' -H 'Authorization: Bearer {token}' {base}/api/items"),
        );
        add("denied by IP (403): loopback is not in the office range", format!("{curl} {base}/office/report"));
        add("allowed (200): the demo client certificate", format!("{curl} {cert} {base}/partners/cases"));
        add("denied by client certificate (403): none presented", format!("{curl} {base}/partners/cases"));
        if let Some((id, secret)) = client {
            let ask = format!(
                "curl -sS --cacert {c}/ca.pem -u '{id}:{secret}' -d grant_type=client_credentials {base}/oauth2/token"
            );
            add(
                "allowed (200): the gateway's own token endpoint issues demo-app a token",
                ask.replacen("-sS", "-sS -i", 1),
            );
            add(
                "allowed (200): that token, asked for and used at once on a route with `issuers: [self]`",
                format!("{curl} -H \"Authorization: Bearer $({ask} | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\" {base}/self/items"),
            );
            add(
                "denied by the token endpoint (401): a wrong secret",
                format!("curl -sS -i --cacert {c}/ca.pem -u '{id}:wrong' -d grant_type=client_credentials {base}/oauth2/token"),
            );
        }
        add("no route (404)", format!("{curl} {base}/nowhere"));
        add("an encoded slash cannot sneak past routing (400)", format!("{curl} {base}/echo/a%2fb"));
    }
    if let Some(addr) = plain {
        add(
            "plain HTTP only redirects to HTTPS (308)",
            format!("curl -sS -i http://localhost:{}/echo/hello", addr.port()),
        );
    }
    if let Some(addr) = admin {
        add("readiness (200)", format!("curl -sS -i http://{addr}/readyz"));
    }
    out
}
