//! The embedded SQLite [`Storage`]: one file, created and migrated on first use
//! (versioned migrations tracked in `PRAGMA user_version`), WAL journal so that the CLI can
//! write while a gateway reads, every query parameterized, the audit table append-only
//! (triggers refuse UPDATE and DELETE).
//!
//! The gateway's calls ([`Storage::lookup`], [`Storage::secret_used`],
//! [`Storage::subscription_keys`], [`Storage::subscription_key_used`]) run on tokio's
//! blocking threads, never on the event loop; every other call (the CLI, the configuration
//! compiler) does its fast local I/O on the caller's thread, once polled.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior};

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
    value BLOB NOT NULL
);
CREATE TABLE systems (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    active             INTEGER NOT NULL,
    primary_hash       BLOB NOT NULL,
    alternate_hash     BLOB NOT NULL,
    created_at         INTEGER NOT NULL,
    secrets_renewed_at INTEGER
);
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    roles      TEXT NOT NULL,
    active     INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE links (
    system_id     TEXT NOT NULL REFERENCES systems(id),
    external_user TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (system_id, external_user),
    UNIQUE (system_id, user_id)
);
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    system_id TEXT,
    user_id   TEXT,
    detail    TEXT
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
",
    r"
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    used_at    INTEGER
);
ALTER TABLE systems ADD COLUMN primary_used_at INTEGER;
ALTER TABLE systems ADD COLUMN alternate_used_at INTEGER;
",
    // Scopes granted per system. Existing systems are granted none: before, any system could
    // ask for any configured scope, and the store cannot know which each caller needs; they
    // keep getting tokens without a `scope`, and an operator grants what each may ask for.
    r"
ALTER TABLE systems ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
",
    // Subscriptions (issue 25). A key hash is the primary key of its own table, so that a
    // presented key finds at most one subscription; the key's dates and strength stay in the
    // subscription's row.
    r"
CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    scope                TEXT NOT NULL,
    state                TEXT NOT NULL,
    expires_at           INTEGER,
    owner                TEXT,
    created_at           INTEGER NOT NULL,
    primary_created_at   INTEGER NOT NULL,
    primary_used_at      INTEGER,
    primary_bits         INTEGER NOT NULL,
    secondary_created_at INTEGER NOT NULL,
    secondary_used_at    INTEGER,
    secondary_bits       INTEGER NOT NULL
);
CREATE TABLE subscription_keys (
    hash            BLOB PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
    slot            TEXT NOT NULL,
    UNIQUE (subscription_id, slot)
);
",
];

/// A [`Storage`] in one SQLite file: one connection writes (behind a mutex: SQLite has one
/// writer), a few read-only ones read at once (WAL lets readers run beside the writer and
/// each other), so token requests — reads only — never wait for one another.
pub struct SqliteStorage {
    path: PathBuf,
    /// The one writer, shared with the blocking threads that record secret use.
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
}

/// The read-only connections, shared with the blocking threads that run token lookups.
struct Readers {
    conns: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
}

impl Readers {
    /// Runs `f` on a free read-only connection (or waits for the next one in turn).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>) -> Result<T, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let free = (0..n).find_map(|i| self.conns[(start + i) % n].try_lock().ok());
        let conn = match free {
            Some(conn) => conn,
            None => self.conns[start % n].lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        f(&conn).map_err(backend)
    }

    /// Two small queries: SQLite re-plans a statement with joins on every run (≈ 10 µs a
    /// join), while each of these answers in ≈ 1.5 µs. The granted scopes come in the
    /// system's row.
    fn lookup(&self, system_id: &str, external_user: Option<&str>) -> Result<Lookup, StoreError> {
        self.read(|c| {
            let client = c
                .prepare_cached("SELECT active, primary_hash, alternate_hash, scopes FROM systems WHERE id = ?1")?
                .query_row(params![system_id], |row| {
                    Ok(Client {
                        active: row.get(0)?,
                        primary: SecretHash(row.get(1)?),
                        alternate: SecretHash(row.get(2)?),
                        scopes: parse_scopes(&row.get::<_, String>(3)?),
                    })
                })
                .optional()?;
            let user = match (&client, external_user) {
                (Some(_), Some(external)) => c
                    .prepare_cached(
                        "SELECT u.id, u.roles, u.active, u.created_at FROM links l JOIN users u ON u.id = l.user_id \
                         WHERE l.system_id = ?1 AND l.external_user = ?2",
                    )?
                    .query_row(params![system_id, external], user_row)
                    .optional()?,
                _ => None,
            };
            Ok(Lookup { client, user })
        })
    }
}

/// Read-only connections per store: one per CPU, two to eight.
fn reader_count() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get).clamp(2, 8)
}

/// A read-only connection to the database at `path` (already created and migrated).
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {} for reading: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
    Ok(conn)
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage").field("path", &self.path).finish_non_exhaustive()
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStorage {
    /// Opens the database, creating it (and its directory) and applying pending migrations;
    /// returns it with the store's secret-hashing key.
    ///
    /// # Errors
    /// The file cannot be created or opened, is not a database, or has a newer schema.
    pub fn open(path: &Path) -> Result<(Self, Vec<u8>), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(backend)?;
        let mode = wal_mode(&conn)
            .map_err(|e| StoreError::Unavailable(format!("{} is not a usable SQLite database: {e}", path.display())))?;
        tracing::debug!(path = %path.display(), journal_mode = %mode, "identity store opened");
        let key = migrate(&mut conn)?;
        let conns = (0..reader_count()).map(|_| open_reader(path).map(Mutex::new)).collect::<Result<_, _>>()?;
        let storage = Self {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Readers { conns, next: AtomicUsize::new(0) }),
        };
        Ok((storage, key))
    }

    /// Runs `f` in one transaction, committed when it succeeds.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = conn.transaction().map_err(backend)?;
        let out = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>) -> Result<T, StoreError> {
        self.readers.read(f)
    }

    /// A change, run on the caller's thread once polled: the CLI's and the compiler's, never
    /// the event loop's.
    fn change<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move { self.write(f) })
    }

    /// A read, run like [`Self::change`].
    fn query<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move { self.read(f) })
    }

    /// Every row `sql` selects, mapped by `row`.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|c| c.prepare(sql)?.query_map(params, row)?.collect())
    }
}

/// Switches the database to WAL. Processes opening a new file together may find it busy
/// without waiting (SQLite refuses a lock that could deadlock): that is retried, for 5 s.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let mut tries = 0;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Applies pending migrations in one write transaction taken before the version is read, so
/// that processes opening a new store together apply each exactly once; returns the store's
/// secret-hashing key, made with the schema.
fn migrate(conn: &mut Connection) -> Result<Vec<u8>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(backend)?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "the database schema is version {version}, newer than this portcullis knows ({}); upgrade portcullis",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql).map_err(|e| StoreError::Unavailable(format!("migration {}: {e}", i + 1)))?;
        tx.pragma_update(None, "user_version", i as i64 + 1).map_err(backend)?;
        tracing::info!(version = i + 1, "identity store migrated");
    }
    let key = hash_key(&tx)?;
    tx.commit().map_err(backend)?;
    Ok(key)
}

/// The store's secret-hashing key, created with the store.
fn hash_key(conn: &Connection) -> Result<Vec<u8>, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret_hash_key', ?1)",
        params![random_bytes::<32>().to_vec()],
    )
    .map_err(backend)?;
    conn.query_row("SELECT value FROM meta WHERE key = 'secret_hash_key'", [], |row| row.get(0)).map_err(backend)
}

/// Writes the audit entry the rules made.
fn audit(tx: &Transaction<'_>, entry: &AuditRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, system_id, user_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![entry.at, entry.actor, entry.action.as_str(), entry.system_id, entry.user_id, entry.detail],
    )
    .map_err(backend)?;
    Ok(())
}

/// Records a use of one secret slot, unless a later one is recorded.
fn used_sql(slot: SecretSlot) -> &'static str {
    match slot {
        SecretSlot::Primary => {
            "UPDATE systems SET primary_used_at = ?2 WHERE id = ?1 AND (primary_used_at IS NULL OR primary_used_at < ?2)"
        }
        SecretSlot::Alternate => {
            "UPDATE systems SET alternate_used_at = ?2 WHERE id = ?1 AND (alternate_used_at IS NULL OR alternate_used_at < ?2)"
        }
    }
}

fn system_row(row: &Row<'_>) -> rusqlite::Result<System> {
    Ok(System {
        id: row.get(0)?,
        name: row.get(1)?,
        active: row.get(2)?,
        created_at: row.get(3)?,
        secrets_renewed_at: row.get(4)?,
        primary_used_at: row.get(5)?,
        alternate_used_at: row.get(6)?,
        scopes: parse_scopes(&row.get::<_, String>(7)?),
    })
}

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let roles: String = row.get(1)?;
    Ok(User {
        id: row.get(0)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        active: row.get(2)?,
        created_at: row.get(3)?,
    })
}

fn link_row(row: &Row<'_>) -> rusqlite::Result<Link> {
    Ok(Link { system_id: row.get(0)?, external_user: row.get(1)?, user_id: row.get(2)?, created_at: row.get(3)? })
}

/// Whether a row with this id exists in `table`.
fn exists(tx: &Transaction<'_>, sql: &str, id: &str) -> Result<bool, StoreError> {
    tx.query_row(sql, params![id], |_| Ok(())).optional().map(|r| r.is_some()).map_err(backend)
}

/// The subscription row in columns `i` onwards ([`SUBSCRIPTION_COLUMNS`]).
fn subscription_row_at(row: &Row<'_>, i: usize) -> rusqlite::Result<SubscriptionRow> {
    Ok(SubscriptionRow {
        id: row.get(i)?,
        name: row.get(i + 1)?,
        scope: row.get(i + 2)?,
        state: row.get(i + 3)?,
        expires_at: row.get(i + 4)?,
        owner: row.get(i + 5)?,
        created_at: row.get(i + 6)?,
        primary: (row.get(i + 7)?, row.get(i + 8)?, row.get(i + 9)?),
        secondary: (row.get(i + 10)?, row.get(i + 11)?, row.get(i + 12)?),
    })
}

fn subscription_row(row: &Row<'_>) -> rusqlite::Result<SubscriptionRow> {
    subscription_row_at(row, 0)
}

/// The subscription with this id, read in the write transaction.
fn subscription_in(tx: &Transaction<'_>, id: &str) -> Result<Option<Subscription>, StoreError> {
    tx.query_row(
        &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1"),
        params![id],
        subscription_row,
    )
    .optional()
    .map_err(backend)?
    .map(SubscriptionRow::parse)
    .transpose()
}

/// Stores `hash` as the `slot` key of subscription `id`, replacing the slot's old hash; when
/// the hash changed, the slot's dates restart at `at` and its strength is `bits`. Returns
/// whether it changed.
///
/// # Errors
/// The hash is already another key's ([`StoreError::SubscriptionKeyTaken`]): the caller's
/// transaction is then dropped, undone.
fn put_key(
    tx: &Transaction<'_>,
    id: &str,
    slot: KeySlot,
    hash: &SecretHash,
    at: i64,
    bits: u32,
) -> Result<bool, StoreError> {
    let old: Option<Vec<u8>> = tx
        .query_row(
            "SELECT hash FROM subscription_keys WHERE subscription_id = ?1 AND slot = ?2",
            params![id, slot.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    if old.as_deref() == Some(&hash.0[..]) {
        return Ok(false);
    }
    tx.execute("DELETE FROM subscription_keys WHERE subscription_id = ?1 AND slot = ?2", params![id, slot.as_str()])
        .map_err(backend)?;
    let inserted = tx
        .execute(
            "INSERT INTO subscription_keys (hash, subscription_id, slot) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![hash.0, id, slot.as_str()],
        )
        .map_err(backend)?;
    if inserted == 0 {
        return Err(StoreError::SubscriptionKeyTaken { id: id.to_owned(), slot });
    }
    let (created, used, strength) = key_columns(slot);
    tx.execute(
        &format!("UPDATE subscriptions SET {created} = ?2, {used} = NULL, {strength} = ?3 WHERE id = ?1"),
        params![id, at, bits],
    )
    .map_err(backend)?;
    Ok(true)
}

/// Inserts a subscription row (its keys apart).
fn insert_subscription_row(tx: &Transaction<'_>, s: &Subscription) -> Result<usize, StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO subscriptions ({SUBSCRIPTION_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT DO NOTHING"
        ),
        params![
            s.id,
            s.name,
            s.scope.to_string(),
            s.state.as_str(),
            s.expires_at,
            s.owner.as_ref().map(ToString::to_string),
            s.created_at,
            s.primary.created_at,
            s.primary.used_at,
            s.primary.bits,
            s.secondary.created_at,
            s.secondary.used_at,
            s.secondary.bits,
        ],
    )
    .map_err(backend)
}

/// Writes a subscription's name, scope, state, expiry and owner.
fn update_subscription_row(tx: &Transaction<'_>, s: &Subscription) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE subscriptions SET name = ?2, scope = ?3, state = ?4, expires_at = ?5, owner = ?6 WHERE id = ?1",
        params![
            s.id,
            s.name,
            s.scope.to_string(),
            s.state.as_str(),
            s.expires_at,
            s.owner.as_ref().map(ToString::to_string)
        ],
    )
    .map(drop)
    .map_err(backend)
}

impl Storage for SqliteStorage {
    fn systems(&self) -> StoreFuture<'_, Vec<System>> {
        Box::pin(async move {
            self.rows(&format!("SELECT {SYSTEM_COLUMNS} FROM systems ORDER BY created_at, name"), [], system_row)
        })
    }

    fn system<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<System>> {
        self.query(move |c| {
            c.query_row(&format!("SELECT {SYSTEM_COLUMNS} FROM systems WHERE id = ?1"), params![id], system_row)
                .optional()
        })
    }

    fn users(&self) -> StoreFuture<'_, Vec<User>> {
        Box::pin(async move { self.rows(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"), [], user_row) })
    }

    fn links<'a>(&'a self, system_id: &'a str) -> StoreFuture<'a, Vec<Link>> {
        Box::pin(async move {
            let sql = format!("SELECT {LINK_COLUMNS} FROM links WHERE system_id = ?1 ORDER BY external_user");
            self.rows(&sql, params![system_id], link_row)
        })
    }

    fn audit(&self, after: i64) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(async move {
            let sql =
                "SELECT seq, at, actor, action, system_id, user_id, detail FROM audit WHERE seq > ?1 ORDER BY seq";
            self.rows(sql, params![after], |row| {
                Ok(AuditEntry {
                    seq: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    action: row.get(3)?,
                    system_id: row.get(4)?,
                    user_id: row.get(5)?,
                    detail: row.get(6)?,
                })
            })
        })
    }

    fn lookup<'a>(&'a self, system_id: &'a str, external_user: Option<&'a str>) -> StoreFuture<'a, Lookup> {
        let readers = self.readers.clone();
        let (system_id, external_user) = (system_id.to_owned(), external_user.map(str::to_owned));
        Box::pin(async move {
            // SQLite reads block: they run on tokio's blocking threads, never on the event loop.
            tokio::task::spawn_blocking(move || readers.lookup(&system_id, external_user.as_deref()))
                .await
                .map_err(|e| StoreError::Unavailable(format!("the store lookup failed: {e}")))?
        })
    }

    fn secrets(&self) -> StoreFuture<'_, Vec<SealedSecret>> {
        Box::pin(async move {
            let sql = "SELECT name, sealed, created_at, updated_at, used_at FROM secrets ORDER BY name";
            self.rows(sql, [], |row| {
                Ok(SealedSecret {
                    name: row.get(0)?,
                    sealed: row.get(1)?,
                    created_at: row.get(2)?,
                    updated_at: row.get(3)?,
                    used_at: row.get(4)?,
                })
            })
        })
    }

    fn secrets_key_check(&self) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.query(move |c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", params![KEY_CHECK], |r| r.get(0)).optional()
        })
    }

    fn insert_system<'a>(
        &'a self,
        system: &'a System,
        primary: &'a SecretHash,
        alternate: &'a SecretHash,
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        self.change(move |tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO systems (id, name, active, primary_hash, alternate_hash, created_at, scopes) \
                     VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![
                        system.id,
                        system.name,
                        primary.0,
                        alternate.0,
                        system.created_at,
                        scopes_column(&system.scopes)
                    ],
                )
                .map_err(backend)?;
            if inserted == 0 {
                return Ok(false);
            }
            audit(tx, entry).map(|()| true)
        })
    }

    fn insert_user<'a>(&'a self, user: &'a User, entry: &'a AuditRecord) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let roles = serde_json::to_string(&user.roles).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            self.write(|tx| {
                let inserted = tx
                    .execute(
                        "INSERT INTO users (id, roles, active, created_at) VALUES (?1, ?2, 1, ?3) ON CONFLICT DO NOTHING",
                        params![user.id, roles, user.created_at],
                    )
                    .map_err(backend)?;
                if inserted == 0 {
                    return Ok(false);
                }
                audit(tx, entry).map(|()| true)
            })
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
            Entity::System => "UPDATE systems SET active = ?2 WHERE id = ?1",
            Entity::User => "UPDATE users SET active = ?2 WHERE id = ?1",
        };
        self.change(move |tx| {
            if tx.execute(sql, params![id, active]).map_err(backend)? == 0 {
                return Ok(false);
            }
            audit(tx, entry).map(|()| true)
        })
    }

    fn replace_scopes<'a>(
        &'a self,
        id: &'a str,
        scopes: &'a [String],
        entry: &'a AuditOf<'a, [String]>,
    ) -> StoreFuture<'a, Option<Vec<String>>> {
        self.change(move |tx| {
            let Some(old) = tx
                .query_row("SELECT scopes FROM systems WHERE id = ?1", params![id], |row| row.get::<_, String>(0))
                .optional()
                .map_err(backend)?
            else {
                return Ok(None);
            };
            let old = parse_scopes(&old);
            tx.execute("UPDATE systems SET scopes = ?2 WHERE id = ?1", params![id, scopes_column(scopes)])
                .map_err(backend)?;
            audit(tx, &entry(&old))?;
            Ok(Some(old))
        })
    }

    fn renew_secret<'a>(
        &'a self,
        id: &'a str,
        new_alternate: &'a SecretHash,
        entry: &'a AuditRecord,
    ) -> StoreFuture<'a, bool> {
        self.change(move |tx| {
            let changed = tx
                .execute(
                    "UPDATE systems SET primary_hash = alternate_hash, alternate_hash = ?2, secrets_renewed_at = ?3, \
                     primary_used_at = alternate_used_at, alternate_used_at = NULL WHERE id = ?1",
                    params![id, new_alternate.0, entry.at],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Ok(false);
            }
            audit(tx, entry).map(|()| true)
        })
    }

    fn insert_link<'a>(&'a self, link: &'a Link, entry: &'a AuditRecord) -> StoreFuture<'a, LinkWrite> {
        self.change(move |tx| {
            if !exists(tx, "SELECT 1 FROM systems WHERE id = ?1", &link.system_id)? {
                return Ok(LinkWrite::NoSystem);
            }
            if !exists(tx, "SELECT 1 FROM users WHERE id = ?1", &link.user_id)? {
                return Ok(LinkWrite::NoUser);
            }
            let inserted = tx
                .execute(
                    "INSERT INTO links (system_id, external_user, user_id, created_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT DO NOTHING",
                    params![link.system_id, link.external_user, link.user_id, link.created_at],
                )
                .map_err(backend)?;
            if inserted == 0 {
                return Ok(LinkWrite::Taken);
            }
            audit(tx, entry).map(|()| LinkWrite::Linked)
        })
    }

    fn delete_link<'a>(
        &'a self,
        system_id: &'a str,
        link: LinkRef<'a>,
        entry: &'a AuditOf<'a, Link>,
    ) -> StoreFuture<'a, Option<Link>> {
        let column = match link {
            LinkRef::ExternalUser(_) => "external_user",
            LinkRef::User(_) => "user_id",
        };
        self.change(move |tx| {
            let Some(found) = tx
                .query_row(
                    &format!("SELECT {LINK_COLUMNS} FROM links WHERE system_id = ?1 AND {column} = ?2"),
                    params![system_id, link.id()],
                    link_row,
                )
                .optional()
                .map_err(backend)?
            else {
                return Ok(None);
            };
            tx.execute(
                "DELETE FROM links WHERE system_id = ?1 AND external_user = ?2",
                params![system_id, found.external_user],
            )
            .map_err(backend)?;
            audit(tx, &entry(&found))?;
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
        self.change(move |tx| {
            tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", params![KEY_CHECK, key_check])
                .map_err(backend)?;
            let current: Vec<u8> = tx
                .query_row("SELECT value FROM meta WHERE key = ?1", params![KEY_CHECK], |r| r.get(0))
                .map_err(backend)?;
            if current != key_check {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO secrets (name, sealed, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                params![name, sealed, entry.at],
            )
            .map_err(backend)?;
            audit(tx, entry).map(|()| true)
        })
    }

    fn delete_secret<'a>(&'a self, name: &'a str, entry: &'a AuditRecord) -> StoreFuture<'a, bool> {
        self.change(move |tx| {
            if tx.execute("DELETE FROM secrets WHERE name = ?1", params![name]).map_err(backend)? == 0 {
                return Ok(false);
            }
            audit(tx, entry).map(|()| true)
        })
    }

    fn reseal_secrets<'a>(
        &'a self,
        reseal: &'a Reseal<'a>,
        key_check: &'a [u8],
        entry: &'a AuditOf<'a, usize>,
    ) -> StoreFuture<'a, usize> {
        self.change(move |tx| {
            let all: Vec<(String, Vec<u8>)> = tx
                .prepare("SELECT name, sealed FROM secrets")
                .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(backend)?;
            for (name, sealed) in &all {
                let next = reseal(name, sealed)?;
                tx.execute("UPDATE secrets SET sealed = ?2 WHERE name = ?1", params![name, next]).map_err(backend)?;
            }
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![KEY_CHECK, key_check])
                .map_err(backend)?;
            audit(tx, &entry(&all.len()))?;
            Ok(all.len())
        })
    }

    fn reset_secrets<'a>(&'a self, entry: &'a AuditOf<'a, usize>) -> StoreFuture<'a, usize> {
        self.change(move |tx| {
            let deleted = tx.execute("DELETE FROM secrets", []).map_err(backend)?;
            tx.execute("DELETE FROM meta WHERE key = ?1", params![KEY_CHECK]).map_err(backend)?;
            audit(tx, &entry(&deleted))?;
            Ok(deleted)
        })
    }

    fn secrets_used<'a>(&'a self, names: &'a [String], at: i64) -> StoreFuture<'a, ()> {
        self.change(move |tx| {
            for name in names {
                tx.execute("UPDATE secrets SET used_at = ?2 WHERE name = ?1", params![name, at]).map_err(backend)?;
            }
            Ok(())
        })
    }

    fn secret_used<'a>(&'a self, system_id: &'a str, slot: SecretSlot, minute: i64) -> StoreFuture<'a, ()> {
        let conn = self.conn.clone();
        let system_id = system_id.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                conn.execute(used_sql(slot), params![system_id, minute]).map(drop).map_err(backend)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("recording secret use failed: {e}")))?
        })
    }
    fn subscriptions(&self) -> StoreFuture<'_, Vec<Subscription>> {
        Box::pin(async move {
            let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id");
            self.rows(&sql, [], subscription_row)?.into_iter().map(SubscriptionRow::parse).collect()
        })
    }

    fn subscription<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Subscription>> {
        Box::pin(async move {
            let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1");
            self.rows(&sql, params![id], subscription_row)?.pop().map(SubscriptionRow::parse).transpose()
        })
    }

    fn subscription_keys(&self) -> StoreFuture<'_, Vec<(SecretHash, KeySlot, Subscription)>> {
        let readers = self.readers.clone();
        Box::pin(async move {
            // The gateway's snapshot reads this from its event loop: on a blocking thread.
            let rows = tokio::task::spawn_blocking(move || {
                let sql = format!(
                    "SELECT k.hash, k.slot, {SUBSCRIPTION_COLUMNS_OF_S} FROM subscription_keys k \
                     JOIN subscriptions s ON s.id = k.subscription_id ORDER BY s.created_at, s.id, k.slot"
                );
                readers.read(|c| {
                    c.prepare(&sql)?
                        .query_map([], |row| {
                            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?, subscription_row_at(row, 2)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading the subscription keys failed: {e}")))??;
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
        self.change(move |tx| {
            if insert_subscription_row(tx, subscription)? == 0 {
                return Ok(false);
            }
            let id = &subscription.id;
            put_key(tx, id, KeySlot::Primary, primary, subscription.primary.created_at, subscription.primary.bits)?;
            put_key(
                tx,
                id,
                KeySlot::Secondary,
                secondary,
                subscription.secondary.created_at,
                subscription.secondary.bits,
            )?;
            audit(tx, entry).map(|()| true)
        })
    }

    fn import_subscription<'a>(
        &'a self,
        subscription: &'a Subscription,
        primary: &'a SecretHash,
        secondary: &'a SecretHash,
        entry: &'a AuditOf<'a, bool>,
    ) -> StoreFuture<'a, bool> {
        self.change(move |tx| {
            let replaced = insert_subscription_row(tx, subscription)? == 0;
            if replaced {
                update_subscription_row(tx, subscription)?;
            }
            let id = &subscription.id;
            // Keys swapped between the slots are no clash: their old rows go first.
            tx.execute(
                "DELETE FROM subscription_keys WHERE subscription_id = ?1 AND \
                 ((hash = ?2 AND slot <> 'primary') OR (hash = ?3 AND slot <> 'secondary'))",
                params![id, primary.0, secondary.0],
            )
            .map_err(backend)?;
            put_key(tx, id, KeySlot::Primary, primary, subscription.primary.created_at, subscription.primary.bits)?;
            put_key(
                tx,
                id,
                KeySlot::Secondary,
                secondary,
                subscription.secondary.created_at,
                subscription.secondary.bits,
            )?;
            audit(tx, &entry(&replaced))?;
            Ok(replaced)
        })
    }

    fn update_subscription<'a>(
        &'a self,
        id: &'a str,
        change: &'a SubscriptionChange<'a>,
        entry: &'a AuditOf<'a, Subscription>,
    ) -> StoreFuture<'a, Option<Subscription>> {
        self.change(move |tx| {
            let Some(found) = subscription_in(tx, id)? else {
                return Ok(None);
            };
            let changed = change(&found)?;
            update_subscription_row(tx, &changed)?;
            audit(tx, &entry(&changed))?;
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
        self.change(move |tx| {
            let Some(found) = subscription_in(tx, id)? else {
                return Ok(false);
            };
            check(&found)?;
            if !put_key(tx, id, slot, key, entry.at, bits)? {
                return Err(StoreError::SubscriptionKeyTaken { id: id.to_owned(), slot });
            }
            audit(tx, entry).map(|()| true)
        })
    }

    fn delete_subscription<'a>(&'a self, id: &'a str, entry: &'a AuditRecord) -> StoreFuture<'a, bool> {
        self.change(move |tx| {
            tx.execute("DELETE FROM subscription_keys WHERE subscription_id = ?1", params![id]).map_err(backend)?;
            if tx.execute("DELETE FROM subscriptions WHERE id = ?1", params![id]).map_err(backend)? == 0 {
                return Ok(false);
            }
            audit(tx, entry).map(|()| true)
        })
    }

    fn subscription_key_used<'a>(&'a self, id: &'a str, slot: KeySlot, minute: i64) -> StoreFuture<'a, ()> {
        let conn = self.conn.clone();
        let id = id.to_owned();
        let (_, used, _) = key_columns(slot);
        let sql = format!("UPDATE subscriptions SET {used} = ?2 WHERE id = ?1 AND ({used} IS NULL OR {used} < ?2)");
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                conn.execute(&sql, params![id, minute]).map(drop).map_err(backend)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("recording key use failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::blocking::block_on;
    use super::super::rules::Store;
    use super::*;

    /// The storage at `path` and the rules over it.
    fn open(path: &Path) -> (Arc<SqliteStorage>, Store) {
        let (storage, key) = SqliteStorage::open(path).unwrap();
        let storage = Arc::new(storage);
        (storage.clone(), Store::new(storage, &key))
    }

    #[test]
    fn reads_go_on_while_the_writer_is_busy_and_see_its_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, store) = open(&dir.path().join("var/identity.db"));
        let secret = store.hasher().hash("s");
        let system = block_on(store.create_system("billing", &secret, &secret, &[], "test")).unwrap();
        let writer = storage.conn.lock().unwrap();
        let (readers, id) = (&storage.readers, system.id.clone());
        std::thread::scope(|s| {
            let reads = s.spawn(move || (0..4).all(|_| readers.lookup(&id, None).unwrap().client.is_some()));
            assert!(reads.join().unwrap(), "every read answered while the writer was held");
        });
        drop(writer);
        block_on(store.set_system_active(&system.id, false, "test")).unwrap();
        let client = storage.readers.lookup(&system.id, None).unwrap().client.unwrap();
        assert!(!client.active, "a committed write is read at once");
    }

    /// The schema as release 2 left it: the first two migrations, one system, one audit entry.
    fn version_2_store(path: &Path) {
        let conn = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO systems (id, name, active, primary_hash, alternate_hash, created_at) \
             VALUES ('old-1', 'legacy', 1, x'00', x'00', 1)",
            [],
        )
        .unwrap();
        conn.execute("INSERT INTO audit (at, actor, action, system_id) VALUES (1, 'op', 'system.create', 'old-1')", [])
            .unwrap();
    }

    #[test]
    fn an_existing_store_is_migrated_with_no_scopes_granted_to_its_systems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.db");
        version_2_store(&path);
        let (storage, store) = open(&path);
        let version: i64 = storage.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0))).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let legacy = block_on(store.system("old-1")).unwrap().unwrap();
        assert_eq!((legacy.name.as_str(), legacy.scopes.len()), ("legacy", 0), "never more than before: none");
        let client = storage.readers.lookup("old-1", None).unwrap().client.unwrap();
        assert!(client.active && client.scopes.is_empty());
        assert_eq!(block_on(store.set_system_scopes("old-1", &["read".into()], "op")).unwrap(), Vec::<String>::new());
        assert_eq!(storage.readers.lookup("old-1", None).unwrap().client.unwrap().scopes, ["read"]);
        assert_eq!(block_on(store.audit()).unwrap().len(), 2, "the old audit log is kept and appended to");
        drop((storage, store));
        // Opening again applies nothing twice.
        let (_, reopened) = open(&path);
        assert_eq!(block_on(reopened.system("old-1")).unwrap().unwrap().scopes, ["read"]);
    }
}
