//! Configuration: the YAML contract ([`raw`]), its value types ([`values`]), errors that
//! point into the file ([`error`]), what every part compiles with ([`context`]) and the
//! compiler that turns a file into a [`Runtime`] ([`compile`], one file per section). Loading builds everything (certificates, keys, routes, backends) without
//! binding a port, so `check` and a reload see exactly what `run` would.
//!
//! [`Runtime`]: crate::runtime::Runtime

pub mod compile;
pub mod context;
pub mod error;
pub mod raw;
pub mod values;

pub use compile::{load, Loaded};
pub use error::{ConfigError, ConfigErrors};
