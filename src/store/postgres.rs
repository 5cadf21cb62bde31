//! The shared PostgreSQL [`Storage`], for several gateway instances: a pool of
//! `tokio-postgres` connections (deadpool), versioned migrations applied by exactly one
//! starting instance (a transaction holding an advisory lock), every query parameterized,
//! and the audit table append-only in the database itself (triggers refuse UPDATE, DELETE
//! and TRUNCATE, whoever sends them).
//!
//! Every call is a future; a connection is made by the call that needs one, on that call's
//! runtime, and serves later calls on the same runtime. Opening keeps no connection, so a
//! store opened from blocking code (see [`super::block_on`]) serves the gateway's runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Row;

use super::error::StoreError;
use super::records::{AuditEntry, AuditRecord, Client, Link, LinkRef, Lookup, SealedSecret, System, User};
use super::secret::{random_bytes, SecretHash, SecretSlot};
use super::storage::{
    key_columns, parse_scopes, scopes_column, AuditOf, Entity, LinkWrite, Reseal, Storage, StoreFuture,
    SubscriptionChange, SubscriptionCheck, SubscriptionRow, KEY_CHECK, LINK_COLUMNS, SUBSCRIPTION_COLUMNS,
    SUBSCRIPTION_COLUMNS_OF_S, SYSTEM_COLUMNS, USER_COLUMNS,
};
use super::subscriptions::{KeySlot, Subscription};

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
    // Subscriptions (issue 25); see the SQLite store.
    r"
CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    scope                TEXT NOT NULL,
    state                TEXT NOT NULL,
    expires_at           BIGINT,
    owner                TEXT,
    created_at           BIGINT NOT NULL,
    primary_created_at   BIGINT NOT NULL,
    primary_used_at      BIGINT,
    primary_bits         BIGINT NOT NULL,
    secondary_created_at BIGINT NOT NULL,
    secondary_used_at    BIGINT,
    secondary_bits       BIGINT NOT NULL
);
CREATE TABLE subscription_keys (
    hash            BYTEA PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
    slot            TEXT NOT NULL,
    UNIQUE (subscription_id, slot)
);
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

/// Runs `$body` (a block using the transaction `$tx`, yielding a `Result`) in one
/// transaction, committed when it yields `Ok`.
macro_rules! in_transaction {
    ($storage:expr, |$tx:ident| $body:block) => {
        Box::pin(async move {
            let mut client = $storage.pool.get().await.map_err(pool_error)?;
            let $tx = client.transaction().await.map_err(backend)?;
            let out = async { $body }.await?;
            $tx.commit().await.map_err(backend)?;
            Ok(out)
        })
    };
}

/// A [`Storage`] in one PostgreSQL database, shared by every instance that names it.
pub struct PostgresStorage {
    pool: Pool,
    shown: String,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage").field("location", &self.shown).finish_non_exhaustive()
    }
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return StoreError::Unavailable(db.message().to_owned());
    }
    // Like `error performing TLS handshake: invalid peer certificate: UnknownIssuer`.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    StoreError::Unavailable(detail)
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => backend(e),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

impl PostgresStorage {
    /// Connects, applies pending migrations (one instance at a time) and reads the store's
    /// secret-hashing key, creating it with the schema; returns the storage and the key. The
    /// connection used is closed, not pooled: the opener's runtime may end before the store.
    ///
    /// # Errors
    /// The server cannot be reached or refuses the login, the CA file is unusable, or the
    /// schema is newer than this build.
    pub async fn open(location: &PgLocation) -> Result<(Self, Vec<u8>), StoreError> {
        let shown = location.shown.clone();
        let fail = |e: String| StoreError::Unavailable(format!("{shown}: {e}"));
        let tls = tls_connector(location).map_err(fail)?;
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
        let migrated = async {
            let mut client = pool.get().await.map_err(pool_error)?;
            let key = migrate(&mut client).await?;
            drop(deadpool_postgres::Object::take(client));
            Ok::<_, StoreError>(key)
        };
        let key = migrated.await.map_err(|e| match e {
            StoreError::Unavailable(detail) => fail(detail),
            other => fail(other.to_string()),
        })?;
        tracing::debug!(store = %shown, "identity store opened");
        Ok((Self { pool, shown }, key))
    }

    /// Every row `sql` selects with `params`, mapped by `row`.
    async fn rows<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        row: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        let rows = client.query(&statement, params).await.map_err(backend)?;
        rows.iter().map(&row).collect::<Result<_, _>>().map_err(backend)
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
        return Err(StoreError::Unavailable(format!(
            "the database schema is version {version}, newer than this portcullis knows ({}); upgrade portcullis",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await.map_err(|e| StoreError::Unavailable(format!("migration {}: {e}", i + 1)))?;
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

/// Writes the audit entry the rules made.
async fn audit(tx: &deadpool_postgres::Transaction<'_>, entry: &AuditRecord) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO audit (at, actor, action, system_id, user_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(backend)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&entry.at, &entry.actor, &entry.action.as_str(), &entry.system_id, &entry.user_id, &entry.detail];
    tx.execute(&statement, &params).await.map_err(backend)?;
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

/// The subscription row in columns `i` onwards ([`SUBSCRIPTION_COLUMNS`]).
fn subscription_row_at(row: &Row, i: usize) -> Result<SubscriptionRow, tokio_postgres::Error> {
    Ok(SubscriptionRow {
        id: row.try_get(i)?,
        name: row.try_get(i + 1)?,
        scope: row.try_get(i + 2)?,
        state: row.try_get(i + 3)?,
        expires_at: row.try_get(i + 4)?,
        owner: row.try_get(i + 5)?,
        created_at: row.try_get(i + 6)?,
        primary: (row.try_get(i + 7)?, row.try_get(i + 8)?, row.try_get(i + 9)?),
        secondary: (row.try_get(i + 10)?, row.try_get(i + 11)?, row.try_get(i + 12)?),
    })
}

fn subscription_row(row: &Row) -> Result<SubscriptionRow, tokio_postgres::Error> {
    subscription_row_at(row, 0)
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The subscription with this id, read and locked in the write transaction.
async fn subscription_in(tx: &Tx<'_>, id: &str) -> Result<Option<Subscription>, StoreError> {
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE");
    match tx.query_opt(&sql, &[&id]).await.map_err(backend)? {
        Some(row) => subscription_row(&row).map_err(backend)?.parse().map(Some),
        None => Ok(None),
    }
}

/// Stores `hash` as the `slot` key of subscription `id`; see the SQLite store's `put_key`.
async fn put_key(
    tx: &Tx<'_>,
    id: &str,
    slot: KeySlot,
    hash: &SecretHash,
    at: i64,
    bits: u32,
) -> Result<bool, StoreError> {
    let old = tx
        .query_opt(
            "SELECT hash FROM subscription_keys WHERE subscription_id = $1 AND slot = $2",
            &[&id, &slot.as_str()],
        )
        .await
        .map_err(backend)?;
    if let Some(row) = old {
        if row.try_get::<_, Vec<u8>>(0).map_err(backend)? == hash.0 {
            return Ok(false);
        }
    }
    tx.execute("DELETE FROM subscription_keys WHERE subscription_id = $1 AND slot = $2", &[&id, &slot.as_str()])
        .await
        .map_err(backend)?;
    let inserted = tx
        .execute(
            "INSERT INTO subscription_keys (hash, subscription_id, slot) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&hash.0, &id, &slot.as_str()],
        )
        .await
        .map_err(backend)?;
    if inserted == 0 {
        return Err(StoreError::SubscriptionKeyTaken { id: id.to_owned(), slot });
    }
    let (created, used, strength) = key_columns(slot);
    tx.execute(
        &format!("UPDATE subscriptions SET {created} = $2, {used} = NULL, {strength} = $3 WHERE id = $1"),
        &[&id, &at, &i64::from(bits)],
    )
    .await
    .map_err(backend)?;
    Ok(true)
}

/// Inserts a subscription row (its keys apart); how many rows (0: the id is taken).
async fn insert_subscription_row(tx: &Tx<'_>, s: &Subscription) -> Result<u64, StoreError> {
    let (scope, owner) = (s.scope.to_string(), s.owner.as_ref().map(ToString::to_string));
    let (primary_bits, secondary_bits) = (i64::from(s.primary.bits), i64::from(s.secondary.bits));
    tx.execute(
        &format!(
            "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING"
        ),
        &[
            &s.id,
            &s.name,
            &scope,
            &s.state.as_str(),
            &s.expires_at,
            &owner,
            &s.created_at,
            &s.primary.created_at,
            &s.primary.used_at,
            &primary_bits,
            &s.secondary.created_at,
            &s.secondary.used_at,
            &secondary_bits,
        ],
    )
    .await
    .map_err(backend)
}

/// Writes a subscription's name, scope, state, expiry and owner.
async fn update_subscription_row(tx: &Tx<'_>, s: &Subscription) -> Result<(), StoreError> {
    let (scope, owner) = (s.scope.to_string(), s.owner.as_ref().map(ToString::to_string));
    tx.execute(
        "UPDATE subscriptions SET name = $2, scope = $3, state = $4, expires_at = $5, owner = $6 WHERE id = $1",
        &[&s.id, &s.name, &scope, &s.state.as_str(), &s.expires_at, &owner],
    )
    .await
    .map(drop)
    .map_err(backend)
}

impl Storage for PostgresStorage {
    fn systems(&self) -> StoreFuture<'_, Vec<System>> {
        Box::pin(async move {
            self.rows(&format!("SELECT {SYSTEM_COLUMNS} FROM systems ORDER BY created_at, name"), &[], system_row).await
        })
    }

    fn system<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<System>> {
        Box::pin(async move {
            let sql = format!("SELECT {SYSTEM_COLUMNS} FROM systems WHERE id = $1");
            Ok(self.rows(&sql, &[&id], system_row).await?.pop())
        })
    }

    fn users(&self) -> StoreFuture<'_, Vec<User>> {
        Box::pin(
            async move { self.rows(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"), &[], user_row).await },
        )
    }

    fn links<'a>(&'a self, system_id: &'a str) -> StoreFuture<'a, Vec<Link>> {
        Box::pin(async move {
            let sql = format!("SELECT {LINK_COLUMNS} FROM links WHERE system_id = $1 ORDER BY external_user");
            self.rows(&sql, &[&system_id], link_row).await
        })
    }

    fn audit(&self, after: i64) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(async move {
            let sql =
                "SELECT seq, at, actor, action, system_id, user_id, detail FROM audit WHERE seq > $1 ORDER BY seq";
            self.rows(sql, &[&after], |row| {
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
            .await
        })
    }

    fn lookup<'a>(&'a self, system_id: &'a str, external_user: Option<&'a str>) -> StoreFuture<'a, Lookup> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(LOOKUP_SQL).await.map_err(backend)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&system_id, &external_user];
            let Some(row) = tokio::time::timeout(TIMEOUT, client.query_opt(&statement, &params))
                .await
                .map_err(|_| StoreError::Unavailable(format!("no answer within {TIMEOUT:?}")))?
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

    fn secrets(&self) -> StoreFuture<'_, Vec<SealedSecret>> {
        Box::pin(async move {
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
            .await
        })
    }

    fn secrets_key_check(&self) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            Ok(self.rows("SELECT value FROM meta WHERE key = $1", &[&KEY_CHECK], |row| row.try_get(0)).await?.pop())
        })
    }

    fn insert_system<'a>(
        &'a self,
        system: &'a System,
        primary: &'a SecretHash,
        alternate: &'a SecretHash,
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        let column = scopes_column(&system.scopes);
        in_transaction!(self, |tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO systems (id, name, active, primary_hash, alternate_hash, created_at, scopes) \
                     VALUES ($1, $2, TRUE, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[&system.id, &system.name, &primary.0, &alternate.0, &system.created_at, &column],
                )
                .await
                .map_err(backend)?;
            if inserted == 0 {
                return Ok(false);
            }
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn insert_user<'a>(&'a self, user: &'a User, entry: &'a AuditRecord) -> StoreFuture<'a, bool> {
        in_transaction!(self, |tx| {
            let roles = serde_json::to_string(&user.roles).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let inserted = tx
                .execute(
                    "INSERT INTO users (id, roles, active, created_at) VALUES ($1, $2, TRUE, $3) ON CONFLICT DO NOTHING",
                    &[&user.id, &roles, &user.created_at],
                )
                .await
                .map_err(backend)?;
            if inserted == 0 {
                return Ok(false);
            }
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn set_active<'a>(
        &'a self,
        entity: Entity,
        id: &'a str,
        active: bool,
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        let sql = match entity {
            Entity::System => "UPDATE systems SET active = $2 WHERE id = $1",
            Entity::User => "UPDATE users SET active = $2 WHERE id = $1",
        };
        in_transaction!(self, |tx| {
            if tx.execute(sql, &[&id, &active]).await.map_err(backend)? == 0 {
                return Ok(false);
            }
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn replace_scopes<'a>(
        &'a self,
        id: &'a str,
        scopes: &'a [String],
        entry: &'a AuditOf<'a, [String]>,
    ) -> StoreFuture<'a, Option<Vec<String>>> {
        let column = scopes_column(scopes);
        in_transaction!(self, |tx| {
            let Some(row) =
                tx.query_opt("SELECT scopes FROM systems WHERE id = $1 FOR UPDATE", &[&id]).await.map_err(backend)?
            else {
                return Ok(None);
            };
            let old = parse_scopes(row.try_get(0).map_err(backend)?);
            tx.execute("UPDATE systems SET scopes = $2 WHERE id = $1", &[&id, &column]).await.map_err(backend)?;
            audit(&tx, &entry(&old)).await?;
            Ok(Some(old))
        })
    }

    fn renew_secret<'a>(
        &'a self,
        id: &'a str,
        new_alternate: &'a SecretHash,
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        in_transaction!(self, |tx| {
            let changed = tx
                .execute(
                    "UPDATE systems SET primary_hash = alternate_hash, alternate_hash = $2, secrets_renewed_at = $3, \
                     primary_used_at = alternate_used_at, alternate_used_at = NULL WHERE id = $1",
                    &[&id, &new_alternate.0, &entry.at],
                )
                .await
                .map_err(backend)?;
            if changed == 0 {
                return Ok(false);
            }
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn insert_link<'a>(&'a self, link: &'a Link, entry: &'a AuditRecord) -> StoreFuture<'a, LinkWrite> {
        in_transaction!(self, |tx| {
            let system = tx.query_opt("SELECT 1 FROM systems WHERE id = $1", &[&link.system_id]).await;
            if system.map_err(backend)?.is_none() {
                return Ok(LinkWrite::NoSystem);
            }
            let user = tx.query_opt("SELECT 1 FROM users WHERE id = $1", &[&link.user_id]).await;
            if user.map_err(backend)?.is_none() {
                return Ok(LinkWrite::NoUser);
            }
            let inserted = tx
                .execute(
                    "INSERT INTO links (system_id, external_user, user_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                    &[&link.system_id, &link.external_user, &link.user_id, &link.created_at],
                )
                .await
                .map_err(backend)?;
            if inserted == 0 {
                return Ok(LinkWrite::Taken);
            }
            audit(&tx, entry).await.map(|()| LinkWrite::Linked)
        })
    }

    fn delete_link<'a>(
        &'a self,
        system_id: &'a str,
        link: LinkRef<'a>,
        entry: &'a AuditOf<'a, Link>,
    ) -> StoreFuture<'a, Option<Link>> {
        let sql = match link {
            LinkRef::ExternalUser(_) => {
                format!("DELETE FROM links WHERE system_id = $1 AND external_user = $2 RETURNING {LINK_COLUMNS}")
            }
            LinkRef::User(_) => {
                format!("DELETE FROM links WHERE system_id = $1 AND user_id = $2 RETURNING {LINK_COLUMNS}")
            }
        };
        in_transaction!(self, |tx| {
            let found = match tx.query_opt(&sql, &[&system_id, &link.id()]).await.map_err(backend)? {
                Some(row) => link_row(&row).map_err(backend)?,
                None => return Ok(None),
            };
            audit(&tx, &entry(&found)).await?;
            Ok(Some(found))
        })
    }

    fn put_secret<'a>(
        &'a self,
        name: &'a str,
        sealed: &'a [u8],
        key_check: &'a [u8],
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
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
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO secrets (name, sealed, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                &[&name, &sealed, &entry.at],
            )
            .await
            .map_err(backend)?;
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn delete_secret<'a>(&'a self, name: &'a str, entry: &'a AuditRecord) -> StoreFuture<'a, bool> {
        in_transaction!(self, |tx| {
            if tx.execute("DELETE FROM secrets WHERE name = $1", &[&name]).await.map_err(backend)? == 0 {
                return Ok(false);
            }
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn reseal_secrets<'a>(
        &'a self,
        reseal: &'a Reseal<'a>,
        key_check: &'a [u8],
        entry: &'a AuditOf<'a, usize>,
    ) -> StoreFuture<'a, usize> {
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
            audit(&tx, &entry(&rows.len())).await?;
            Ok(rows.len())
        })
    }

    fn reset_secrets<'a>(&'a self, entry: &'a AuditOf<'a, usize>) -> StoreFuture<'a, usize> {
        in_transaction!(self, |tx| {
            let deleted = tx.execute("DELETE FROM secrets", &[]).await.map_err(backend)?;
            tx.execute("DELETE FROM meta WHERE key = $1", &[&KEY_CHECK]).await.map_err(backend)?;
            let deleted = usize::try_from(deleted).unwrap_or(usize::MAX);
            audit(&tx, &entry(&deleted)).await?;
            Ok(deleted)
        })
    }

    fn secrets_used<'a>(&'a self, names: &'a [String], at: i64) -> StoreFuture<'a, ()> {
        in_transaction!(self, |tx| {
            tx.execute("UPDATE secrets SET used_at = $2 WHERE name = ANY($1)", &[&names, &at])
                .await
                .map_err(backend)?;
            Ok(())
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
    fn subscriptions(&self) -> StoreFuture<'_, Vec<Subscription>> {
        Box::pin(async move {
            let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id");
            self.rows(&sql, &[], subscription_row).await?.into_iter().map(SubscriptionRow::parse).collect()
        })
    }

    fn subscription<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Subscription>> {
        Box::pin(async move {
            let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1");
            self.rows(&sql, &[&id], subscription_row).await?.pop().map(SubscriptionRow::parse).transpose()
        })
    }

    fn subscription_keys(&self) -> StoreFuture<'_, Vec<(SecretHash, KeySlot, Subscription)>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT k.hash, k.slot, {SUBSCRIPTION_COLUMNS_OF_S} FROM subscription_keys k \
                 JOIN subscriptions s ON s.id = k.subscription_id ORDER BY s.created_at, s.id, k.slot"
            );
            let rows = self
                .rows(&sql, &[], |row| {
                    Ok((row.try_get::<_, Vec<u8>>(0)?, row.try_get::<_, String>(1)?, subscription_row_at(row, 2)?))
                })
                .await?;
            SubscriptionRow::keys(rows)
        })
    }

    fn insert_subscription<'a>(
        &'a self,
        subscription: &'a Subscription,
        primary: &'a SecretHash,
        secondary: &'a SecretHash,
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        in_transaction!(self, |tx| {
            if insert_subscription_row(&tx, subscription).await? == 0 {
                return Ok(false);
            }
            let (id, p, s) = (&subscription.id, &subscription.primary, &subscription.secondary);
            put_key(&tx, id, KeySlot::Primary, primary, p.created_at, p.bits).await?;
            put_key(&tx, id, KeySlot::Secondary, secondary, s.created_at, s.bits).await?;
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn import_subscription<'a>(
        &'a self,
        subscription: &'a Subscription,
        primary: &'a SecretHash,
        secondary: &'a SecretHash,
        entry: &'a AuditOf<'a, bool>,
    ) -> StoreFuture<'a, bool> {
        in_transaction!(self, |tx| {
            let replaced = insert_subscription_row(&tx, subscription).await? == 0;
            if replaced {
                update_subscription_row(&tx, subscription).await?;
            }
            let (id, p, s) = (&subscription.id, &subscription.primary, &subscription.secondary);
            // Keys swapped between the slots are no clash: their old rows go first.
            tx.execute(
                "DELETE FROM subscription_keys WHERE subscription_id = $1 AND \
                 ((hash = $2 AND slot <> 'primary') OR (hash = $3 AND slot <> 'secondary'))",
                &[id, &primary.0, &secondary.0],
            )
            .await
            .map_err(backend)?;
            put_key(&tx, id, KeySlot::Primary, primary, p.created_at, p.bits).await?;
            put_key(&tx, id, KeySlot::Secondary, secondary, s.created_at, s.bits).await?;
            audit(&tx, &entry(&replaced)).await?;
            Ok(replaced)
        })
    }

    fn update_subscription<'a>(
        &'a self,
        id: &'a str,
        change: &'a SubscriptionChange<'a>,
        entry: &'a AuditOf<'a, Subscription>,
    ) -> StoreFuture<'a, Option<Subscription>> {
        in_transaction!(self, |tx| {
            let Some(found) = subscription_in(&tx, id).await? else {
                return Ok(None);
            };
            let changed = change(&found)?;
            update_subscription_row(&tx, &changed).await?;
            audit(&tx, &entry(&changed)).await?;
            Ok(Some(changed))
        })
    }

    fn replace_subscription_key<'a>(
        &'a self,
        id: &'a str,
        slot: KeySlot,
        key: &'a SecretHash,
        bits: u32,
        check: &'a SubscriptionCheck<'a>,
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        in_transaction!(self, |tx| {
            let Some(found) = subscription_in(&tx, id).await? else {
                return Ok(false);
            };
            check(&found)?;
            if !put_key(&tx, id, slot, key, entry.at, bits).await? {
                return Err(StoreError::SubscriptionKeyTaken { id: id.to_owned(), slot });
            }
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn delete_subscription<'a>(&'a self, id: &'a str, entry: &'a AuditRecord) -> StoreFuture<'a, bool> {
        in_transaction!(self, |tx| {
            tx.execute("DELETE FROM subscription_keys WHERE subscription_id = $1", &[&id]).await.map_err(backend)?;
            if tx.execute("DELETE FROM subscriptions WHERE id = $1", &[&id]).await.map_err(backend)? == 0 {
                return Ok(false);
            }
            audit(&tx, entry).await.map(|()| true)
        })
    }

    fn subscription_key_used<'a>(&'a self, id: &'a str, slot: KeySlot, minute: i64) -> StoreFuture<'a, ()> {
        let (_, used, _) = key_columns(slot);
        let sql = format!("UPDATE subscriptions SET {used} = $2 WHERE id = $1 AND ({used} IS NULL OR {used} < $2)");
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(&sql).await.map_err(backend)?;
            client.execute(&statement, &[&id, &minute]).await.map(drop).map_err(backend)
        })
    }
}
