//! `client_cert`: requires a client certificate verified at the handshake (the listener's
//! `client_auth` with `trusted_cas` and `crls`) and matches it against `identities`; any one
//! identity matches when every field it names matches. Forwards a summary header; a
//! client-sent header of that name is always removed first (it is a gateway header).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::StatusCode;
use serde::Deserialize;

use super::context::RequestContext;
use super::kind::{Blame, Decision, PolicyKind};
use crate::config::context::{CompileContext, Invalid};
use crate::problem::Problem;
use crate::tls::dn::Dn;
use crate::tls::ClientCertInfo;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// The `client_cert` policy as written in YAML.
pub struct ClientCertConfig {
    #[serde(default)]
    /// `identities`: any one matching admits the certificate.
    pub identities: Vec<IdentityConfig>,
    /// `forward_header`: the header that carries a summary of the certificate to the backend.
    pub forward_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
/// One identity: every field it names must match the certificate.
pub struct IdentityConfig {
    /// `subject`: the subject DN as RFC 4514 writes it (`CN=svc,O=Contoso`) or in the reverse
    /// order; compared RDN for RDN (see [`Dn::matches`]). A malformed name is an error at it.
    pub subject: Option<Dn>,
    /// `issuer`: the issuer DN, written and compared as `subject` is.
    pub issuer: Option<Dn>,
    /// `thumbprint_sha256`: the SHA-256 of the DER certificate, hex in any spelling.
    pub thumbprint_sha256: Option<String>,
    /// `serial`: the serial number, hex in any spelling.
    pub serial: Option<String>,
    /// `dns_name`: a SAN DNS name the certificate must hold (case-insensitive).
    pub dns_name: Option<String>,
    /// `uri`: a SAN URI the certificate must hold.
    pub uri: Option<String>,
}

/// One compiled identity: each `Some` field must match.
#[derive(Debug, Default, PartialEq, Eq)]
struct Identity {
    subject: Option<Dn>,
    issuer: Option<Dn>,
    thumbprint: Option<String>,
    serial: Option<String>,
    dns_name: Option<String>,
    uri: Option<String>,
}

#[derive(Debug)]
/// The compiled `client_cert` policy.
pub struct ClientCert {
    identities: Vec<Identity>,
    forward_header: Option<HeaderName>,
}

/// Hex without separators or leading zeros, upper-case.
fn hex(text: &str) -> String {
    let digits: String = text.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_uppercase();
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Whether `text` spells the number `expected` (from [`hex`]), compared in place.
fn hex_matches(expected: &str, text: &str) -> bool {
    let mut digits = text.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_uppercase()).peekable();
    while digits.next_if_eq(&'0').is_some() {}
    if digits.peek().is_none() {
        return expected == "0";
    }
    digits.eq(expected.chars())
}

/// Why a client certificate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The connection presented no verified client certificate.
    NoClientCert,
    /// The certificate matches none of the identities.
    NotAllowed,
}

impl Refusal {
    /// The reason, for logs, metrics and `trace`.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoClientCert => "no_client_cert",
            Self::NotAllowed => "client_cert_not_allowed",
        }
    }

    /// 403 for both: the client learns no more.
    pub fn problem(self) -> Problem {
        let detail = match self {
            Self::NoClientCert => "a client certificate is required",
            Self::NotAllowed => "this client certificate is not allowed",
        };
        Problem::new(StatusCode::FORBIDDEN, "client-cert-rejected", "Client certificate rejected", detail)
    }
}

impl Blame for Refusal {}

impl PolicyKind for ClientCert {
    type Config = ClientCertConfig;
    type Refusal = Refusal;

    /// # Errors
    /// No identity, an empty identity, a malformed thumbprint or header name.
    fn compile(cfg: &ClientCertConfig, cx: &mut CompileContext) -> Result<Self, Invalid> {
        let mark = cx.mark();
        if cfg.identities.is_empty() {
            cx.field_error(
                "identities",
                "list at least one identity (subject, issuer, thumbprint_sha256, serial, dns_name or uri)",
            );
        }
        let mut identities = Vec::new();
        for id in &cfg.identities {
            let compiled = Identity {
                subject: id.subject.clone(),
                issuer: id.issuer.clone(),
                thumbprint: id.thumbprint_sha256.as_deref().map(hex),
                serial: id.serial.as_deref().map(hex),
                dns_name: id.dns_name.as_ref().map(|n| n.to_ascii_lowercase()),
                uri: id.uri.clone(),
            };
            if compiled == Identity::default() {
                cx.field_error("identities", "an identity needs at least one field");
            }
            if compiled.thumbprint.as_ref().is_some_and(|t| t.len() > 64) {
                cx.field_error("identities", "thumbprint_sha256 must be 32 bytes of hex");
            }
            identities.push(compiled);
        }
        let forward_header = cfg.forward_header.as_ref().and_then(|h| {
            let name = HeaderName::from_bytes(h.as_bytes()).ok();
            if name.is_none() {
                cx.field_error("forward_header", format!("{h:?} is not a header name"));
            }
            name
        });
        cx.valid_since(mark)?;
        Ok(Self { identities, forward_header })
    }

    async fn check(&self, parts: &mut Parts, cx: &mut RequestContext<'_>) -> Decision<Refusal> {
        self.check_cert(cx.conn.client_cert.as_deref(), &mut parts.headers).into()
    }

    /// The summary header, if configured.
    fn forwarded_headers(&self) -> Vec<&HeaderName> {
        self.forward_header.iter().collect()
    }
}

impl ClientCert {
    /// Matches the connection's verified certificate; sets the forwarded summary header.
    ///
    /// # Errors
    /// No certificate, or none of the identities matches it.
    pub fn check_cert(&self, cert: Option<&ClientCertInfo>, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let Some(cert) = cert else {
            return Err(Refusal::NoClientCert);
        };
        if !self.identities.iter().any(|id| matches(id, cert)) {
            return Err(Refusal::NotAllowed);
        }
        if let Some(name) = &self.forward_header {
            if let Ok(value) = HeaderValue::from_str(&summary(cert)) {
                headers.insert(name.clone(), value);
            }
        }
        Ok(())
    }
}

fn matches(id: &Identity, cert: &ClientCertInfo) -> bool {
    id.subject.as_ref().is_none_or(|s| s.matches(&cert.subject_name))
        && id.issuer.as_ref().is_none_or(|s| s.matches(&cert.issuer_name))
        && id.thumbprint.as_ref().is_none_or(|t| hex_matches(t, &cert.thumbprint_sha256))
        && id.serial.as_ref().is_none_or(|s| hex_matches(s, &cert.serial))
        && id.dns_name.as_ref().is_none_or(|n| cert.dns_names.iter().any(|d| d.eq_ignore_ascii_case(n)))
        && id.uri.as_ref().is_none_or(|u| cert.uris.contains(u))
}

/// `subject="…";issuer="…";thumbprint_sha256=…;serial=…;not_after=<unix seconds>`. The names
/// are RFC 4514 strings, non-ASCII and controls as `\XX` escapes, then quoted (`\` and `"`
/// backslash-escaped once more): the value is printable ASCII whatever the certificate holds.
fn summary(cert: &ClientCertInfo) -> String {
    let quote = |dn: &Dn| dn.to_ascii_string().replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "subject=\"{}\";issuer=\"{}\";thumbprint_sha256={};serial={};not_after={}",
        quote(&cert.subject_name),
        quote(&cert.issuer_name),
        cert.thumbprint_sha256,
        cert.serial,
        cert.not_after
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> ClientCertInfo {
        cert_named("CN=apim-client,O=Example")
    }

    /// A certificate whose subject reads `subject` in RFC 4514 order.
    fn cert_named(subject: &str) -> ClientCertInfo {
        let subject_name: Dn = subject.parse().unwrap();
        let issuer_name: Dn = "CN=Issuing CA".parse().unwrap();
        ClientCertInfo {
            subject: subject_name.to_string(),
            issuer: issuer_name.to_string(),
            subject_name,
            issuer_name,
            serial: "01A2".into(),
            thumbprint_sha256: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08".into(),
            dns_names: vec!["apim.internal.example.com".into()],
            uris: vec![],
            not_after: 0,
        }
    }

    fn policy(id: IdentityConfig) -> ClientCert {
        let cfg = ClientCertConfig { identities: vec![id], forward_header: Some("X-Client-Cert".into()) };
        ClientCert::compile(&cfg, &mut CompileContext::standalone(std::path::Path::new("."), "test")).unwrap()
    }

    fn subject(dn: &str) -> IdentityConfig {
        IdentityConfig { subject: Some(dn.parse().unwrap()), ..Default::default() }
    }

    #[test]
    fn is_authorized_for_each_kind_of_identity() {
        let ids = [
            subject("CN=apim-client,O=Example"),
            subject("O=Example, CN=apim-client"),
            IdentityConfig { issuer: Some("cn=Issuing CA".parse().unwrap()), ..Default::default() },
            IdentityConfig {
                thumbprint_sha256: Some(
                    "9f:86:d0:81:88:4c:7d:65:9a:2f:ea:a0:c5:5a:d0:15:a3:bf:4f:1b:2b:0b:82:2c:d1:5d:6c:15:b0:f0:0a:08"
                        .into(),
                ),
                ..Default::default()
            },
            IdentityConfig { serial: Some("00:01:a2".into()), ..Default::default() },
            IdentityConfig { dns_name: Some("APIM.internal.example.com".into()), ..Default::default() },
        ];
        for id in ids {
            let p = policy(id);
            let mut h = HeaderMap::new();
            assert_eq!(p.check_cert(Some(&cert()), &mut h), Ok(()));
            assert!(h["x-client-cert"].to_str().unwrap().starts_with("subject=\"CN=apim-client,O=Example\""));
        }
    }

    #[test]
    fn is_not_authorized_without_a_match_or_a_certificate() {
        let p = policy(IdentityConfig {
            subject: Some("CN=apim-client,O=Example".parse().unwrap()),
            serial: Some("FF".into()),
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        assert_eq!(p.check_cert(Some(&cert()), &mut h), Err(Refusal::NotAllowed));
        assert_eq!(p.check_cert(None, &mut h), Err(Refusal::NoClientCert));
        assert!(h.is_empty());
    }

    #[test]
    fn serials_and_thumbprints_match_in_any_spelling() {
        let expected = hex("00:01:a2");
        for same in ["1A2", "01a2", "00:01:A2", "1a:2"] {
            assert!(hex_matches(&expected, same), "{same}");
        }
        for other in ["1A", "1A20", "A2", "", "0"] {
            assert!(!hex_matches(&expected, other), "{other:?}");
        }
        assert!(hex_matches(&hex("00"), "0:00"));
        assert!(!hex_matches(&hex("00"), "01"));
    }

    #[test]
    fn subjects_match_rdn_for_rdn_in_either_order() {
        let p = policy(subject("CN=apim-client,O=Example"));
        for same in ["CN=apim-client, O=Example", "O=Example,CN=apim-client", "cn=APIM-client,o=example"] {
            assert_eq!(p.check_cert(Some(&cert_named(same)), &mut HeaderMap::new()), Ok(()), "{same}");
        }
        for other in [
            "CN=apim-client",
            "CN=apim-client,O=Example,OU=Extra",
            "CN=apim-client,OU=Extra,O=Example",
            "CN=apim-client-evil,O=Example",
            "CN=apim-client,O=Example.evil",
            "CN=apim-client+UID=1,O=Example",
            r"CN=apim-client\,O=Example",
            r"CN=apim-client\, O=Example,O=Fabrikam",
        ] {
            assert_eq!(
                p.check_cert(Some(&cert_named(other)), &mut HeaderMap::new()),
                Err(Refusal::NotAllowed),
                "{other}"
            );
        }
    }

    #[test]
    fn a_look_alike_common_name_is_not_the_configured_subject() {
        // The issue's attack: the CN is literally `svc, O=Contoso`; the organization is not.
        let look_alike = cert_named(r"CN=svc\, O=Contoso,O=Fabrikam");
        for configured in ["CN=svc, O=Contoso", "O=Contoso, CN=svc", "CN=svc,O=Contoso"] {
            let p = policy(subject(configured));
            assert_eq!(
                p.check_cert(Some(&look_alike), &mut HeaderMap::new()),
                Err(Refusal::NotAllowed),
                "{configured}"
            );
            assert_eq!(
                p.check_cert(Some(&cert_named("CN=svc,O=Contoso")), &mut HeaderMap::new()),
                Ok(()),
                "{configured}"
            );
        }
    }

    #[test]
    fn the_forwarded_summary_escapes_names_into_one_printable_header_line() {
        let p = policy(IdentityConfig { serial: Some("1A2".into()), ..Default::default() });
        let cases = [
            (r"CN=svc\, O=Contoso,O=Fabrikam", r#"subject="CN=svc\\, O=Contoso,O=Fabrikam";"#),
            (r"CN=a\0D\0AX-Evil: 1", r#"subject="CN=a\\0D\\0AX-Evil: 1";"#),
            (r#"CN=say \"hi\""#, r#"subject="CN=say \\\"hi\\\"";"#),
            ("CN=Müller", r#"subject="CN=M\\C3\\BCller";"#),
        ];
        for (name, expected) in cases {
            let mut h = HeaderMap::new();
            assert_eq!(p.check_cert(Some(&cert_named(name)), &mut h), Ok(()));
            let value = h["x-client-cert"].to_str().unwrap();
            assert!(value.starts_with(expected), "{name}: {value}");
            assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)), "{value}");
            assert!(value.contains(r#";issuer="CN=Issuing CA";thumbprint_sha256="#), "{value}");
        }
    }
}
