//! Configuration values and what compiling works with: the value types ([`values`]), errors
//! that point into the file ([`error`]) and the context every part compiles with
//! ([`context`]). The YAML contract and its compiler sit higher up, in `crate::compile`, so
//! policies and stores can take their settings from here without reaching above themselves.

pub mod context;
pub mod error;
pub mod values;

pub use error::{ConfigError, ConfigErrors};
