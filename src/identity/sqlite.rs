//! The embedded SQLite [`IdentityStore`]: one file, created and migrated on first use
//! (versioned migrations tracked in `PRAGMA user_version`), WAL journal so that the CLI can
//! write while a gateway reads, every query parameterized, the audit table append-only
//! (triggers refuse UPDATE and DELETE).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior};

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
];

/// What an active flag belongs to.
#[derive(Clone, Copy)]
enum Entity {
    System,
    User,
}

/// An [`IdentityStore`] in one SQLite file: one connection writes (behind a mutex: SQLite
/// has one writer), a few read-only ones read at once (WAL lets readers run beside the writer
/// and each other), so token requests — reads only — never wait for one another.
pub struct SqliteStore {
    path: PathBuf,
    /// The one writer, shared with the blocking threads that record secret use.
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
    hasher: SecretHasher,
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
        .map_err(|e| StoreError::Backend(format!("cannot open {} for reading: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
    Ok(conn)
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens the database, creating it (and its directory) and applying pending migrations.
    ///
    /// # Errors
    /// The file cannot be created or opened, is not a database, or has a newer schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn =
            Connection::open(path).map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(backend)?;
        let mode = wal_mode(&conn)
            .map_err(|e| StoreError::Backend(format!("{} is not a usable SQLite database: {e}", path.display())))?;
        tracing::debug!(path = %path.display(), journal_mode = %mode, "identity store opened");
        let key = migrate(&mut conn)?;
        let conns = (0..reader_count()).map(|_| open_reader(path).map(Mutex::new)).collect::<Result<_, _>>()?;
        Ok(Self {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Readers { conns, next: AtomicUsize::new(0) }),
            hasher: SecretHasher::new(&key),
        })
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

    /// Sets the active flag of one system or user, with its audit entry.
    fn set_active(&self, entity: Entity, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        let (table, what) = match entity {
            Entity::System => ("systems", "system"),
            Entity::User => ("users", "user"),
        };
        self.write(|tx| {
            let sql = format!("UPDATE {table} SET active = ?2 WHERE id = ?1");
            if tx.execute(&sql, params![id, active]).map_err(backend)? == 0 {
                return Err(StoreError::NotFound(format!("{what} {id:?}")));
            }
            let action = format!("{what}.{}", if active { "activate" } else { "deactivate" });
            let (system, user) = match entity {
                Entity::System => (Some(id), None),
                Entity::User => (None, Some(id)),
            };
            audit(tx, actor, &action, system, user, None)
        })
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
        return Err(StoreError::Backend(format!(
            "the database schema is version {version}, newer than this portcullis knows ({}); upgrade portcullis",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql).map_err(|e| StoreError::Backend(format!("migration {}: {e}", i + 1)))?;
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

fn audit(
    tx: &Transaction<'_>,
    actor: &str,
    action: &str,
    system_id: Option<&str>,
    user_id: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, system_id, user_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![now(), actor, action, system_id, user_id, detail],
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

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
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

impl IdentityStore for SqliteStore {
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
        self.write(|tx| {
            tx.execute(
                "INSERT INTO systems (id, name, active, primary_hash, alternate_hash, created_at, scopes) \
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
                params![
                    system.id,
                    system.name,
                    primary.0,
                    alternate.0,
                    system.created_at,
                    scopes_column(&system.scopes)
                ],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict(format!("a system named {name:?} exists"))
                } else {
                    backend(e)
                }
            })?;
            let detail = format!("name={name} scopes={}", scopes_shown(&system.scopes));
            audit(tx, actor, "system.create", Some(&system.id), None, Some(&detail))?;
            Ok(system.clone())
        })
    }

    fn systems(&self) -> Result<Vec<System>, StoreError> {
        self.rows(&format!("SELECT {SYSTEM_COLUMNS} FROM systems ORDER BY created_at, name"), [], system_row)
    }

    fn system(&self, id: &str) -> Result<Option<System>, StoreError> {
        self.read(|c| {
            c.query_row(&format!("SELECT {SYSTEM_COLUMNS} FROM systems WHERE id = ?1"), params![id], system_row)
                .optional()
        })
    }

    fn set_system_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        self.set_active(Entity::System, id, active, actor)
    }

    fn set_system_scopes(&self, id: &str, scopes: &[String], actor: &str) -> Result<Vec<String>, StoreError> {
        let scopes = check_scopes(scopes)?;
        self.write(|tx| {
            let old: String = tx
                .query_row("SELECT scopes FROM systems WHERE id = ?1", params![id], |row| row.get(0))
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("system {id:?}")))?;
            let old = parse_scopes(&old);
            tx.execute("UPDATE systems SET scopes = ?2 WHERE id = ?1", params![id, scopes_column(&scopes)])
                .map_err(backend)?;
            let detail = format!("scopes={} was={}", scopes_shown(&scopes), scopes_shown(&old));
            audit(tx, actor, "system.scopes", Some(id), None, Some(&detail))?;
            Ok(old)
        })
    }

    fn renew_secret(&self, id: &str, new_alternate: &SecretHash, actor: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let changed = tx
                .execute(
                    "UPDATE systems SET primary_hash = alternate_hash, alternate_hash = ?2, secrets_renewed_at = ?3, \
                     primary_used_at = alternate_used_at, alternate_used_at = NULL WHERE id = ?1",
                    params![id, new_alternate.0, now()],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("system {id:?}")));
            }
            audit(tx, actor, "system.renew_secret", Some(id), None, None)
        })
    }

    fn add_user(&self, id: &str, roles: &[String], actor: &str) -> Result<User, StoreError> {
        let user = User::new(id, roles)?;
        let roles_json = serde_json::to_string(roles).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO users (id, roles, active, created_at) VALUES (?1, ?2, 1, ?3)",
                params![user.id, roles_json, user.created_at],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict(format!("user {id:?} exists"))
                } else {
                    backend(e)
                }
            })?;
            audit(tx, actor, "user.add", None, Some(id), Some(&format!("roles={}", roles.join(","))))?;
            Ok(user.clone())
        })
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.rows(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"), [], user_row)
    }

    fn set_user_active(&self, id: &str, active: bool, actor: &str) -> Result<(), StoreError> {
        self.set_active(Entity::User, id, active, actor)
    }

    fn link(&self, system_id: &str, external_user: &str, user_id: &str, actor: &str) -> Result<(), StoreError> {
        check_id("external user id", external_user)?;
        self.write(|tx| {
            let exists = |sql: &str, id: &str| -> Result<bool, StoreError> {
                tx.query_row(sql, params![id], |_| Ok(())).optional().map(|r| r.is_some()).map_err(backend)
            };
            if !exists("SELECT 1 FROM systems WHERE id = ?1", system_id)? {
                return Err(StoreError::NotFound(format!("system {system_id:?}")));
            }
            if !exists("SELECT 1 FROM users WHERE id = ?1", user_id)? {
                return Err(StoreError::NotFound(format!("user {user_id:?}")));
            }
            tx.execute(
                "INSERT INTO links (system_id, external_user, user_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![system_id, external_user, user_id, now()],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict(format!(
                        "system {system_id:?} already links external user {external_user:?} or user {user_id:?}; unlink first"
                    ))
                } else {
                    backend(e)
                }
            })?;
            audit(tx, actor, "system.link", Some(system_id), Some(user_id), Some(&format!("external_user={external_user}")))
        })
    }

    fn unlink(&self, system_id: &str, link: LinkRef<'_>, actor: &str) -> Result<Link, StoreError> {
        self.write(|tx| {
            let (column, value) = match link {
                LinkRef::ExternalUser(ext) => ("external_user", ext),
                LinkRef::User(user) => ("user_id", user),
            };
            let found = tx
                .query_row(
                    &format!("SELECT {LINK_COLUMNS} FROM links WHERE system_id = ?1 AND {column} = ?2"),
                    params![system_id, value],
                    link_row,
                )
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("a link of system {system_id:?} with {value:?}")))?;
            tx.execute(
                "DELETE FROM links WHERE system_id = ?1 AND external_user = ?2",
                params![system_id, found.external_user],
            )
            .map_err(backend)?;
            let detail = format!("external_user={}", found.external_user);
            audit(tx, actor, "system.unlink", Some(system_id), Some(&found.user_id), Some(&detail))?;
            Ok(found)
        })
    }

    fn links(&self, system_id: &str) -> Result<Vec<Link>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM links WHERE system_id = ?1 ORDER BY external_user");
        self.rows(&sql, params![system_id], link_row)
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT seq, at, actor, action, system_id, user_id, detail FROM audit ORDER BY seq";
        self.rows(sql, [], |row| {
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
    }

    fn lookup<'a>(&'a self, system_id: &'a str, external_user: Option<&'a str>) -> StoreFuture<'a, Lookup> {
        let readers = self.readers.clone();
        let (system_id, external_user) = (system_id.to_owned(), external_user.map(str::to_owned));
        Box::pin(async move {
            // SQLite reads block: they run on tokio's blocking threads, never on the event loop.
            tokio::task::spawn_blocking(move || readers.lookup(&system_id, external_user.as_deref()))
                .await
                .map_err(|e| StoreError::Backend(format!("the store lookup failed: {e}")))?
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
            .map_err(|e| StoreError::Backend(format!("recording secret use failed: {e}")))?
        })
    }

    fn secrets(&self) -> Result<Vec<SealedSecret>, StoreError> {
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
    }

    fn secrets_key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| c.query_row("SELECT value FROM meta WHERE key = ?1", params![KEY_CHECK], |r| r.get(0)).optional())
    }

    fn put_secret(&self, name: &str, sealed: &[u8], key_check: &[u8], actor: &str) -> Result<(), StoreError> {
        check_id("secret name", name)?;
        self.write(|tx| {
            tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", params![KEY_CHECK, key_check])
                .map_err(backend)?;
            let current: Vec<u8> = tx
                .query_row("SELECT value FROM meta WHERE key = ?1", params![KEY_CHECK], |r| r.get(0))
                .map_err(backend)?;
            if current != key_check {
                return Err(StoreError::Conflict(WRONG_KEY.to_owned()));
            }
            let now = now();
            tx.execute(
                "INSERT INTO secrets (name, sealed, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                params![name, sealed, now],
            )
            .map_err(backend)?;
            audit(tx, actor, "secret.set", None, None, Some(&format!("name={name}")))
        })
    }

    fn remove_secret(&self, name: &str, actor: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            if tx.execute("DELETE FROM secrets WHERE name = ?1", params![name]).map_err(backend)? == 0 {
                return Err(StoreError::NotFound(format!("secret {name:?}")));
            }
            audit(tx, actor, "secret.rm", None, None, Some(&format!("name={name}")))
        })
    }

    fn reseal_secrets(&self, reseal: &Reseal<'_>, key_check: &[u8], actor: &str) -> Result<usize, StoreError> {
        self.write(|tx| {
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
            audit(tx, actor, "secret.rotate_key", None, None, Some(&format!("secrets={}", all.len())))?;
            Ok(all.len())
        })
    }

    fn reset_secrets(&self, actor: &str) -> Result<usize, StoreError> {
        self.write(|tx| {
            let deleted = tx.execute("DELETE FROM secrets", []).map_err(backend)?;
            tx.execute("DELETE FROM meta WHERE key = ?1", params![KEY_CHECK]).map_err(backend)?;
            audit(tx, actor, "secret.reset", None, None, Some(&format!("secrets={deleted}")))?;
            Ok(deleted)
        })
    }

    fn secrets_used(&self, names: &[String], at: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            for name in names {
                tx.execute("UPDATE secrets SET used_at = ?2 WHERE name = ?1", params![name, at]).map_err(backend)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_on_while_the_writer_is_busy_and_see_its_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("var/identity.db")).unwrap();
        let secret = store.hasher().hash("s");
        let system = store.create_system("billing", &secret, &secret, &[], "test").unwrap();
        let writer = store.conn.lock().unwrap();
        let (readers, id) = (&store.readers, system.id.clone());
        std::thread::scope(|s| {
            let reads = s.spawn(move || (0..4).all(|_| readers.lookup(&id, None).unwrap().client.is_some()));
            assert!(reads.join().unwrap(), "every read answered while the writer was held");
        });
        drop(writer);
        store.set_system_active(&system.id, false, "test").unwrap();
        let client = store.readers.lookup(&system.id, None).unwrap().client.unwrap();
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
        let store = SqliteStore::open(&path).unwrap();
        let version: i64 = store.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0))).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let legacy = store.system("old-1").unwrap().unwrap();
        assert_eq!((legacy.name.as_str(), legacy.scopes.len()), ("legacy", 0), "never more than before: none");
        let client = store.readers.lookup("old-1", None).unwrap().client.unwrap();
        assert!(client.active && client.scopes.is_empty());
        assert_eq!(store.set_system_scopes("old-1", &["read".into()], "op").unwrap(), Vec::<String>::new());
        assert_eq!(store.readers.lookup("old-1", None).unwrap().client.unwrap().scopes, ["read"]);
        assert_eq!(store.audit().unwrap().len(), 2, "the old audit log is kept and appended to");
        drop(store);
        // Opening again applies nothing twice.
        assert_eq!(SqliteStore::open(&path).unwrap().system("old-1").unwrap().unwrap().scopes, ["read"]);
    }
}
