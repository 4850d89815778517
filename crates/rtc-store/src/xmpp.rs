//! XMPP tables for xmppd and `rtc-admin xmpp`: accounts with SCRAM secrets only, and
//! Prosody's key-value storage model for everything else a user owns.
//!
//! What each table is for:
//! - `xmpp_accounts(host, username, sha1_*, sha256_*, created_at)`: one row per account
//!   (Prosody's `accounts` store under `internal_hashed`), keyed by the virtual host and
//!   the JID localpart. For each of SCRAM-SHA-1 (RFC 5802) and SCRAM-SHA-256 (RFC 7677)
//!   it keeps salt, iteration count, StoredKey and ServerKey, never a password; either set
//!   may be NULL (an account imported with one hash only). Binary values are lowercase hex
//!   text, which every engine stores and compares the same way (no BLOB/BYTEA/VARBINARY
//!   differences through sqlx's `Any` driver). `created_at` is Unix seconds.
//! - `xmpp_data(host, username, store, key, value)`: Prosody's storage API (`host`,
//!   `user`, store name such as `roster`, `vcard`, `private`, `offline`, a key inside the
//!   store) with the value as XML text. One row per key, so an offline message or a
//!   roster item is written alone instead of rewriting a whole serialized store.
//!
//! The daemon's hot path is [`XmppStore::apply`]: many changes (a burst of offline
//! messages, a roster push and its subscription state) in one transaction with one
//! commit, each with the engine's native upsert. On SQLite that commit is durable in the
//! sense of the crate documentation (WAL, `synchronous = FULL`, set by
//! [`Store::connect`] on every connection of the pool, these tables included), which is
//! what lets xmppd acknowledge a stanza (XEP-0198) only after its batch returned.
//!
//! Portability notes:
//! - `key` is a reserved word in MySQL/MariaDB, so that column is always quoted
//!   (`` `key` `` there, `"key"` elsewhere).
//! - MySQL tables are `utf8mb4` with the binary collation: MariaDB's default collations
//!   are case-insensitive, which would merge keys that differ in case only.
//! - Key lengths fit InnoDB's 3072-byte index limit at 4 bytes a character: host and
//!   username 255 characters each (RFC 7622 allows 1023 bytes per part; no deployment
//!   comes near), store names 64, keys 190.
//! - Loads are ordered by key bytes on every engine (`COLLATE "C"` on PostgreSQL, whose
//!   default collation would sort by locale rules), so numbered keys such as those of
//!   offline messages come back in the order they were written.

use sqlx::Row as _;

use crate::{Backend, Store, StoreError, WriteTx};

const SQLITE_PG_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS xmpp_accounts (
    host VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    sha1_salt VARCHAR(512),
    sha1_iterations INTEGER,
    sha1_stored_key VARCHAR(128),
    sha1_server_key VARCHAR(128),
    sha256_salt VARCHAR(512),
    sha256_iterations INTEGER,
    sha256_stored_key VARCHAR(128),
    sha256_server_key VARCHAR(128),
    created_at BIGINT DEFAULT 0 NOT NULL,
    PRIMARY KEY (host, username)
)",
    "CREATE TABLE IF NOT EXISTS xmpp_data (
    host VARCHAR(255) NOT NULL,
    username VARCHAR(255) NOT NULL,
    store VARCHAR(64) NOT NULL,
    \"key\" VARCHAR(190) NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (host, username, store, \"key\")
)",
];

const MYSQL_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS `xmpp_accounts` (
    `host` VARCHAR(255) NOT NULL,
    `username` VARCHAR(255) NOT NULL,
    `sha1_salt` VARCHAR(512),
    `sha1_iterations` INT,
    `sha1_stored_key` VARCHAR(128),
    `sha1_server_key` VARCHAR(128),
    `sha256_salt` VARCHAR(512),
    `sha256_iterations` INT,
    `sha256_stored_key` VARCHAR(128),
    `sha256_server_key` VARCHAR(128),
    `created_at` BIGINT DEFAULT 0 NOT NULL,
    PRIMARY KEY (`host`, `username`)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    // MEDIUMTEXT: a vCard with an avatar outgrows TEXT's 64 KiB.
    "CREATE TABLE IF NOT EXISTS `xmpp_data` (
    `host` VARCHAR(255) NOT NULL,
    `username` VARCHAR(255) NOT NULL,
    `store` VARCHAR(64) NOT NULL,
    `key` VARCHAR(190) NOT NULL,
    `value` MEDIUMTEXT NOT NULL,
    PRIMARY KEY (`host`, `username`, `store`, `key`)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
];

/// SCRAM secrets of one hash (RFC 5802 §3), as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramRow {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramRow {
    // StoredKey/ServerKey are password equivalents for an offline attack: not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramRow")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// An account's secrets: SCRAM-SHA-1 and SCRAM-SHA-256 (the daemon converts to and from
/// `xmpp_proto::server::AccountSecrets`, which has the same shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XmppSecrets {
    pub sha1: Option<ScramRow>,
    pub sha256: Option<ScramRow>,
}

/// One `xmpp_accounts` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppAccount {
    pub host: String,
    pub username: String,
    pub secrets: XmppSecrets,
    /// Unix seconds.
    pub created_at: u64,
}

/// One change, applied with others in [`XmppStore::apply`]; the same operations as
/// `xmpp_proto::server::StoreOp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppOp {
    /// Sets `store`/`key` of `user@host` (insert or replace).
    Put {
        host: String,
        user: String,
        store: String,
        key: String,
        value: String,
    },
    Delete {
        host: String,
        user: String,
        store: String,
        key: String,
    },
    /// Every key of `store` of the user; `None`: of every store.
    DeleteAll {
        host: String,
        user: String,
        store: Option<String>,
    },
    /// Creates the account or replaces its secrets (its `created_at` stays).
    PutAccount {
        host: String,
        user: String,
        secrets: XmppSecrets,
    },
    /// Deletes the account and all its data.
    DeleteAccount { host: String, user: String },
}

impl Store {
    /// Creates `xmpp_accounts` and `xmpp_data` where missing; existing tables are left
    /// as they are.
    pub async fn migrate_xmpp(&self) -> Result<(), StoreError> {
        let schema = match self.backend {
            Backend::Sqlite | Backend::Postgres => SQLITE_PG_SCHEMA,
            Backend::Mysql => MYSQL_SCHEMA,
        };
        self.execute_all("creating XMPP tables", schema).await
    }

    /// The XMPP view of this store.
    pub fn xmpp(&self) -> XmppStore<'_> {
        XmppStore { store: self }
    }
}

/// XMPP operations on a [`Store`]; get one with [`Store::xmpp`].
#[derive(Debug, Clone, Copy)]
pub struct XmppStore<'a> {
    store: &'a Store,
}

/// The secret columns in bind order (after host and username).
const SECRET_COLUMNS: [&str; 8] = [
    "sha1_salt",
    "sha1_iterations",
    "sha1_stored_key",
    "sha1_server_key",
    "sha256_salt",
    "sha256_iterations",
    "sha256_stored_key",
    "sha256_server_key",
];

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;
type Tx<'s> = WriteTx<'s>;

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The quoted `key` column.
fn key_column(backend: Backend) -> &'static str {
    match backend {
        Backend::Mysql => "`key`",
        Backend::Sqlite | Backend::Postgres => "\"key\"",
    }
}

fn bind_secrets<'q>(query: AnyQuery<'q>, secrets: &XmppSecrets) -> AnyQuery<'q> {
    let mut query = query;
    for row in [&secrets.sha1, &secrets.sha256] {
        let row = row.as_ref();
        query = query
            .bind(row.map(|r| hex::encode(&r.salt)))
            // Iteration counts beyond i32 would take days per login: clamp, never wrap.
            .bind(row.map(|r| i32::try_from(r.iterations).unwrap_or(i32::MAX)))
            .bind(row.map(|r| hex::encode(&r.stored_key)))
            .bind(row.map(|r| hex::encode(&r.server_key)));
    }
    query
}

impl XmppStore<'_> {
    /// The account `user` of `host`, or `None`.
    pub async fn account(&self, host: &str, user: &str) -> Result<Option<XmppAccount>, StoreError> {
        let s = self.store;
        let what = "reading XMPP account";
        let q = s
            .sql(&format!(
                "SELECT {}, created_at FROM xmpp_accounts WHERE host = ? AND username = ?",
                SECRET_COLUMNS.join(", ")
            ))
            .into_owned();
        let row = sqlx::query(&q)
            .bind(host)
            .bind(user)
            .fetch_optional(&s.pool)
            .await
            .map_err(s.query_error(what))?;
        let Some(row) = row else { return Ok(None) };
        let secrets = XmppSecrets {
            sha1: self.read_scram(&row, 0)?,
            sha256: self.read_scram(&row, 4)?,
        };
        let created_at: Option<i64> = row.try_get(8).map_err(s.query_error(what))?;
        Ok(Some(XmppAccount {
            host: host.to_owned(),
            username: user.to_owned(),
            secrets,
            created_at: created_at.unwrap_or(0).max(0) as u64,
        }))
    }

    /// Creates an account (`prosodyctl adduser`); `false` if it exists already.
    pub async fn create_account(
        &self,
        host: &str,
        user: &str,
        secrets: &XmppSecrets,
    ) -> Result<bool, StoreError> {
        let s = self.store;
        let q = s
            .sql(&format!(
                "INSERT INTO xmpp_accounts (host, username, {}, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                SECRET_COLUMNS.join(", ")
            ))
            .into_owned();
        let query =
            bind_secrets(sqlx::query(&q).bind(host).bind(user), secrets).bind(now_unix() as i64);
        // Insert and let the primary key say whether it exists (no read-then-write race).
        match query.execute(&s.pool).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(s.query_error("creating XMPP account")(e)),
        }
    }

    /// Replaces an account's secrets (`prosodyctl passwd`); `false` if there is no such
    /// account.
    pub async fn set_account(
        &self,
        host: &str,
        user: &str,
        secrets: &XmppSecrets,
    ) -> Result<bool, StoreError> {
        let s = self.store;
        let sets: Vec<String> = SECRET_COLUMNS.iter().map(|c| format!("{c} = ?")).collect();
        let q = s
            .sql(&format!(
                "UPDATE xmpp_accounts SET {} WHERE host = ? AND username = ?",
                sets.join(", ")
            ))
            .into_owned();
        let done = bind_secrets(sqlx::query(&q), secrets)
            .bind(host)
            .bind(user)
            .execute(&s.pool)
            .await
            .map_err(s.query_error("setting XMPP account secrets"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes an account and every `xmpp_data` row of it, in one transaction
    /// (`prosodyctl deluser`); `false` if there was no such account (its stray data, if
    /// any, is deleted all the same).
    pub async fn delete_account(&self, host: &str, user: &str) -> Result<bool, StoreError> {
        let s = self.store;
        let what = "deleting XMPP account";
        let mut tx = WriteTx::begin(s, what).await?;
        let existed = self.delete_account_in(&mut tx, what, host, user).await?;
        tx.commit().await?;
        Ok(existed)
    }

    /// `(host, username)` of every account, or of one host's, sorted by host then name.
    pub async fn list_accounts(
        &self,
        host: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let s = self.store;
        let what = "listing XMPP accounts";
        let q = match host {
            Some(_) => {
                "SELECT host, username FROM xmpp_accounts WHERE host = ? ORDER BY host, username"
            }
            None => "SELECT host, username FROM xmpp_accounts ORDER BY host, username",
        };
        let q = s.sql(q);
        let mut query = sqlx::query(&q);
        if let Some(h) = host {
            query = query.bind(h);
        }
        let rows = query
            .fetch_all(&s.pool)
            .await
            .map_err(s.query_error(what))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(s.query_error(what))
    }

    /// `(key, value)` pairs of `store` of `user@host`, ordered by key (bytewise), or the
    /// one `key` asked for (empty when absent).
    pub async fn load(
        &self,
        host: &str,
        user: &str,
        store: &str,
        key: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let s = self.store;
        let what = "loading XMPP data";
        let k = key_column(s.backend);
        let order = match s.backend {
            Backend::Postgres => format!("{k} COLLATE \"C\""),
            Backend::Sqlite | Backend::Mysql => k.to_owned(),
        };
        let filter = if key.is_some() {
            format!(" AND {k} = ?")
        } else {
            String::new()
        };
        let q = s.sql(&format!(
            "SELECT {k}, value FROM xmpp_data WHERE host = ? AND username = ? AND store = ?{filter} \
             ORDER BY {order}"
        )).into_owned();
        let mut query = sqlx::query(&q).bind(host).bind(user).bind(store);
        if let Some(key) = key {
            query = query.bind(key);
        }
        let rows = query
            .fetch_all(&s.pool)
            .await
            .map_err(s.query_error(what))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: String = row.try_get(0).map_err(s.query_error(what))?;
            let value = text_column(row, 1).map_err(s.query_error(what))?;
            let value = value.map_err(|bytes| StoreError::BadValue {
                url: s.shown_url.clone(),
                table: "xmpp_data",
                column: "value",
                value: String::from_utf8_lossy(&bytes).into_owned(),
            })?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Applies many changes in ONE transaction, in order: one commit (one fsync on
    /// SQLite) for a whole batch, and all or nothing. xmppd acknowledges the stanzas
    /// behind a batch only after this returned `Ok`.
    pub async fn apply(&self, ops: &[XmppOp]) -> Result<(), StoreError> {
        let s = self.store;
        let what = "writing XMPP data";
        if ops.is_empty() {
            return Ok(());
        }
        let backend = s.backend;
        let k = key_column(backend);
        let put = s
            .sql(&match backend {
                Backend::Mysql => format!(
                    "INSERT INTO xmpp_data (host, username, store, {k}, value) VALUES (?, ?, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE value = VALUES(value)"
                ),
                Backend::Sqlite | Backend::Postgres => format!(
                    "INSERT INTO xmpp_data (host, username, store, {k}, value) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (host, username, store, {k}) DO UPDATE SET value = excluded.value"
                ),
            })
            .into_owned();
        let put_account = s.sql(&upsert_account_sql(backend)).into_owned();
        let delete = s
            .sql(&format!(
                "DELETE FROM xmpp_data WHERE host = ? AND username = ? AND store = ? AND {k} = ?"
            ))
            .into_owned();
        let delete_store = s
            .sql("DELETE FROM xmpp_data WHERE host = ? AND username = ? AND store = ?")
            .into_owned();
        let delete_user = s
            .sql("DELETE FROM xmpp_data WHERE host = ? AND username = ?")
            .into_owned();
        let now = now_unix() as i64;
        let mut tx = WriteTx::begin(s, what).await?;
        for op in ops {
            let result = match op {
                XmppOp::Put {
                    host,
                    user,
                    store,
                    key,
                    value,
                } => {
                    sqlx::query(&put)
                        .bind(host)
                        .bind(user)
                        .bind(store)
                        .bind(key)
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                }
                XmppOp::Delete {
                    host,
                    user,
                    store,
                    key,
                } => {
                    sqlx::query(&delete)
                        .bind(host)
                        .bind(user)
                        .bind(store)
                        .bind(key)
                        .execute(&mut *tx)
                        .await
                }
                XmppOp::DeleteAll {
                    host,
                    user,
                    store: Some(store),
                } => {
                    sqlx::query(&delete_store)
                        .bind(host)
                        .bind(user)
                        .bind(store)
                        .execute(&mut *tx)
                        .await
                }
                XmppOp::DeleteAll {
                    host,
                    user,
                    store: None,
                } => {
                    sqlx::query(&delete_user)
                        .bind(host)
                        .bind(user)
                        .execute(&mut *tx)
                        .await
                }
                XmppOp::PutAccount {
                    host,
                    user,
                    secrets,
                } => {
                    bind_secrets(sqlx::query(&put_account).bind(host).bind(user), secrets)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                }
                XmppOp::DeleteAccount { host, user } => {
                    self.delete_account_in(&mut tx, what, host, user).await?;
                    continue;
                }
            };
            result.map_err(s.query_error(what))?;
        }
        tx.commit().await
    }

    // --- helpers

    async fn delete_account_in(
        &self,
        tx: &mut Tx<'_>,
        what: &'static str,
        host: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let s = self.store;
        let q = s.sql("DELETE FROM xmpp_data WHERE host = ? AND username = ?");
        sqlx::query(&q)
            .bind(host)
            .bind(user)
            .execute(&mut **tx)
            .await
            .map_err(s.query_error(what))?;
        let q = s.sql("DELETE FROM xmpp_accounts WHERE host = ? AND username = ?");
        let done = sqlx::query(&q)
            .bind(host)
            .bind(user)
            .execute(&mut **tx)
            .await
            .map_err(s.query_error(what))?;
        Ok(done.rows_affected() > 0)
    }

    /// The four columns of one hash from `first` on; `None` when any is NULL.
    fn read_scram(
        &self,
        row: &sqlx::any::AnyRow,
        first: usize,
    ) -> Result<Option<ScramRow>, StoreError> {
        let s = self.store;
        let what = "reading XMPP account";
        let text = |i: usize| -> Result<Option<String>, StoreError> {
            row.try_get::<Option<String>, _>(first + i)
                .map_err(s.query_error(what))
        };
        let (Some(salt), Some(stored), Some(server)) = (text(0)?, text(2)?, text(3)?) else {
            return Ok(None);
        };
        let iterations = read_int(row, first + 1).map_err(s.query_error(what))?;
        let Some(iterations) = iterations else {
            return Ok(None);
        };
        let bad = |column: usize, value: String| StoreError::BadValue {
            url: s.shown_url.clone(),
            table: "xmpp_accounts",
            column: SECRET_COLUMNS[first + column],
            value,
        };
        let decode = |column: usize, value: String| {
            hex::decode(value.trim()).map_err(|_| bad(column, value))
        };
        Ok(Some(ScramRow {
            salt: decode(0, salt)?,
            iterations: u32::try_from(iterations).map_err(|_| bad(1, iterations.to_string()))?,
            stored_key: decode(2, stored)?,
            server_key: decode(3, server)?,
        }))
    }
}

/// A TEXT column: sqlx's `Any` driver hands MySQL's TEXT types over as BLOBs (the wire
/// type is the same), so those come as bytes and must be UTF-8. `Err` carries bytes that
/// are not.
fn text_column(
    row: &sqlx::any::AnyRow,
    index: usize,
) -> Result<Result<String, Vec<u8>>, sqlx::Error> {
    match row.try_get::<String, _>(index) {
        Ok(v) => Ok(Ok(v)),
        Err(_) => {
            let bytes: Vec<u8> = row.try_get(index)?;
            Ok(String::from_utf8(bytes).map_err(|e| e.into_bytes()))
        }
    }
}

/// An integer column: INTEGER is 64-bit in SQLite and 32-bit in PostgreSQL and MySQL, and
/// sqlx's `Any` decodes each only as itself.
fn read_int(row: &sqlx::any::AnyRow, index: usize) -> Result<Option<i64>, sqlx::Error> {
    match row.try_get::<Option<i32>, _>(index) {
        Ok(v) => Ok(v.map(i64::from)),
        Err(_) => row.try_get::<Option<i64>, _>(index),
    }
}

/// The engine's upsert of an account keyed by (host, username): new secrets, the
/// original `created_at` kept.
fn upsert_account_sql(backend: Backend) -> String {
    let updates: Vec<String> = SECRET_COLUMNS
        .iter()
        .map(|c| match backend {
            Backend::Mysql => format!("{c} = VALUES({c})"),
            Backend::Sqlite | Backend::Postgres => format!("{c} = excluded.{c}"),
        })
        .collect();
    let conflict = match backend {
        Backend::Mysql => "ON DUPLICATE KEY UPDATE",
        Backend::Sqlite | Backend::Postgres => "ON CONFLICT (host, username) DO UPDATE SET",
    };
    format!(
        "INSERT INTO xmpp_accounts (host, username, {}, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {conflict} {}",
        SECRET_COLUMNS.join(", "),
        updates.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_per_engine() {
        let sql = upsert_account_sql(Backend::Mysql);
        assert!(
            sql.contains("sha256_server_key = VALUES(sha256_server_key)"),
            "{sql}"
        );
        assert!(!sql.contains("created_at = "), "{sql}");
        let sql = upsert_account_sql(Backend::Postgres);
        assert!(sql.contains("ON CONFLICT (host, username)"), "{sql}");
        assert_eq!(sql.matches('?').count(), 2 + SECRET_COLUMNS.len() + 1);
        assert_eq!(key_column(Backend::Mysql), "`key`");
    }
}
