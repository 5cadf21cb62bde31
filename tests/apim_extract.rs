//! An APIOps extract (`tests/apim/extract/shop`, written by hand in the extractor's layout from
//! the APIM reference) read and composed: version sets of each scheme, named values of each
//! kind, products, revisions, an operation override, a fragment and a missing one, parts that
//! are not read; a malformed file named in the error; the same extract twice gives the same
//! output.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use portcullis::tools::apim::compose::{compose, ComposedOperation, Composition, Version};
use portcullis::tools::apim::extract::{read, Extract, NamedValueKind, VersioningScheme};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apim/extract").join(name)
}

fn shop() -> (Extract, Composition) {
    let ex = read(&fixture("shop")).unwrap_or_else(|e| panic!("{e}"));
    let c = compose(&ex).unwrap_or_else(|e| panic!("{e}"));
    (ex, c)
}

fn op<'c>(c: &'c Composition, api: &str, operation: &str, product: Option<&str>) -> &'c ComposedOperation {
    c.operations
        .iter()
        .find(|o| o.api == api && o.operation.as_deref() == Some(operation) && o.product.as_deref() == product)
        .unwrap_or_else(|| panic!("{api} {operation} {product:?} is composed"))
}

/// The markers (`name` attributes, else tag names) of a section of a composed document.
fn section(op: &ComposedOperation, section: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(&op.xml).unwrap();
    let node = doc.root_element().children().find(|n| n.has_tag_name(section)).unwrap();
    node.children()
        .filter(roxmltree::Node::is_element)
        .map(|n| n.attribute("name").unwrap_or(n.tag_name().name()).to_owned())
        .collect()
}

fn findings(list: &[portcullis::tools::apim::extract::Finding]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

#[test]
fn the_extract_is_read() {
    let (ex, _) = shop();
    assert_eq!(ex.apis.keys().collect::<Vec<_>>(), ["catalog", "legacy", "orders", "orders;rev=2", "stock"]);
    assert_eq!(ex.products["silver"].apis, ["catalog", "orders"]);
    assert_eq!(ex.products["gold"].apis, ["orders"]);
    let orders = &ex.apis["orders"];
    assert_eq!(
        (orders.path.as_str(), orders.service_url.as_deref()),
        ("orders", Some("https://orders.internal.example/api"))
    );
    assert_eq!((orders.key_header.as_deref(), orders.key_query.as_deref()), (Some("X-Shop-Key"), Some("shop-key")));
    let ids: Vec<_> =
        orders.operations.as_ref().unwrap().iter().map(|o| (o.method.as_str(), o.template.as_str())).collect();
    assert_eq!(ids, [("GET", "/orders"), ("POST", "/orders"), ("GET", "/orders/{id}")]);
    assert_eq!(orders.operation_policies.keys().collect::<Vec<_>>(), ["create-order", "get-order"]);
    assert_eq!(ex.backends["orders-backend"].url.as_deref(), Some("https://orders.internal.example"));
    assert_eq!(ex.subscriptions["gold-partner"].scope.as_deref(), Some("/products/gold"));
    assert_eq!(ex.subscriptions["gold-partner"].state.as_deref(), Some("active"));
    assert!(ex.fragments.contains_key("correlation"));
}

#[test]
fn version_sets_of_each_scheme_are_read() {
    let (ex, c) = shop();
    assert_eq!(ex.version_sets["orders-set"].scheme, VersioningScheme::Segment);
    assert_eq!(ex.version_sets["catalog-set"].scheme, VersioningScheme::Query("api-version".into()));
    assert_eq!(ex.version_sets["stock-set"].scheme, VersioningScheme::Header("X-Version".into()));
    // A full resource id names the same version set as a short one.
    assert_eq!(ex.apis["catalog"].version_set.as_deref(), Some("catalog-set"));

    let orders = op(&c, "orders", "get-order", None);
    assert_eq!((orders.method.as_str(), orders.template.as_str()), ("GET", "/orders/v1/orders/{id}"));
    let catalog = op(&c, "catalog", "get-product", None);
    assert_eq!(catalog.template, "/catalog/products/{sku}");
    assert_eq!(
        catalog.version,
        Some(Version { scheme: VersioningScheme::Query("api-version".into()), value: "2024-01-01".into() })
    );
    let stock = op(&c, "stock", "get-levels", None);
    assert_eq!(stock.template, "/stock/levels");
    assert_eq!(
        stock.version,
        Some(Version { scheme: VersioningScheme::Header("X-Version".into()), value: "v2".into() })
    );
}

#[test]
fn named_values_of_each_kind_are_read_and_resolved() {
    let (ex, c) = shop();
    assert_eq!(ex.named_values["environment"].kind, NamedValueKind::Plain("production".into()));
    assert_eq!(ex.named_values["backend-token"].kind, NamedValueKind::Secret);
    assert_eq!(
        ex.named_values["signing-key"].kind,
        NamedValueKind::KeyVault("https://shop-vault.vault.azure.net/secrets/signing-key".into())
    );
    assert_eq!(c.secrets.keys().collect::<Vec<_>>(), ["backend-token", "signing-key"]);
    assert_eq!(c.secrets["signing-key"].file, Path::new("named values/signing-key/namedValueInformation.json"));
    let get = op(&c, "orders", "get-order", None);
    assert!(get.xml.contains("<value>production</value>"), "{}", get.xml);
    assert!(get.xml.contains("<value>Bearer ${secret:backend-token}</value>"), "{}", get.xml);
    let create = op(&c, "orders", "create-order", None);
    assert!(create.xml.contains(r#"tenant-id="11111111-2222-3333-4444-555555555555""#), "{}", create.xml);
}

#[test]
fn scopes_compose_through_base_per_product() {
    let (_, c) = shop();
    let through = |product| section(op(&c, "orders", "get-order", product), "inbound");
    // Global: ip-filter, the fragment's header. Gold: base first. Silver: base last. The
    // API: base in the middle. The operation: base first, then a fragment that is missing.
    assert_eq!(through(None), ["cors", "ip-filter", "X-Environment", "Authorization", "include-fragment"]);
    assert_eq!(
        through(Some("gold")),
        ["cors", "ip-filter", "X-Environment", "rate-limit", "Authorization", "include-fragment"]
    );
    assert_eq!(
        through(Some("silver")),
        ["cors", "quota", "ip-filter", "X-Environment", "Authorization", "include-fragment"]
    );
    // The API's outbound has no <base/>: gold's and the global outbound are dropped.
    assert_eq!(section(op(&c, "orders", "get-order", Some("gold")), "outbound"), ["X-Api"]);
    assert_eq!(section(op(&c, "orders", "list-orders", Some("gold")), "on-error"), ["X-Error-Scope"]);
}

#[test]
fn an_operation_override_drops_every_enclosing_inbound() {
    let (_, c) = shop();
    let create = op(&c, "orders", "create-order", Some("gold"));
    assert_eq!(section(create, "inbound"), ["validate-azure-ad-token"]);
    assert_eq!(section(create, "backend"), ["forward-request"]);
}

#[test]
fn subscription_settings_and_revisions_are_carried() {
    let (_, c) = shop();
    let orders = op(&c, "orders", "list-orders", None);
    assert_eq!(orders.settings.subscription_required, Some(true));
    assert_eq!(orders.settings.subscription_key_header.as_deref(), Some("X-Shop-Key"));
    assert!(orders.is_current);
    assert!(!op(&c, "orders;rev=2", "list-orders", None).is_current);
    assert_eq!(op(&c, "catalog", "get-product", None).settings.subscription_required, Some(false));
    // Not said in the extract: APIM's default.
    assert_eq!(op(&c, "stock", "get-levels", None).settings.subscription_required, Some(true));
    let contexts: Vec<_> = c.operations.iter().filter(|o| o.api == "catalog").map(|o| o.product.as_deref()).collect();
    assert_eq!(contexts, [None, Some("silver")]);
    let catalog = op(&c, "catalog", "get-product", Some("silver"));
    assert_eq!(
        (catalog.backend_url.as_deref(), catalog.backend_id.as_deref()),
        (Some("https://catalog-v2.internal.example"), Some("catalog-backend")),
        "set-backend-service backend-id wins over serviceUrl"
    );
    let orders = op(&c, "orders", "get-order", None);
    assert_eq!(
        (orders.backend_url.as_deref(), orders.backend_id.as_deref()),
        (Some("https://orders.internal.example/api"), None)
    );
    assert_eq!(c.operations.len(), 3 * 3 + 3 + 2 + 1);
    assert!(c.operations.iter().all(|o| o.api != "legacy"), "a SOAP API is not composed");
}

#[test]
fn what_is_not_read_or_missing_is_reported_with_its_file() {
    let (ex, c) = shop();
    let read = findings(&ex.findings);
    for expected in [
        "tags: tags/ not read: no part of the gateway's policy",
        "apis/legacy/specification.wsdl: a soap API's specification: not an OpenAPI document, not read",
        "apis/legacy/apiInformation.json: type \"soap\": only HTTP APIs described by OpenAPI are read",
    ] {
        assert!(read.iter().any(|f| f == expected), "{expected}\nnot in {read:#?}");
    }
    let composed = findings(&c.findings);
    for expected in [
        "apis/orders/operations/get-order/policy.xml:4: <include-fragment fragment-id=\"not-extracted\">: no such fragment in policy fragments/; kept as written",
        "apis/stock/policy.xml: no <on-error>: composed as if it held only <base/>",
    ] {
        assert!(composed.iter().any(|f| f == expected), "{expected}\nnot in {composed:#?}");
    }
    assert!(composed.iter().any(|f| f.starts_with("apis/orders: in products gold, silver:")), "{composed:#?}");
}

#[test]
fn every_composed_document_translates() {
    let (_, c) = shop();
    for op in &c.operations {
        let imported = portcullis::tools::apim::import_with(&op.xml, "composed.xml", &op.settings)
            .unwrap_or_else(|e| panic!("{} {:?} {:?}: {e}\n{}", op.api, op.operation, op.product, op.xml));
        assert!(imported.yaml.contains("routes"), "{}", imported.yaml);
    }
}

#[test]
fn a_malformed_file_is_named() {
    let e = read(&fixture("broken")).unwrap_err().to_string();
    assert!(e.starts_with("apis/bad/apiInformation.json: not valid JSON: "), "{e}");
    let e = read(&fixture("nowhere")).unwrap_err().to_string();
    assert!(e.ends_with("not an APIOps extract (no policy.xml, apis/ or products/)"), "{e}");
}

#[test]
fn the_same_extract_gives_the_same_output() {
    let (first_ex, first) = shop();
    let (second_ex, second) = shop();
    assert_eq!(format!("{first_ex:?}"), format!("{second_ex:?}"));
    assert_eq!(first.operations, second.operations);
    assert_eq!(first.secrets, second.secrets);
    assert_eq!(first.findings, second.findings);
}

#[test]
fn import_apim_previews_an_extract() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("import-apim")
        .arg(fixture("shop"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("\n## GET /orders/v1/orders/{id} (api orders, operation get-order, product gold, "),
        "{stdout}"
    );
    assert!(stdout.contains("<value>Bearer ${secret:backend-token}</value>"), "{stdout}");
    assert!(stderr.contains("portcullis secrets set backend-token"), "{stderr}");
    assert!(stderr.contains("apis/stock/policy.xml: no <on-error>"), "{stderr}");

    let strict = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["import-apim", "--strict"])
        .arg(fixture("shop"))
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1), "findings fail --strict");
    let broken = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("import-apim")
        .arg(fixture("broken"))
        .output()
        .unwrap();
    assert!(!broken.status.success());
    assert!(String::from_utf8_lossy(&broken.stderr).contains("apis/bad/apiInformation.json: not valid JSON"));
}

/// Runs the binary; its success, stdout and stderr.
fn portcullis(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis")).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `import-apim shop --out DIR/gateway` beside `DIR/certs/dev`: the temporary folder, the
/// exit code and the written files by name.
fn write_shop(strict: bool) -> (tempfile::TempDir, Option<i32>, std::collections::BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs/dev");
    let (code, _, err) = portcullis(&["certs".as_ref(), "dev".as_ref(), "--dir".as_ref(), certs.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    let out = dir.path().join("gateway");
    let shop = fixture("shop");
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["import-apim".as_ref(), shop.as_os_str(), "--out".as_ref(), out.as_os_str()];
    if strict {
        args.push("--strict".as_ref());
    }
    let (code, _, err) = portcullis(&args);
    assert!(err.contains("wrote gateway.yaml"), "{err}");
    let files = ["gateway.yaml", "subscriptions.json", "secrets.sh", "REPORT.md"]
        .into_iter()
        .map(|name| (name.to_owned(), std::fs::read_to_string(out.join(name)).unwrap()))
        .collect();
    (dir, code, files)
}

#[test]
fn an_extract_is_written_as_a_configuration_that_check_reads() {
    let (dir, code, files) = write_shop(false);
    assert_eq!(code, Some(0));
    let yaml = &files["gateway.yaml"];
    let config = dir.path().join("gateway/gateway.yaml");
    let (checked, out, err) = portcullis(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    assert_eq!(checked, Some(0), "the written configuration passes check:\n{yaml}\n{out}{err}");

    let data: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    let routes = data["routes"].as_array().unwrap();
    let route = |name: &str| {
        routes.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("route {name}:\n{yaml}")).clone()
    };
    let get_order = route("orders.get-order");
    assert_eq!(get_order["match"]["path"], "/orders/v1/orders/{id}", "{yaml}");
    assert_eq!(get_order["match"]["methods"], serde_json::json!(["GET"]), "{yaml}");
    assert_eq!(route("orders.create-order")["match"]["methods"], serde_json::json!(["POST"]), "{yaml}");
    // The API requires a subscription: the key is checked first, with its own names.
    let first = get_order["policies"][0].as_str().unwrap();
    assert_eq!(
        data["policies"][first]["subscription_key"],
        serde_json::json!({ "header": "X-Shop-Key", "query": "shop-key" }),
        "{yaml}"
    );
    assert!(data["identity"]["store"].is_string(), "{yaml}");
    // No revision but the current one is routed.
    assert!(routes.iter().all(|r| !r["name"].as_str().unwrap().contains("rev")), "{yaml}");
    // A product opens the routes of its APIs.
    let gold = data["products"]["gold"]["routes"].as_array().unwrap();
    assert!(gold.contains(&serde_json::json!("orders.get-order")), "{yaml}");
    assert!(gold.iter().all(|r| r.as_str().unwrap().starts_with("orders.")), "{yaml}");

    let secrets = &files["secrets.sh"];
    assert!(secrets.contains("portcullis secrets --config gateway.yaml set backend-token\n"), "{secrets}");
    assert!(secrets.contains("https://shop-vault.vault.azure.net/secrets/signing-key"), "{secrets}");
    let subscriptions = &files["subscriptions.json"];
    assert!(subscriptions.contains("\"scope\": \"/products/gold\""), "{subscriptions}");

    let report = &files["REPORT.md"];
    assert!(report.contains("apis/stock/policy.xml: no <on-error>"), "{report}");
    assert!(report.contains("- policy.xml:15: <on-error><set-header> not translated"), "{report}");
    assert!(!report.contains("backend-id=…> not translated"), "the composition resolved it: {report}");
    assert!(report.contains("orders;rev=2"), "the revision is listed as not routed: {report}");
    assert!(report.contains("listSecrets"), "{report}");
}

#[test]
fn the_same_extract_is_written_the_same_and_strict_refuses_a_partial_one() {
    let (_d1, _, first) = write_shop(false);
    let (_d2, code, second) = write_shop(true);
    assert_eq!(first, second);
    assert_eq!(code, Some(1), "--strict: something is left out");
}

/// A product none of whose APIs is routed (here only the SOAP one) is not written, since
/// `check` refuses a product without routes: it is reported, and the rest still passes `check`.
#[test]
fn a_product_without_routed_operations_is_reported_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let shop = dir.path().join("shop");
    copy(&fixture("shop"), &shop);
    let soap = shop.join("products/soap-only/apis/legacy");
    std::fs::create_dir_all(&soap).unwrap();
    std::fs::write(
        shop.join("products/soap-only/productInformation.json"),
        r#"{ "properties": { "displayName": "SOAP only", "state": "published" } }"#,
    )
    .unwrap();
    std::fs::write(soap.join("productApiInformation.json"), "{}").unwrap();
    let certs = dir.path().join("certs/dev");
    assert_eq!(portcullis(&["certs".as_ref(), "dev".as_ref(), "--dir".as_ref(), certs.as_os_str()]).0, Some(0));
    let out = dir.path().join("gateway");
    let (code, _, err) = portcullis(&["import-apim".as_ref(), shop.as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    let yaml = std::fs::read_to_string(out.join("gateway.yaml")).unwrap();
    assert!(!yaml.contains("soap-only"), "{yaml}");
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains("- product soap-only: none of its APIs has a routed operation"), "{report}");
    let config = out.join("gateway.yaml");
    let (checked, o, e) = portcullis(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    assert_eq!(checked, Some(0), "{yaml}\n{o}{e}");
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
