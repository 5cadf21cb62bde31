//! The reader on small extracts written to a temporary folder: each layout variant it accepts
//! and each finding it reports.

use super::*;

/// An extract holding `files` (path, content).
fn write(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn read_ok(files: &[(&str, &str)]) -> Extract {
    let dir = write(files);
    read(dir.path()).unwrap_or_else(|e| panic!("{e}"))
}

fn messages(ex: &Extract) -> Vec<String> {
    ex.findings.iter().map(ToString::to_string).collect()
}

const API: &str = r#"{ "properties": { "path": "a", "serviceUrl": "https://a.example" } }"#;

#[test]
fn a_product_lists_its_apis_in_folders_or_in_apis_json() {
    let ex = read_ok(&[
        ("products/p/productInformation.json", r#"{ "properties": { "displayName": "P" } }"#),
        ("products/p/apis/b/productApiInformation.json", "{}"),
        ("products/p/apis.json", r#"["a", { "name": "c" }, 7]"#),
        ("apis/a/apiInformation.json", API),
        ("apis/b/apiInformation.json", API),
        ("apis/c/apiInformation.json", API),
    ]);
    assert_eq!(ex.products["p"].apis, ["a", "b", "c"]);
    assert!(
        messages(&ex).contains(&"products/p/apis.json: an entry that names no API: 7".to_owned()),
        "{:?}",
        messages(&ex)
    );
}

#[test]
fn a_missing_information_file_is_reported_and_the_part_skipped() {
    let ex = read_ok(&[("policy.xml", "<policies />"), ("products/p/policy.xml", "<policies />")]);
    assert!(ex.products.is_empty());
    assert_eq!(messages(&ex), ["products/p/productInformation.json: missing: this part was not read"]);
}

#[test]
fn malformed_json_is_an_error_naming_the_file() {
    let dir = write(&[("named values/n/namedValueInformation.json", "{ \"properties\": ")]);
    std::fs::write(dir.path().join("policy.xml"), "<policies />").unwrap();
    let e = read(dir.path()).unwrap_err().to_string();
    assert!(e.starts_with("named values/n/namedValueInformation.json: not valid JSON: "), "{e}");
}

#[test]
fn malformed_yaml_is_an_error_naming_the_file() {
    let dir = write(&[("apis/a/apiInformation.json", API), ("apis/a/specification.yaml", "paths: [unclosed")]);
    let e = read(dir.path()).unwrap_err().to_string();
    assert!(e.starts_with("apis/a/specification.yaml: not valid YAML: "), "{e}");
}

#[test]
fn a_byte_order_mark_is_read() {
    let ex = read_ok(&[
        ("backends/b/backendInformation.json", "\u{feff}{ \"properties\": { \"url\": \"https://b\" } }"),
        ("policy.xml", "<policies />"),
    ]);
    assert_eq!(ex.backends["b"].url.as_deref(), Some("https://b"));
}

#[test]
fn a_named_value_without_a_value_is_treated_as_a_secret() {
    let ex = read_ok(&[
        ("named values/n/namedValueInformation.json", r#"{ "properties": { "displayName": "Key" } }"#),
        ("policy.xml", "<policies />"),
    ]);
    assert_eq!(ex.named_values["n"].kind, NamedValueKind::Secret);
    assert_eq!(ex.named_value("Key").map(|v| v.name.as_str()), Some("n"), "referenced by display name");
    assert_eq!(ex.named_value("n").map(|v| v.name.as_str()), Some("n"), "and by id");
}

#[test]
fn swagger_operations_are_read_and_unmatched_operation_policies_reported() {
    let ex = read_ok(&[
        ("apis/a/apiInformation.json", API),
        (
            "apis/a/specification.json",
            r#"{ "swagger": "2.0", "paths": { "/b": { "parameters": [], "delete": {}, "get": { "operationId": "get-b" } } } }"#,
        ),
        ("apis/a/operations/get-b/policy.xml", "<policies />"),
        ("apis/a/operations/gone/policy.xml", "<policies />"),
    ]);
    let ops = ex.apis["a"].operations.clone().unwrap();
    let ops: Vec<_> = ops.iter().map(|o| (o.method.as_str(), o.id.as_deref())).collect();
    assert_eq!(ops, [("DELETE", None), ("GET", Some("get-b"))]);
    assert_eq!(
        messages(&ex),
        [
            "apis/a/specification.json: DELETE /b: no operationId, so no operation policy can be matched to it",
            "apis/a/operations/gone: an operation the specification does not describe: its policy is not used",
        ]
    );
}

#[test]
fn an_unknown_versioning_scheme_is_reported() {
    let ex = read_ok(&[
        ("version sets/v/versionSetInformation.json", r#"{ "properties": { "versioningScheme": "Cookie" } }"#),
        ("apis/a/apiInformation.json", r#"{ "properties": { "path": "a", "apiVersionSetId": "/apiVersionSets/v" } }"#),
        ("apis/a/specification.yaml", "openapi: 3.0.1\npaths: {}\n"),
    ]);
    assert!(ex.version_sets.is_empty());
    assert_eq!(
        messages(&ex),
        [
            "version sets/v/versionSetInformation.json: versioningScheme Some(\"Cookie\") is not Segment, Query or Header: version set not read",
            "apis/a/apiInformation.json: version set \"v\" is not in version sets/",
        ]
    );
}

#[test]
fn a_folder_that_is_not_an_extract_is_refused() {
    let dir = write(&[("README.md", "hello")]);
    assert!(matches!(read(dir.path()), Err(ExtractError::NotExtract { .. })));
}
