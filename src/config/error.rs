//! Configuration errors that point into the file, printed like a compiler:
//! `gateway.yaml:42:7: routes[1].policies[2]: unknown policy "jwt2"` and a hint below.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based; 0 when the position is unknown.
    pub line: u64,
    /// 1-based; 0 when the position is unknown.
    pub column: u64,
    /// Where in the document, like `routes[1].backend`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl ConfigError {
    /// An error at `at` in `file`, about the document path `path`.
    pub fn new(file: &Path, at: Location, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: at.line(),
            column: at.column(),
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// A YAML or shape error of `file`, at its location, with a hint.
    pub fn from_parse(file: &Path, error: &serde_saphyr::Error) -> Self {
        let at = error.location().unwrap_or(Location::UNKNOWN);
        let message = error.without_snippet().to_string();
        // The message ends with its own " at line L column C"; the location is printed in front.
        let message = message.split(" at line ").next().unwrap_or(&message).trim().to_owned();
        let hint = if message.contains("unknown field") {
            "remove the key or fix its spelling; the message lists the keys allowed here"
        } else if message.contains("invalid distinguished name") {
            crate::tls::dn::DN_HINT
        } else {
            "see the configuration reference in README.md"
        };
        Self::new(file, at, "", message).with_hint(hint)
    }

    /// The error with a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the hint of an error already reported.
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        // A message may quote what it read; a configured secret never shows.
        write!(f, ": {}", crate::redact::scrub(&self.message))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every error found in one pass over a configuration, in file order.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {error}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}
