//! `portcullis test` end to end: the shipped fixtures pass against the shipped policy files, a
//! wrong expectation fails with a diff and the trace, JUnit and JSON outputs parse, and a
//! malformed fixture is an error at its `file:line:column`.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::gateway::binary;

/// A copy of `policies/` beside fresh `certs/dev` material, as `portcullis demo` would leave it.
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("tests")).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for sub in ["", "tests"] {
        for entry in std::fs::read_dir(source.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, policies.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let certs =
        Command::new(binary()).args(["certs", "dev", "--dir"]).arg(dir.path().join("certs/dev")).output().unwrap();
    assert!(certs.status.success(), "{}", String::from_utf8_lossy(&certs.stderr));
    (dir, policies)
}

/// Runs `portcullis test ARGS`: success, stdout, stderr.
fn test(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary()).arg("test").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_fixtures_pass_against_every_shipped_policy_file() {
    let (_dir, policies) = workspace();
    let mut files = 0;
    for entry in std::fs::read_dir(&policies).unwrap() {
        let config = entry.unwrap().path();
        if config.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        files += 1;
        let (ok, out, err) = test(&["--config", config.to_str().unwrap()]);
        assert!(ok, "{}:\n{out}{err}", config.display());
        let last = out.lines().last().unwrap();
        assert!(last.ends_with(" passed, 0 failed") && !last.starts_with("0 "), "{}: {last}", config.display());
        assert!(!out.contains("FAIL"), "{out}");
    }
    assert!(files >= 2, "demo.yaml and portal.yaml");
}

const WRONG: &str = r#"config: ../demo.yaml
cases:
  - name: loopback reaches the office
    request: { url: https://localhost/office/report }
    expect: { status: 200, decisions: { office-only: allowed }, response_headers: { X-Content-Type-Options: nosniff } }
  - name: the echo route answers
    request: { url: https://localhost/echo/x }
    expect: { status: 200 }
"#;

#[test]
fn a_wrong_expectation_fails_with_a_diff_and_the_trace_and_exit_1() {
    let (_dir, policies) = workspace();
    let fixture = policies.join("tests/wrong.yaml");
    std::fs::write(&fixture, WRONG).unwrap();
    let config = policies.join("demo.yaml");
    let (ok, out, _) = test(&["--config", config.to_str().unwrap(), fixture.to_str().unwrap()]);
    assert!(!ok, "a failing case fails the run");
    assert!(out.contains(&format!("FAIL loopback reaches the office ({}:3)", fixture.display())), "{out}");
    for line in [
        "  - status: 200",
        "  + status: 403",
        "  - decisions.office-only: allowed",
        "  + decisions.office-only: denied: ip_not_allowed",
        "  - response_headers.X-Content-Type-Options: nosniff",
        "  + response_headers.X-Content-Type-Options: (absent)",
        "      2. office-only (ip_filter): denied: ip_not_allowed",
        "    final: 403 ip-rejected (ip_not_allowed), not forwarded",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    assert!(out.contains("ok   the echo route answers"), "{out}");
    assert_eq!(out.lines().last(), Some("1 passed, 1 failed"));

    // JUnit: well-formed, one suite, one failure with the diff.
    let (_, xml, _) = test(&["--config", config.to_str().unwrap(), "--format", "junit", fixture.to_str().unwrap()]);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    let root = doc.root_element();
    assert_eq!(
        (root.tag_name().name(), root.attribute("tests"), root.attribute("failures")),
        ("testsuites", Some("2"), Some("1"))
    );
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 2);
    let failure = cases[0].children().find(|n| n.has_tag_name("failure")).unwrap();
    assert_eq!(failure.attribute("message"), Some("status: expected 200, got 403"));
    assert!(failure.text().unwrap().contains("+ status: 403"));
    assert!(cases[1].children().all(|n| !n.has_tag_name("failure")));

    // JSON for other tools.
    let (_, json, _) = test(&["--config", config.to_str().unwrap(), "--format", "json", fixture.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((report["passed"].as_u64(), report["failed"].as_u64()), (Some(1), Some(1)));
    assert_eq!(report["cases"][0]["mismatches"][0]["got"], "403");
}

#[test]
fn a_malformed_fixture_is_an_error_at_its_location() {
    let (_dir, policies) = workspace();
    let config = policies.join("demo.yaml");
    let fixture = policies.join("tests/broken.yaml");
    std::fs::write(
        &fixture,
        "cases:\n  - name: typo\n    request: { url: https://localhost/echo/x }\n    expext: { status: 200 }\n",
    )
    .unwrap();
    let (ok, _, err) = test(&["--config", config.to_str().unwrap(), fixture.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains(&format!("{}:4:5", fixture.display())) && err.contains("unknown field `expext`"), "{err}");

    std::fs::write(&fixture, "keys:\n  idp: { private_key: missing.pem, alg: ES256 }\ncases: []\n").unwrap();
    let (ok, _, err) = test(&["--config", config.to_str().unwrap(), fixture.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains(&format!("{}:2:", fixture.display())) && err.contains("keys.idp: cannot read"), "{err}");

    let unknown_key = "cases:\n  - name: minted with a key the file lacks\n    request: { url: https://localhost/api/x, token: { key: nobody } }\n    expect: { status: 200 }\n";
    std::fs::write(&fixture, unknown_key).unwrap();
    let (ok, out, _) = test(&["--config", config.to_str().unwrap(), fixture.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("error: unknown key \"nobody\""), "{out}");
}

#[test]
fn a_jwks_file_stands_in_for_a_remote_key_source() {
    let (_dir, policies) = workspace();
    let key = support::tokens::SigningKey::new(jsonwebtoken::Algorithm::ES256, "remote-1");
    std::fs::write(policies.join("tests/remote-key.pem"), &key.private_pem).unwrap();
    std::fs::write(policies.join("tests/remote.jwks.json"), serde_json::json!({ "keys": [key.jwk] }).to_string())
        .unwrap();
    let fixture = policies.join("tests/remote.yaml");
    std::fs::write(
        &fixture,
        r#"config: ../portal.yaml
keys:
  remote: { private_key: remote-key.pem, alg: ES256, kid: remote-1 }
  other: { private_key: ../../certs/dev/token-signing-key.pem, alg: ES256, kid: remote-1 }
tokens:
  claims: { iss: https://login.example.com/tenant/v2.0, aud: api://config, sub: alice }
jwks:
  portal-jwt: remote.jwks.json
cases:
  - name: a token signed with the published key passes
    request: { url: https://localhost/config/x, headers: { Origin: https://portal.example.com }, token: { key: remote } }
    expect: { status: 200 }
  - name: a token signed with another key under the same kid is forged
    request: { url: https://localhost/config/x, headers: { Origin: https://portal.example.com }, token: { key: other } }
    expect: { status: 401, reason: bad_signature }
"#,
    )
    .unwrap();
    let config = policies.join("portal.yaml");
    let (ok, out, err) = test(&["--config", config.to_str().unwrap(), fixture.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().last(), Some("2 passed, 0 failed"));
}
