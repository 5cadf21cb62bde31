//! Value types of the YAML contract that parse inside `Deserialize`, so that a bad value is
//! reported at its own `file:line:column`: durations (`500ms`, `30s`, `10m`), sizes
//! (`16KiB`, `10MiB`) and secret references (`${env:NAME}`, `${file:path}`).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A string that remembers where it was written.
pub type Located = Spanned<String>;

/// A duration written as a number and a unit: `ms`, `s`, `m`, `h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ConfigDuration(pub Duration);

impl TryFrom<String> for ConfigDuration {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let hint = || format!("invalid duration {text:?}: write a whole number and a unit, like 500ms, 30s, 10m or 1h");
        let n: u64 = digits.parse().map_err(|_| hint())?;
        let duration = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(hint()),
        };
        Ok(Self(duration))
    }
}

impl std::str::FromStr for ConfigDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::try_from(text.to_owned())
    }
}

/// A size in bytes written with an optional binary unit: `512`, `16KiB`, `10MiB`, `1GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeText")]
pub struct ByteSize(pub u64);

/// YAML writes a bare number as an integer and `16KiB` as a string; both are accepted.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeText> for ByteSize {
    type Error = String;

    fn try_from(value: SizeText) -> Result<Self, Self::Error> {
        let text = match value {
            SizeText::Bytes(n) => return Ok(Self(n)),
            SizeText::Text(text) => text,
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let hint = || format!("invalid size {text:?}: write a whole number and a unit, like 512, 16KiB, 10MiB or 1GiB");
        let n: u64 = digits.parse().map_err(|_| hint())?;
        let scale: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(hint()),
        };
        n.checked_mul(scale).map(Self).ok_or_else(hint)
    }
}

/// A rate written as a count per unit: `30/s`, `100/min`, `1000/h`. The count is also the
/// burst a token bucket allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    /// Requests allowed per `per`, also the burst.
    pub count: std::num::NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl TryFrom<String> for Rate {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let hint = || format!("invalid rate {text:?}: write a count and a unit, like 30/s, 100/min or 1000/h");
        let (count, unit) = text.split_once('/').ok_or_else(hint)?;
        let count = count.trim().parse().map_err(|_| hint())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(hint()),
        };
        Ok(Self { count, per })
    }
}

/// A configuration value that is either written inline or read at load time from the
/// environment (`${env:NAME}`), a file (`${file:path}`, relative to the config file), a
/// systemd credential (`${credential:NAME}`) or the encrypted secret store (`${secret:NAME}`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum ValueRef {
    /// Written inline.
    Literal(String),
    /// `${env:NAME}`: an environment variable.
    Env(String),
    /// `${file:path}`: a file, relative to the configuration.
    File(String),
    /// `${credential:NAME}`: `$CREDENTIALS_DIRECTORY/NAME`, as systemd's `LoadCredential=` passes it.
    Credential(String),
    /// `${secret:NAME}`: a value of the secret store (resolved by the configuration's loader).
    Secret(String),
}

impl From<String> for ValueRef {
    fn from(text: String) -> Self {
        let inner = text.strip_prefix("${").and_then(|rest| rest.strip_suffix('}'));
        let Some((kind, name)) = inner.and_then(|r| r.split_once(':')) else { return Self::Literal(text) };
        match kind {
            "env" => Self::Env(name.to_owned()),
            "file" => Self::File(name.to_owned()),
            "credential" => Self::Credential(name.to_owned()),
            "secret" => Self::Secret(name.to_owned()),
            _ => Self::Literal(text),
        }
    }
}

impl ValueRef {
    /// Whether the value comes from outside the file and must be treated as a secret.
    pub fn is_secret(&self) -> bool {
        !matches!(self, Self::Literal(_))
    }

    /// Reads the value. A trailing newline of a file or credential is dropped. `${secret:}`
    /// needs the secret store: see `CompileContext::value`.
    ///
    /// # Errors
    /// The variable is unset, the file unreadable, or the value is a `${secret:}`; the
    /// message names which, never the value.
    pub fn resolve(&self, base_dir: &Path) -> Result<String, UnresolvedValue> {
        let read = |full: std::path::PathBuf| {
            std::fs::read_to_string(&full)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|source| UnresolvedValue::Unreadable { path: full, source })
        };
        match self {
            Self::Literal(text) => Ok(text.clone()),
            Self::Env(name) => std::env::var(name).map_err(|_| UnresolvedValue::Unset(name.clone())),
            Self::File(path) => read(base_dir.join(path)),
            Self::Credential(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) if !name.contains('/') => read(Path::new(&dir).join(name)),
                _ => Err(UnresolvedValue::NoCredentials(name.clone())),
            },
            Self::Secret(name) => Err(UnresolvedValue::NoSecretStore(name.clone())),
        }
    }
}

/// Replaces the `${env:NAME}` and `${file:path}` references in a URL-like value. A reference
/// that is the whole value is its value as is; one inside a longer value (a password in a
/// URL, say) is percent-encoded, so that any character is safe there.
///
/// # Errors
/// A reference has no value; the message names which, never a value.
pub fn expand_references(text: &str, base_dir: &Path) -> Result<String, UnresolvedValue> {
    let whole = ValueRef::from(text.to_owned());
    if whole.is_secret() && !text[2..].contains("${") {
        return whole.resolve(base_dir);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else { break };
        let reference = ValueRef::from(rest[start..=start + len].to_owned());
        out.push_str(&rest[..start]);
        match reference {
            ValueRef::Literal(literal) => out.push_str(&literal),
            other => {
                let value = other.resolve(base_dir)?;
                out.extend(percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC));
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Why a `${env:}` or `${file:}` reference has no value; never says what the value is.
#[derive(Debug, thiserror::Error)]
pub enum UnresolvedValue {
    /// The environment variable is not set.
    #[error("environment variable {0} is not set: export it before starting the gateway")]
    Unset(String),
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file, resolved.
        path: std::path::PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// `${credential:NAME}` outside systemd's credentials (or a name with a `/`).
    #[error("credential {0:?}: CREDENTIALS_DIRECTORY is not set; `${{credential:}}` works in a systemd unit with LoadCredential={0}:PATH")]
    NoCredentials(String),
    /// `${secret:NAME}` without a secret store.
    #[error("`${{secret:{0}}}` needs the secret store: add a `secrets` section with its master_key")]
    NoSecretStore(String),
    /// `${secret:NAME}` while the `secrets` section itself failed: that failure is the one
    /// message, and this one is dropped (see `CompileContext::finish`).
    #[error("the secret store is unusable (see its error)")]
    SecretStoreUnusable,
    /// `${secret:NAME}` names no secret.
    #[error("no secret named {0:?} in the secret store: `portcullis secrets set {0}` (the value on standard input)")]
    UnknownSecret(String),
}

/// Never prints a resolved value; only where it comes from.
impl fmt::Debug for ValueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(text) => write!(f, "{text:?}"),
            Self::Env(name) => write!(f, "${{env:{name}}}"),
            Self::File(path) => write!(f, "${{file:{path}}}"),
            Self::Credential(name) => write!(f, "${{credential:{name}}}"),
            Self::Secret(name) => write!(f, "${{secret:{name}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_whole_or_percent_encoded_inside_a_url() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "p@ss/w:rd\n").unwrap();
        std::fs::write(dir.path().join("url"), "postgres://u:p@db/x\n").unwrap();
        let expand = |text: &str| expand_references(text, dir.path()).map_err(|e| e.to_string());
        assert_eq!(expand("postgres://u:${file:pw}@db/x").unwrap(), "postgres://u:p%40ss%2Fw%3Ard@db/x");
        assert_eq!(expand("${file:url}").unwrap(), "postgres://u:p@db/x");
        assert_eq!(expand("sqlite:var/${x}.db").unwrap(), "sqlite:var/${x}.db", "not a reference: kept");
        let missing = expand("postgres://u:${env:PORTCULLIS_TEST_UNSET}@db/x").unwrap_err();
        assert!(missing.contains("PORTCULLIS_TEST_UNSET is not set"), "{missing}");
    }

    #[test]
    fn durations_parse_with_units() {
        let d = |s: &str| ConfigDuration::try_from(s.to_owned()).map(|d| d.0);
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert!(d("30").is_err());
        assert!(d("s").is_err());
        assert!(d("1.5s").is_err());
        assert!(d("-1s").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        let s = |t: &str| ByteSize::try_from(SizeText::Text(t.to_owned())).map(|b| b.0);
        assert_eq!(s("16KiB"), Ok(16 * 1024));
        assert_eq!(s("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(s("512"), Ok(512));
        assert!(s("10MB").is_err());
        assert!(s("99999999999999GiB").is_err());
    }

    #[test]
    fn rates_parse_with_units() {
        let r = |t: &str| Rate::try_from(t.to_owned()).map(|r| (r.count.get(), r.per.as_secs()));
        assert_eq!(r("30/s"), Ok((30, 1)));
        assert_eq!(r("100/min"), Ok((100, 60)));
        assert_eq!(r("5/h"), Ok((5, 3600)));
        assert!(r("0/s").is_err());
        assert!(r("10").is_err());
        assert!(r("10/day").is_err());
    }

    #[test]
    fn references_resolve_and_never_print_their_value() {
        std::env::set_var("PORTCULLIS_TEST_SECRET", "hunter2");
        let r = ValueRef::from("${env:PORTCULLIS_TEST_SECRET}".to_owned());
        assert!(r.is_secret());
        assert_eq!(r.resolve(Path::new(".")).unwrap(), "hunter2");
        assert!(!format!("{r:?}").contains("hunter2"));
        let missing = ValueRef::from("${env:PORTCULLIS_TEST_UNSET}".to_owned());
        assert!(missing.resolve(Path::new(".")).unwrap_err().to_string().contains("PORTCULLIS_TEST_UNSET"));
        assert_eq!(ValueRef::from("plain".to_owned()), ValueRef::Literal("plain".into()));
    }
}
