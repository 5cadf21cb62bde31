//! The imported configuration as data, in the shape of the YAML contract (`compile::raw` and
//! the policies' `*Config` types), serialized by serde-saphyr. Notes are YAML comments on lines
//! of their own, above the policy they concern: nothing written here can end up inside a
//! scalar or a flow collection.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_saphyr::{CommentPosition, Commented};

/// A whole configuration: one listener, the backends, the policies, the products and the routes.
#[derive(Serialize)]
pub(super) struct Document {
    pub version: u32,
    pub listeners: Vec<Listener>,
    /// The token issuer, for its store of subscriptions (with `subscription_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Noted<Issuer>>,
    pub backends: Entries<Backend>,
    #[serde(skip_serializing_if = "Entries::is_empty")]
    pub policies: Entries<Noted<Policy>>,
    #[serde(skip_serializing_if = "Entries::is_empty")]
    pub products: Entries<Product>,
    pub routes: Vec<Route>,
}

/// `products.NAME`: the routes a subscription scoped to the product opens.
#[derive(Serialize)]
pub(super) struct Product {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub routes: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct Listener {
    pub name: String,
    pub bind: String,
    pub tls: Tls,
}

#[derive(Serialize)]
pub(super) struct Tls {
    pub certificates: Vec<CertKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
}

#[derive(Serialize)]
pub(super) struct CertKey {
    pub cert: String,
    pub key: String,
}

#[derive(Serialize)]
pub(super) struct ClientAuth {
    pub mode: &'static str,
    pub trusted_cas: String,
}

/// `identity`: the least the issuer needs (`identity::IdentityConfig`).
#[derive(Serialize)]
pub(super) struct Issuer {
    pub listener: String,
    pub issuer: String,
    pub signing_key: String,
    pub store: String,
}

#[derive(Serialize)]
pub(super) struct Backend {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Route {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Match,
    pub policies: Vec<String>,
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
}

/// `rewrite`: the prefix removed before forwarding.
#[derive(Serialize)]
pub(super) struct Rewrite {
    pub strip_prefix: String,
}

/// `match`: `{}` is every request.
#[derive(Default, Serialize)]
pub(super) struct Match {
    /// A path template (`/orders/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// One policy: exactly one kind set. A struct of options, as `compile::raw::PolicyConfig` is:
/// serde-saphyr 2.1.1 loses the indentation of an enum variant's content under a comment
/// written above it (`CommentPosition::Above`), which the read-back caught.
#[derive(Default, Serialize)]
pub(super) struct Policy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_filter: Option<IpFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<ClientCert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_key: Option<SubscriptionKey>,
}

impl Policy {
    pub(super) fn cors(cors: Cors) -> Self {
        Self { cors: Some(cors), ..Self::default() }
    }

    pub(super) fn ip_filter(filter: IpFilter) -> Self {
        Self { ip_filter: Some(filter), ..Self::default() }
    }

    pub(super) fn jwt(jwt: Jwt) -> Self {
        Self { jwt: Some(jwt), ..Self::default() }
    }

    pub(super) fn client_cert(cert: ClientCert) -> Self {
        Self { client_cert: Some(cert), ..Self::default() }
    }

    pub(super) fn rate_limit(limit: RateLimit) -> Self {
        Self { rate_limit: Some(limit), ..Self::default() }
    }

    pub(super) fn headers(headers: Headers) -> Self {
        Self { headers: Some(headers), ..Self::default() }
    }

    pub(super) fn subscription_key(key: SubscriptionKey) -> Self {
        Self { subscription_key: Some(key), ..Self::default() }
    }
}

/// `subscription_key`: APIM's `subscriptionKeyParameterNames` when they are not its defaults.
#[derive(Default, Serialize)]
pub(super) struct SubscriptionKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Cors {
    pub allowed_origins: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    pub terminate_unmatched: bool,
}

#[derive(Serialize)]
pub(super) struct IpFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
}

#[derive(Default, Serialize)]
pub(super) struct Jwt {
    pub issuers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openid_config: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_from: Option<String>,
    #[serde(skip_serializing_if = "Entries::is_empty")]
    pub require_claims: Entries<ClaimRule>,
}

/// `require_claims.NAME`: one of `any_of` / `all_of`.
#[derive(Serialize)]
pub(super) struct ClaimRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<String>>,
    /// The string claim is split on it before comparing (APIM's `separator`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
}

#[derive(Serialize)]
pub(super) struct ClientCert {
    pub identities: Vec<Identity>,
}

/// One identity; every field given must match.
#[derive(Default, Serialize)]
pub(super) struct Identity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
}

impl Identity {
    pub(super) fn is_empty(&self) -> bool {
        self.subject.is_none() && self.issuer.is_none() && self.serial.is_none() && self.dns_name.is_none()
    }
}

#[derive(Serialize)]
pub(super) struct RateLimit {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

#[derive(Default, Serialize)]
pub(super) struct Headers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderSide>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderSide>,
}

/// One side's edits; `set: {}` when nothing could be translated.
#[derive(Serialize)]
pub(super) struct HeaderSide {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<Entries<String>>,
}

/// A YAML mapping in the order its entries were added.
pub(super) struct Entries<T>(pub Vec<(String, T)>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Entries<T> {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

impl<T: Serialize> Serialize for Entries<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A value with notes: each a comment line above it.
pub(super) struct Noted<T> {
    pub notes: Vec<String>,
    pub value: T,
}

impl<T: Serialize> Serialize for Noted<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        NotedRef { notes: &self.notes, value: &self.value }.serialize(serializer)
    }
}

/// One `Commented` per note, nested, so that each note is a line of its own, in order.
struct NotedRef<'a, T> {
    notes: &'a [String],
    value: &'a T,
}

impl<T: Serialize> Serialize for NotedRef<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.notes.split_first() {
            None => self.value.serialize(serializer),
            Some((first, rest)) => {
                Commented(NotedRef { notes: rest, value: self.value }, comment_text(first)).serialize(serializer)
            }
        }
    }
}

/// A note as one comment line's text: line breaks and other control characters (from the
/// XML's attribute values) become spaces.
pub(super) fn comment_text(note: &str) -> String {
    note.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The document as YAML: `header` lines as comments, then the serialized document.
///
/// # Errors
/// The serializer refused the document (an importer bug).
pub(super) fn to_yaml(header: &[String], document: &Document) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for line in header {
        out.push_str("# ");
        out.push_str(&comment_text(line));
        out.push('\n');
    }
    let options = serde_saphyr::ser_options! { comment_position: CommentPosition::Above };
    out.push_str(&serde_saphyr::to_string_with_options(document, options)?);
    Ok(out)
}
