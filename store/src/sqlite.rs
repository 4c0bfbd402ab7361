//! The embedded default backend: one SQLite file (WAL, `synchronous=FULL`).
//!
//! Tables: `kv` holds the current value of each key with its create and mod revisions; `log`
//! holds one row per revision (the event: kind, key, value, create revision), which serves
//! watchers that are behind the in-memory cache and survives restarts; `meta` holds the latest
//! and the compacted revision.
//!
//! All writes go through one writer thread, which takes every request waiting in its queue and
//! commits them in one transaction (group commit): one fsync acknowledges many writes, and each
//! write still gets its own revision, in queue order. A write is acknowledged only after its
//! transaction is durable, so killing the process at any point loses no acknowledged write.
//! Reads use a small pool of connections on the blocking thread pool; WAL lets them run while
//! the writer commits.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::hub::{EventHub, LogPage, LogSource};
use crate::mem::{check_compact, check_expected};
use crate::{
    EventKind, KeyValue, ListResult, Revision, Store, StoreError, WatchEvent, WatchStream,
};

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How many recent events are kept in memory for watchers (older ones come from the log).
    pub cache_events: usize,
    /// The most writes committed in one transaction.
    pub max_batch: usize,
    pub sync: SqliteSync,
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    /// After the WAL is fsynced (`synchronous=FULL`): survives a process kill, a kernel crash
    /// and a power loss. Costs one fsync per commit, shared by every write in the batch.
    #[default]
    Full,
    /// After the WAL is written to the kernel (`synchronous=NORMAL`): survives a process kill
    /// (the requirement for podd) but a power loss may roll back the last commits. Much lower
    /// latency for one client at a time on disks with slow fsync.
    Normal,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            cache_events: 8192,
            max_batch: 512,
            sync: SqliteSync::Full,
        }
    }
}

pub struct SqliteStore {
    reader: Arc<Readers>,
    hub: Arc<EventHub>,
    revision: Arc<AtomicI64>,
    writer: Option<mpsc::Sender<Request>>,
    writer_thread: Option<JoinHandle<()>>,
    /// An exclusive lock on `<db>.lock`: one process owns the database at a time, because the
    /// watch cache and the revision counter live in that process.
    _lock: File,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY NOT NULL,
    kind INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', 1), ('revision', 0), ('compacted', 0);
";

fn backend<'a>(op: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |e| StoreError::Backend {
        op,
        message: format!("sqlite {}: {e}", path.display()),
    }
}

/// Creates the database's directory 0700, or tightens it to 0700. A shared directory (sticky,
/// such as /tmp) or one owned by another user is left alone: the files themselves are 0600.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let m = std::fs::metadata(dir)?;
    let mode = m.permissions().mode() & 0o7777;
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let shared = mode & 0o1000 != 0 || m.uid() != euid;
    if mode != 0o700 && !shared {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives its -wal and -shm the
/// database file's mode), and sets an existing database, WAL, shared memory and lock file to
/// 0600 (older installs made podd.db 0644).
fn private_files(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(db)?;
    for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o7777 != 0o600 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn open_connection(path: &Path, sync: SqliteSync) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    // WAL: readers never block the writer. synchronous=FULL (the default): a commit is on disk
    // (WAL fsynced) before it returns, so an acknowledged write survives a crash or a power
    // loss; group commit keeps the fsync cost per write low. See `SqliteSync`.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let level = match sync {
        SqliteSync::Full => "FULL",
        SqliteSync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

fn meta(conn: &Connection, name: &str) -> Result<Revision, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
}

/// The smallest string greater than every string that starts with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn kind_code(kind: &EventKind) -> i64 {
    match kind {
        EventKind::Created => 0,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    }
}

fn kind_of(code: i64) -> EventKind {
    match code {
        0 => EventKind::Created,
        1 => EventKind::Modified,
        _ => EventKind::Deleted,
    }
}

enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

struct Request {
    op: Op,
    reply: tokio::sync::oneshot::Sender<Result<Revision, StoreError>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(|e| StoreError::Backend {
                op: "open",
                message: format!("creating {} (mode 0700): {e}", dir.display()),
            })?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StoreError::Backend {
                op: "open",
                message: format!("opening {}: {e}", lock_path.display()),
            })?;
        lock.try_lock().map_err(|e| StoreError::Backend {
            op: "open",
            message: format!(
                "{} is in use by another process ({e}); only one podd server may own a SQLite store",
                path.display()
            ),
        })?;

        private_files(&path).map_err(|e| StoreError::Backend {
            op: "open",
            message: format!("making {} and its WAL mode 0600: {e}", path.display()),
        })?;
        let conn = open_connection(&path, options.sync).map_err(backend("open", &path))?;
        conn.execute_batch(SCHEMA).map_err(backend("open", &path))?;
        let revision = meta(&conn, "revision").map_err(backend("open", &path))?;
        let compacted = meta(&conn, "compacted").map_err(backend("open", &path))?;

        let hub = Arc::new(EventHub::new(
            revision,
            compacted,
            Some(options.cache_events.max(1)),
        ));
        let revision = Arc::new(AtomicI64::new(revision));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            conn,
            path: path.clone(),
            hub: Arc::clone(&hub),
            revision: Arc::clone(&revision),
            max_batch: options.max_batch.max(1),
        };
        let writer_thread = std::thread::Builder::new()
            .name("podd-sqlite-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| StoreError::Backend {
                op: "open",
                message: format!("starting the writer thread: {e}"),
            })?;
        tracing::debug!(path = %path.display(), "opened sqlite store");
        Ok(SqliteStore {
            reader: Arc::new(Readers {
                path,
                pool: Mutex::new(Vec::new()),
            }),
            hub,
            revision,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            _lock: lock,
        })
    }

    async fn write(&self, op: Op) -> Result<Revision, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let closed = || StoreError::Backend {
            op: "write",
            message: "the sqlite writer thread has stopped".into(),
        };
        self.writer
            .as_ref()
            .ok_or_else(closed)?
            .send(Request { op, reply })
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer after its current batch; joining it closes the
        // database before the file lock is released.
        drop(self.writer.take());
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
        self.hub.close();
    }
}

/// Read connections, shared by the store and its watchers' log reads.
struct Readers {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

const MAX_IDLE_READERS: usize = 8;

impl Readers {
    fn with<T: Send + 'static>(
        self: &Arc<Self>,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            tokio::task::spawn_blocking(move || {
                let pooled = this.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let mut conn = match pooled {
                    Some(c) => c,
                    None => {
                        let c = open_connection(&this.path, SqliteSync::Normal)
                            .map_err(backend(op, &this.path))?;
                        c.pragma_update(None, "query_only", true)
                            .map_err(backend(op, &this.path))?;
                        c
                    }
                };
                let out = f(&mut conn);
                let mut pool = this.pool.lock().unwrap_or_else(|e| e.into_inner());
                if pool.len() < MAX_IDLE_READERS {
                    pool.push(conn);
                }
                out
            })
            .await
            .map_err(|e| StoreError::Backend {
                op,
                message: format!("sqlite read task failed: {e}"),
            })?
        }
    }
}

/// The log source handed to watchers: an `Arc` of the reader pool.
struct ReadersLog(Arc<Readers>);

impl LogSource for ReadersLog {
    fn read_log(
        &self,
        prefix: String,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<LogPage, StoreError>> {
        let path = self.0.path.clone();
        self.0
            .with("watch", move |conn| {
                read_log_page(conn, &prefix, after, limit).map_err(backend("watch", &path))?
            })
            .boxed()
    }
}

fn read_log_page(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<Result<LogPage, StoreError>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let compacted = meta(&tx, "compacted")?;
    if after < compacted {
        return Ok(Err(StoreError::Compacted {
            requested: after,
            compacted,
        }));
    }
    let latest = meta(&tx, "revision")?;
    let end = prefix_end(prefix);
    let mut stmt = tx.prepare_cached(
        "SELECT rev, kind, key, value, create_rev FROM log
         WHERE rev > ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3)
         ORDER BY rev LIMIT ?4",
    )?;
    let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
    let events: Vec<WatchEvent> = stmt
        .query_map(params![after, prefix, end, limit_i], |r| {
            let rev: Revision = r.get(0)?;
            Ok(WatchEvent {
                kind: kind_of(r.get(1)?),
                kv: KeyValue {
                    key: r.get(2)?,
                    value: r.get(3)?,
                    create_revision: r.get(4)?,
                    mod_revision: rev,
                },
            })
        })?
        .collect::<Result<_, _>>()?;
    let scanned_through = if events.len() >= limit {
        events.last().map_or(after, WatchEvent::revision)
    } else {
        latest.max(after)
    };
    drop(stmt);
    tx.commit()?;
    Ok(Ok(LogPage {
        events,
        scanned_through,
    }))
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    hub: Arc<EventHub>,
    revision: Arc<AtomicI64>,
    max_batch: usize,
}

/// What one op did inside the batch transaction.
enum Applied {
    Event(WatchEvent),
    Compacted(Revision),
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        tracing::debug!(path = %self.path.display(), "sqlite writer stopped");
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let start = self.revision.load(Ordering::Acquire);
        match self.apply_batch(&batch, start) {
            Ok(results) => {
                // Durable now: publish in revision order, then acknowledge.
                let mut last = start;
                for (req, result) in batch.into_iter().zip(results) {
                    let reply = match result {
                        Ok(Applied::Event(ev)) => {
                            let rev = ev.revision();
                            last = rev;
                            self.revision.store(rev, Ordering::Release);
                            self.hub.publish(ev);
                            Ok(rev)
                        }
                        Ok(Applied::Compacted(r)) => {
                            self.hub.compact(r);
                            Ok(last)
                        }
                        Err(e) => Err(e),
                    };
                    let _ = req.reply.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "sqlite write batch failed");
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::Backend {
                        op: "write",
                        message: format!("sqlite {}: {e}", self.path.display()),
                    }));
                }
            }
        }
    }

    /// Runs every op of the batch in one transaction; logical failures (conflicts) are results,
    /// SQL failures abort the whole batch.
    #[allow(clippy::type_complexity)]
    fn apply_batch(
        &mut self,
        batch: &[Request],
        start: Revision,
    ) -> Result<Vec<Result<Applied, StoreError>>, rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut rev = start;
        let mut results = Vec::with_capacity(batch.len());
        for req in batch {
            let result = match &req.op {
                Op::Create { key, value } => {
                    let exists = tx
                        .prepare_cached("SELECT 1 FROM kv WHERE key = ?1")?
                        .exists([key])?;
                    if exists {
                        Err(StoreError::AlreadyExists { key: key.clone() })
                    } else {
                        rev += 1;
                        tx.prepare_cached(
                            "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?3)",
                        )?
                        .execute(params![key, value, rev])?;
                        let ev = WatchEvent {
                            kind: EventKind::Created,
                            kv: KeyValue {
                                key: key.clone(),
                                value: value.clone(),
                                create_revision: rev,
                                mod_revision: rev,
                            },
                        };
                        insert_log(&tx, &ev)?;
                        Ok(Applied::Event(ev))
                    }
                }
                Op::Update {
                    key,
                    value,
                    expected,
                } => {
                    let cur = read_kv(&tx, key)?;
                    match check_expected(key, cur.as_ref(), *expected) {
                        Err(e) => Err(e),
                        Ok(()) => {
                            rev += 1;
                            tx.prepare_cached(
                                "UPDATE kv SET value = ?2, mod_rev = ?3 WHERE key = ?1",
                            )?
                            .execute(params![key, value, rev])?;
                            let ev = WatchEvent {
                                kind: EventKind::Modified,
                                kv: KeyValue {
                                    key: key.clone(),
                                    value: value.clone(),
                                    create_revision: cur.map_or(rev, |c| c.create_revision),
                                    mod_revision: rev,
                                },
                            };
                            insert_log(&tx, &ev)?;
                            Ok(Applied::Event(ev))
                        }
                    }
                }
                Op::Delete { key, expected } => {
                    let cur = read_kv(&tx, key)?;
                    match (check_expected(key, cur.as_ref(), *expected), cur) {
                        (Err(e), _) => Err(e),
                        (Ok(()), None) => Err(StoreError::NotFound { key: key.clone() }),
                        (Ok(()), Some(mut kv)) => {
                            rev += 1;
                            tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                                .execute([key])?;
                            kv.mod_revision = rev;
                            let ev = WatchEvent {
                                kind: EventKind::Deleted,
                                kv,
                            };
                            insert_log(&tx, &ev)?;
                            Ok(Applied::Event(ev))
                        }
                    }
                }
                Op::Compact { revision } => match check_compact(*revision, rev, "compact") {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let compacted = meta(&tx, "compacted")?;
                        if *revision > compacted {
                            tx.prepare_cached("DELETE FROM log WHERE rev <= ?1")?
                                .execute([revision])?;
                            tx.prepare_cached(
                                "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
                            )?
                            .execute([revision])?;
                        }
                        Ok(Applied::Compacted(*revision))
                    }
                },
            };
            results.push(result);
        }
        if rev != start {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")?
                .execute([rev])?;
        }
        tx.commit()?;
        Ok(results)
    }
}

fn read_kv(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<Option<KeyValue>, rusqlite::Error> {
    tx.prepare_cached("SELECT value, create_rev, mod_rev FROM kv WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(KeyValue {
                key: key.to_string(),
                value: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        })
        .optional()
}

fn insert_log(tx: &rusqlite::Transaction<'_>, ev: &WatchEvent) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO log (rev, kind, key, value, create_rev) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        ev.revision(),
        kind_code(&ev.kind),
        ev.kv.key,
        ev.kv.value,
        ev.kv.create_revision
    ])?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        let path = self.reader.path.clone();
        self.reader
            .with("get", move |conn| {
                conn.prepare_cached("SELECT value, create_rev, mod_rev FROM kv WHERE key = ?1")
                    .and_then(|mut s| {
                        s.query_row([&key], |r| {
                            Ok(KeyValue {
                                key: key.clone(),
                                value: r.get(0)?,
                                create_revision: r.get(1)?,
                                mod_revision: r.get(2)?,
                            })
                        })
                        .optional()
                    })
                    .map_err(backend("get", &path))
            })
            .await
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_string();
        let path = self.reader.path.clone();
        self.reader
            .with("list", move |conn| {
                let mut read = || -> Result<ListResult, rusqlite::Error> {
                    // One read transaction: the items and the revision are one snapshot.
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                    let revision = meta(&tx, "revision")?;
                    let end = prefix_end(&prefix);
                    let items = tx
                        .prepare_cached(
                            "SELECT key, value, create_rev, mod_rev FROM kv
                             WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key",
                        )?
                        .query_map(params![prefix, end], |r| {
                            Ok(KeyValue {
                                key: r.get(0)?,
                                value: r.get(1)?,
                                create_revision: r.get(2)?,
                                mod_revision: r.get(3)?,
                            })
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    tx.commit()?;
                    Ok(ListResult { items, revision })
                };
                read().map_err(backend("list", &path))
            })
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.write(Op::Create {
            key: key.to_string(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.write(Op::Update {
            key: key.to_string(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.write(Op::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.hub.check_watchable(after)?;
        let log: Arc<dyn LogSource> = Arc::new(ReadersLog(Arc::clone(&self.reader)));
        Ok(self.hub.watch(Some(log), prefix.to_string(), after))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.write(Op::Compact { revision }).await.map(|_| ())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.revision.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end("/a/").as_deref(), Some("/a0"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
    }

    fn mode(p: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn database_wal_and_directory_are_private_also_for_old_installs() {
        use crate::Store;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("podd");
        let db = dir.join("podd.db");
        let wal = dir.join("podd.db-wal");
        let shm = dir.join("podd.db-shm");
        {
            let s = super::SqliteStore::open(&db).unwrap();
            s.create("/k", b"v".to_vec()).await.unwrap();
            assert_eq!(mode(&dir), 0o700);
            for f in [&db, &wal, &shm] {
                assert_eq!(mode(f), 0o600, "{}", f.display());
            }
        }
        // An install made by an older podd: 0755 directory, 0644 database.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for f in [&db, &wal, &shm] {
            if f.exists() {
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let s = super::SqliteStore::open(&db).unwrap();
        s.create("/k2", b"v".to_vec()).await.unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in [&db, &wal, &shm] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
}
