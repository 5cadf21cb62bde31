//! The importer's translations, each with its attack or edge and its legitimate form; the
//! output is read as YAML (and through the configuration contract) in every one.

use serde_json::Value;

use super::*;

/// Imports `inbound` (the inside of `<inbound>`); returns the YAML as data and the count.
fn import_inbound(inbound: &str) -> (Value, usize, String) {
    let xml = format!("<policies>\n<inbound>\n{inbound}\n</inbound>\n</policies>");
    let imported = import(&xml, "test.xml").unwrap_or_else(|e| panic!("{e}"));
    read_back(&imported.yaml).unwrap_or_else(|e| panic!("{e}\n{}", imported.yaml));
    let value: Value = serde_saphyr::from_str(&imported.yaml).unwrap_or_else(|e| panic!("{e}\n{}", imported.yaml));
    (value, imported.left_out, imported.yaml)
}

fn jwt_with_claim(claim: &str) -> String {
    format!(
        r#"<validate-jwt header-name="Authorization">
  <openid-config url="https://login.example.com/.well-known/openid-configuration" />
  <issuers><issuer>https://login.example.com</issuer></issuers>
  <required-claims>{claim}</required-claims>
</validate-jwt>"#
    )
}

// (a) APIM's `match` defaults to all.

#[test]
fn a_claim_without_match_requires_all_of_its_values() {
    let (v, left_out, yaml) =
        import_inbound(&jwt_with_claim(r#"<claim name="roles"><value>Admin</value><value>Auditor</value></claim>"#));
    let rule = &v["policies"]["jwt"]["jwt"]["require_claims"]["roles"];
    assert_eq!(rule["all_of"], serde_json::json!(["Admin", "Auditor"]), "{yaml}");
    assert!(rule.get("any_of").is_none(), "{yaml}");
    assert_eq!(left_out, 0, "{yaml}");
}

#[test]
fn a_claim_with_match_any_requires_one_of_its_values_and_all_requires_all() {
    let (v, left_out, yaml) = import_inbound(&jwt_with_claim(
        r#"<claim name="roles" match="any"><value>A</value><value>B</value></claim>
           <claim name="groups" match="all"><value>G</value></claim>"#,
    ));
    let rules = &v["policies"]["jwt"]["jwt"]["require_claims"];
    assert_eq!(rules["roles"]["any_of"], serde_json::json!(["A", "B"]), "{yaml}");
    assert_eq!(rules["groups"]["all_of"], serde_json::json!(["G"]), "{yaml}");
    assert_eq!(left_out, 0);
}

#[test]
fn a_claim_with_an_unknown_match_requires_all_and_is_left_out() {
    let (v, left_out, yaml) =
        import_inbound(&jwt_with_claim(r#"<claim name="roles" match="some"><value>A</value><value>B</value></claim>"#));
    assert_eq!(v["policies"]["jwt"]["jwt"]["require_claims"]["roles"]["all_of"], serde_json::json!(["A", "B"]));
    assert_eq!(left_out, 1, "{yaml}");
}

#[test]
fn a_claim_separator_translates() {
    let (v, left_out, yaml) = import_inbound(&jwt_with_claim(
        r#"<claim name="groups" match="any" separator=","><value>a</value><value>b</value></claim>"#,
    ));
    let rule = &v["policies"]["jwt"]["jwt"]["require_claims"]["groups"];
    assert_eq!(rule["any_of"], serde_json::json!(["a", "b"]), "{yaml}");
    assert_eq!(rule["separator"], ",", "{yaml}");
    assert_eq!(left_out, 0, "{yaml}");
}

#[test]
fn a_claim_whose_values_are_all_expressions_is_left_out_not_dropped_silently() {
    let (v, left_out, yaml) =
        import_inbound(&jwt_with_claim(r#"<claim name="tid"><value>@(context.Variables["t"])</value></claim>"#));
    assert!(v["policies"]["jwt"]["jwt"].get("require_claims").is_none(), "{yaml}");
    assert_eq!(left_out, 2, "the value and the claim: {yaml}");
    let (_, left_out, yaml) = import_inbound(&jwt_with_claim(r#"<claim><value>x</value></claim>"#));
    assert_eq!(left_out, 1, "a claim without a name: {yaml}");
}

// (b) Address ranges never widen.

#[test]
fn an_ipv6_range_from_all_zeros_is_its_exact_networks() {
    let (v, left_out, yaml) = import_inbound(
        r#"<ip-filter action="forbid">
  <address-range from="::" to="::ffff" />
  <address-range from="::" to="::" />
  <address-range from="::" to="ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" />
</ip-filter>"#,
    );
    assert_eq!(
        v["policies"]["ip-filter"]["ip_filter"]["deny"],
        serde_json::json!(["::/112", "::/128", "::/0"]),
        "{yaml}"
    );
    assert_eq!(left_out, 0);
}

#[test]
fn an_ip_filter_without_a_known_action_admits_nobody() {
    for action in ["", r#"action="deny""#, r#"action='@(context.Variables["a"])'"#] {
        let (v, left_out, yaml) =
            import_inbound(&format!(r#"<ip-filter {action}><address>10.0.0.1</address></ip-filter>"#));
        assert_eq!(v["policies"]["ip-filter"]["ip_filter"], serde_json::json!({ "allow": [] }), "{yaml}");
        assert_eq!(left_out, 1, "{yaml}");
    }
}

// (c) A subscription key is no key.

#[test]
fn counter_keys_translate_when_they_name_a_request_fact() {
    assert_eq!(counter_key("@(context.Request.IpAddress)"), CounterKey::Key("client_ip".into()));
    assert_eq!(
        counter_key("@(context.Request.Headers.GetValueOrDefault(\"X-Api-Key\",\"\"))"),
        CounterKey::Key("header:X-Api-Key".into())
    );
    assert_eq!(
        counter_key("@(context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Subject)"),
        CounterKey::Key("claim:sub".into())
    );
    assert_eq!(counter_key("@(context.User.Id)"), CounterKey::Other);
}

#[test]
fn counter_keys_on_the_subscription_are_not_translated() {
    for expr in [
        "@(context.Subscription.Id)",
        "@(context.Subscription.Key)",
        "@( context.Subscription?.Key )",
        "@(context.Subscription.PrimaryKey)",
        "@(context.Request.Headers.GetValueOrDefault(\"Ocp-Apim-Subscription-Key\"))",
        "@(context.Request.Headers.GetValueOrDefault(\"ocp-apim-subscription-key\",\"\"))",
        "@(context.Request.Headers[\"Ocp-Apim-Subscription-Key\"].First())",
        "@(context.Request.Url.Query.GetValueOrDefault(\"subscription-key\", \"\"))",
    ] {
        assert_eq!(counter_key(expr), CounterKey::Subscription, "{expr}");
        let xml = format!(
            r#"<rate-limit-by-key calls="10" renewal-period="60" counter-key="{}" />"#,
            expr.replace('"', "&quot;")
        );
        let (v, left_out, yaml) = import_inbound(&xml);
        assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["key"], "client_ip", "{yaml}");
        assert_eq!(left_out, 1, "{yaml}");
        assert!(!yaml.to_ascii_lowercase().contains("header:ocp-apim"), "{yaml}");
        assert!(yaml.contains("any value of the key would buy a fresh budget"), "{yaml}");
    }
}

/// A bucket admits its burst plus its refill within one period: never more than `calls`.
#[test]
fn a_rate_never_admits_more_than_calls_in_one_renewal_period() {
    for (calls, period, rate, burst) in
        [(10, 60, "300/h", 5), (3, 60, "60/h", 2), (1, 60, "30/h", 1), (7, 3599, "3/h", 4)]
    {
        let (v, left_out, yaml) = import_inbound(&format!(
            r#"<rate-limit-by-key calls="{calls}" renewal-period="{period}" counter-key="@(context.Request.IpAddress)" />"#
        ));
        let limit = &v["policies"]["rate-limit"]["rate_limit"];
        assert_eq!((limit["rate"].as_str(), limit["burst"].as_u64()), (Some(rate), Some(burst)), "{yaml}");
        assert_eq!(left_out, 0, "{yaml}");
        assert!(yaml.contains("approximated"), "{yaml}");
        let per_hour: u64 = rate.trim_end_matches("/h").parse().unwrap();
        // The most a bucket admits in `period` seconds: the burst, then one per interval.
        assert!(burst + per_hour * period / 3600 <= calls, "{calls}/{period}: {yaml}");
    }
}

#[test]
fn a_counter_key_on_an_ordinary_header_translates() {
    let (v, left_out, yaml) = import_inbound(
        r#"<rate-limit-by-key calls="10" renewal-period="60" counter-key="@(context.Request.Headers.GetValueOrDefault(&quot;X-Tenant&quot;,&quot;&quot;))" />"#,
    );
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["key"], "header:X-Tenant", "{yaml}");
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["rate"], "300/h", "{yaml}");
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["burst"], 5, "{yaml}");
    assert_eq!(left_out, 0);
}

#[test]
fn rates_never_refill_faster_than_apim_and_odd_budgets_are_a_strict_placeholder() {
    let (v, left_out, yaml) = import_inbound(r#"<rate-limit-by-key calls="1" renewal-period="7201" />"#);
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["rate"], "1/h", "{yaml}");
    assert_eq!(left_out, 1);
    let (v, _, yaml) = import_inbound(r#"<rate-limit-by-key calls="4294967295" renewal-period="1" />"#);
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["rate"], "2147483647/s", "{yaml}");
    for bad in [
        r#"calls="0" renewal-period="60""#,
        r#"calls="-1" renewal-period="60""#,
        r#"calls="99999999999" renewal-period="60""#,
    ] {
        let (v, left_out, yaml) = import_inbound(&format!("<rate-limit-by-key {bad} />"));
        assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["rate"], "1/h", "{yaml}");
        assert_eq!(left_out, 1, "{yaml}");
    }
}

// (d) Whatever is written is YAML, with the notes on lines of their own.

#[test]
fn an_identity_with_issuer_and_common_name_is_yaml() {
    let (v, left_out, yaml) = import_inbound(
        r#"<validate-client-certificate>
  <identities>
    <identity issuer-subject="CN=Partner CA, O=Partner" common-name="partner-client" />
  </identities>
</validate-client-certificate>"#,
    );
    let identity = &v["policies"]["client-cert"]["client_cert"]["identities"][0];
    assert_eq!(identity["issuer"], "CN=Partner CA, O=Partner", "{yaml}");
    assert_eq!(identity["subject"], "CN=partner-client", "{yaml}");
    assert_eq!(left_out, 0);
    let note = yaml.lines().find(|l| l.contains("APIM matched the common name only")).unwrap();
    assert!(note.trim_start().starts_with("# line 5:"), "a comment line of its own: {yaml}");
}

#[test]
fn an_identity_that_loses_a_condition_is_dropped_whole() {
    let (v, left_out, yaml) = import_inbound(
        r#"<validate-client-certificate>
  <identities>
    <identity subject="CN=a" thumbprint="ABCDEF" />
    <identity subject="CN=b" common-name="c" />
    <identity dns-name="ok.example" />
  </identities>
</validate-client-certificate>"#,
    );
    assert_eq!(
        v["policies"]["client-cert"]["client_cert"]["identities"],
        serde_json::json!([{ "dns_name": "ok.example" }]),
        "{yaml}"
    );
    assert_eq!(left_out, 2, "{yaml}");
}

#[test]
fn a_header_apim_overwrote_with_an_expression_is_removed() {
    let (v, left_out, yaml) = import_inbound(
        r#"<set-header name="X-User" exists-action="override"><value>@(context.User.Id)</value></set-header>
<set-header name="X-Mixed" exists-action="override"><value>Bearer {{token}}</value></set-header>
<set-header name="X-Twice" exists-action="override"><value>a</value><value>b</value></set-header>
<set-header name="X-Plain" exists-action="override"><value>v</value></set-header>"#,
    );
    let request = &v["policies"]["request-headers"]["headers"]["request"];
    assert_eq!(request["remove"], serde_json::json!(["X-User", "X-Mixed", "X-Twice"]), "{yaml}");
    assert_eq!(request["set"], serde_json::json!({ "X-Plain": "v" }), "{yaml}");
    assert_eq!(left_out, 3);
}

#[test]
fn text_that_is_yaml_syntax_stays_text() {
    let (v, _, yaml) = import_inbound(
        r#"<cors>
  <allowed-origins><origin>https://a.example/#}, x: [y]</origin><origin>yes</origin><origin>*</origin></allowed-origins>
</cors>
<set-header name="X-A: b # c" exists-action="override"><value>}]{ "&#10;# not a comment</value></set-header>
<validate-jwt header-name="X-Token&#10;# injected: true">
  <issuers><issuer>'quoted' "double" &amp; null</issuer></issuers>
  <issuer-signing-keys><key>c2VjcmV0</key></issuer-signing-keys>
</validate-jwt>
<ip-filter action="allow"><address>not an &#10; address}</address></ip-filter>"#,
    );
    assert_eq!(
        v["policies"]["cors"]["cors"]["allowed_origins"],
        serde_json::json!(["https://a.example/#}, x: [y]", "yes", "*"]),
        "{yaml}"
    );
    assert_eq!(v["policies"]["request-headers"]["headers"]["request"]["set"]["X-A: b # c"], "}]{ \"\n# not a comment");
    assert_eq!(v["policies"]["jwt"]["jwt"]["issuers"], serde_json::json!(["'quoted' \"double\" & null"]));
    assert_eq!(v["policies"]["jwt"]["jwt"]["token_from"], "header:X-Token\n# injected: true");
    for line in yaml.lines().filter(|l| l.contains('#')) {
        let code = line.trim_start();
        assert!(
            code.starts_with('#') || code.contains('"') || code.contains('\''),
            "a hash outside a comment line is inside a quoted scalar: {line:?}\n{yaml}"
        );
    }
}

#[test]
fn the_example_documents_read_back_as_configurations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apim");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let xml = std::fs::read_to_string(&path).unwrap();
        let imported = import(&xml, "x.xml").unwrap();
        read_back(&imported.yaml).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), imported.yaml));
    }
}

/// A common name with a comma is one value, never an RDN boundary; a name portcullis cannot
/// read drops its identity rather than the whole document.
#[test]
fn common_names_are_escaped_and_unreadable_names_drop_their_identity() {
    let cert = |identity: &str| {
        import_inbound(&format!(
            "<validate-client-certificate><identities>{identity}</identities></validate-client-certificate>"
        ))
    };
    let (v, _, yaml) = cert(r#"<identity common-name="svc, O=Contoso" />"#);
    let identity = &v["policies"]["client-cert"]["client_cert"]["identities"][0];
    assert_eq!(identity["subject"], r"CN=svc\, O=Contoso", "{yaml}");
    let (v, left_out, yaml) = cert(r##"<identity subject="CN=#04024869" /><identity dns-name="a.example" />"##);
    let identities = v["policies"]["client-cert"]["client_cert"]["identities"].as_array().unwrap().clone();
    assert_eq!(identities, vec![serde_json::json!({ "dns_name": "a.example" })], "{yaml}");
    assert_eq!(left_out, 1, "{yaml}");
}
