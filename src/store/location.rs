//! Where a store lives, as a configuration or `--store` names it: `sqlite:PATH` or
//! `postgres://…`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::StoreError;
use super::postgres::{PgLocation, PostgresStorage};
use super::rules::Store;
use super::sqlite::SqliteStorage;

/// A store location that cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// A `${env:}` or `${file:}` reference in the location has no value.
    #[error("{0}")]
    Unresolved(String),
    /// The PostgreSQL URL is unusable.
    #[error("{0}")]
    Postgres(String),
    /// The location has no known scheme, or `sqlite:` has no path.
    #[error("{0:?} is not a store location; write sqlite:PATH or postgres://USER@HOST/DATABASE")]
    Unknown(String),
}

/// Where the store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file, already resolved against the configuration file's directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every instance that names it.
    Postgres(Box<PgLocation>),
}

impl StoreLocation {
    /// Parses `sqlite:PATH` or `postgres://…` (`postgresql://…`); relative paths are taken
    /// from `dir`. `${env:NAME}` and `${file:path}` are replaced by their values: the whole
    /// location, or a part of a URL such as the password (percent-encoded there).
    ///
    /// # Errors
    /// An unresolved reference, an unusable URL, another scheme or an empty path.
    pub fn parse(written: &str, dir: &Path) -> Result<Self, LocationError> {
        let text = crate::config::values::expand_references(written, dir)
            .map_err(|e| LocationError::Unresolved(e.to_string()))?;
        match text.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => Ok(Self::Sqlite(dir.join(path))),
            Some(("postgres" | "postgresql", _)) => {
                PgLocation::parse(&text, dir).map(|l| Self::Postgres(Box::new(l))).map_err(LocationError::Postgres)
            }
            // As written: a referenced value may be a secret.
            _ => Err(LocationError::Unknown(written.to_owned())),
        }
    }

    /// Opens (and creates or migrates) the store. A PostgreSQL store keeps no connection
    /// from opening: each is made later on the runtime of the call that needs it.
    ///
    /// # Errors
    /// See [`SqliteStorage::open`] and [`PostgresStorage::open`].
    pub async fn open(&self) -> Result<Store, StoreError> {
        match self {
            // Local file work, done once: fine on the opener's thread.
            Self::Sqlite(path) => {
                let (storage, key) = SqliteStorage::open(path)?;
                Ok(Store::new(Arc::new(storage), &key))
            }
            Self::Postgres(location) => {
                let (storage, key) = PostgresStorage::open(location).await?;
                Ok(Store::new(Arc::new(storage), &key))
            }
        }
    }
}
