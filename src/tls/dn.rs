//! Distinguished names: the RDN sequence of a certificate's subject or issuer (X.501), the
//! string form operators write (RFC 4514, with the leniencies below), matching one against the
//! other, and rendering a name back to an escaped RFC 4514 string.
//!
//! A [`Dn`] always holds its RDNs in ASN.1 order (as encoded in the certificate, usually least
//! specific first: `C`, `O`, `CN`). The RFC 4514 string is the reverse (`CN=svc,O=Contoso`),
//! which is also how Windows and Azure API Management show names; [`Dn::parse`] therefore
//! reverses what it reads and [`Dn`]'s `Display` reverses again.
//!
//! Matching ([`Dn::matches`]) compares parsed attributes, never strings: same number of RDNs,
//! each RDN the same set of attributes (the order inside a multi-valued RDN is irrelevant),
//! the sequence equal in the same order or fully reversed, so a configured name may be written
//! in either order. An attribute matches when its type (OID) is equal and its value is equal
//! ignoring ASCII case: RFC 4519 gives the usual name attributes `caseIgnoreMatch` (RFC 4517
//! §4.2.11); case folding is limited to ASCII so that Unicode folding (U+212A KELVIN SIGN → `k`)
//! cannot make look-alikes equal, and no other RFC 4518 preparation is applied: inner spaces
//! count as written. Values the certificate encodes in no string type match nothing.
//!
//! Parsing accepts RFC 4514 (`\,` `\+` `\"` `\\` `\<` `\>` `\;` `\=` `\#` `\ ` and hex pairs
//! like `\2C`), plus what Windows prints: spaces around `,` `+` `=` and quoted values
//! (`O="Contoso, Inc."`). Unescaped spaces at either end of a value are dropped; escape them to
//! keep them. Type names are case-insensitive (`CN`, `O`, `OU`, `C`, `L`, `ST`/`S`, `STREET`,
//! `DC`, `UID`, `E`/`emailAddress`, `SERIALNUMBER`, `SN`, `GN`/`G`, `T`/`title`, their long
//! names, or a dotted OID). `#`-hex BER values are refused.

use std::fmt::{self, Write as _};

use x509_parser::asn1_rs::{Any, Tag};
use x509_parser::x509::X509Name;

/// A distinguished name: its RDNs in ASN.1 order. In YAML, a string [`Dn::parse`] reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Dn {
    rdns: Vec<Rdn>,
}

/// A relative distinguished name: one or more attributes (`CN=a+UID=b`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rdn(Vec<Attribute>);

/// One attribute of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute type, a dotted OID (`2.5.4.3`).
    pub oid: String,
    /// The value.
    pub value: Value,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A value in one of the ASN.1 string types, decoded.
    Text(String),
    /// A value in no string type: its whole DER encoding (rendered `#hex`, RFC 4514 §2.4).
    Der(Vec<u8>),
}

/// Why a configured name could not be read. The message quotes the name and says where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid distinguished name {text:?}: {reason} (at character {at})")]
pub struct DnError {
    /// The name as written.
    pub text: String,
    /// What is wrong.
    pub reason: String,
    /// 1-based character position of the problem.
    pub at: usize,
}

/// Attribute types by name: the first name of each row is the one rendered (RFC 4514 §3 lists
/// CN, L, ST, O, OU, C, STREET, DC, UID; the others are the registered LDAP descriptors).
const TYPES: &[(&[&str], &str)] = &[
    (&["CN", "commonName"], "2.5.4.3"),
    (&["L", "localityName"], "2.5.4.7"),
    (&["ST", "S", "stateOrProvinceName"], "2.5.4.8"),
    (&["O", "organizationName"], "2.5.4.10"),
    (&["OU", "organizationalUnitName"], "2.5.4.11"),
    (&["C", "countryName"], "2.5.4.6"),
    (&["STREET", "streetAddress"], "2.5.4.9"),
    (&["DC", "domainComponent"], "0.9.2342.19200300.100.1.25"),
    (&["UID", "userId"], "0.9.2342.19200300.100.1.1"),
    (&["emailAddress", "E", "email"], "1.2.840.113549.1.9.1"),
    (&["serialNumber"], "2.5.4.5"),
    (&["SN", "surname"], "2.5.4.4"),
    (&["GN", "G", "givenName"], "2.5.4.42"),
    (&["title", "T"], "2.5.4.12"),
];

/// The expected form, for configuration hints.
pub const DN_HINT: &str = "write the name as RFC 4514 does, most specific first, e.g. \"CN=svc,O=Contoso,C=US\" \
     (the reverse order is accepted too); escape , + \" \\ < > ; in values with a backslash (\\,) \
     or quote the value (O=\"Contoso, Inc.\"); attribute types are CN, O, OU, C, L, ST, STREET, DC, \
     UID, E, SERIALNUMBER, SN, GN, T or a dotted OID";

fn oid_of(name: &str) -> Option<&'static str> {
    TYPES.iter().find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name))).map(|(_, oid)| *oid)
}

fn name_of(oid: &str) -> Option<&'static str> {
    TYPES.iter().find(|(_, o)| *o == oid).map(|(names, _)| names[0])
}

impl Attribute {
    /// Whether a configured attribute `self` matches `other` (see the module docs).
    fn matches(&self, other: &Self) -> bool {
        self.oid == other.oid
            && match (&self.value, &other.value) {
                (Value::Text(a), Value::Text(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }
}

impl Rdn {
    /// The same attributes, in any order (a greedy pairing is exact: the match is an
    /// equivalence relation).
    fn matches(&self, other: &Self) -> bool {
        match (self.0.as_slice(), other.0.as_slice()) {
            (a, b) if a.len() != b.len() => return false,
            ([a], [b]) => return a.matches(b), // the usual RDN: no allocation per request
            _ => {}
        }
        let mut used = vec![false; other.0.len()];
        self.0.iter().all(|a| {
            let found = other.0.iter().enumerate().find(|(i, b)| !used[*i] && a.matches(b));
            found.map(|(i, _)| used[i] = true).is_some()
        })
    }

    /// The attributes.
    pub fn attributes(&self) -> &[Attribute] {
        &self.0
    }
}

impl Dn {
    /// The name's RDNs, in ASN.1 order.
    pub fn rdns(&self) -> &[Rdn] {
        &self.rdns
    }

    /// Whether this (configured) name equals `cert`'s, RDN for RDN, in the same order or fully
    /// reversed. Never a prefix, suffix or substring.
    pub fn matches(&self, cert: &Self) -> bool {
        let n = self.rdns.len();
        n == cert.rdns.len()
            && (self.rdns.iter().zip(&cert.rdns).all(|(a, b)| a.matches(b))
                || self.rdns.iter().zip(cert.rdns.iter().rev()).all(|(a, b)| a.matches(b)))
    }

    /// The name of a certificate, as x509-parser read it.
    pub fn from_x509(name: &X509Name<'_>) -> Self {
        let rdns = name
            .iter_rdn()
            .map(|rdn| {
                Rdn(rdn
                    .iter()
                    .map(|attr| Attribute { oid: attr.attr_type().to_id_string(), value: decode(attr.attr_value()) })
                    .collect())
            })
            .collect();
        Self { rdns }
    }

    /// Reads a name written as RFC 4514 does (see the module docs for what else is accepted).
    ///
    /// # Errors
    /// Empty, an unknown attribute type, a bad escape, an unescaped special character, a
    /// `#`-hex value, an unterminated quote, an empty RDN.
    pub fn parse(text: &str) -> Result<Self, DnError> {
        let mut p = Parser { text, chars: text.char_indices().peekable() };
        if text.trim().is_empty() {
            return Err(p.error(0, "the name is empty"));
        }
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        loop {
            rdn.push(p.attribute()?);
            p.skip_spaces();
            match p.chars.next() {
                None => break,
                Some((_, '+')) => {}
                Some((_, ',')) => rdns.push(Rdn(std::mem::take(&mut rdn))),
                Some((i, c)) => return Err(p.error(i, format!("expected `,` or `+` before {c:?}"))),
            }
        }
        rdns.push(Rdn(rdn));
        // RFC 4514 §2.1: the string starts with the last RDN of the sequence.
        rdns.reverse();
        Ok(Self { rdns })
    }

    /// RFC 4514 with every character outside printable ASCII escaped as `\XX` UTF-8 bytes: safe
    /// for an HTTP header value (no CR, LF or other control, no obs-text).
    pub fn to_ascii_string(&self) -> String {
        let mut out = String::new();
        self.render(&mut out, true);
        out
    }

    fn render(&self, out: &mut String, ascii: bool) {
        for (i, rdn) in self.rdns.iter().rev().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, attr) in rdn.0.iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                match name_of(&attr.oid) {
                    Some(name) => out.push_str(name),
                    None => out.push_str(&attr.oid),
                }
                out.push('=');
                match &attr.value {
                    Value::Text(v) => escape(v, out, ascii),
                    Value::Der(der) => {
                        out.push('#');
                        for b in der {
                            let _ = write!(out, "{b:02X}");
                        }
                    }
                }
            }
        }
    }
}

impl TryFrom<String> for Dn {
    type Error = DnError;

    fn try_from(text: String) -> Result<Self, DnError> {
        Self::parse(&text)
    }
}

impl std::str::FromStr for Dn {
    type Err = DnError;

    fn from_str(text: &str) -> Result<Self, DnError> {
        Self::parse(text)
    }
}

/// RFC 4514 order and escaping; control and invisible formatting characters as `\XX`, other
/// Unicode as is (see [`Dn::to_ascii_string`] for headers).
impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.render(&mut out, false);
        f.write_str(&out)
    }
}

/// One attribute value escaped as RFC 4514 §2.4 says, for writing a name (`CN={escaped}`).
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape(value, &mut out, false);
    out
}

/// Characters that change how text reads without being seen: line breaks, bidi controls,
/// zero-width characters.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// RFC 4514 §2.4: `"+,;<>\` escaped everywhere, a leading space or `#` and a trailing space
/// escaped; NUL, controls (and, with `ascii`, everything outside printable ASCII) as hex pairs.
fn escape(value: &str, out: &mut String, ascii: bool) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let hex = invisible(c) || (ascii && !(' '..='~').contains(&c));
        if hex {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\{b:02X}");
            }
            continue;
        }
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A certificate's attribute value: the ASN.1 string types decoded, anything else kept as DER.
fn decode(any: &Any<'_>) -> Value {
    let data = any.data;
    let text = match any.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::T61String => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString if data.len().is_multiple_of(2) => {
            char::decode_utf16(data.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])))
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString if data.len().is_multiple_of(4) => data
            .chunks_exact(4)
            .map(|q| char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]])))
            .collect::<Option<String>>(),
        _ => None,
    };
    text.map_or_else(|| Value::Der(der(any)), Value::Text)
}

/// The DER encoding of a value that is no string: identifier, length, contents.
fn der(any: &Any<'_>) -> Vec<u8> {
    let data = any.data;
    let mut out = match any.header.raw_tag() {
        Some(raw) => raw.to_vec(),
        None => {
            // Low tag numbers only: what x509-parser read had a tag, and any byte renders.
            let class = (any.class() as u8) << 6;
            let constructed = if any.header.constructed() { 0x20 } else { 0 };
            vec![class | constructed | (any.tag().0 & 0x1f) as u8]
        }
    };
    let len = data.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(data);
    out
}

struct Parser<'a> {
    text: &'a str,
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Parser<'_> {
    fn error(&self, byte: usize, reason: impl Into<String>) -> DnError {
        let at = self.text[..byte.min(self.text.len())].chars().count() + 1;
        DnError { text: self.text.to_owned(), reason: reason.into(), at }
    }

    /// The byte position of the next character (the end when there is none).
    fn pos(&mut self) -> usize {
        let end = self.text.len();
        self.chars.peek().map_or(end, |(i, _)| *i)
    }

    fn skip_spaces(&mut self) {
        while self.chars.next_if(|(_, c)| *c == ' ').is_some() {}
    }

    /// `type = value`
    fn attribute(&mut self) -> Result<Attribute, DnError> {
        self.skip_spaces();
        let start = self.pos();
        while self.chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')).is_some() {}
        let stop = self.pos();
        let name = &self.text[start..stop];
        if name.is_empty() {
            return Err(self.error(start, "expected an attribute type like CN"));
        }
        let oid = self.oid(name, start)?;
        self.skip_spaces();
        match self.chars.next() {
            Some((_, '=')) => {}
            Some((i, c)) => return Err(self.error(i, format!("expected `=` after {name:?}, found {c:?}"))),
            None => return Err(self.error(self.text.len(), format!("expected `=` after {name:?}"))),
        }
        self.skip_spaces();
        let value = match self.chars.peek().copied() {
            Some((i, '#')) => {
                return Err(self.error(i, "`#` hex (BER) values are not supported; write the value as text"));
            }
            Some((_, '"')) => self.quoted()?,
            _ => self.string()?,
        };
        Ok(Attribute { oid: oid.to_owned(), value: Value::Text(value) })
    }

    fn oid<'n>(&self, name: &'n str, at: usize) -> Result<&'n str, DnError> {
        let dotted = name.get(..4).filter(|p| p.eq_ignore_ascii_case("oid.")).map_or(name, |_| &name[4..]);
        if dotted.starts_with(|c: char| c.is_ascii_digit()) {
            let arcs: Vec<&str> = dotted.split('.').collect();
            let well_formed = arcs.len() >= 2
                && arcs.iter().all(|a| {
                    !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) && (a.len() == 1 || !a.starts_with('0'))
                });
            if well_formed {
                return Ok(dotted);
            }
            return Err(self.error(at, format!("{name:?} is not a dotted OID like 2.5.4.3")));
        }
        oid_of(name).ok_or_else(|| self.error(at, format!("unknown attribute type {name:?}")))
    }

    /// One escape after `\`: a special character, or hex pairs for bytes.
    fn escape(&mut self, at: usize, out: &mut Vec<u8>) -> Result<(), DnError> {
        match self.chars.next() {
            Some((_, c @ ('"' | '+' | ',' | ';' | '<' | '>' | '\\' | ' ' | '#' | '='))) => {
                out.push(c as u8);
                Ok(())
            }
            Some((_, hi)) if hi.is_ascii_hexdigit() => match self.chars.next() {
                Some((_, lo)) if lo.is_ascii_hexdigit() => {
                    let digit = |c: char| c.to_digit(16).map_or(0, |d| d as u8);
                    out.push(digit(hi) << 4 | digit(lo));
                    Ok(())
                }
                _ => Err(self.error(at, "`\\` needs two hex digits here, like \\2C")),
            },
            _ => Err(self.error(at, "`\\` escapes only , + \" \\ < > ; = # space or two hex digits")),
        }
    }

    /// An unquoted value, up to an unescaped `,` or `+`; unescaped spaces at its end dropped.
    fn string(&mut self) -> Result<String, DnError> {
        let start = self.pos();
        let mut out = Vec::new();
        let mut keep = 0;
        while let Some(&(i, c)) = self.chars.peek() {
            match c {
                ',' | '+' => break,
                '\\' => {
                    self.chars.next();
                    self.escape(i, &mut out)?;
                    keep = out.len();
                }
                '"' | ';' | '<' | '>' | '\0' => {
                    return Err(self.error(i, format!("{c:?} must be escaped as \\{c} or the value quoted")));
                }
                _ => {
                    self.chars.next();
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    if c != ' ' {
                        keep = out.len();
                    }
                }
            }
        }
        out.truncate(keep);
        String::from_utf8(out).map_err(|_| self.error(start, "the hex escapes of this value are not UTF-8"))
    }

    /// A value in double quotes (RFC 1779, as Windows prints `O="Contoso, Inc."`).
    fn quoted(&mut self) -> Result<String, DnError> {
        let (start, _) = self.chars.next().expect("called at a quote");
        let mut out = Vec::new();
        loop {
            match self.chars.next() {
                None => return Err(self.error(start, "the quoted value has no closing `\"`")),
                Some((_, '"')) => break,
                Some((i, '\\')) => self.escape(i, &mut out)?,
                Some((_, c)) => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error(start, "the hex escapes of this value are not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(attrs: &[(&str, &str)]) -> Rdn {
        Rdn(attrs
            .iter()
            .map(|(oid, v)| Attribute { oid: (*oid).to_owned(), value: Value::Text((*v).to_owned()) })
            .collect())
    }

    const CN: &str = "2.5.4.3";
    const O: &str = "2.5.4.10";
    const OU: &str = "2.5.4.11";
    const C: &str = "2.5.4.6";
    const UID: &str = "0.9.2342.19200300.100.1.1";

    /// A certificate name, in ASN.1 order.
    fn cert(rdns: &[&[(&str, &str)]]) -> Dn {
        Dn { rdns: rdns.iter().map(|r| text(r)).collect() }
    }

    #[test]
    fn parses_rfc4514_strings_into_asn1_order() {
        let cases: &[(&str, Dn)] = &[
            ("CN=svc,O=Contoso", cert(&[&[(O, "Contoso")], &[(CN, "svc")]])),
            ("cn = svc , o= Contoso ", cert(&[&[(O, "Contoso")], &[(CN, "svc")]])),
            (r"CN=svc\, O=Contoso,O=Contoso", cert(&[&[(O, "Contoso")], &[(CN, "svc, O=Contoso")]])),
            (r"CN=svc\2C O\3dContoso", cert(&[&[(CN, "svc, O=Contoso")]])),
            (r#"CN=a\+b\"c\\d\<e\>f\;g\=h"#, cert(&[&[(CN, "a+b\"c\\d<e>f;g=h")]])),
            (r"CN=\ lead\#,O=\#hash,OU=trail\ ", cert(&[&[(OU, "trail ")], &[(O, "#hash")], &[(CN, " lead#")]])),
            ("CN=a=b", cert(&[&[(CN, "a=b")]])),
            ("CN=", cert(&[&[(CN, "")]])),
            (r#"O="Contoso, Inc.",C=US"#, cert(&[&[(C, "US")], &[(O, "Contoso, Inc.")]])),
            (r"CN=M\C3\BCller", cert(&[&[(CN, "Müller")]])),
            ("CN=Müller", cert(&[&[(CN, "Müller")]])),
            ("CN=svc+UID=42,O=x", cert(&[&[(O, "x")], &[(CN, "svc"), (UID, "42")]])),
            ("2.5.4.3=svc,OID.2.5.4.10=x", cert(&[&[(O, "x")], &[(CN, "svc")]])),
            ("E=a@b.example", cert(&[&[("1.2.840.113549.1.9.1", "a@b.example")]])),
            ("emailaddress=a@b.example", cert(&[&[("1.2.840.113549.1.9.1", "a@b.example")]])),
            ("S=WA,ST=WA", cert(&[&[("2.5.4.8", "WA")], &[("2.5.4.8", "WA")]])),
            (
                "DC=example,DC=com",
                cert(&[&[("0.9.2342.19200300.100.1.25", "com")], &[("0.9.2342.19200300.100.1.25", "example")]]),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&Dn::parse(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn refuses_malformed_names_with_the_position() {
        let cases: &[(&str, &str, usize)] = &[
            ("", "empty", 1),
            ("  ", "empty", 1),
            ("CN", "expected `=` after \"CN\"", 3),
            ("CN=svc,", "expected an attribute type", 8),
            ("CN=svc,,O=x", "expected an attribute type", 8),
            ("=svc", "expected an attribute type", 1),
            ("XX=svc", "unknown attribute type \"XX\"", 1),
            ("2.5.04=svc", "not a dotted OID", 1),
            ("2=svc", "not a dotted OID", 1),
            ("CN=#0403737663", "`#` hex (BER) values are not supported", 4),
            (r"CN=a\q", "escapes only", 5),
            (r"CN=a\2", "two hex digits", 5),
            (r"CN=a\", "escapes only", 5),
            ("CN=a;O=b", "';' must be escaped", 5),
            ("CN=a<b", "'<' must be escaped", 5),
            ("CN=a\"b", "'\"' must be escaped", 5),
            (r#"O="open"#, "no closing", 3),
            (r#"O="a" b"#, "expected `,` or `+` before 'b'", 7),
            (r"CN=\FF", "not UTF-8", 4),
            ("CN a", "expected `=` after \"CN\", found 'a'", 4),
        ];
        for (text, reason, at) in cases {
            let err = Dn::parse(text).unwrap_err();
            assert!(err.reason.contains(reason), "{text:?}: {err}");
            assert_eq!(err.at, *at, "{text:?}: {err}");
            assert!(err.to_string().starts_with("invalid distinguished name"), "{err}");
        }
    }

    #[test]
    fn matches_in_either_order_and_any_order_inside_an_rdn() {
        // The certificate (ASN.1 order): C=US, O=Contoso, CN=svc+UID=42.
        let subject = cert(&[&[(C, "US")], &[(O, "Contoso")], &[(CN, "svc"), (UID, "42")]]);
        for same in [
            "CN=svc+UID=42,O=Contoso,C=US",
            "UID=42+CN=svc,O=Contoso,C=US",
            "C=US, O=Contoso, CN=svc + UID=42",
            "C=US,O=Contoso,UID=42+CN=svc",
            "cn=SVC+uid=42,o=contoso,c=us",
            r#"CN=svc+UID=42,O="Contoso",C=US"#,
            r"CN=svc+UID=42,O=Cont\6Fso,C=US",
        ] {
            assert!(Dn::parse(same).unwrap().matches(&subject), "{same}");
        }
        for other in [
            "CN=svc,O=Contoso,C=US",
            "CN=svc+UID=42,O=Contoso",
            "CN=svc+UID=42,O=Contoso,C=US,C=US",
            "O=Contoso,CN=svc+UID=42,C=US",
            "CN=svc+UID=42+UID=42,O=Contoso,C=US",
            "CN=svc+UID=42,O=Contoso ,C=USA",
            "CN=svc+UID=42,O=Con toso,C=US",
            "CN=svc+UID=42,OU=Contoso,C=US",
            "CN=svc,UID=42,O=Contoso,C=US",
        ] {
            assert!(!Dn::parse(other).unwrap().matches(&subject), "{other}");
        }
    }

    #[test]
    fn a_look_alike_common_name_matches_neither_way() {
        // A CN that is literally "svc, O=Contoso", in an organization that is not Contoso.
        let look_alike = cert(&[&[(O, "Fabrikam")], &[(CN, "svc, O=Contoso")]]);
        let lone = cert(&[&[(CN, "svc, O=Contoso")]]);
        for configured in ["CN=svc, O=Contoso", "O=Contoso, CN=svc", "CN=svc", "O=Contoso"] {
            let dn = Dn::parse(configured).unwrap();
            assert!(!dn.matches(&look_alike), "{configured}");
            assert!(!dn.matches(&lone), "{configured}");
        }
        // Only the escaped spelling names it.
        assert!(Dn::parse(r"CN=svc\, O=Contoso").unwrap().matches(&lone));
        assert!(Dn::parse(r"CN=svc\, O=Contoso,O=Fabrikam").unwrap().matches(&look_alike));
    }

    #[test]
    fn values_ignore_ascii_case_only() {
        let subject = cert(&[&[(CN, "svc-K")]]);
        assert!(Dn::parse("CN=SVC-k").unwrap().matches(&subject));
        // U+212A KELVIN SIGN folds to `k` in Unicode, not here.
        assert!(!Dn::parse("CN=svc-\u{212A}").unwrap().matches(&subject));
        assert!(!Dn::parse("CN=svc-K\u{200B}").unwrap().matches(&subject));
        let binary = Dn { rdns: vec![Rdn(vec![Attribute { oid: CN.into(), value: Value::Der(vec![4, 1, 0x41]) }])] };
        assert!(!Dn::parse("CN=A").unwrap().matches(&binary), "a value in no string type matches nothing");
    }

    /// A cheap stand-in for the `dn` fuzz target: names built from the pieces that matter
    /// (`DN_ROUNDS` sets how many; the fuzz target explores further).
    #[test]
    fn generated_names_read_render_and_match_consistently() {
        const TYPES: &[&str] = &["CN", "o", " OID.2.5.4.3 ", "1.2.3", "E", "x"];
        const VALUE: &[&str] = &[
            "a", "Z ", " ", "\\ ", "\\,", ",", "+", "=", "\\\\", "\\\"", "\"q\"", "#", "\\#", ";", "\\<", "\\2C",
            "\\C3\\BC", "\\C3", "ü", "\n", "\u{202e}", "\0", "\\00",
        ];
        let rounds = std::env::var("DN_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000u32);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut read = 0;
        for _ in 0..rounds {
            let mut text = String::new();
            for i in 0..=next(4) {
                if i > 0 {
                    text.push_str([",", "+", " , ", ";"][next(4)]);
                }
                text.push_str(TYPES[next(TYPES.len())]);
                text.push_str(["=", " = ", ""][next(3)]);
                for _ in 0..next(6) {
                    text.push_str(VALUE[next(VALUE.len())]);
                }
            }
            let Ok(dn) = Dn::parse(&text) else { continue };
            read += 1;
            assert!(dn.matches(&dn), "{text:?}");
            assert_eq!(Dn::parse(&dn.to_string()).as_ref(), Ok(&dn), "{text:?} as {dn}");
            let ascii = dn.to_ascii_string();
            assert!(ascii.bytes().all(|b| (b' '..=b'~').contains(&b)), "{ascii:?}");
            assert_eq!(Dn::parse(&ascii).as_ref(), Ok(&dn), "{text:?} as {ascii}");
        }
        assert!(read > rounds / 20, "{read} of {rounds} generated names read");
    }

    #[test]
    fn certificate_values_decode_from_each_string_type() {
        use x509_parser::asn1_rs::FromDer as _;
        let long = [&[0x04u8, 0x81, 0x80][..], &[0x41; 0x80]].concat();
        let cases: &[(&[u8], Value)] = &[
            (&[0x0C, 0x03, 0x73, 0xC3, 0xBC], Value::Text("sü".into())), // UTF8String
            (&[0x13, 0x02, 0x55, 0x53], Value::Text("US".into())),       // PrintableString
            (&[0x16, 0x01, 0x40], Value::Text("@".into())),              // IA5String
            (&[0x1E, 0x04, 0x00, 0x41, 0x00, 0xFC], Value::Text("Aü".into())), // BMPString
            (&[0x1C, 0x04, 0x00, 0x01, 0xF6, 0x00], Value::Text("\u{1F600}".into())), // UniversalString
            (&[0x1E, 0x03, 0x00, 0x41, 0x00], Value::Der(vec![0x1E, 0x03, 0x00, 0x41, 0x00])), // odd BMP
            (&[0x0C, 0x01, 0xFF], Value::Der(vec![0x0C, 0x01, 0xFF])),   // not UTF-8
            (&[0x02, 0x01, 0x05], Value::Der(vec![0x02, 0x01, 0x05])),   // INTEGER
            (&long, Value::Der(long.clone())),                           // OCTET STRING, long length
        ];
        for (der, expected) in cases {
            let (_, any) = Any::from_der(der).unwrap();
            assert_eq!(&decode(&any), expected, "{der:02X?}");
        }
    }

    #[test]
    fn every_name_that_reads_renders_back_to_itself() {
        for text in [
            "CN=svc,O=Contoso",
            "C=US, O=Contoso, CN=svc + UID=42",
            r"CN=svc\, O=Contoso,O=Fabrikam",
            r#"O="Contoso, Inc.",CN=\ a\#\2C\0D\0A\C3\BC\ "#,
            "OID.2.5.4.3=x,1.2.840.113549.1.9.1=a@b,E=c,DC=d",
            r#"CN="",O=" ",OU=\  \ "#,
            "CN=a\u{7f}\u{85}\u{200e}\u{feff}b,O=\u{1F600}",
            r"CN=\#\=\;\<\>\\\+",
        ] {
            let dn = Dn::parse(text).unwrap();
            assert!(dn.matches(&dn), "{text}");
            assert_eq!(Dn::parse(&dn.to_string()).unwrap(), dn, "{text} as {dn}");
            let ascii = dn.to_ascii_string();
            assert!(ascii.bytes().all(|b| (b' '..=b'~').contains(&b)), "{ascii}");
            assert_eq!(Dn::parse(&ascii).unwrap(), dn, "{text} as {ascii}");
        }
    }

    #[test]
    fn renders_rfc4514_with_escapes() {
        let cases: &[(Dn, &str, &str)] = &[
            (cert(&[&[(O, "Contoso")], &[(CN, "svc")]]), "CN=svc,O=Contoso", "CN=svc,O=Contoso"),
            (
                cert(&[&[(O, "Contoso")], &[(CN, "svc, O=Contoso")]]),
                r"CN=svc\, O=Contoso,O=Contoso",
                r"CN=svc\, O=Contoso,O=Contoso",
            ),
            (cert(&[&[(CN, r#"a+b"c\d<e>f;g"#)]]), r#"CN=a\+b\"c\\d\<e\>f\;g"#, r#"CN=a\+b\"c\\d\<e\>f\;g"#),
            (cert(&[&[(CN, " #x# ")]]), r"CN=\ #x#\ ", r"CN=\ #x#\ "),
            (cert(&[&[(CN, "#x")]]), r"CN=\#x", r"CN=\#x"),
            (cert(&[&[(CN, "a\r\nX-Evil: 1")]]), r"CN=a\0D\0AX-Evil: 1", r"CN=a\0D\0AX-Evil: 1"),
            (cert(&[&[(CN, "a\0b\u{7f}")]]), r"CN=a\00b\7F", r"CN=a\00b\7F"),
            (cert(&[&[(CN, "Müller\u{202E}")]]), r"CN=Müller\E2\80\AE", r"CN=M\C3\BCller\E2\80\AE"),
            (cert(&[&[(CN, "svc"), (UID, "42")]]), "CN=svc+UID=42", "CN=svc+UID=42"),
            (
                cert(&[&[("1.2.3.4", "x")], &[("1.2.840.113549.1.9.1", "a@b")]]),
                "emailAddress=a@b,1.2.3.4=x",
                "emailAddress=a@b,1.2.3.4=x",
            ),
            (
                Dn { rdns: vec![Rdn(vec![Attribute { oid: CN.into(), value: Value::Der(vec![4, 1, 0x41]) }])] },
                "CN=#040141",
                "CN=#040141",
            ),
            (Dn::default(), "", ""),
        ];
        assert_eq!(escape_value("svc, O=Contoso"), r"svc\, O=Contoso");
        for (dn, unicode, ascii) in cases {
            assert_eq!(&dn.to_string(), unicode);
            assert_eq!(&dn.to_ascii_string(), ascii);
            assert!(http::HeaderValue::from_str(&dn.to_ascii_string()).is_ok(), "{ascii}");
            if !dn.rdns.is_empty() && !dn.to_string().contains('#') {
                assert_eq!(&Dn::parse(&dn.to_string()).unwrap(), dn, "{unicode} reads back");
                assert_eq!(&Dn::parse(&dn.to_ascii_string()).unwrap(), dn, "{ascii} reads back");
            }
        }
    }
}
