//! What a route matches on: host patterns (exact or `*.domain`) and path patterns (any, a
//! segment-boundary prefix, or a template of literal, `{param}` and trailing `**` segments).

use std::sync::Arc;

use crate::policy::context::Params;

/// A compiled host pattern: exact, or `*.domain` for any subdomain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// This host exactly (lower-case).
    Exact(String),
    /// Holds `.domain`; matches `a.domain`, never `domain` or `evildomain`.
    Subdomain(String),
}

impl HostPattern {
    /// Reads a `hosts:` entry: `*.domain` or an exact name, case-insensitive.
    pub fn parse(text: &str) -> Self {
        let text = text.to_ascii_lowercase();
        match text.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') => Self::Subdomain(rest.to_owned()),
            _ => Self::Exact(text),
        }
    }

    /// Whether `host` (lower-case, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Subdomain(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// This text exactly.
    Literal(String),
    /// `{name}`: any one non-empty segment, captured under this name.
    Param(Arc<str>),
}

/// How a route matches the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// No path condition.
    Any,
    /// `path_prefix`: the path is this prefix or continues it after a `/`.
    Prefix(String),
    /// `path`: a template.
    Template {
        /// The segments before any `**`.
        segments: Vec<Segment>,
        /// A trailing `**`: any further segments, or none.
        rest: bool,
    },
}

/// What is wrong with a `path:` template.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template does not start with `/`.
    #[error("a path template must start with '/'")]
    NoLeadingSlash,
    /// `**` is not the last segment.
    #[error("'**' may only be the last segment")]
    RestNotLast,
    /// A `{}` segment with an empty or invalid name.
    #[error("invalid parameter {0:?}: write {{name}} with letters, digits or '_'")]
    Parameter(String),
    /// A segment with `{`, `}` or `*` that is not a parameter or a final `**`.
    #[error("invalid segment {0:?}: a segment is literal, {{name}} or a final '**'")]
    Segment(String),
}

impl PathMatch {
    /// Compiles a `path:` template.
    ///
    /// # Errors
    /// A template that does not start with `/`, an empty or malformed `{}` segment, or a
    /// `**` anywhere but at the end.
    pub fn template(text: &str) -> Result<Self, TemplateError> {
        let body = text.strip_prefix('/').ok_or(TemplateError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        let mut rest = false;
        let parts: Vec<&str> = if body.is_empty() { Vec::new() } else { body.split('/').collect() };
        for (i, part) in parts.iter().enumerate() {
            if *part == "**" {
                if i + 1 != parts.len() {
                    return Err(TemplateError::RestNotLast);
                }
                rest = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(TemplateError::Parameter((*part).to_owned()));
                }
                segments.push(Segment::Param(name.into()));
            } else if part.contains(['{', '}', '*']) {
                return Err(TemplateError::Segment((*part).to_owned()));
            } else {
                segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(Self::Template { segments, rest })
    }

    /// The names of the parameters the template captures (none for prefixes).
    pub fn params(&self) -> Vec<&str> {
        match self {
            Self::Template { segments, .. } => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(name) => Some(&**name),
                    Segment::Literal(_) => None,
                })
                .collect(),
            Self::Any | Self::Prefix(_) => Vec::new(),
        }
    }

    /// Whether the normalized `path` matches; captured parameters are pushed to `params`.
    pub fn matches(&self, path: &str, params: &mut Params) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(prefix) => {
                path.starts_with(prefix.as_str())
                    && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
            }
            Self::Template { segments, rest } => {
                let mut parts = path[1..].split('/');
                for segment in segments {
                    let Some(part) = parts.next() else {
                        return false;
                    };
                    match segment {
                        Segment::Literal(lit) if lit == part => {}
                        Segment::Param(name) if !part.is_empty() => params.push((name.clone(), part.to_owned())),
                        _ => return false,
                    }
                }
                match parts.next() {
                    None => true,
                    // A trailing slash after the last segment is the same resource.
                    Some("") => *rest || parts.next().is_none(),
                    Some(_) => *rest,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &PathMatch, path: &str) -> Option<Params> {
        let mut params = Params::new();
        pattern.matches(path, &mut params).then_some(params)
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let p = PathMatch::Prefix("/api".into());
        assert!(m(&p, "/api").is_some() && m(&p, "/api/x").is_some());
        assert!(m(&p, "/apix").is_none());
        let slash = PathMatch::Prefix("/api/".into());
        assert!(m(&slash, "/api/x").is_some() && m(&slash, "/api").is_none());
    }

    #[test]
    fn templates_capture_params_and_rest() {
        let t = PathMatch::template("/partners/accounts/{account}/cases/**").unwrap();
        let params = m(&t, "/partners/accounts/42/cases/7/notes").unwrap();
        assert_eq!(params, vec![(Arc::from("account"), "42".to_owned())]);
        assert!(m(&t, "/partners/accounts/42/cases").is_some());
        assert!(m(&t, "/partners/accounts//cases/x").is_none());
        assert!(m(&t, "/partners/accounts/42/other").is_none());
        let exact = PathMatch::template("/items/{id}").unwrap();
        assert!(m(&exact, "/items/1").is_some() && m(&exact, "/items/1/").is_some());
        assert!(m(&exact, "/items/1/x").is_none() && m(&exact, "/items").is_none());
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(PathMatch::template("items").is_err());
        assert!(PathMatch::template("/a/**/b").is_err());
        assert!(PathMatch::template("/a/{}").is_err());
        assert!(PathMatch::template("/a/x*").is_err());
    }

    #[test]
    fn subdomain_hosts_never_match_look_alikes() {
        let h = HostPattern::parse("*.example.com");
        assert!(h.matches("a.example.com"));
        assert!(!h.matches("example.com") && !h.matches("evilexample.com"));
    }
}
