//! Composition of scopes, in memory: `<base/>` at each position and absent at each scope, an
//! operation override, product contexts, fragments, named values, origins and determinism.

use super::super::extract::{Backend, NamedValue, Product, VersionSet};
use super::*;

/// A marker element: `<set-header name="NAME" exists-action="override" />`.
fn h(name: &str) -> String {
    format!(r#"<set-header name="{name}" exists-action="override" />"#)
}

/// A policy document whose inbound is `inbound` and whose other sections hold only `<base/>`.
fn inbound(inbound: &str) -> String {
    format!(
        "<policies>\n<inbound>\n{inbound}\n</inbound>\n<backend>\n<base />\n</backend>\n<outbound>\n<base />\n</outbound>\n<on-error>\n<base />\n</on-error>\n</policies>\n"
    )
}

fn file(path: &str, xml: &str) -> PolicyFile {
    PolicyFile { path: PathBuf::from(path), xml: xml.to_owned() }
}

/// One API `api` (`GET /x`, operation `op`) in product `p`, with the given scopes' documents.
fn extract(global: Option<&str>, product: Option<&str>, api: Option<&str>, op: Option<&str>) -> Extract {
    let mut ex = Extract { global_policy: global.map(|x| file("policy.xml", x)), ..Extract::default() };
    ex.products.insert(
        "p".into(),
        Product {
            name: "p".into(),
            display_name: None,
            subscription_required: Some(true),
            state: None,
            policy: product.map(|x| file("products/p/policy.xml", x)),
            apis: vec!["api".into()],
        },
    );
    let mut operation_policies = BTreeMap::new();
    if let Some(x) = op {
        operation_policies.insert("op".to_owned(), file("apis/api/operations/op/policy.xml", x));
    }
    ex.apis.insert(
        "api".into(),
        Api {
            name: "api".into(),
            display_name: None,
            kind: "http".into(),
            path: "api".into(),
            service_url: Some("https://backend.example".into()),
            protocols: vec!["https".into()],
            subscription_required: None,
            key_header: None,
            key_query: None,
            version_set: None,
            api_version: None,
            revision: None,
            is_current: None,
            operations: Some(vec![SpecOperation {
                id: Some("op".into()),
                method: "GET".into(),
                template: "/x".into(),
            }]),
            specification: None,
            policy: api.map(|x| file("apis/api/policy.xml", x)),
            operation_policies,
        },
    );
    ex
}

/// The markers (`name` attributes, else tag names) of `section` of the composition for
/// `product`.
fn section_of(c: &Composition, product: Option<&str>, section: &str) -> Vec<String> {
    let op = c.operations.iter().find(|o| o.product.as_deref() == product).expect("the context is composed");
    let doc = Document::parse(&op.xml).unwrap_or_else(|e| panic!("{e}\n{}", op.xml));
    let node = doc.root_element().children().find(|n| n.has_tag_name(section)).expect("every section is written");
    node.children()
        .filter(Node::is_element)
        .map(|n| n.attribute("name").unwrap_or(n.tag_name().name()).to_owned())
        .collect()
}

fn inbound_of(c: &Composition, product: Option<&str>) -> Vec<String> {
    section_of(c, product, "inbound")
}

fn composed(ex: &Extract) -> Composition {
    compose(ex).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn base_first_runs_the_parents_before() {
    let ex = extract(Some(&inbound(&h("G"))), None, Some(&inbound(&format!("<base />{}", h("A")))), None);
    assert_eq!(inbound_of(&composed(&ex), None), ["G", "A"]);
}

#[test]
fn base_last_runs_the_parents_after() {
    let ex = extract(Some(&inbound(&h("G"))), None, Some(&inbound(&format!("{}<base />", h("A")))), None);
    assert_eq!(inbound_of(&composed(&ex), None), ["A", "G"]);
}

#[test]
fn base_in_the_middle_runs_the_parents_there() {
    let ex = extract(
        Some(&inbound(&format!("{}{}", h("G1"), h("G2")))),
        Some(&inbound(&format!("{}<base />{}", h("P1"), h("P2")))),
        Some(&inbound(&format!("{}<base />{}", h("A1"), h("A2")))),
        Some(&inbound(&format!("{}<base />{}", h("O1"), h("O2")))),
    );
    let c = composed(&ex);
    assert_eq!(inbound_of(&c, Some("p")), ["O1", "A1", "P1", "G1", "G2", "P2", "A2", "O2"]);
    // Without the product's subscription, the product scope is not in the chain.
    assert_eq!(inbound_of(&c, None), ["O1", "A1", "G1", "G2", "A2", "O2"]);
}

#[test]
fn a_section_without_base_drops_the_parents_at_each_scope() {
    let with_base = |name: &str| inbound(&format!("<base />{}", h(name)));
    let without = |name: &str| inbound(&h(name));
    // (product, api, operation) documents, and the effective inbound through the product.
    let cases: [(String, String, String, &[&str]); 3] = [
        (without("P"), with_base("A"), with_base("O"), &["P", "A", "O"]),
        (with_base("P"), without("A"), with_base("O"), &["A", "O"]),
        (with_base("P"), with_base("A"), without("O"), &["O"]),
    ];
    for (product, api, op, expected) in cases {
        let ex = extract(Some(&with_base("G")), Some(&product), Some(&api), Some(&op));
        assert_eq!(inbound_of(&composed(&ex), Some("p")), expected, "product {product}\napi {api}\nop {op}");
    }
}

#[test]
fn an_operation_override_replaces_one_section_only() {
    let global = format!(
        "<policies><inbound>{}</inbound><backend>{}</backend><outbound>{}</outbound><on-error /></policies>",
        h("G-in"),
        h("G-back"),
        h("G-out")
    );
    let ex = extract(Some(&global), None, None, Some(&inbound(&h("O"))));
    let c = composed(&ex);
    assert_eq!(inbound_of(&c, None), ["O"]);
    assert_eq!(section_of(&c, None, "backend"), ["G-back"]);
    assert_eq!(section_of(&c, None, "outbound"), ["G-out"]);
    assert!(section_of(&c, None, "on-error").is_empty());
}

#[test]
fn a_scope_without_a_document_is_transparent() {
    let ex = extract(Some(&inbound(&h("G"))), None, None, Some(&inbound(&format!("<base />{}", h("O")))));
    let c = composed(&ex);
    assert_eq!(inbound_of(&c, Some("p")), ["G", "O"]);
    assert!(c.findings.is_empty(), "{:?}", c.findings);
}

#[test]
fn a_missing_section_is_read_as_base_and_reported() {
    let api = format!("<policies><inbound><base />{}</inbound></policies>", h("A"));
    let ex = extract(None, None, Some(&api), None);
    let global = format!("<policies><inbound /><outbound>{}</outbound></policies>", h("G-out"));
    let ex = Extract { global_policy: Some(file("policy.xml", &global)), ..ex };
    let c = composed(&ex);
    assert_eq!(section_of(&c, None, "outbound"), ["G-out"]);
    assert!(c
        .findings
        .iter()
        .any(|f| f.file == Path::new("apis/api/policy.xml") && f.message.starts_with("no <outbound>")));
}

#[test]
fn an_api_in_one_product_is_composed_with_and_without_it() {
    let ex = extract(None, Some(&inbound(&format!("<base />{}", h("P")))), None, None);
    let c = composed(&ex);
    let contexts: Vec<Option<&str>> = c.operations.iter().map(|o| o.product.as_deref()).collect();
    assert_eq!(contexts, [None, Some("p")]);
    assert_eq!(inbound_of(&c, None), Vec::<String>::new());
    assert_eq!(inbound_of(&c, Some("p")), ["P"]);
}

#[test]
fn an_api_in_several_products_is_reported() {
    let mut ex = extract(None, None, None, None);
    let mut second = ex.products["p"].clone();
    second.name = "q".into();
    ex.products.insert("q".into(), second);
    let c = composed(&ex);
    assert_eq!(c.operations.len(), 3);
    assert!(c.findings.iter().any(|f| f.message.starts_with("in products p, q:")), "{:?}", c.findings);
}

#[test]
fn a_fragment_is_inlined_with_its_origin() {
    let mut ex = extract(
        Some(&inbound(&format!("{}<include-fragment fragment-id=\"frag\" />{}", h("G1"), h("G2")))),
        None,
        None,
        None,
    );
    ex.fragments.insert(
        "frag".into(),
        file("policy fragments/frag/policy.xml", &format!("<fragment>\n{}\n{}\n</fragment>", h("F1"), h("F2"))),
    );
    let c = composed(&ex);
    assert_eq!(inbound_of(&c, None), ["G1", "F1", "F2", "G2"]);
    let op = &c.operations[0];
    let line = op.xml.lines().position(|l| l.contains("\"F2\"")).unwrap() + 1;
    let origin = op.origin(u32::try_from(line).unwrap()).unwrap();
    assert_eq!((origin.file.as_path(), origin.source_line), (Path::new("policy fragments/frag/policy.xml"), 3));
}

#[test]
fn a_missing_fragment_is_kept_and_reported_at_its_line() {
    let ex = extract(None, None, Some(&inbound("<base />\n<include-fragment fragment-id=\"gone\" />")), None);
    let c = composed(&ex);
    assert_eq!(inbound_of(&c, None), ["include-fragment"]);
    let finding = c.findings.iter().find(|f| f.message.contains("\"gone\"")).expect("reported");
    assert_eq!((finding.file.as_path(), finding.line), (Path::new("apis/api/policy.xml"), Some(4)));
}

#[test]
fn a_fragment_in_a_fragment_is_not_inlined() {
    let mut ex = extract(Some(&inbound("<include-fragment fragment-id=\"outer\" />")), None, None, None);
    ex.fragments.insert(
        "outer".into(),
        file("policy fragments/outer/policy.xml", "<fragment><include-fragment fragment-id=\"inner\" /></fragment>"),
    );
    ex.fragments
        .insert("inner".into(), file("policy fragments/inner/policy.xml", &format!("<fragment>{}</fragment>", h("I"))));
    let c = composed(&ex);
    assert_eq!(inbound_of(&c, None), ["include-fragment"]);
    assert!(c
        .findings
        .iter()
        .any(|f| f.file == Path::new("policy fragments/outer/policy.xml") && f.message.contains("do not nest")));
}

fn named(ex: &mut Extract, name: &str, kind: NamedValueKind) {
    let file = PathBuf::from(format!("named values/{name}/namedValueInformation.json"));
    ex.named_values.insert(name.into(), NamedValue { name: name.into(), display_name: name.into(), kind, file });
}

#[test]
fn plain_named_values_are_written_in_and_secret_ones_marked() {
    let api = inbound(
        r#"<set-header name="X-Env" exists-action="override"><value>{{env}}</value></set-header>
<set-header name="Authorization" exists-action="override"><value>Bearer {{token}}</value></set-header>
<set-header name="X-Signed" exists-action="override"><value>{{vault key}}</value></set-header>
<set-header name="X-Other" exists-action="override"><value>{{nowhere}}</value></set-header>"#,
    );
    let mut ex = extract(None, None, Some(&api), None);
    named(&mut ex, "env", NamedValueKind::Plain("a<b&\"c\"".into()));
    named(&mut ex, "token", NamedValueKind::Secret);
    named(&mut ex, "vault key", NamedValueKind::KeyVault("https://v.vault.azure.net/secrets/k".into()));
    let c = composed(&ex);
    let xml = &c.operations[0].xml;
    let doc = Document::parse(xml).unwrap();
    let values: Vec<&str> = doc.descendants().filter(|n| n.has_tag_name("value")).filter_map(|n| n.text()).collect();
    assert_eq!(values, ["a<b&\"c\"", "Bearer ${secret:token}", "${secret:vault_key}", "{{nowhere}}"]);
    assert_eq!(c.secrets.keys().collect::<Vec<_>>(), ["token", "vault_key"]);
    assert_eq!(c.secrets["vault_key"].key_vault.as_deref(), Some("https://v.vault.azure.net/secrets/k"));
    assert_eq!(c.secrets["token"].named_value, "token");
    assert!(c.findings.iter().any(|f| f.message.starts_with("{{nowhere}}: no such named value")), "{:?}", c.findings);
}

#[test]
fn a_named_value_in_an_attribute_is_resolved() {
    let api = inbound(r#"<validate-azure-ad-token tenant-id="{{tenant}}" />"#);
    let mut ex = extract(None, None, Some(&api), None);
    named(&mut ex, "tenant", NamedValueKind::Plain("contoso.onmicrosoft.com".into()));
    let c = composed(&ex);
    assert!(
        c.operations[0].xml.contains(r#"<validate-azure-ad-token tenant-id="contoso.onmicrosoft.com" />"#),
        "{}",
        c.operations[0].xml
    );
}

#[test]
fn every_element_points_at_its_file_and_line() {
    let ex = extract(Some(&inbound(&h("G"))), None, Some(&inbound(&format!("<base />\n{}", h("A")))), None);
    let c = composed(&ex);
    let op = &c.operations[0];
    for (marker, file, line) in [("\"G\"", "policy.xml", 3), ("\"A\"", "apis/api/policy.xml", 4)] {
        let at = op.xml.lines().position(|l| l.contains(marker)).unwrap() + 1;
        let origin = op.origin(u32::try_from(at).unwrap()).unwrap();
        assert_eq!((origin.file.as_path(), origin.source_line), (Path::new(file), line), "{marker}");
    }
}

#[test]
fn the_composition_is_an_operation_with_its_api_settings() {
    let mut ex = extract(None, None, None, None);
    ex.version_sets
        .insert("vs".into(), VersionSet { name: "vs".into(), display_name: None, scheme: VersioningScheme::Segment });
    let api = ex.apis.get_mut("api").unwrap();
    api.version_set = Some("vs".into());
    api.api_version = Some("v2".into());
    api.key_header = Some("X-Key".into());
    let c = composed(&ex);
    let op = &c.operations[0];
    assert_eq!((op.method.as_str(), op.template.as_str()), ("GET", "/api/v2/x"));
    assert_eq!(op.settings.subscription_required, Some(true), "APIM's default");
    assert_eq!(op.settings.subscription_key_header.as_deref(), Some("X-Key"));
    assert_eq!(op.backend_url.as_deref(), Some("https://backend.example"));
    assert!(op.is_current);
}

#[test]
fn the_composed_document_translates() {
    let ex = extract(
        Some(&inbound(r#"<ip-filter action="allow"><address>10.0.0.1</address></ip-filter>"#)),
        None,
        Some(&inbound(&format!("<base />{}", h("X-Api")))),
        None,
    );
    let c = composed(&ex);
    let op = &c.operations[0];
    let imported = super::super::import_with(&op.xml, "composed.xml", &op.settings).unwrap_or_else(|e| panic!("{e}"));
    assert!(imported.yaml.contains("ip_filter"), "{}", imported.yaml);
}

#[test]
fn malformed_xml_names_its_file() {
    let ex = extract(None, None, Some("<policies><inbound></policies>"), None);
    let e = compose(&ex).unwrap_err().to_string();
    assert!(e.starts_with("apis/api/policy.xml: not well-formed XML"), "{e}");
    let ex = extract(None, None, Some("<fragment />"), None);
    assert_eq!(
        compose(&ex).unwrap_err().to_string(),
        "apis/api/policy.xml:1: the root element is <fragment>, not <policies>"
    );
}

#[test]
fn the_same_extract_composes_to_the_same_output() {
    let mut ex = extract(Some(&inbound(&h("G"))), Some(&inbound(&format!("<base />{}", h("P")))), None, None);
    named(&mut ex, "b", NamedValueKind::Secret);
    named(&mut ex, "a", NamedValueKind::Secret);
    let first = composed(&ex);
    let second = composed(&ex);
    assert_eq!(first.operations, second.operations);
    assert_eq!(first.findings, second.findings);
}

#[test]
fn the_backend_is_the_last_unconditional_set_backend_service() {
    let api = inbound(
        r#"<base />
<set-backend-service base-url="https://first.example" />
<choose><when condition="@(true)"><set-backend-service base-url="https://conditional.example" /></when></choose>"#,
    );
    let op_doc = inbound(r#"<base /><set-backend-service backend-id="b1" />"#);
    let mut ex = extract(None, None, Some(&api), None);
    let c = composed(&ex);
    assert_eq!(c.operations[0].backend_url.as_deref(), Some("https://first.example"));
    ex.apis
        .get_mut("api")
        .unwrap()
        .operation_policies
        .insert("op".into(), file("apis/api/operations/op/policy.xml", &op_doc));
    ex.backends.insert("b1".into(), Backend { name: "b1".into(), url: Some("https://b1.example".into()) });
    let c = composed(&ex);
    assert_eq!(c.operations[0].backend_url.as_deref(), Some("https://b1.example"));
    assert_eq!(c.operations[0].backend_id.as_deref(), Some("b1"));
    ex.backends.clear();
    let c = composed(&ex);
    assert_eq!(c.operations[0].backend_url, None, "an unknown backend is not guessed");
    let finding = c.findings.iter().find(|f| f.message.contains("\"b1\"")).expect("reported");
    assert_eq!((finding.file.as_path(), finding.line), (Path::new("apis/api/operations/op/policy.xml"), Some(3)));
}

#[test]
fn an_api_without_set_backend_service_goes_to_its_service_url() {
    let c = composed(&extract(None, None, None, None));
    assert_eq!(c.operations[0].backend_url.as_deref(), Some("https://backend.example"));
    assert_eq!(c.operations[0].backend_id, None);
}
