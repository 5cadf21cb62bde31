//! `authorize`: the entity permissions of a portal (README: Policies). Roles come from a token claim;
//! each rule grants actions (or methods) to roles with a scope, and the first rule that grants
//! the request's method allows it.
//!
//! Scopes: `global` grants every record the route reaches; `account` and `contact` grant the
//! record whose path parameter equals a token claim exactly (an array claim by membership);
//! `parental` grants a child record where an earlier rule, named by `parent`, grants the
//! caller its parent record. Path parameters are taken from the normalized path (README: Architecture, a request's journey),
//! so no spelling of a path reaches another record.

use std::sync::Arc;

use http::request::Parts;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::context::{ClaimPath, Claims, RequestContext};
use super::kind::{Blame, Decision, PolicyKind};
use crate::config::context::{CompileContext, Invalid};
use crate::config::values::Located;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `authorize` policy as written in YAML.
pub struct AuthorizeConfig {
    /// `roles_claim`: the claim holding the caller's roles (a string or an array); a dotted
    /// path such as `realm_access.roles` reaches into objects.
    pub roles_claim: Located,
    /// `rules`: tried in order; the first that grants the request's action allows it.
    pub rules: Vec<Spanned<RuleConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// One rule of an `authorize` policy.
pub struct RuleConfig {
    /// `name`: how `trace`, the access log and `parent` refer to the rule.
    pub name: Located,
    /// `roles`: the rule applies to callers holding any of these roles.
    pub roles: Vec<String>,
    /// `scope`: `global`, `account`, `contact` or `parental`.
    pub scope: Located,
    #[serde(default)]
    /// `actions`: `read` (GET, HEAD), `create` (POST), `update` (PUT, PATCH), `delete` (DELETE).
    pub actions: Vec<Located>,
    #[serde(default)]
    /// `methods`: HTTP methods granted directly, for APIs that are not CRUD.
    pub methods: Vec<Located>,
    /// `path_param`: with `account` / `contact`, the route template's `{param}` naming the record.
    pub path_param: Option<Located>,
    /// `claim`: with `account` / `contact`, the claim the parameter must equal.
    pub claim: Option<Located>,
    /// `parent`: with `parental`, the earlier rule that must grant the parent record.
    pub parent: Option<Located>,
}

/// The compiled `authorize` policy.
#[derive(Debug)]
pub struct Authorize {
    roles_claim: ClaimPath,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    roles: Vec<String>,
    methods: Vec<Method>,
    scope: Scope,
}

/// Which records a rule reaches.
#[derive(Debug)]
enum Scope {
    /// Every record of the route.
    Global,
    /// The record whose path parameter `param` equals the claim `claim`.
    Owned { param: Arc<str>, claim: ClaimPath },
    /// Children of a record the earlier rule `parent` (an index into the rules) grants.
    Parental { parent: usize },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No verified token: no `jwt` policy passed before this one.
    NoClaims,
    /// The roles claim is missing, or not a string or an array of strings.
    NoRoles,
    /// No rule grants this action on this record to the caller's roles.
    NotGranted,
}

impl Refusal {
    /// The reason, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoClaims => "no_verified_token",
            Self::NoRoles => "roles_missing",
            Self::NotGranted => "not_granted",
        }
    }

    /// Every reason looks the same to the client: it names no rule.
    pub fn problem(self) -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "you are not allowed to perform this action on this resource",
        )
    }
}

/// The methods an action stands for.
fn action_methods(action: &str) -> Option<&'static [Method]> {
    Some(match action {
        "read" => &[Method::GET, Method::HEAD],
        "create" => &[Method::POST],
        "update" => &[Method::PUT, Method::PATCH],
        "delete" => &[Method::DELETE],
        _ => return None,
    })
}

impl Blame for Refusal {}

impl PolicyKind for Authorize {
    type Config = AuthorizeConfig;
    type Refusal = Refusal;

    /// Compiles the rules: actions into methods, scopes into checks, `parent` names into
    /// indices of earlier rules.
    ///
    /// # Errors
    /// Every problem found, each at its field's `file:line:column`.
    fn compile(cfg: &AuthorizeConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let mark = cx.mark();
        if cfg.roles_claim.value.is_empty() {
            cx.field_error_at(cfg.roles_claim.referenced, "roles_claim", "name the claim that holds the roles");
        }
        if cfg.rules.is_empty() {
            cx.field_error("rules", "list at least one rule; without rules every request is refused");
        }
        let mut rules: Vec<Rule> = Vec::new();
        for (i, spanned) in cfg.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            if let Some(rule) = compile_rule(&spanned.value, &field, &rules, cx) {
                if rules.iter().any(|r| r.name == rule.name) {
                    let at = spanned.value.name.referenced;
                    cx.field_error_at(at, &format!("{field}.name"), format!("rule name {:?} is used twice", rule.name));
                }
                rules.push(rule);
            }
        }
        cx.valid_since(mark)?;
        Ok(Self { roles_claim: ClaimPath::new(&cfg.roles_claim.value), rules })
    }

    async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision<Refusal> {
        match self.granting_rule(cx.method(&parts.method), cx.params, cx.claims.as_deref()) {
            Ok(rule) => Decision::Granted(rule.clone()),
            Err(refusal) => Decision::Deny(refusal),
        }
    }

    fn reads_claims(&self) -> bool {
        true
    }
}

impl Authorize {
    /// The path parameters the rules compare, with the rule that needs each (a parental
    /// rule needs its parent's): a route using this policy must capture all of them.
    pub fn path_params(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let mut at = rule;
            loop {
                match &at.scope {
                    Scope::Global => break,
                    Scope::Owned { param, .. } => {
                        out.push((&*rule.name, &**param));
                        break;
                    }
                    Scope::Parental { parent } => at = &self.rules[*parent],
                }
            }
        }
        out
    }

    /// Decides one request: the name of the rule that grants it.
    ///
    /// # Errors
    /// No claims, no roles, or no rule grants the method on this record.
    pub fn granting_rule(
        &self,
        method: &Method,
        params: &[(Arc<str>, String)],
        claims: Option<&Claims>,
    ) -> Result<&Arc<str>, Refusal> {
        let claims = claims.ok_or(Refusal::NoClaims)?;
        let roles = roles(self.roles_claim.find(claims)).ok_or(Refusal::NoRoles)?;
        self.rules
            .iter()
            .find(|rule| rule.methods.contains(method) && self.reaches(rule, &roles, params, claims))
            .map(|rule| &rule.name)
            .ok_or(Refusal::NotGranted)
    }

    /// Whether `rule` applies to the caller's roles and reaches the record of `params`.
    fn reaches(&self, rule: &Rule, roles: &[&str], params: &[(Arc<str>, String)], claims: &Claims) -> bool {
        if !rule.roles.iter().any(|r| roles.contains(&r.as_str())) {
            return false;
        }
        match &rule.scope {
            Scope::Global => true,
            Scope::Owned { param, claim } => {
                let Some((_, value)) = params.iter().find(|(name, _)| name == param) else {
                    return false;
                };
                claim.find(claims).is_some_and(|held| holds(held, value))
            }
            Scope::Parental { parent } => self.reaches(&self.rules[*parent], roles, params, claims),
        }
    }
}

/// The roles of a claim: one string, or an array of strings. Anything else holds none.
fn roles(claim: Option<&Value>) -> Option<Vec<&str>> {
    match claim? {
        Value::String(role) => Some(vec![role.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// Whether the claim holds exactly `value`: a string equal to it, an integer written as it,
/// or an array with such an element.
fn holds(claim: &Value, value: &str) -> bool {
    match claim {
        Value::String(s) => s == value,
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            // The canonical decimal form only: "042" is not 42.
            n.to_string() == value
        }
        Value::Array(items) => items.iter().any(|item| !item.is_array() && holds(item, value)),
        _ => false,
    }
}

fn compile_rule(cfg: &RuleConfig, field: &str, earlier: &[Rule], cx: &mut CompileContext) -> Option<Rule> {
    let mark = cx.mark();
    let mut methods: Vec<Method> = Vec::new();
    for (j, action) in cfg.actions.iter().enumerate() {
        match action_methods(&action.value) {
            Some(m) => methods.extend(m.iter().cloned()),
            None => {
                cx.field_error_at(
                    action.referenced,
                    &format!("{field}.actions[{j}]"),
                    format!("unknown action {:?}", action.value),
                )
                .hint("actions are read (GET, HEAD), create (POST), update (PUT, PATCH) and delete (DELETE); name other methods under `methods`");
            }
        }
    }
    for (j, method) in cfg.methods.iter().enumerate() {
        match Method::from_bytes(method.value.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => {
                cx.field_error_at(
                    method.referenced,
                    &format!("{field}.methods[{j}]"),
                    format!("{:?} is not an HTTP method", method.value),
                );
            }
        }
    }
    if cfg.actions.is_empty() && cfg.methods.is_empty() {
        cx.field_error_at(cfg.name.referenced, field, "the rule grants nothing: list `actions` or `methods`");
    }
    if cfg.roles.is_empty() {
        cx.field_error_at(cfg.name.referenced, &format!("{field}.roles"), "list the roles the rule applies to");
    }
    let scope = scope(cfg, field, earlier, cx);
    cx.valid_since(mark).ok()?;
    Some(Rule { name: cfg.name.value.as_str().into(), roles: cfg.roles.clone(), methods, scope: scope? })
}

fn scope(cfg: &RuleConfig, field: &str, earlier: &[Rule], cx: &mut CompileContext) -> Option<Scope> {
    let at = cfg.scope.referenced;
    let unexpected = |cx: &mut CompileContext, key: &str, value: &Option<Located>| {
        if let Some(v) = value {
            let message = format!("`{key}` has no meaning with scope {}", cfg.scope.value);
            cx.field_error_at(v.referenced, &format!("{field}.{key}"), message);
        }
    };
    match cfg.scope.value.as_str() {
        "global" => {
            unexpected(cx, "path_param", &cfg.path_param);
            unexpected(cx, "claim", &cfg.claim);
            unexpected(cx, "parent", &cfg.parent);
            Some(Scope::Global)
        }
        "account" | "contact" => {
            unexpected(cx, "parent", &cfg.parent);
            let (Some(param), Some(claim)) = (&cfg.path_param, &cfg.claim) else {
                cx.field_error_at(
                    at,
                    &format!("{field}.scope"),
                    format!(
                        "scope {} compares a path parameter with a claim: give `path_param` and `claim`",
                        cfg.scope.value
                    ),
                )
                .hint("for example { scope: account, path_param: account, claim: account_id }");
                return None;
            };
            Some(Scope::Owned { param: param.value.as_str().into(), claim: ClaimPath::new(&claim.value) })
        }
        "parental" => {
            unexpected(cx, "path_param", &cfg.path_param);
            unexpected(cx, "claim", &cfg.claim);
            let Some(parent) = &cfg.parent else {
                cx.field_error_at(
                    at,
                    &format!("{field}.parent"),
                    "scope parental needs `parent`: the earlier rule that grants the parent record",
                );
                return None;
            };
            match earlier.iter().position(|r| *r.name == *parent.value) {
                Some(index) => Some(Scope::Parental { parent: index }),
                None => {
                    let known: Vec<&str> = earlier.iter().map(|r| &*r.name).collect();
                    cx.field_error_at(
                        parent.referenced,
                        &format!("{field}.parent"),
                        format!("no earlier rule is named {:?}", parent.value),
                    )
                    .hint(format!("`parent` names a rule above this one; earlier rules: {known:?}"));
                    None
                }
            }
        }
        other => {
            cx.field_error_at(at, &format!("{field}.scope"), format!("unknown scope {other:?}"))
                .hint("scopes are global, account, contact and parental");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(yaml: &str) -> Result<Authorize, Vec<String>> {
        let cfg: AuthorizeConfig = serde_saphyr::from_str(yaml).unwrap();
        let mut cx = CompileContext::standalone(std::path::Path::new("."), "access");
        let compiled = Authorize::compile(&cfg, &mut cx);
        match cx.finish() {
            Ok(_) => Ok(compiled.unwrap()),
            Err(errors) => Err(errors.iter().map(|e| e.message.clone()).collect()),
        }
    }

    const RULES: &str = "
roles_claim: roles
rules:
  - { name: admins, roles: [Admin], scope: global, actions: [read, delete] }
  - { name: account, roles: [Partner], scope: account, path_param: account, claim: org.account_ids, actions: [read] }
  - { name: cases, roles: [Partner], scope: parental, parent: account, actions: [update] }
";

    fn decide(a: &Authorize, method: Method, account: &str, claims: serde_json::Value) -> Result<String, Refusal> {
        let params = vec![(Arc::from("account"), account.to_owned())];
        let claims = claims.as_object().unwrap().clone();
        a.granting_rule(&method, &params, Some(&claims)).map(|rule| rule.to_string())
    }

    #[test]
    fn the_first_rule_that_grants_the_method_decides() {
        let a = policy(RULES).unwrap();
        let partner = json!({ "roles": ["Partner"], "org": { "account_ids": ["7", "9"] } });
        assert_eq!(decide(&a, Method::GET, "9", partner.clone()), Ok("account".into()));
        assert_eq!(decide(&a, Method::PUT, "7", partner.clone()), Ok("cases".into()));
        assert_eq!(decide(&a, Method::PUT, "8", partner.clone()), Err(Refusal::NotGranted));
        assert_eq!(decide(&a, Method::DELETE, "7", partner), Err(Refusal::NotGranted));
        assert_eq!(decide(&a, Method::DELETE, "8", json!({ "roles": "Admin" })), Ok("admins".into()));
        assert_eq!(decide(&a, Method::GET, "8", json!({})), Err(Refusal::NoRoles));
        assert_eq!(a.granting_rule(&Method::GET, &[], None), Err(Refusal::NoClaims));
    }

    #[test]
    fn a_claim_named_with_dots_is_found_before_the_nested_path() {
        let a = policy(RULES).unwrap();
        let flat = json!({ "roles": ["Partner"], "org.account_ids": "5", "org": { "account_ids": "6" } });
        assert_eq!(decide(&a, Method::GET, "5", flat.clone()), Ok("account".into()));
        assert_eq!(decide(&a, Method::GET, "6", flat), Err(Refusal::NotGranted));
    }

    #[test]
    fn the_parameters_a_route_must_capture_include_a_parents() {
        let a = policy(RULES).unwrap();
        assert_eq!(a.path_params(), vec![("account", "account"), ("cases", "account")]);
    }

    #[test]
    fn mistakes_are_each_reported() {
        let errors = policy(
            "
roles_claim: roles
rules:
  - { name: a, roles: [R], scope: account, actions: [read] }
  - { name: b, roles: [R], scope: parental, parent: c, actions: [read] }
  - { name: c, roles: [R], scope: global, path_param: x, actions: [list] }
  - { name: c, roles: [], scope: global }
",
        )
        .unwrap_err();
        let all = errors.join("\n");
        for expected in [
            "scope account compares a path parameter with a claim",
            "no earlier rule is named \"c\"",
            "`path_param` has no meaning with scope global",
            "unknown action \"list\"",
            "the rule grants nothing",
            "list the roles",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
    }
}
