//! Storage for the RTC suite: one connection pool, three SQL engines.
//!
//! A daemon or the admin CLI calls [`Store::connect`] with a database URL (SQLite by
//! default, PostgreSQL or MariaDB/MySQL for shared deployments), runs the migration for
//! the service it hosts (for example [`Store::migrate_turn`]), then calls plain async
//! methods that each run one or two SQL statements and return owned Rust values. All
//! credential *algorithms* live in `rtc-auth`; this crate only moves rows.
//!
//! Data flow: URL -> [`Store`] (an `sqlx` `Any` pool plus the [`Backend`] it talks to) ->
//! per-service module ([`turn`] for coturn's tables, [`sip`] for Kamailio's, [`xmpp`]
//! for xmppd's accounts and Prosody-style key-value data) -> SQL written once in the
//! portable subset of the three dialects (engine specific only where the dialects
//! differ, such as upserts and dates), with `?`
//! placeholders that [`Store`] rewrites to `$n` for PostgreSQL, because sqlx's `Any`
//! driver passes SQL through untouched.
//!
//! Each service's tables keep the layout of the server this suite replaces, so an
//! existing database (coturn's `turndb`, say) works as it is, and migrations only ever
//! create missing tables, never alter existing ones.
//!
//! Cargo features pick the compiled-in engines: `sqlite` (default), `postgres`, `mysql`.
//!
//! SQLite files are switched to write-ahead logging and every connection runs with
//! `synchronous = FULL`, so a transaction that returned from COMMIT is on disk: a
//! registrar answers 200 OK to a REGISTER only after the binding committed. In WAL mode
//! a commit appends the transaction's pages to the `-wal` file with `write()` before it
//! returns, so it survives `kill -9` of the process even with `synchronous = NORMAL` (the
//! next opener replays the log); `FULL` adds one `fsync` of the log per commit, which
//! makes it survive a power cut or kernel crash too. Batching many REGISTERs into one
//! transaction (`SipStore::apply_location_batch`) is what keeps that fsync cheap. WAL
//! also lets readers (the admin CLI, Kamailio's tools) run while a daemon writes.
//!
//! Every write transaction goes through [`WriteTx`]: when a statement or the COMMIT
//! fails (a full disk, a server restarting under load), the transaction is rolled back
//! and its connection is closed instead of going back to the pool. A connection that
//! still held an open transaction would otherwise keep SQLite's write lock (every later
//! writer gets `database is locked`, and nothing it "commits" is durable) until the
//! process restarts; a fresh connection recovers as soon as the cause is gone.

#![forbid(unsafe_code)]

mod dburl;
pub mod sip;
pub mod turn;
pub mod xmpp;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Database, TransactionManager};

pub use sip::{
    LocationOp, LocationRow, Sha256Row, SipCredentials, SipRowCounts, SipSnapshot, SipStore,
    SubscriberRow,
};
pub use turn::{PeerIpList, RealmOption, RealmOptions, TurnStore};
pub use xmpp::{ScramRow, XmppAccount, XmppOp, XmppSecrets, XmppStore};

/// The SQL engine behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite file (or in-memory) database; coturn's default `turndb`.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
    /// MariaDB or MySQL server.
    Mysql,
}

impl Backend {
    /// The cargo feature of this crate that compiles the engine in.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    fn compiled_in(self) -> bool {
        match self {
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::Mysql => cfg!(feature = "mysql"),
        }
    }
}

/// Everything that can go wrong talking to the database.
///
/// Every variant names the database (URL with any password masked) so that a message in a
/// log or on the admin CLI's stderr says which configuration entry to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL's scheme or shape is not one we understand.
    #[error("database URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The URL names an engine whose cargo feature was not compiled in.
    #[error("database URL {url}: {backend:?} support is not compiled in (cargo feature `{}` of rtc-store)", .backend.feature())]
    BackendNotCompiled { url: String, backend: Backend },
    /// Opening the pool failed: server down, bad credentials, unwritable file...
    #[error("cannot open database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed; `what` names the operation.
    #[error("database {url}: {what} failed: {source}")]
    Query {
        url: String,
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A stored value cannot be understood (e.g. a non-numeric realm option).
    #[error("database {url}: bad value {value:?} in {table}.{column}")]
    BadValue {
        url: String,
        table: &'static str,
        column: &'static str,
        value: String,
    },
}

/// coturn's `userdb` setting as every tool of the suite resolves it: a URL is kept; a
/// file path relative to the configuration file's directory is made absolute, so the
/// daemon (started from `/` by systemd) and `rtc-admin` (started from anywhere) open the
/// same file. The result is what [`Store::connect`] takes.
pub fn resolve_userdb(userdb: &str, config_file: &std::path::Path) -> String {
    if userdb.contains("://") {
        return userdb.to_owned();
    }
    let path = std::path::Path::new(userdb);
    match config_file.parent() {
        Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => {
            dir.join(path).display().to_string()
        }
        _ => userdb.to_owned(),
    }
}

/// Creates an empty SQLite file readable by its owner only, unless it exists: the
/// database holds keys that authenticate users (coturn's `hmackey`), so it must not
/// inherit a world-readable umask.
fn create_private(file: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A pool of connections to one database, shared by all services of a process.
///
/// Cloning is cheap (the pool is reference counted).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL with the password masked, for error messages.
    shown_url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool to the database at `url` and checks that one connection works.
    ///
    /// Accepted forms: `sqlite:///abs/path/turndb`, `sqlite://relative/path`,
    /// `sqlite:relative`, `sqlite::memory:`, a bare filesystem path (taken as SQLite),
    /// `postgres://user:pass@host:port/db` (or `postgresql://`), and
    /// `mysql://user:pass@host:port/db` (or `mariadb://`). A SQLite file is created if
    /// missing (`mode=rwc`) unless the URL sets its own `mode`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let target = dburl::parse(url)?;
        if let Some(file) = &target.file {
            create_private(file).map_err(|e| StoreError::Connect {
                url: target.shown_url.clone(),
                source: sqlx::Error::Io(e),
            })?;
        }
        if !target.backend.compiled_in() {
            return Err(StoreError::BackendNotCompiled {
                url: target.shown_url,
                backend: target.backend,
            });
        }
        sqlx::any::install_default_drivers();
        let connect_error = |source| StoreError::Connect {
            url: target.shown_url.clone(),
            source,
        };
        // One plain connection first: the pool would retry a refused connection until
        // its acquire timeout, where a daemon starting up (or an admin typing a command)
        // wants the server's reason at once.
        if !target.in_memory {
            use sqlx::Connection as _;
            let mut probe = sqlx::AnyConnection::connect(&target.sqlx_url)
                .await
                .map_err(connect_error)?;
            // WAL is a property of the file, set once; a read-only URL (no `file`) cannot
            // and need not change it.
            if target.backend == Backend::Sqlite && target.file.is_some() {
                sqlx::query("PRAGMA journal_mode = WAL")
                    .fetch_optional(&mut probe)
                    .await
                    .map_err(connect_error)?;
            }
            probe.close().await.map_err(connect_error)?;
        }
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if target.backend == Backend::Sqlite {
            // Per connection; see the crate documentation for why FULL.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("PRAGMA synchronous = FULL")
                        .execute(conn)
                        .await
                        .map(drop)
                })
            });
        }
        if target.in_memory {
            // An in-memory SQLite database lives only while a connection to it is open.
            options = options
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            options = options.max_connections(8);
        }
        let pool = options
            .connect(&target.sqlx_url)
            .await
            .map_err(connect_error)?;
        Ok(Store {
            pool,
            backend: target.backend,
            shown_url: target.shown_url,
        })
    }

    /// The engine this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL with any password masked, as shown in errors.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Closes all connections, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// `q` in this backend's placeholder syntax (see [`numbered_placeholders`]).
    pub(crate) fn sql<'q>(&self, q: &'q str) -> Cow<'q, str> {
        match self.backend {
            Backend::Postgres => Cow::Owned(numbered_placeholders(q)),
            Backend::Sqlite | Backend::Mysql => Cow::Borrowed(q),
        }
    }

    pub(crate) fn query_error(
        &self,
        what: &'static str,
    ) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
        move |source| StoreError::Query {
            url: self.shown_url.clone(),
            what,
            source,
        }
    }

    /// Runs DDL statements one by one (not all drivers take several per call).
    pub(crate) async fn execute_all(
        &self,
        what: &'static str,
        statements: &[&str],
    ) -> Result<(), StoreError> {
        for statement in statements {
            sqlx::query(statement)
                .execute(&self.pool)
                .await
                .map_err(self.query_error(what))?;
        }
        Ok(())
    }
}

/// The one way this crate writes: a transaction on a connection that is discarded, not
/// pooled, unless it committed (see the crate documentation for why).
///
/// Dereferences to the connection, so statements run with `.execute(&mut *tx)`.
/// Dropping it without [`WriteTx::commit`] (a statement failed and `?` returned) rolls
/// back by closing the connection: SQLite, PostgreSQL and MariaDB all abort an open
/// transaction when its connection goes away.
pub(crate) struct WriteTx<'s> {
    store: &'s Store,
    what: &'static str,
    conn: PoolConnection<Any>,
    open: bool,
}

type Tm = <Any as Database>::TransactionManager;

impl<'s> WriteTx<'s> {
    /// Takes a connection from the pool and begins a transaction on it; `what` names the
    /// operation in errors.
    pub(crate) async fn begin(store: &'s Store, what: &'static str) -> Result<Self, StoreError> {
        let mut conn = store
            .pool
            .acquire()
            .await
            .map_err(store.query_error(what))?;
        if let Err(e) = Tm::begin(&mut conn, None).await {
            conn.close_on_drop();
            return Err(store.query_error(what)(e));
        }
        Ok(WriteTx {
            store,
            what,
            conn,
            open: true,
        })
    }

    /// Commits. On failure the transaction is rolled back (SQLite asks for an explicit
    /// ROLLBACK after SQLITE_FULL or SQLITE_IOERR) and the connection is discarded;
    /// nothing of the transaction is durable.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        // `open` stays set until COMMIT returned: if this future is dropped half-way, the
        // guard's drop discards the connection rather than pool it mid-transaction.
        match Tm::commit(&mut self.conn).await {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                if Tm::get_transaction_depth(&self.conn) > 0 {
                    // Best effort: the connection is closed right after anyway.
                    let _ = Tm::rollback(&mut self.conn).await;
                }
                self.conn.close_on_drop();
                Err(self.store.query_error(self.what)(e))
            }
        }
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// Rewrites `?` placeholders to PostgreSQL's `$1, $2, ...`.
///
/// SQLite and MySQL take `?` but PostgreSQL only takes numbered parameters, and sqlx's
/// `Any` driver does not translate. Question marks inside single-quoted literals, double
/// -quoted identifiers and `--` comments are left alone.
pub fn numbered_placeholders(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 8);
    let mut n = 0u32;
    let mut quote: Option<char> = None;
    let mut chars = q.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(open) => {
                // A quote (or, for a `--` comment, the newline) ends the span; a
                // doubled quote simply reopens it on the next character.
                out.push(c);
                if c == open {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    quote = Some('\n');
                    out.push(c);
                }
                '?' => {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                _ => out.push(c),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered_placeholders as np;

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(
            np("SELECT a FROM t WHERE b = ? AND c = ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(np("SELECT 1"), "SELECT 1");
        assert_eq!(
            np("INSERT INTO t VALUES (?,?,?)"),
            "INSERT INTO t VALUES ($1,$2,$3)"
        );
    }

    #[test]
    fn quoted_question_marks_are_kept() {
        assert_eq!(
            np("SELECT '?', \"a?\" FROM t WHERE x = ? -- why?\n AND y = ?"),
            "SELECT '?', \"a?\" FROM t WHERE x = $1 -- why?\n AND y = $2"
        );
        assert_eq!(
            np("WHERE a = 'it''s?' AND b = ?"),
            "WHERE a = 'it''s?' AND b = $1"
        );
    }
}
