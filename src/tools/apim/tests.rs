//! The importer's translations, each with its attack or edge and its legitimate form; the
//! output is read as YAML (and through the configuration contract) in every one.

use serde_json::Value;

use super::*;

/// Imports `inbound` (the inside of `<inbound>`); returns the YAML as data and the count.
fn import_inbound(inbound: &str) -> (Value, usize, String) {
    import_inbound_for(inbound, &ApiSettings::default())
}

/// Like [`import_inbound`], for an API with the settings `api`.
fn import_inbound_for(inbound: &str, api: &ApiSettings) -> (Value, usize, String) {
    let xml = format!("<policies>\n<inbound>\n{inbound}\n</inbound>\n</policies>");
    let imported = import_with(&xml, "test.xml", api).unwrap_or_else(|e| panic!("{e}"));
    read_back(&imported.yaml).unwrap_or_else(|e| panic!("{e}\n{}", imported.yaml));
    let value: Value = serde_saphyr::from_str(&imported.yaml).unwrap_or_else(|e| panic!("{e}\n{}", imported.yaml));
    (value, imported.left_out, imported.yaml)
}

/// An API that requires a subscription key, read from `header` and `query` when given.
fn required(header: Option<&str>, query: Option<&str>) -> ApiSettings {
    ApiSettings {
        subscription_required: Some(true),
        subscription_key_header: header.map(str::to_owned),
        subscription_key_query: query.map(str::to_owned),
    }
}

/// [`counter_key`] with APIM's default key names.
fn key(expr: &str) -> CounterKey {
    counter_key(expr, &ApiSettings::default().key_names())
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

// (c) A subscription key is no key unless the translation checks it.

#[test]
fn counter_keys_translate_when_they_name_a_request_fact() {
    assert_eq!(key("@(context.Request.IpAddress)"), CounterKey::Key("client_ip".into()));
    assert_eq!(
        key("@(context.Request.Headers.GetValueOrDefault(\"X-Api-Key\",\"\"))"),
        CounterKey::Key("header:X-Api-Key".into())
    );
    assert_eq!(
        key("@(context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Subject)"),
        CounterKey::Key("claim:sub".into())
    );
    assert_eq!(key("@(context.User.Id)"), CounterKey::Other);
}

/// The counter keys that read the subscription, its key or the key's header or parameter.
const SUBSCRIPTION_KEYS: [&str; 8] = [
    "@(context.Subscription.Id)",
    "@(context.Subscription.Key)",
    "@( context.Subscription?.Key )",
    "@(context.Subscription.PrimaryKey)",
    "@(context.Request.Headers.GetValueOrDefault(\"Ocp-Apim-Subscription-Key\"))",
    "@(context.Request.Headers.GetValueOrDefault(\"ocp-apim-subscription-key\",\"\"))",
    "@(context.Request.Headers[\"Ocp-Apim-Subscription-Key\"].First())",
    "@(context.Request.Url.Query.GetValueOrDefault(\"subscription-key\", \"\"))",
];

/// Unless the API requires a subscription (and so the translation checks its key), a counter
/// on it falls back to the client address: any invented key would buy a fresh budget.
#[test]
fn counter_keys_on_the_subscription_fall_back_to_client_ip_unless_a_subscription_is_required() {
    let not_required = ApiSettings { subscription_required: Some(false), ..ApiSettings::default() };
    for (expr, api) in SUBSCRIPTION_KEYS.iter().flat_map(|e| [(e, ApiSettings::default()), (e, not_required.clone())]) {
        assert_eq!(key(expr), CounterKey::Subscription, "{expr}");
        let xml = format!(
            r#"<rate-limit-by-key calls="10" renewal-period="60" counter-key="{}" />"#,
            expr.replace('"', "&quot;")
        );
        let (v, left_out, yaml) = import_inbound_for(&xml, &api);
        assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["key"], "client_ip", "{yaml}");
        assert_eq!(left_out, 1, "{yaml}");
        assert!(!yaml.to_ascii_lowercase().contains("header:ocp-apim"), "{yaml}");
        assert!(yaml.contains("any value of the key would buy a fresh budget"), "{yaml}");
        assert!(v.get("identity").is_none() && v["policies"].get("subscription-key").is_none(), "{yaml}");
        assert_eq!(v["routes"][0]["policies"], serde_json::json!(["rate-limit"]), "{yaml}");
        // Said or not said: only the unsaid setting is pointed out.
        assert_eq!(yaml.contains("re-run with --subscription-required"), api.subscription_required.is_none(), "{yaml}");
    }
}

/// With the subscription required, its key is checked first, and a counter on the
/// subscription counts per accepted subscription: nothing left out.
#[test]
fn counter_keys_on_a_required_subscription_count_per_subscription_after_its_key_is_checked() {
    for expr in SUBSCRIPTION_KEYS {
        let xml = format!(
            r#"<ip-filter action="allow"><address>10.0.0.1</address></ip-filter>
<quota-by-key calls="1000" renewal-period="86400" counter-key="{}" />"#,
            expr.replace('"', "&quot;")
        );
        let (v, left_out, yaml) = import_inbound_for(&xml, &required(None, None));
        assert_eq!(v["policies"]["quota"]["rate_limit"]["key"], "subscription", "{yaml}");
        assert_eq!(v["policies"]["quota"]["rate_limit"]["quota"], "1000/day", "{yaml}");
        assert_eq!(left_out, 0, "{yaml}");
        assert!(!yaml.contains("client_ip"), "{yaml}");
        assert_eq!(v["policies"]["subscription-key"]["subscription_key"], serde_json::json!({}), "{yaml}");
        assert_eq!(
            v["routes"][0]["policies"],
            serde_json::json!(["subscription-key", "ip-filter", "quota"]),
            "APIM checks the key before any policy: {yaml}"
        );
        assert_eq!(v["identity"]["store"], "sqlite:../var/identity.db", "{yaml}");
        assert_eq!(v["identity"]["listener"], v["listeners"][0]["name"], "{yaml}");
        assert!(
            yaml.contains("subscriptionRequired (--subscription-required): translated as subscription_key"),
            "{yaml}"
        );
        assert!(!yaml.contains("re-run with --subscription-required"), "{yaml}");
    }
}

/// APIM's `subscriptionKeyParameterNames`: the policy reads the key where the API did, and a
/// counter on that header is a counter on the subscription.
#[test]
fn custom_key_names_are_the_policys_and_a_counter_on_them_is_per_subscription() {
    let api = required(Some("X-Api-Key"), Some("apikey"));
    let (v, left_out, yaml) = import_inbound_for(
        r#"<rate-limit-by-key calls="10" renewal-period="60" counter-key="@(context.Request.Headers.GetValueOrDefault(&quot;X-Api-Key&quot;,&quot;&quot;))" />"#,
        &api,
    );
    assert_eq!(
        v["policies"]["subscription-key"]["subscription_key"],
        serde_json::json!({ "header": "X-Api-Key", "query": "apikey" }),
        "{yaml}"
    );
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["key"], "subscription", "{yaml}");
    assert_eq!(left_out, 0, "{yaml}");
    assert!(yaml.contains("X-Api-Key header or the apikey query parameter"), "{yaml}");
    // Without the subscription required, the same header is a raw key: never a budget of its own.
    let not_required = ApiSettings { subscription_required: Some(false), ..api };
    let (v, left_out, yaml) = import_inbound_for(
        r#"<rate-limit-by-key calls="10" renewal-period="60" counter-key="@(context.Request.Headers.GetValueOrDefault(&quot;X-Api-Key&quot;,&quot;&quot;))" />"#,
        &not_required,
    );
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["key"], "client_ip", "{yaml}");
    assert_eq!(left_out, 1, "{yaml}");
}

/// APIM's plain `rate-limit` and `quota` count per subscription.
#[test]
fn plain_rate_limits_and_quotas_count_per_subscription_or_fall_back_to_client_ip() {
    let inbound = r#"<rate-limit calls="20" renewal-period="90" remaining-calls-header-name="X-Left" />
<quota calls="10000" renewal-period="2592000" counter-key="@(context.Request.IpAddress)" />"#;
    let (v, left_out, yaml) = import_inbound_for(inbound, &required(None, None));
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["key"], "subscription", "{yaml}");
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["burst"], 10, "{yaml}");
    assert_eq!(v["policies"]["quota"]["rate_limit"]["key"], "subscription", "{yaml}");
    assert_eq!(v["policies"]["quota"]["rate_limit"]["quota"], "10000/month", "{yaml}");
    assert_eq!(left_out, 1, "a plain quota has no counter-key: {yaml}");
    assert!(yaml.contains("<quota counter-key=…> not translated"), "{yaml}");
    assert_eq!(v["routes"][0]["policies"], serde_json::json!(["subscription-key", "rate-limit", "quota"]), "{yaml}");
    let (v, left_out, yaml) = import_inbound(inbound);
    assert_eq!(v["policies"]["rate-limit"]["rate_limit"]["key"], "client_ip", "{yaml}");
    assert_eq!(v["policies"]["quota"]["rate_limit"]["key"], "client_ip", "{yaml}");
    assert_eq!(left_out, 3, "both budgets and the counter-key: {yaml}");
    assert!(yaml.contains("<rate-limit> (per subscription in APIM) not translated"), "{yaml}");
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
    // The policy documents (`subscriptions.json` is for `subscriptions import`), each for an
    // API that says nothing of subscriptions, requires none, and requires one.
    let documents =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension() == Some("xml".as_ref()));
    for path in documents {
        let xml = std::fs::read_to_string(&path).unwrap();
        let not_required = ApiSettings { subscription_required: Some(false), ..ApiSettings::default() };
        for api in [ApiSettings::default(), not_required, required(None, None), required(Some("X-Key"), Some("key"))] {
            let imported = import_with(&xml, "x.xml", &api).unwrap();
            read_back(&imported.yaml).unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), imported.yaml));
        }
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
