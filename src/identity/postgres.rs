//! The shared PostgreSQL [`IdentityStore`], for several gateway instances: a pool of
//! `tokio-postgres` connections (deadpool), versioned migrations applied by exactly one
//! starting instance (a transaction holding an advisory lock), every query parameterized,
//! and the audit table append-only in the database itself (triggers refuse UPDATE, DELETE
//! and TRUNCATE, whoever sends them).
//!
//! One pool serves both sides: the token endpoint's lookup is awaited on the gateway's event
//! loop; the blocking calls (the CLI, configuration loading) run on the store's own small
//! runtime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::secret::{random_bytes, SecretHash, SecretHasher};
use super::store::{
    check_id, check_scopes, now, parse_scopes, scopes_column, scopes_shown, AuditEntry, Client, IdentityStore, Link,
    LinkRef, Lookup, Reseal, SealedSecret, SecretSlot, StoreError, StoreFuture, System, User, KEY_CHECK, LINK_COLUMNS,
    SYSTEM_COLUMNS, USER_COLUMNS, WRONG_KEY,
};

/// Schema migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE systems (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    active             BOOLEAN NOT NULL,
    primary_hash       BYTEA NOT NULL,
    alternate_hash     BYTEA NOT NULL,
    created_at         BIGINT NOT NULL,
    secrets_renewed_at BIGINT
);
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    roles      TEXT NOT NULL,
    active     BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE links (
    system_id     TEXT NOT NULL REFERENCES systems(id),
    external_user TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (system_id, external_user),
    UNIQUE (system_id, user_id)
);
CREATE TABLE audit (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    system_id TEXT,
    user_id   TEXT,
    detail    TEXT
);
CREATE FUNCTION portcullis_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION portcullis_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION portcullis_audit_append_only();
",
    r"
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    sealed     BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    used_at    BIGINT
);
ALTER TABLE systems ADD COLUMN primary_used_at BIGINT;
ALTER TABLE systems ADD COLUMN alternate_used_at BIGINT;
",
    // Scopes granted per system; existing systems are granted none (see the SQLite store).
    r"
ALTER TABLE systems ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
",
];

/// The advisory lock that serializes migrations across instances ("portcull" in ASCII).
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;
/// What a token request reads, in one round trip: no row for an unknown system (its granted
/// scopes come in its row); the user columns are NULL when no external user was named or
/// none is linked.
const LOOKUP_SQL: &str = "SELECT s.active, s.primary_hash, s.alternate_hash, s.scopes, \
     u.id, u.roles, u.active, u.created_at \
     FROM systems s LEFT JOIN links l ON l.system_id = s.id AND l.external_user = $2 \
     LEFT JOIN users u ON u.id = l.user_id WHERE s.id = $1";
/// Connections per store.
const POOL_SIZE: usize = 16;
/// How long a call may wait for a connection, or for the server to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where a PostgreSQL store is: a `postgres://` URL (libpq's form), with the TLS parameters
/// `sslmode` and `sslrootcert` read here. With TLS the server's certificate is always
/// verified, against `sslrootcert` when given, else the system's roots.
#[derive(Clone)]
pub struct PgLocation {
    config: tokio_postgres::Config,
    /// The CA file for the server's certificate, resolved against the configuration's directory.
    roots: Option<PathBuf>,
    /// `postgres://user@host:port/db`, for messages: never the password.
    shown: String,
}

impl PartialEq for PgLocation {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.roots == other.roots
    }
}

impl Eq for PgLocation {}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgLocation {
    /// Parses a `postgres://` or `postgresql://` URL; `sslrootcert` is taken from `dir`. The
    /// password comes from the URL, else from `PGPASSWORD` as libpq does.
    ///
    /// # Errors
    /// Says what is wrong with the URL; never repeats it (it may hold a password).
    pub fn parse(url: &str, dir: &Path) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl_mode = SslMode::Prefer;
        let mut roots = None;
        let mut rest = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "sslmode" => {
                    ssl_mode = match &*value {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" | "verify-ca" | "verify-full" => SslMode::Require,
                        other => {
                            return Err(format!(
                                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                            ))
                        }
                    }
                }
                "sslrootcert" => roots = Some(dir.join(&*value)),
                _ => {
                    rest.append_pair(&key, &value);
                }
            }
        }
        let rest = rest.finish();
        let cleaned = if rest.is_empty() { base.to_owned() } else { format!("{base}?{rest}") };
        let mut config: tokio_postgres::Config =
            cleaned.parse().map_err(|e| format!("not a usable PostgreSQL URL: {e}"))?;
        let Some(user) = config.get_user().map(str::to_owned) else {
            return Err("the PostgreSQL URL names no user: write postgres://USER@HOST/DATABASE".to_owned());
        };
        if config.get_hosts().is_empty() {
            return Err("the PostgreSQL URL names no host: write postgres://USER@HOST/DATABASE".to_owned());
        }
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("portcullis");
        }
        config.ssl_mode(ssl_mode);
        let host = match &config.get_hosts()[0] {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config.get_dbname().unwrap_or(&user).to_owned();
        Ok(Self { shown: format!("postgres://{user}@{host}:{port}/{db}"), config, roots })
    }
}

/// Runs `$body` (a block using the transaction `$tx`, yielding a `Result`) on the store's
/// runtime in one transaction, committed when it yields `Ok`.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:block) => {
        $store.block_on(async {
            let mut client = $store.pool.get().await.map_err(pool_error)?;
            let $tx = client.transaction().await.map_err(backend)?;
            let out = async { $body }.await?;
            $tx.commit().await.map_err(backend)?;
            Ok(out)
        })
    };
}

/// What an active flag belongs to.
#[derive(Clone, Copy)]
enum Entity {
    System,
    User,
}

/// An [`IdentityStore`] in one PostgreSQL database, shared by every instance that names it.
pub struct PostgresStore {
    /// Drives the pool's connections; shut down in the background when the store is dropped
    /// (which may happen on an event loop, where a runtime cannot be dropped).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    hasher: SecretHasher,
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("location", &self.shown).finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return StoreError::Backend(db.message().to_owned());
    }
    // Like `error performing TLS handshake: invalid peer certificate: UnknownIssuer`.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    StoreError::Backend(detail)
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => backend(e),
        other => StoreError::Backend(format!("no database connection: {other}")),
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PostgresStore {
    /// Connects, applies pending migrations (one instance at a time) and reads the store's
    /// secret-hashing key, creating it with the schema.
    ///
    /// # Errors
    /// The server cannot be reached or refuses the login, the CA file is unusable, or the
    /// schema is newer than this build.
    pub fn open(location: &PgLocation) -> Result<Self, StoreError> {
        let shown = location.shown.clone();
        let fail = |e: String| StoreError::Backend(format!("{shown}: {e}"));
        let tls = tls_connector(location).map_err(fail)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("portcullis-postgres")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the store's threads: {e}")))?;
        let manager = Manager::from_config(
            location.config.clone(),
            tls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut store = Self { runtime: Some(runtime), pool, hasher: SecretHasher::new(&[]), shown: shown.clone() };
        let key = store
            .block_on(async {
                let mut client = store.pool.get().await.map_err(pool_error)?;
                migrate(&mut client).await
            })
            .map_err(|e| match e {
                StoreError::Backend(detail) => fail(detail),
                other => fail(other.to_string()),
            })?;
        store.hasher = SecretHasher::new(&key);
        tracing::debug!(store = %shown, "identity store opened");
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the store")
    }

    /// Runs `work` to completion on the store's runtime, blocking this thread. On a thread
    /// of another runtime (where blocking on a runtime is refused) it waits from a helper
    /// thread; only the CLI and configuration loading get here.
    fn block_on<T: Send>(&self, work: impl Future<Output = T> + Send) -> T {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.runtime().block_on(work);
        }
        std::thread::scope(|s| {
            s.spawn(|| self.runtime().block_on(work)).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Every row `sql` selects with `params`, mapped by `row`.
    fn rows<T: Send>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        row: impl Fn(&Row) -> Result<T, tokio_postgres::Error> + Send + Sync,
    ) -> Result<Vec<T>, StoreError> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(sql).await.map_err(backend)?;
            let rows = client.query(&statement, params).await.map_err(backend)?;
            rows.iter().map(&row).collect::<Result<_, _>>().map_err(backend)
        })
    }

    /// Sets the active flag of one system or user, with its audit entry.
    fn set_active(&self, entity: Entity, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        let (sql, what, system, user) = match entity {
            Entity::System => ("UPDATE systems SET active = $2 WHERE id = $1", "system", Some(id), None),
            Entity::User => ("UPDATE users SET active = $2 WHERE id = $1", "user", None, Some(id)),
        };
        let action = format!("{what}.{}", if active { "activate" } else { "deactivate" });
        in_transaction!(self, |tx| {
            if tx.execute(sql, &[&id, &active]).await.map_err(backend)? == 0 {
                return Err(StoreError::NotFound(format!("{what} {id:?}")));
            }
            audit(&tx, actor, &action, system, user, None).await
        })
    }
}

/// The TLS connector for `location`: its CA file, else the system's roots.
fn tls_connector(location: &PgLocation) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let roots = match &location.roots {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("sslrootcert: cannot read {}: {e}", path.display()))?;
            crate::tls::Roots::Only(crate::tls::parse_certs(&pem, path).map_err(|e| format!("sslrootcert: {e}"))?)
        }
        None => crate::tls::Roots::System,
    };
    let config = crate::tls::client_config(roots, None).map_err(|e| format!("sslrootcert: {e}"))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone()))
}

/// Applies pending migrations while holding the migration lock, so that instances starting
/// together apply each exactly once; returns the secret-hashing key (made with the schema).
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<Vec<u8>, StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS portcullis_schema (version INTEGER NOT NULL)")
        .await
        .map_err(backend)?;
    let version: i32 = match tx.query_opt("SELECT version FROM portcullis_schema", &[]).await.map_err(backend)? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO portcullis_schema (version) VALUES (0)", &[]).await.map_err(backend)?;
            0
        }
    };
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the database schema is version {version}, newer than this portcullis knows ({}); upgrade portcullis",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await.map_err(|e| StoreError::Backend(format!("migration {}: {e}", i + 1)))?;
        let next = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE portcullis_schema SET version = $1", &[&next]).await.map_err(backend)?;
        tracing::info!(version = i + 1, "identity store migrated");
    }
    let fresh = random_bytes::<32>().to_vec();
    tx.execute("INSERT INTO meta (key, value) VALUES ('secret_hash_key', $1) ON CONFLICT DO NOTHING", &[&fresh])
        .await
        .map_err(backend)?;
    let key: Vec<u8> =
        tx.query_one("SELECT value FROM meta WHERE key = 'secret_hash_key'", &[]).await.map_err(backend)?.get(0);
    tx.commit().await.map_err(backend)?;
    Ok(key)
}

async fn audit(
    tx: &deadpool_postgres::Transaction<'_>,
    actor: &str,
    action: &str,
    system_id: Option<&str>,
    user_id: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO audit (at, actor, action, system_id, user_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(backend)?;
    tx.execute(&statement, &[&now(), &actor, &action, &system_id, &user_id, &detail]).await.map_err(backend)?;
    Ok(())
}

fn system_row(row: &Row) -> Result<System, tokio_postgres::Error> {
    Ok(System {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        active: row.try_get(2)?,
        created_at: row.try_get(3)?,
        secrets_renewed_at: row.try_get(4)?,
        primary_used_at: row.try_get(5)?,
        alternate_used_at: row.try_get(6)?,
        scopes: parse_scopes(row.try_get(7)?),
    })
}

/// The user in columns `i` to `i + 3` (id, roles, active, created_at).
fn user_at(row: &Row, i: usize) -> Result<User, tokio_postgres::Error> {
    let roles: String = row.try_get(i + 1)?;
    Ok(User {
        id: row.try_get(i)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        active: row.try_get(i + 2)?,
        created_at: row.try_get(i + 3)?,
    })
}

fn user_row(row: &Row) -> Result<User, tokio_postgres::Error> {
    user_at(row, 0)
}

fn link_row(row: &Row) -> Result<Link, tokio_postgres::Error> {
    Ok(Link {
        system_id: row.try_get(0)?,
        external_user: row.try_get(1)?,
        user_id: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

impl IdentityStore for PostgresStore {
    fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    fn create_system(
        &self,
        name: &str,
        primary: &SecretHash,
        alternate: &SecretHash,
        scopes: &[String],
        actor: &str,
    ) -> Result<System, StoreError> {
        let system = System { scopes: check_scopes(scopes)?, ..System::new(name)? };
        let column = scopes_column(&system.scopes);
        in_transaction!(self, |tx| {
            tx.execute(
                "INSERT INTO systems (id, name, active, primary_hash, alternate_hash, created_at, scopes) \
                 VALUES ($1, $2, TRUE, $3, $4, $5, $6)",
                &[&system.id, &system.name, &primary.0, &alternate.0, &system.created_at, &column],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("a system named {name:?} exists"))
                } else {
                    backend(e)
                }
            })?;
            let detail = format!("name={name} scopes={}", scopes_shown(&system.scopes));
            audit(&tx, actor, "system.create", Some(&system.id), None, Some(&detail)).await?;
            Ok(system.clone())
        })
    }

    fn systems(&self) -> Result<Vec<System>, StoreError> {
        self.rows(&format!("SELECT {SYSTEM_COLUMNS} FROM systems ORDER BY created_at, name"), &[], system_row)
    }

    fn system(&self, id: &str) -> Result<Option<System>, StoreError> {
        let sql = format!("SELECT {SYSTEM_COLUMNS} FROM systems WHERE id = $1");
        Ok(self.rows(&sql, &[&id], system_row)?.pop())
    }

    fn set_system_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        self.set_active(Entity::System, id, active, actor)
    }

    fn set_system_scopes(&self, id: &str, scopes: &[String], actor: &str) -> Result<Vec<String>, StoreError> {
        let scopes = check_scopes(scopes)?;
        let column = scopes_column(&scopes);
        in_transaction!(self, |tx| {
            let Some(row) =
                tx.query_opt("SELECT scopes FROM systems WHERE id = $1 FOR UPDATE", &[&id]).await.map_err(backend)?
            else {
                return Err(StoreError::NotFound(format!("system {id:?}")));
            };
            let old = parse_scopes(row.try_get(0).map_err(backend)?);
            tx.execute("UPDATE systems SET scopes = $2 WHERE id = $1", &[&id, &column]).await.map_err(backend)?;
            let detail = format!("scopes={} was={}", scopes_shown(&scopes), scopes_shown(&old));
            audit(&tx, actor, "system.scopes", Some(id), None, Some(&detail)).await?;
            Ok(old)
        })
    }

    fn renew_secret(&self, id: &str, new_alternate: &SecretHash, actor: &str) -> Result<(), StoreError> {
        in_transaction!(self, |tx| {
            let changed = tx
                .execute(
                    "UPDATE systems SET primary_hash = alternate_hash, alternate_hash = $2, secrets_renewed_at = $3, \
                     primary_used_at = alternate_used_at, alternate_used_at = NULL WHERE id = $1",
                    &[&id, &new_alternate.0, &now()],
                )
                .await
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("system {id:?}")));
            }
            audit(&tx, actor, "system.renew_secret", Some(id), None, None).await
        })
    }

    fn add_user(&self, id: &str, roles: &[String], actor: &str) -> Result<User, StoreError> {
        let user = User::new(id, roles)?;
        let roles_json = serde_json::to_string(roles).map_err(|e| StoreError::Backend(e.to_string()))?;
        in_transaction!(self, |tx| {
            tx.execute(
                "INSERT INTO users (id, roles, active, created_at) VALUES ($1, $2, TRUE, $3)",
                &[&user.id, &roles_json, &user.created_at],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("user {id:?} exists"))
                } else {
                    backend(e)
                }
            })?;
            audit(&tx, actor, "user.add", None, Some(id), Some(&format!("roles={}", roles.join(",")))).await?;
            Ok(user.clone())
        })
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.rows(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"), &[], user_row)
    }

    fn set_user_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        self.set_active(Entity::User, id, active, actor)
    }

    fn link(&self, system_id: &str, external_user: &str, user_id: &str, actor: &str) -> Result<(), StoreError> {
        check_id("external user id", external_user)?;
        in_transaction!(self, |tx| {
            if tx.query_opt("SELECT 1 FROM systems WHERE id = $1", &[&system_id]).await.map_err(backend)?.is_none() {
                return Err(StoreError::NotFound(format!("system {system_id:?}")));
            }
            if tx.query_opt("SELECT 1 FROM users WHERE id = $1", &[&user_id]).await.map_err(backend)?.is_none() {
                return Err(StoreError::NotFound(format!("user {user_id:?}")));
            }
            tx.execute(
                "INSERT INTO links (system_id, external_user, user_id, created_at) VALUES ($1, $2, $3, $4)",
                &[&system_id, &external_user, &user_id, &now()],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!(
                        "system {system_id:?} already links external user {external_user:?} or user {user_id:?}; unlink first"
                    ))
                } else {
                    backend(e)
                }
            })?;
            let detail = format!("external_user={external_user}");
            audit(&tx, actor, "system.link", Some(system_id), Some(user_id), Some(&detail)).await
        })
    }

    fn unlink(&self, system_id: &str, link: LinkRef<'_>, actor: &str) -> Result<Link, StoreError> {
        let (sql, value) = match link {
            LinkRef::ExternalUser(ext) => {
                (format!("DELETE FROM links WHERE system_id = $1 AND external_user = $2 RETURNING {LINK_COLUMNS}"), ext)
            }
            LinkRef::User(user) => {
                (format!("DELETE FROM links WHERE system_id = $1 AND user_id = $2 RETURNING {LINK_COLUMNS}"), user)
            }
        };
        in_transaction!(self, |tx| {
            let found = match tx.query_opt(&sql, &[&system_id, &value]).await.map_err(backend)? {
                Some(row) => link_row(&row).map_err(backend)?,
                None => return Err(StoreError::NotFound(format!("a link of system {system_id:?} with {value:?}"))),
            };
            let detail = format!("external_user={}", found.external_user);
            audit(&tx, actor, "system.unlink", Some(system_id), Some(&found.user_id), Some(&detail)).await?;
            Ok(found)
        })
    }

    fn links(&self, system_id: &str) -> Result<Vec<Link>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM links WHERE system_id = $1 ORDER BY external_user");
        self.rows(&sql, &[&system_id], link_row)
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT seq, at, actor, action, system_id, user_id, detail FROM audit ORDER BY seq";
        self.rows(sql, &[], |row| {
            Ok(AuditEntry {
                seq: row.try_get(0)?,
                at: row.try_get(1)?,
                actor: row.try_get(2)?,
                action: row.try_get(3)?,
                system_id: row.try_get(4)?,
                user_id: row.try_get(5)?,
                detail: row.try_get(6)?,
            })
        })
    }

    fn lookup<'a>(&'a self, system_id: &'a str, external_user: Option<&'a str>) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(LOOKUP_SQL).await.map_err(backend)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&system_id, &external_user];
            let Some(row) = tokio::time::timeout(TIMEOUT, client.query_opt(&statement, &params))
                .await
                .map_err(|_| StoreError::Backend(format!("no answer within {TIMEOUT:?}")))?
                .map_err(backend)?
            else {
                return Ok(Lookup::default());
            };
            let client = Client {
                active: row.try_get(0).map_err(backend)?,
                primary: SecretHash(row.try_get(1).map_err(backend)?),
                alternate: SecretHash(row.try_get(2).map_err(backend)?),
                scopes: parse_scopes(row.try_get(3).map_err(backend)?),
            };
            let linked = row.try_get::<_, Option<String>>(4).map_err(backend)?.is_some();
            let user = if linked { Some(user_at(&row, 4).map_err(backend)?) } else { None };
            Ok(Lookup { client: Some(client), user })
        })
    }

    fn secret_used<'a>(&'a self, system_id: &'a str, slot: SecretSlot, minute: i64) -> StoreFuture<'a, ()> {
        let sql = match slot {
            SecretSlot::Primary => {
                "UPDATE systems SET primary_used_at = $2 WHERE id = $1 AND (primary_used_at IS NULL OR primary_used_at < $2)"
            }
            SecretSlot::Alternate => {
                "UPDATE systems SET alternate_used_at = $2 WHERE id = $1 AND (alternate_used_at IS NULL OR alternate_used_at < $2)"
            }
        };
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(sql).await.map_err(backend)?;
            client.execute(&statement, &[&system_id, &minute]).await.map(drop).map_err(backend)
        })
    }

    fn secrets(&self) -> Result<Vec<SealedSecret>, StoreError> {
        let sql = "SELECT name, sealed, created_at, updated_at, used_at FROM secrets ORDER BY name";
        self.rows(sql, &[], |row| {
            Ok(SealedSecret {
                name: row.try_get(0)?,
                sealed: row.try_get(1)?,
                created_at: row.try_get(2)?,
                updated_at: row.try_get(3)?,
                used_at: row.try_get(4)?,
            })
        })
    }

    fn secrets_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.rows("SELECT value FROM meta WHERE key = $1", &[&KEY_CHECK], |row| row.try_get(0))?.pop())
    }

    fn put_secret(&self, name: &str, sealed: &[u8], key_check: &[u8], actor: &str) -> Result<(), StoreError> {
        check_id("secret name", name)?;
        in_transaction!(self, |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&KEY_CHECK, &key_check],
            )
            .await
            .map_err(backend)?;
            let current: Vec<u8> = tx
                .query_one("SELECT value FROM meta WHERE key = $1 FOR UPDATE", &[&KEY_CHECK])
                .await
                .map_err(backend)?
                .get(0);
            if current != key_check {
                return Err(StoreError::Conflict(WRONG_KEY.to_owned()));
            }
            let now = now();
            tx.execute(
                "INSERT INTO secrets (name, sealed, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                &[&name, &sealed, &now],
            )
            .await
            .map_err(backend)?;
            audit(&tx, actor, "secret.set", None, None, Some(&format!("name={name}"))).await
        })
    }

    fn remove_secret(&self, name: &str, actor: &str) -> Result<(), StoreError> {
        in_transaction!(self, |tx| {
            if tx.execute("DELETE FROM secrets WHERE name = $1", &[&name]).await.map_err(backend)? == 0 {
                return Err(StoreError::NotFound(format!("secret {name:?}")));
            }
            audit(&tx, actor, "secret.rm", None, None, Some(&format!("name={name}"))).await
        })
    }

    fn reseal_secrets(&self, reseal: &Reseal<'_>, key_check: &[u8], actor: &str) -> Result<usize, StoreError> {
        in_transaction!(self, |tx| {
            let rows = tx.query("SELECT name, sealed FROM secrets FOR UPDATE", &[]).await.map_err(backend)?;
            for row in &rows {
                let (name, sealed): (String, Vec<u8>) = (row.get(0), row.get(1));
                let next = reseal(&name, &sealed)?;
                tx.execute("UPDATE secrets SET sealed = $2 WHERE name = $1", &[&name, &next]).await.map_err(backend)?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&KEY_CHECK, &key_check],
            )
            .await
            .map_err(backend)?;
            audit(&tx, actor, "secret.rotate_key", None, None, Some(&format!("secrets={}", rows.len()))).await?;
            Ok(rows.len())
        })
    }

    fn reset_secrets(&self, actor: &str) -> Result<usize, StoreError> {
        in_transaction!(self, |tx| {
            let deleted = tx.execute("DELETE FROM secrets", &[]).await.map_err(backend)?;
            tx.execute("DELETE FROM meta WHERE key = $1", &[&KEY_CHECK]).await.map_err(backend)?;
            audit(&tx, actor, "secret.reset", None, None, Some(&format!("secrets={deleted}"))).await?;
            Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
        })
    }

    fn secrets_used(&self, names: &[String], at: i64) -> Result<(), StoreError> {
        in_transaction!(self, |tx| {
            tx.execute("UPDATE secrets SET used_at = $2 WHERE name = ANY($1)", &[&names, &at])
                .await
                .map_err(backend)?;
            Ok(())
        })
    }
}
