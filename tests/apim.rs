//! `portcullis import-apim` on realistic APIM policy documents (written from the APIM policy
//! reference): the imported configuration passes `check`, and `portcullis test` fixtures show
//! its decisions match what APIM documents for the same requests. What cannot be translated is
//! a comment naming its XML line, and `--strict` refuses it.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use jsonwebtoken::Algorithm;
use support::gateway::binary;
use support::tokens::SigningKey;

/// Runs portcullis, with the named value the `expressions` document refers to set.
fn portcullis(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env("BACKEND_API_KEY", "from-the-environment")
        .env("JWT_SECRET", "a-symmetric-key-of-at-least-32-bytes")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `certs/dev` and `policies/` in a temporary folder, like the repository's layout.
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("tests")).unwrap();
    let certs = dir.path().join("certs/dev");
    assert!(portcullis(&["certs", "dev", "--dir", certs.to_str().unwrap()]).0);
    (dir, policies)
}

/// Imports `tests/apim/NAME.xml` into `policies/NAME.yaml`; asserts it passes `check`.
fn import(policies: &Path, name: &str, strict: bool) -> (bool, String, String) {
    import_with(policies, name, strict, &[])
}

/// Like [`import`], with more `import-apim` flags.
fn import_with(policies: &Path, name: &str, strict: bool, flags: &[&str]) -> (bool, String, String) {
    let xml = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/apim/{name}.xml"));
    let mut args = vec!["import-apim", xml.to_str().unwrap()];
    if strict {
        args.push("--strict");
    }
    args.extend_from_slice(flags);
    let (ok, yaml, err) = portcullis(&args);
    let file = policies.join(format!("{name}.yaml"));
    std::fs::write(&file, &yaml).unwrap();
    let (checked, out, check_err) = portcullis(&["check", "--config", file.to_str().unwrap()]);
    assert!(checked, "the imported {name} passes check:\n{yaml}\n{out}{check_err}");
    (ok, yaml, err)
}

/// The imported YAML as data.
fn data(yaml: &str) -> serde_json::Value {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Runs a fixture against `policies/NAME.yaml`; asserts every case passes.
fn run_fixture(policies: &Path, name: &str, fixture: &str) {
    let file = policies.join(format!("tests/{name}.yaml"));
    std::fs::write(&file, fixture).unwrap();
    let config = policies.join(format!("{name}.yaml"));
    let (ok, out, err) = portcullis(&["test", "--config", config.to_str().unwrap(), file.to_str().unwrap()]);
    assert!(ok && !out.contains("FAIL"), "{out}{err}");
}

#[test]
fn a_portal_api_with_cors_openid_tokens_and_claims_keeps_apims_decisions() {
    let (_dir, policies) = workspace();
    let (ok, yaml, err) = import(&policies, "portal-api", true);
    assert!(ok, "everything in it translates, so --strict passes: {err}");
    assert_eq!(
        data(&yaml)["policies"]["jwt"]["jwt"]["openid_config"],
        "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
        "{yaml}"
    );
    assert_eq!(
        data(&yaml)["policies"]["jwt"]["jwt"]["require_claims"]["roles"],
        serde_json::json!({ "any_of": ["Config.Read", "Config.Admin"] }),
        "match=\"any\": {yaml}"
    );
    assert!(yaml.contains("# line 6: <base/>"), "the base element is named with its line: {yaml}");

    // The provider's RS256 key stands in for its discovery document.
    let idp = SigningKey::new(Algorithm::RS256, "idp-1");
    std::fs::write(policies.join("tests/idp-key.pem"), &idp.private_pem).unwrap();
    let fixture = r#"config: ../portal-api.yaml
keys:
  idp: { private_key: idp-key.pem, alg: RS256, kid: idp-1 }
tokens:
  claims: { iss: https://login.example.com/tenant/v2.0, aud: api://config, sub: alice, roles: [Config.Read] }
jwks:
  jwt: { key: idp }
cases:
  - name: a portal call with a valid token reaches the backend with the API version set
    request:
      url: https://localhost/settings
      headers: { Origin: https://portal.example.com, X-Internal-Debug: "1" }
      token: { key: idp }
    expect:
      status: 200
      response_headers: { Access-Control-Allow-Origin: https://portal.example.com, X-Powered-By: null }
      backend_headers: { X-Api-Version: 2024-06-01, X-Internal-Debug: null }
  # APIM answers an unmatched origin with an empty 200 (terminate-unmatched-request); portcullis
  # with 403. Either way the backend never sees it and the browser gets no CORS grant.
  - name: another origin is terminated, not forwarded
    request: { url: https://localhost/settings, headers: { Origin: https://evil.example }, token: { key: idp } }
    expect: { forwarded: false, policy: cors, response_headers: { Access-Control-Allow-Origin: null } }
  - name: the preflight is answered by the gateway
    request:
      method: OPTIONS
      url: https://localhost/settings
      headers: { Origin: https://portal.example.com, Access-Control-Request-Method: PUT }
    expect: { forwarded: false, reason: answered, response_headers: { Access-Control-Max-Age: "600" } }
  - name: an expired token is 401 (beyond the 30 s clock skew)
    request: { url: https://localhost/settings, headers: { Origin: https://portal.example.com }, token: { key: idp, expires_in: -1m } }
    expect: { status: 401, policy: jwt, reason: expired }
  - name: a token within the clock skew is accepted
    request: { url: https://localhost/settings, headers: { Origin: https://portal.example.com }, token: { key: idp, expires_in: -10s } }
    expect: { status: 200 }
  - name: a token for another audience is 401
    request: { url: https://localhost/settings, headers: { Origin: https://portal.example.com }, token: { key: idp, claims: { aud: api://other } } }
    expect: { status: 401, reason: wrong_audience }
  # APIM answers a missing required claim with its failed-validation-httpcode (401); portcullis
  # with 403 insufficient claims. The request is refused by the jwt policy either way.
  - name: a token without a required role is refused
    request: { url: https://localhost/settings, headers: { Origin: https://portal.example.com }, token: { key: idp, claims: { roles: [Config.Write] } } }
    expect: { forwarded: false, policy: jwt, reason: claims_not_satisfied }
  - name: the fourth call of one user within a minute is 429 (calls=3, renewal-period=60)
    request: { url: https://localhost/settings, headers: { Origin: https://portal.example.com }, token: { key: idp, claims: { sub: burster } } }
    repeat: 4
    expect: { status: 429, policy: rate-limit, response_headers: { Retry-After: "*" } }
"#;
    run_fixture(&policies, "portal-api", fixture);
}

#[test]
fn an_ip_filtered_maintenance_api_with_client_certificates_keeps_apims_decisions() {
    let (_dir, policies) = workspace();
    let (ok, yaml, err) = import(&policies, "maintenance-api", true);
    assert!(ok, "{err}");
    let config = data(&yaml);
    assert_eq!(
        config["policies"]["ip-filter"]["ip_filter"]["allow"],
        serde_json::json!(["198.51.100.7/32", "203.0.113.0/24"])
    );
    assert_eq!(
        config["policies"]["ip-filter-2"]["ip_filter"]["deny"],
        serde_json::json!(["203.0.113.64/26"]),
        "the forbidden range as one network: {yaml}"
    );
    assert!(yaml.contains("timeout: 20s"), "{yaml}");
    let fixture = r#"config: ../maintenance-api.yaml
cases:
  - name: an office address with the partner's certificate is forwarded
    request: { url: https://localhost/restart, client_ip: 203.0.113.5, client_cert: ../../certs/dev/client.pem }
    expect: { status: 200 }
  - name: the single allowed address is forwarded
    request: { url: https://localhost/restart, client_ip: 198.51.100.7, client_cert: ../../certs/dev/client.pem }
    expect: { status: 200 }
  - name: its neighbour is refused
    request: { url: https://localhost/restart, client_ip: 198.51.100.8, client_cert: ../../certs/dev/client.pem }
    expect: { status: 403, reason: ip_not_allowed }
  - name: the forbidden range inside the office network is refused
    request: { url: https://localhost/restart, client_ip: 203.0.113.70, client_cert: ../../certs/dev/client.pem }
    expect: { status: 403, policy: ip-filter-2, reason: ip_denied }
  - name: without a client certificate the office is refused
    request: { url: https://localhost/restart, client_ip: 203.0.113.5 }
    expect: { status: 403, policy: client-cert, reason: no_client_cert }
"#;
    run_fixture(&policies, "maintenance-api", fixture);
}

#[test]
fn expressions_and_named_values_are_comments_with_their_lines_and_strict_refuses_them() {
    let (_dir, policies) = workspace();
    let (ok, yaml, err) = import(&policies, "expressions", true);
    assert!(!ok, "--strict fails when anything was left out");
    assert!(err.contains("6 element(s), attribute(s) or expression(s) left out"), "{err}");
    for comment in [
        "# line 6: output-token-variable-name=\"jwt\" not translated",
        "# line 15: named value {{backend-api-key}} → ${env:BACKEND_API_KEY}",
        "# line 18: <set-header name=\"X-Caller\"> value \"@(context.User.Email)\" not translated: a policy expression",
        "# line 20: counter-key=\"@(context.Subscription.Id)\" not translated",
        "# line 21: <check-header> not translated",
        "# line 24: <mock-response> not translated",
        "# line 34: <on-error><set-status> not translated",
    ] {
        assert!(yaml.contains(comment), "{comment:?} in:\n{yaml}");
    }
    let config = data(&yaml);
    let request = &config["policies"]["request-headers"]["headers"]["request"];
    assert_eq!(request["set"], serde_json::json!({ "X-Backend-Key": "${env:BACKEND_API_KEY}" }), "{yaml}");
    assert_eq!(
        request["remove"],
        serde_json::json!(["X-Caller"]),
        "APIM overwrote it: the client's value never passes: {yaml}"
    );
    assert!(
        yaml.contains(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"
        ),
        "{yaml}"
    );
    assert_eq!(
        config["policies"]["entra-jwt"]["jwt"]["require_claims"]["azp"],
        serde_json::json!({ "any_of": ["11111111-2222-3333-4444-555555555555"] }),
        "{yaml}"
    );
    let (ok, _, _) = import(&policies, "expressions", false);
    assert!(ok, "without --strict the translation is written and exits 0");
}

#[test]
fn a_document_that_is_not_a_policy_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.xml");
    std::fs::write(&file, "<policies><inbound><cors></inbound></policies>").unwrap();
    let (ok, _, err) = portcullis(&["import-apim", file.to_str().unwrap()]);
    assert!(!ok && err.contains("not well-formed XML"), "{err}");
    std::fs::write(&file, "<configuration/>").unwrap();
    let (ok, _, err) = portcullis(&["import-apim", file.to_str().unwrap()]);
    assert!(!ok && err.contains("line 1: the root element is <configuration>, not <policies>"), "{err}");
}

#[test]
fn what_apim_refused_stays_refused_and_strict_names_what_was_left_out() {
    let (_dir, policies) = workspace();
    let (ok, yaml, err) = import(&policies, "never-weakens", true);
    assert!(!ok, "the subscription-keyed budget is left out, so --strict fails: {err}");
    assert!(err.contains("1 element(s), attribute(s) or expression(s) left out"), "{err}");
    assert!(yaml.contains("counter-key=") && yaml.contains("any value of the key would buy a fresh budget"), "{yaml}");
    let config = data(&yaml);
    assert_eq!(config["policies"]["rate-limit"]["rate_limit"]["key"], "client_ip", "{yaml}");
    assert_eq!(config["policies"]["ip-filter"]["ip_filter"]["deny"], serde_json::json!(["::/112"]), "{yaml}");
    assert_eq!(
        config["policies"]["jwt"]["jwt"]["require_claims"]["roles"],
        serde_json::json!({ "all_of": ["Config.Read", "Config.Audit"] }),
        "APIM's match defaults to all: {yaml}"
    );
    assert_eq!(
        config["policies"]["client-cert"]["client_cert"]["identities"],
        serde_json::json!([{ "subject": "CN=demo-client", "issuer": "CN=portcullis dev client CA" }]),
        "{yaml}"
    );
    let (ok, _, _) = import(&policies, "never-weakens", false);
    assert!(ok, "without --strict the translation is written and exits 0");

    let fixture = r#"config: ../never-weakens.yaml
keys:
  hs: { secret: "${env:JWT_SECRET}", alg: HS256 }
tokens:
  claims: { iss: https://issuer.example, sub: alice, roles: [Config.Read, Config.Audit] }
cases:
  - name: an address in the forbidden IPv6 range is refused, and only it
    request: { url: https://localhost/x, client_ip: "::5", token: { key: hs } }
    expect: { status: 403, policy: ip-filter, reason: ip_denied }
  - name: a token with one of the two required roles is refused (APIM's match is all)
    request: { url: https://localhost/x, client_ip: "2001:db8::1", token: { key: hs, claims: { roles: [Config.Read] } } }
    expect: { forwarded: false, policy: jwt, reason: claims_not_satisfied }
  # The identity names only a common name: portcullis matches whole subjects, so the partner's
  # certificate (CN=demo-client, O=Example) is refused until the subject is completed.
  - name: a token with both roles passes the jwt policy, and the incomplete subject refuses the certificate
    request: { url: https://localhost/x, client_ip: "2001:db8::1", client_cert: ../../certs/dev/client.pem, token: { key: hs } }
    expect: { forwarded: false, policy: client-cert }
"#;
    run_fixture(&policies, "never-weakens", fixture);
}

#[test]
fn a_translation_with_notes_inside_policies_is_yaml_that_check_reads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.xml");
    std::fs::write(
        &file,
        r#"<policies><inbound>
<validate-client-certificate><identities>
  <identity issuer-subject="CN=ca" common-name="x" />
  <identity subject="CN=y" thumbprint="AB" />
</identities></validate-client-certificate>
<cors><allowed-origins><origin>https://a.example/#}</origin></allowed-origins><allowed-methods><method>*</method></allowed-methods></cors>
</inbound></policies>"#,
    )
    .unwrap();
    let (ok, yaml, err) = portcullis(&["import-apim", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let config = data(&yaml);
    assert_eq!(
        config["policies"]["client-cert"]["client_cert"]["identities"],
        serde_json::json!([{ "subject": "CN=x", "issuer": "CN=ca" }]),
        "the identity that lost its thumbprint is dropped, not widened: {yaml}"
    );
    assert_eq!(config["policies"]["cors"]["cors"]["allowed_origins"], serde_json::json!(["https://a.example/#}"]));
    for line in yaml.lines().filter(|l| l.contains("not translated") || l.contains("APIM")) {
        assert!(line.trim_start().starts_with('#'), "notes are comment lines of their own: {line:?}");
    }
}

/// `--subscription-required`: the key is checked first, the budgets count per subscription,
/// and the whole configuration (with the `identity` section whose store holds the keys) passes
/// `check`; the keys APIM's callers hold are imported into that store.
#[test]
fn a_required_subscription_is_checked_first_and_its_budgets_count_per_subscription() {
    let (dir, policies) = workspace();
    let (ok, yaml, err) = import_with(&policies, "subscription-quota", true, &["--subscription-required"]);
    assert!(ok, "everything in it translates, so --strict passes: {err}\n{yaml}");
    let config = data(&yaml);
    assert_eq!(
        config["routes"][0]["policies"],
        serde_json::json!(["subscription-key", "quota", "rate-limit"]),
        "the key is checked before any policy: {yaml}"
    );
    assert_eq!(config["policies"]["subscription-key"]["subscription_key"], serde_json::json!({}), "{yaml}");
    assert_eq!(
        config["policies"]["quota"]["rate_limit"],
        serde_json::json!({ "key": "subscription", "quota": "10000/day" }),
        "{yaml}"
    );
    assert_eq!(config["policies"]["rate-limit"]["rate_limit"]["key"], "subscription", "{yaml}");
    assert_eq!(config["identity"]["store"], "sqlite:../var/identity.db", "{yaml}");
    assert!(dir.path().join("var/identity.db").exists(), "check opened the store");

    // The callers' keys go into the store the configuration names.
    let config_file = policies.join("subscription-quota.yaml");
    let subscriptions = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apim/subscriptions.json");
    let (_, out, err) = portcullis(&[
        "subscriptions",
        "--config",
        config_file.to_str().unwrap(),
        "import",
        subscriptions.to_str().unwrap(),
    ]);
    assert!(out.contains("5931a75ae4bbd512a88c680b"), "{out}{err}");

    // `portcullis test` does not read the store's keys, so only the refusals made before any
    // lookup are shown here: the key is checked before the budgets.
    let fixture = r#"config: ../subscription-quota.yaml
cases:
  - name: a call without a key is refused by the key check, before any budget
    request: { url: https://localhost/orders }
    expect: { status: 401, policy: subscription-key, reason: subscription_key_missing }
  - name: a key in the header and the query is refused
    request: { url: "https://localhost/orders?subscription-key=a", headers: { Ocp-Apim-Subscription-Key: b } }
    expect: { status: 401, policy: subscription-key, reason: subscription_key_ambiguous }
"#;
    run_fixture(&policies, "subscription-quota", fixture);

    // Custom key names are the policy's.
    let (ok, yaml, err) = import_with(
        &policies,
        "subscription-quota",
        true,
        &["--subscription-required", "--subscription-key-header", "X-Api-Key", "--subscription-key-query", "apikey"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        data(&yaml)["policies"]["subscription-key"]["subscription_key"],
        serde_json::json!({ "header": "X-Api-Key", "query": "apikey" }),
        "{yaml}"
    );

    // Not required: no key is checked, so the budgets fall back to the client address, and
    // --strict refuses the difference; unsaid, the output says how to say it.
    for flags in [&["--no-subscription-required"][..], &[]] {
        let (ok, yaml, err) = import_with(&policies, "subscription-quota", true, flags);
        assert!(!ok && err.contains("2 element(s), attribute(s) or expression(s) left out"), "{flags:?}: {err}");
        let config = data(&yaml);
        assert_eq!(config["policies"]["quota"]["rate_limit"]["key"], "client_ip", "{yaml}");
        assert!(config.get("identity").is_none() && config["policies"].get("subscription-key").is_none(), "{yaml}");
        assert_eq!(yaml.contains("re-run with --subscription-required"), flags.is_empty(), "{yaml}");
    }
    let (ok, _, err) =
        portcullis(&["import-apim", "x.xml", "--no-subscription-required", "--subscription-key-header", "X-Key"]);
    assert!(!ok && err.contains("--subscription-required"), "the names need the subscription required: {err}");
}
