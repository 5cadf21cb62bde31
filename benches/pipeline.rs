//! Per-request costs of the pipeline's compiled structures: path normalization, route
//! lookup, header rules, the removal of gateway-owned headers, client address resolution.
// Test code: a failed unwrap is a failed test, and support items are shared by module.
#![allow(clippy::unwrap_used, unreachable_pub, missing_docs)] // criterion_group! defines an undocumented pub fn

use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portcullis::policy::headers::{HeaderEdits, HeaderRules};
use portcullis::policy::Chain;
use portcullis::proxy::Backend;
use portcullis::request::client_ip::{self, IpSet};
use portcullis::request::headers::{strip_hop_by_hop, strip_overrides, GatewayHeaders, ALWAYS_SPOOFABLE};
use portcullis::request::normalize::normalize_path;
use portcullis::route::pattern::PathMatch;
use portcullis::route::{PathParameters, Route, RouteTable};
use portcullis::telemetry::metrics::RouteMetrics;
use std::hint::black_box;
use std::sync::Arc;

fn normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_path");
    g.bench_function("already_normal", |b| b.iter(|| normalize_path(black_box("/apolloapi/items/42/details"))));
    g.bench_function("dot_segments_and_escapes", |b| {
        b.iter(|| normalize_path(black_box("/apolloapi/./items/%2e%2e/items//42/%64etails")))
    });
    g.finish();
}

fn routes(c: &mut Criterion) {
    let backend = Arc::new(Backend::echo("echo"));
    let mut table = RouteTable::default();
    for i in 0..50 {
        table.routes.push(Route {
            name: format!("r{i}").into(),
            listener: None,
            hosts: vec![],
            path: PathMatch::Prefix(format!("/service{i}/")),
            methods: vec![Method::GET, Method::POST],
            chain: Chain::default(),
            backend: backend.clone(),
            strip_prefix: None,
            metrics: RouteMetrics::new(format!("r{i}").into()),
            path_parameters: PathParameters::Refuse,
            method_override: None,
            websocket: false,
            tunnel: portcullis::route::TunnelLimits::default(),
        });
    }
    table.routes.push(Route {
        name: "cases".into(),
        listener: None,
        hosts: vec![],
        path: PathMatch::template("/partners/accounts/{account}/cases/**").unwrap(),
        methods: vec![],
        chain: Chain::default(),
        backend,
        strip_prefix: None,
        metrics: RouteMetrics::new("cases".into()),
        path_parameters: PathParameters::Refuse,
        method_override: None,
        websocket: false,
        tunnel: portcullis::route::TunnelLimits::default(),
    });
    let mut g = c.benchmark_group("route_find");
    g.bench_function("first_of_51", |b| {
        b.iter(|| table.find("public", black_box("localhost"), black_box("/service0/x"), &Method::GET).is_some())
    });
    g.bench_function("template_after_50_prefixes", |b| {
        b.iter(|| {
            table
                .find("public", black_box("localhost"), black_box("/partners/accounts/42/cases/7"), &Method::GET)
                .is_some()
        })
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let rules = HeaderRules {
        request: HeaderEdits {
            remove: vec![HeaderName::from_static("x-internal")],
            set: vec![(HeaderName::from_static("x-gateway"), HeaderValue::from_static("portcullis"))],
        },
        response: HeaderEdits {
            remove: vec![HeaderName::from_static("server"), HeaderName::from_static("x-powered-by")],
            set: vec![],
        },
    };
    let mut base = HeaderMap::new();
    for (n, v) in [("host", "localhost"), ("accept", "*/*"), ("user-agent", "bench"), ("x-internal", "1")] {
        base.insert(n, HeaderValue::from_static(v));
    }
    c.bench_function("headers_policy_request", |b| {
        b.iter_batched_ref(|| base.clone(), |h| rules.on_request(h), criterion::BatchSize::SmallInput)
    });
    // Every request and every response: hop-by-hop headers out, on a typical request head.
    c.bench_function("strip_hop_by_hop", |b| {
        b.iter_batched_ref(|| base.clone(), strip_hop_by_hop, criterion::BatchSize::SmallInput)
    });
    // A backend answer that names its own hop-by-hop header in `Connection`.
    let mut answer = base.clone();
    answer.insert("connection", HeaderValue::from_static("keep-alive, x-backend-private"));
    answer.insert("x-backend-private", HeaderValue::from_static("1"));
    c.bench_function("strip_hop_by_hop_with_connection", |b| {
        b.iter_batched_ref(|| answer.clone(), strip_hop_by_hop, criterion::BatchSize::SmallInput)
    });
}

/// The gateway-owned headers a client sent, removed on every request: the exact names only
/// (what the gateway did before it read names as CGI servers do, kept here as the baseline),
/// then with look-alikes (`X_User_Id`) and the override headers, on a browser's request head.
fn gateway_headers(c: &mut Criterion) {
    let mut owned = GatewayHeaders::default();
    owned.insert(HeaderName::from_static("x-user-id"));
    owned.insert(HeaderName::from_static("x-user-roles"));
    let mut head = HeaderMap::new();
    for (n, v) in [
        ("host", "portal.example.com"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig"),
        ("origin", "https://portal.example.com"),
        ("referer", "https://portal.example.com/cases"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-site"),
        ("content-type", "application/json"),
        ("cookie", "session=abc"),
    ] {
        head.insert(n, HeaderValue::from_static(v));
    }
    let exact: Vec<HeaderName> =
        ALWAYS_SPOOFABLE.iter().chain(&["x-user-id", "x-user-roles"]).map(|n| HeaderName::from_static(n)).collect();
    let mut g = c.benchmark_group("gateway_headers");
    g.bench_function("exact_names_baseline", |b| {
        b.iter_batched_ref(
            || head.clone(),
            |h| exact.iter().for_each(|n| drop(h.remove(n))),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("look_alikes_and_overrides", |b| {
        b.iter_batched_ref(
            || head.clone(),
            |h| {
                owned.strip(h, None);
                strip_overrides(h, None);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn client_address(c: &mut Criterion) {
    let trusted = IpSet::new(["10.1.0.0/16".parse().unwrap(), "192.168.0.0/24".parse().unwrap()]);
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 10.1.2.3"));
    let untrusted: IpAddr = "198.51.100.7".parse().unwrap();
    let proxy: IpAddr = "10.1.0.5".parse().unwrap();
    let mut g = c.benchmark_group("client_ip");
    g.bench_function("untrusted_peer", |b| b.iter(|| client_ip::resolve(black_box(untrusted), &headers, &trusted)));
    g.bench_function("behind_trusted_proxy", |b| b.iter(|| client_ip::resolve(black_box(proxy), &headers, &trusted)));
    g.finish();
}

/// Redaction by value, as the access-log writer applies it to each line: with no secret
/// configured, then with eight registered (none of them in the line, the usual case, and one
/// in the path).
fn scrub(c: &mut Criterion) {
    let line = r#"{"log":"access","ts":"2026-12-06T20:00:00.000Z","request_id":"5f1c2e9a-4b7d-4e21-9a0c-3d2f1e0b9c8a","listener":"public","route":"api","method":"GET","path":"/apolloapi/items/42/details","query":"page=2&sort=name","status":200,"client_ip":"203.0.113.7","tls":"TLSv1.3","client_cert":null,"sub":"alice","decisions":[{"policy":"cors","outcome":"allowed"},{"policy":"jwt","outcome":"allowed"}],"upstream":"127.0.0.1:7071","upstream_ms":1.2,"total_ms":1.9,"bytes_in":0,"bytes_out":512}"#;
    let mut g = c.benchmark_group("scrub_access_line");
    g.bench_function("no_secrets_configured", |b| b.iter(|| portcullis::redact::scrub(black_box(line)).len()));
    let secrets: Vec<String> = (0..8).map(|i| format!("backend-api-key-{i}-5f1c2e9a7d")).collect();
    portcullis::redact::conceal(&secrets);
    g.bench_function("eight_secrets_none_present", |b| b.iter(|| portcullis::redact::scrub(black_box(line)).len()));
    let leaked = line.replace("items/42", &secrets[3]);
    g.bench_function("eight_secrets_one_present", |b| b.iter(|| portcullis::redact::scrub(black_box(&leaked)).len()));
    g.finish();
}

criterion_group!(benches, normalize, routes, headers, gateway_headers, client_address, scrub);
criterion_main!(benches);
