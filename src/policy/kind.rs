//! What a policy kind is: the [`PolicyKind`] contract each kind's file implements, the
//! [`Decision`] its request side returns, and [`policy_kinds!`], which turns the one
//! registration line per kind (in `policy/kinds.rs`) into everything that dispatches on
//! kinds: `Policy` and its `match`es, the YAML `PolicyConfig` with its exactly-one-kind check
//! and compile dispatch, and `Denial` with its `label` and `problem`.
//!
//! Dispatch is static: each `match` arm calls one concrete type, so the chain's future stays
//! `Send` without boxing. A kind decides in its own refusal type; the generated `Policy::check`
//! turns it into a `Denial`, so no kind's file names every other kind.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};
use http::request::Parts;
use http::Response;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_saphyr::Location;

use super::context::RequestContext;
use crate::body::Body;
use crate::config::context::{CompileContext, Invalid};
use crate::telemetry::metrics::Fault;

/// Whether a policy's denials stop the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    /// Denials stop the request (the default).
    Enforce,
    /// Decide, log and count, but let the request through.
    Report,
}

/// What a policy decided about one request; `R` is why it refused (a kind's own `Refusal`,
/// or, once the chain has it, a `Denial`).
pub enum Decision<R> {
    /// Go on to the next policy, then the backend.
    Continue,
    /// Go on: the named rule of the policy granted the request.
    Granted(Arc<str>),
    /// Answer now with this response (not a refusal: e.g. a CORS preflight).
    Answer(Response<Body>),
    /// Refuse the request for this reason.
    Deny(R),
}

impl<R> From<Result<(), R>> for Decision<R> {
    fn from(result: Result<(), R>) -> Self {
        match result {
            Ok(()) => Self::Continue,
            Err(refusal) => Self::Deny(refusal),
        }
    }
}

impl<R> Decision<R> {
    /// The same decision, with the refusal turned into `D`.
    pub fn refused_as<D: From<R>>(self) -> Decision<D> {
        match self {
            Self::Continue => Decision::Continue,
            Self::Granted(rule) => Decision::Granted(rule),
            Self::Answer(rsp) => Decision::Answer(rsp),
            Self::Deny(refusal) => Decision::Deny(refusal.into()),
        }
    }
}

/// Whose fault a refusal is, for `portcullis_errors_total{fault}`: the request's, which a
/// policy refused (the default), or the gateway's, which could not decide (keys not loaded
/// yet, a shared store down).
pub trait Blame: Copy {
    /// `Fault::Policy` unless the gateway could not decide.
    fn fault(self) -> Fault {
        Fault::Policy
    }
}

impl Blame for std::convert::Infallible {}

/// One kind of policy: its YAML contract, its compilation and its request and response sides.
/// Only `Config`, `Refusal`, `compile` and `check` are required; the rest default to "does
/// nothing".
pub trait PolicyKind: Sized {
    /// The kind's section as written in YAML.
    type Config: DeserializeOwned + Debug;

    /// Why it refuses a request; [`std::convert::Infallible`] for a kind that never does.
    type Refusal: Blame;

    /// Compiles the section; reports every problem through `cx`.
    ///
    /// # Errors
    /// [`Invalid`] once a problem was reported.
    fn compile(cfg: &Self::Config, cx: &mut CompileContext) -> Result<Self, Invalid>;

    /// The request side: decides, and may edit the request or leave facts in `cx`.
    fn check(
        &self,
        parts: &mut Parts,
        cx: &mut RequestContext<'_>,
    ) -> impl Future<Output = Decision<Self::Refusal>> + Send;

    /// The response side, also on answers and denials the gateway produced.
    fn on_response(&self, _cx: &RequestContext<'_>, _headers: &mut HeaderMap) {}

    /// Whether it reads token claims, so a `jwt` policy must run before it.
    fn reads_claims(&self) -> bool {
        false
    }

    /// Request headers it sets, which clients may therefore never send.
    fn forwarded_headers(&self) -> Vec<&HeaderName> {
        Vec::new()
    }

    /// Whether it can decide (a `jwt` policy needs its keys).
    fn is_ready(&self) -> bool {
        true
    }

    /// Starts background work. Needs a tokio runtime.
    fn start(&self) {}
}

/// Compiles one kind's section of the policy `name` (written at `at`), under the document path
/// `policies.{name}.{kind}`; its errors without a hint point to the kind's README section.
pub(super) fn compile_kind<K: PolicyKind>(
    kind: &str,
    cfg: &K::Config,
    name: &str,
    at: Location,
    cx: &mut CompileContext,
) -> Result<K, Invalid> {
    let mark = cx.mark();
    cx.enter(name, format!("policies.{name}.{kind}"), at);
    let compiled = K::compile(cfg, cx);
    cx.hint_since(mark, &format!("see the {kind} section of README.md"));
    compiled
}

/// Reports a policy written with no kind or several.
pub(super) fn exactly_one_kind(kinds: &[&str], name: &str, at: Location, cx: &mut CompileContext) -> Invalid {
    cx.error(at, format!("policies.{name}"), "a policy has exactly one kind")
        .hint(format!("one of {}; write several policies to combine them", kinds.join(", ")));
    Invalid
}

/// Declares the closed set of policy kinds, one line each:
/// `kind_name => Variant(module::Type) refused by module::Refusal,` (the `refused by` part only
/// for kinds that refuse; it names the type's `PolicyKind::Refusal`, which has
/// `label(self) -> &'static str` and `problem(self) -> Problem` and says its [`Blame`]). The
/// kind's name is written once; a doc comment before the line documents the variant.
macro_rules! policy_kinds {
    ($(
        $(#[doc = $doc:literal])*
        $kind:ident => $variant:ident($ty:ty) $(refused by $refusal:ty)?
    ),+ $(,)?) => {
        /// The closed set of policy kinds.
        // Each policy exists once, behind an `Arc`; boxing variants would only add a pointer hop.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum Policy {
            $( $(#[doc = $doc])* $variant($ty), )+
        }

        impl Policy {
            /// Every kind's name as written in configuration, in registration order.
            pub const KINDS: &'static [&'static str] = &[$(stringify!($kind)),+];

            /// The kind's name as written in configuration.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => stringify!($kind), )+
                }
            }

            /// Whether the policy reads token claims, so a `jwt` policy must run before it.
            pub fn reads_claims(&self) -> bool {
                match self {
                    $( Self::$variant(p) => <$ty as $crate::policy::kind::PolicyKind>::reads_claims(p), )+
                }
            }

            /// Request headers this policy sets, which clients may therefore never send.
            pub fn forwarded_headers(&self) -> Vec<&http::HeaderName> {
                match self {
                    $( Self::$variant(p) => <$ty as $crate::policy::kind::PolicyKind>::forwarded_headers(p), )+
                }
            }

            /// Whether the policy can decide (a `jwt` policy needs its keys).
            pub fn is_ready(&self) -> bool {
                match self {
                    $( Self::$variant(p) => <$ty as $crate::policy::kind::PolicyKind>::is_ready(p), )+
                }
            }

            /// Starts background work (a `jwt` policy's key refresh). Needs a tokio runtime.
            pub fn start(&self) {
                match self {
                    $( Self::$variant(p) => <$ty as $crate::policy::kind::PolicyKind>::start(p), )+
                }
            }

            /// The request side of one policy.
            pub async fn check(
                &self,
                parts: &mut http::request::Parts,
                cx: &mut $crate::policy::context::RequestContext<'_>,
            ) -> $crate::policy::kind::Decision<Denial> {
                match self {
                    $( Self::$variant(p) => {
                        <$ty as $crate::policy::kind::PolicyKind>::check(p, parts, cx).await.refused_as()
                    } )+
                }
            }

            /// The response side of one policy.
            pub fn on_response(
                &self,
                cx: &$crate::policy::context::RequestContext<'_>,
                rsp: &mut http::Response<$crate::body::Body>,
            ) {
                match self {
                    $( Self::$variant(p) => {
                        <$ty as $crate::policy::kind::PolicyKind>::on_response(p, cx, rsp.headers_mut())
                    } )+
                }
            }
        }

        /// One named policy as written in YAML: exactly one kind, plus the common `mode`.
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct PolicyConfig {
            /// Whether its denials stop the request.
            #[serde(default)]
            pub mode: $crate::policy::kind::PolicyMode,
            $(
                #[doc = concat!("The `", stringify!($kind), "` section.")]
                pub $kind: Option<<$ty as $crate::policy::kind::PolicyKind>::Config>,
            )+
        }

        impl PolicyConfig {
            /// Compiles the policy `name` (written at `at`) of exactly one kind.
            ///
            /// # Errors
            /// [`Invalid`]($crate::config::context::Invalid) once a problem was reported: no kind
            /// or several, or the kind's own.
            pub fn compile(
                &self,
                name: &str,
                at: serde_saphyr::Location,
                cx: &mut $crate::config::context::CompileContext,
            ) -> Result<Policy, $crate::config::context::Invalid> {
                let written = [$( self.$kind.is_some() ),+];
                if written.iter().filter(|w| **w).count() != 1 {
                    return Err($crate::policy::kind::exactly_one_kind(Policy::KINDS, name, at, cx));
                }
                $(
                    if let Some(cfg) = &self.$kind {
                        return $crate::policy::kind::compile_kind::<$ty>(stringify!($kind), cfg, name, at, cx)
                            .map(Policy::$variant);
                    }
                )+
                unreachable!("exactly one kind was checked above")
            }
        }

        /// The exact cause of a refusal. The client only sees [`Denial::problem`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Denial {
            $($(
                #[doc = concat!("Refused by a `", stringify!($kind), "` policy.")]
                $variant($refusal),
            )?)+
        }

        // A kind that never refuses decides with `Infallible`.
        impl From<std::convert::Infallible> for Denial {
            fn from(never: std::convert::Infallible) -> Self {
                match never {}
            }
        }

        $($(
            impl From<$refusal> for Denial {
                fn from(refusal: $refusal) -> Self {
                    Self::$variant(refusal)
                }
            }
        )?)+

        impl Denial {
            /// The reason, like `expired` or `origin_not_allowed`, for logs, metrics and `trace`.
            pub fn label(self) -> &'static str {
                match self {
                    $($( Self::$variant(r) => <$refusal>::label(r), )?)+
                }
            }

            /// The RFC 9457 answer; it names no policy internals.
            pub fn problem(self) -> $crate::problem::Problem {
                match self {
                    $($( Self::$variant(r) => <$refusal>::problem(r), )?)+
                }
            }

            /// Whose fault the refusal is: the request's, or the gateway's when it could not decide.
            pub fn fault(self) -> $crate::telemetry::metrics::Fault {
                match self {
                    $($( Self::$variant(r) => <$refusal as $crate::policy::kind::Blame>::fault(r), )?)+
                }
            }
        }
    };
}

pub(crate) use policy_kinds;
