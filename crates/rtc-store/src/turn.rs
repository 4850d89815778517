//! TURN tables, laid out exactly as coturn's `turndb/schema.sql` so that a coturn
//! database (SQLite `turndb`, PostgreSQL or MySQL) can be used unchanged, and so that
//! coturn's `turnadmin` and this suite's admin CLI can manage the same rows.
//!
//! What each table is for (coturn semantics):
//! - `turnusers_lt(realm, name, hmackey)`: long-term credential users; `hmackey` is the
//!   hex key of RFC 8489 §9.2.2 (see `rtc_auth::turn::StoredKey`), never a password.
//! - `turn_secret(realm, value)`: shared secrets for the TURN REST API (`use-auth-secret`).
//! - `allowed_peer_ip` / `denied_peer_ip(realm, ip_range)`: relay peer address filters
//!   (RFC 8656 §21.1 asks servers to restrict peers); realm `''` means every realm.
//! - `turn_origin_to_realm(origin, realm)`: maps an HTTP ORIGIN to a realm.
//! - `turn_realm_option(realm, opt, value)`: per-realm `max-bps`, `user-quota`,
//!   `total-quota` overrides.
//! - `oauth_key(...)`: third-party authorization keys (RFC 7635 §4.1).
//! - `admin_user(name, realm, password)`: web/telnet admin accounts; `password` in
//!   coturn's salted format (`rtc_auth::admin_password`).

use sqlx::Row as _;

use crate::{Store, StoreError, WriteTx};

/// coturn's table definitions, with `IF NOT EXISTS` added.
///
/// Column types are the ones coturn ships, which all three engines accept. `oauth_key`
/// carries `realm` because coturn's code reads and writes that column even though
/// older copies of its `schema.sql` omit it. coturn's obsolete `turnusers_st` table is
/// not created.
const TURN_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS turnusers_lt (
        realm varchar(127) default '',
        name varchar(512),
        hmackey char(128),
        PRIMARY KEY (realm, name)
    )",
    "CREATE TABLE IF NOT EXISTS turn_secret (
        realm varchar(127) default '',
        value varchar(256),
        PRIMARY KEY (realm, value)
    )",
    "CREATE TABLE IF NOT EXISTS allowed_peer_ip (
        realm varchar(127) default '',
        ip_range varchar(256),
        PRIMARY KEY (realm, ip_range)
    )",
    "CREATE TABLE IF NOT EXISTS denied_peer_ip (
        realm varchar(127) default '',
        ip_range varchar(256),
        PRIMARY KEY (realm, ip_range)
    )",
    "CREATE TABLE IF NOT EXISTS turn_origin_to_realm (
        origin varchar(127),
        realm varchar(127),
        PRIMARY KEY (origin)
    )",
    "CREATE TABLE IF NOT EXISTS turn_realm_option (
        realm varchar(127) default '',
        opt varchar(32),
        value varchar(128),
        PRIMARY KEY (realm, opt)
    )",
    "CREATE TABLE IF NOT EXISTS oauth_key (
        kid varchar(128),
        ikm_key varchar(256),
        timestamp bigint default 0,
        lifetime integer default 0,
        as_rs_alg varchar(64) default '',
        realm varchar(127),
        PRIMARY KEY (kid)
    )",
    "CREATE TABLE IF NOT EXISTS admin_user (
        name varchar(32),
        realm varchar(127),
        password varchar(127),
        PRIMARY KEY (name)
    )",
];

/// A per-realm override in `turn_realm_option`, named as coturn names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RealmOption {
    /// `max-bps`: bandwidth cap per session, bytes per second.
    MaxBps,
    /// `user-quota`: concurrent allocations per user.
    UserQuota,
    /// `total-quota`: concurrent allocations in the realm.
    TotalQuota,
}

impl RealmOption {
    /// The `opt` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            RealmOption::MaxBps => "max-bps",
            RealmOption::UserQuota => "user-quota",
            RealmOption::TotalQuota => "total-quota",
        }
    }

    /// The option for an `opt` column value, if it is one we know.
    pub fn from_name(name: &str) -> Option<RealmOption> {
        match name {
            "max-bps" => Some(RealmOption::MaxBps),
            "user-quota" => Some(RealmOption::UserQuota),
            "total-quota" => Some(RealmOption::TotalQuota),
            _ => None,
        }
    }
}

/// The realm overrides that are set; `None` means "use the server-wide setting".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealmOptions {
    pub max_bps: Option<u64>,
    pub user_quota: Option<u64>,
    pub total_quota: Option<u64>,
}

/// Which peer address filter table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerIpList {
    /// `allowed_peer_ip`
    Allowed,
    /// `denied_peer_ip`
    Denied,
}

impl Store {
    /// Creates coturn's TURN tables where missing; existing tables are left untouched.
    pub async fn migrate_turn(&self) -> Result<(), StoreError> {
        self.execute_all("creating TURN tables", TURN_SCHEMA).await
    }

    /// The TURN view of this store.
    pub fn turn(&self) -> TurnStore<'_> {
        TurnStore { store: self }
    }
}

/// TURN operations on a [`Store`]; get one with [`Store::turn`].
#[derive(Debug, Clone, Copy)]
pub struct TurnStore<'a> {
    store: &'a Store,
}

impl TurnStore<'_> {
    /// The stored long-term key (hex) of `name` in `realm`, as `turnadmin -a` wrote it.
    ///
    /// `char(128)` padding (PostgreSQL returns it) is trimmed.
    pub async fn get_user_key(
        &self,
        realm: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let s = self.store;
        // TRIM also turns PostgreSQL's `bpchar` into `text`, which sqlx's Any driver
        // can decode.
        let q = s.sql("SELECT TRIM(hmackey) FROM turnusers_lt WHERE realm = ? AND name = ?");
        let row = sqlx::query(&q)
            .bind(realm)
            .bind(name)
            .fetch_optional(&s.pool)
            .await
            .map_err(s.query_error("reading user key"))?;
        match row {
            None => Ok(None),
            Some(row) => Ok(row
                .try_get::<Option<String>, _>(0)
                .map_err(s.query_error("reading user key"))?),
        }
    }

    /// Sets the key of `name` in `realm`, creating the user if needed (`turnadmin -a`).
    pub async fn add_user(
        &self,
        realm: &str,
        name: &str,
        hmackey_hex: &str,
    ) -> Result<(), StoreError> {
        self.replace(
            "storing user key",
            "DELETE FROM turnusers_lt WHERE realm = ? AND name = ?",
            "INSERT INTO turnusers_lt (realm, name, hmackey) VALUES (?, ?, ?)",
            &[realm, name],
            &[realm, name, hmackey_hex],
        )
        .await
    }

    /// Deletes a user; `false` if there was none.
    pub async fn delete_user(&self, realm: &str, name: &str) -> Result<bool, StoreError> {
        self.delete(
            "deleting user",
            "DELETE FROM turnusers_lt WHERE realm = ? AND name = ?",
            &[realm, name],
        )
        .await
        .map(|n| n > 0)
    }

    /// `(realm, name)` of every user, or of one realm's users, sorted.
    pub async fn list_users(
        &self,
        realm: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        match realm {
            Some(r) => {
                self.pairs(
                    "listing users",
                    "SELECT COALESCE(realm, ''), name FROM turnusers_lt WHERE realm = ? ORDER BY realm, name",
                    &[r],
                )
                .await
            }
            None => {
                self.pairs(
                    "listing users",
                    "SELECT COALESCE(realm, ''), name FROM turnusers_lt ORDER BY realm, name",
                    &[],
                )
                .await
            }
        }
    }

    /// REST API shared secrets of `realm` (several may be valid during a rotation).
    pub async fn secrets(&self, realm: &str) -> Result<Vec<String>, StoreError> {
        self.strings(
            "reading secrets",
            "SELECT value FROM turn_secret WHERE realm = ? ORDER BY value",
            &[realm],
        )
        .await
    }

    /// Adds a REST API secret to `realm` (a no-op if it is already there).
    pub async fn add_secret(&self, realm: &str, value: &str) -> Result<(), StoreError> {
        self.replace(
            "storing secret",
            "DELETE FROM turn_secret WHERE realm = ? AND value = ?",
            "INSERT INTO turn_secret (realm, value) VALUES (?, ?)",
            &[realm, value],
            &[realm, value],
        )
        .await
    }

    /// Removes one secret; `false` if it was not there.
    pub async fn delete_secret(&self, realm: &str, value: &str) -> Result<bool, StoreError> {
        self.delete(
            "deleting secret",
            "DELETE FROM turn_secret WHERE realm = ? AND value = ?",
            &[realm, value],
        )
        .await
        .map(|n| n > 0)
    }

    /// Removes every secret of `realm`, or of all realms; returns how many went.
    pub async fn delete_all_secrets(&self, realm: Option<&str>) -> Result<u64, StoreError> {
        match realm {
            Some(r) => {
                self.delete(
                    "deleting secrets",
                    "DELETE FROM turn_secret WHERE realm = ?",
                    &[r],
                )
                .await
            }
            None => {
                self.delete("deleting secrets", "DELETE FROM turn_secret", &[])
                    .await
            }
        }
    }

    /// `(allowed, denied)` peer address ranges that apply to `realm`: its own rows plus
    /// the global ones (realm `''`, or NULL in databases made by older coturn schemas).
    pub async fn peer_ip_lists(
        &self,
        realm: &str,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let allowed = self
            .strings(
                "reading allowed peer addresses",
                "SELECT ip_range FROM allowed_peer_ip \
                 WHERE realm = '' OR realm IS NULL OR realm = ? ORDER BY ip_range",
                &[realm],
            )
            .await?;
        let denied = self
            .strings(
                "reading denied peer addresses",
                "SELECT ip_range FROM denied_peer_ip \
                 WHERE realm = '' OR realm IS NULL OR realm = ? ORDER BY ip_range",
                &[realm],
            )
            .await?;
        Ok((allowed, denied))
    }

    /// Adds an address or range (`"10.0.0.1"`, `"10.0.0.1-10.0.0.9"`, `"::1"`) to a list;
    /// realm `""` makes it global.
    pub async fn add_peer_ip(
        &self,
        list: PeerIpList,
        realm: &str,
        ip_range: &str,
    ) -> Result<(), StoreError> {
        let (del, ins) = match list {
            PeerIpList::Allowed => (
                "DELETE FROM allowed_peer_ip WHERE realm = ? AND ip_range = ?",
                "INSERT INTO allowed_peer_ip (realm, ip_range) VALUES (?, ?)",
            ),
            PeerIpList::Denied => (
                "DELETE FROM denied_peer_ip WHERE realm = ? AND ip_range = ?",
                "INSERT INTO denied_peer_ip (realm, ip_range) VALUES (?, ?)",
            ),
        };
        self.replace(
            "storing peer address",
            del,
            ins,
            &[realm, ip_range],
            &[realm, ip_range],
        )
        .await
    }

    /// Removes an address or range from a list; `false` if it was not there.
    pub async fn delete_peer_ip(
        &self,
        list: PeerIpList,
        realm: &str,
        ip_range: &str,
    ) -> Result<bool, StoreError> {
        let q = match list {
            PeerIpList::Allowed => "DELETE FROM allowed_peer_ip WHERE realm = ? AND ip_range = ?",
            PeerIpList::Denied => "DELETE FROM denied_peer_ip WHERE realm = ? AND ip_range = ?",
        };
        self.delete("deleting peer address", q, &[realm, ip_range])
            .await
            .map(|n| n > 0)
    }

    /// The overrides set for `realm`. Unknown option names are ignored (coturn ignores
    /// them too); a known option with a non-numeric value is an error.
    pub async fn realm_options(&self, realm: &str) -> Result<RealmOptions, StoreError> {
        let rows = self
            .pairs(
                "reading realm options",
                "SELECT opt, value FROM turn_realm_option WHERE realm = ?",
                &[realm],
            )
            .await?;
        let mut options = RealmOptions::default();
        for (opt, value) in rows {
            let Some(opt) = RealmOption::from_name(&opt) else {
                continue;
            };
            let parsed = value
                .trim()
                .parse::<u64>()
                .map_err(|_| StoreError::BadValue {
                    url: self.store.shown_url.clone(),
                    table: "turn_realm_option",
                    column: "value",
                    value: value.clone(),
                })?;
            match opt {
                RealmOption::MaxBps => options.max_bps = Some(parsed),
                RealmOption::UserQuota => options.user_quota = Some(parsed),
                RealmOption::TotalQuota => options.total_quota = Some(parsed),
            }
        }
        Ok(options)
    }

    /// Sets (`Some`) or removes (`None`) one realm override.
    pub async fn set_realm_option(
        &self,
        realm: &str,
        opt: RealmOption,
        value: Option<u64>,
    ) -> Result<(), StoreError> {
        let del = "DELETE FROM turn_realm_option WHERE realm = ? AND opt = ?";
        match value {
            None => self
                .delete("deleting realm option", del, &[realm, opt.as_str()])
                .await
                .map(drop),
            Some(v) => {
                let v = v.to_string();
                self.replace(
                    "storing realm option",
                    del,
                    "INSERT INTO turn_realm_option (realm, opt, value) VALUES (?, ?, ?)",
                    &[realm, opt.as_str()],
                    &[realm, opt.as_str(), &v],
                )
                .await
            }
        }
    }

    /// Raw `(realm, opt, value)` rows, of one realm or all, sorted.
    pub async fn list_realm_options(
        &self,
        realm: Option<&str>,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let s = self.store;
        let what = "listing realm options";
        let q = match realm {
            Some(_) => "SELECT COALESCE(realm, ''), opt, value FROM turn_realm_option WHERE realm = ? ORDER BY realm, opt",
            None => "SELECT COALESCE(realm, ''), opt, value FROM turn_realm_option ORDER BY realm, opt",
        };
        let q = s.sql(q);
        let mut query = sqlx::query(&q);
        if let Some(r) = realm {
            query = query.bind(r);
        }
        let rows = query
            .fetch_all(&s.pool)
            .await
            .map_err(s.query_error(what))?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>(0)?,
                    row.try_get::<String, _>(1)?,
                    row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(s.query_error(what))
    }

    /// Creates or updates an admin account (`turnadmin -A`). `realm` `""` makes a
    /// superuser; `password_hash` comes from `rtc_auth::admin_password::hash`.
    pub async fn add_admin(
        &self,
        name: &str,
        realm: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        self.replace(
            "storing admin",
            "DELETE FROM admin_user WHERE name = ?",
            "INSERT INTO admin_user (name, realm, password) VALUES (?, ?, ?)",
            &[name],
            &[name, realm, password_hash],
        )
        .await
    }

    /// `(realm, password hash)` of an admin account, for login checks.
    pub async fn get_admin(&self, name: &str) -> Result<Option<(String, String)>, StoreError> {
        let mut rows = self
            .pairs(
                "reading admin",
                "SELECT COALESCE(realm, ''), COALESCE(password, '') FROM admin_user WHERE name = ?",
                &[name],
            )
            .await?;
        Ok(rows.pop())
    }

    /// Deletes an admin account; `false` if there was none.
    pub async fn delete_admin(&self, name: &str) -> Result<bool, StoreError> {
        self.delete(
            "deleting admin",
            "DELETE FROM admin_user WHERE name = ?",
            &[name],
        )
        .await
        .map(|n| n > 0)
    }

    /// `(name, realm)` of every admin account, sorted by name.
    pub async fn list_admins(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.pairs(
            "listing admins",
            "SELECT name, COALESCE(realm, '') FROM admin_user ORDER BY name",
            &[],
        )
        .await
    }

    // --- helpers: every statement above goes through these, so that placeholder
    // rewriting and error wrapping happen in one place.

    /// Delete-then-insert in one transaction: an upsert that needs no dialect-specific
    /// syntax (`ON CONFLICT` vs `ON DUPLICATE KEY`) and no unique index.
    async fn replace(
        &self,
        what: &'static str,
        delete: &str,
        insert: &str,
        delete_args: &[&str],
        insert_args: &[&str],
    ) -> Result<(), StoreError> {
        let s = self.store;
        let mut tx = WriteTx::begin(s, what).await?;
        let q = s.sql(delete);
        let mut query = sqlx::query(&q);
        for a in delete_args {
            query = query.bind(*a);
        }
        query.execute(&mut *tx).await.map_err(s.query_error(what))?;
        let q = s.sql(insert);
        let mut query = sqlx::query(&q);
        for a in insert_args {
            query = query.bind(*a);
        }
        query.execute(&mut *tx).await.map_err(s.query_error(what))?;
        tx.commit().await
    }

    async fn delete(&self, what: &'static str, q: &str, args: &[&str]) -> Result<u64, StoreError> {
        let s = self.store;
        let q = s.sql(q);
        let mut query = sqlx::query(&q);
        for a in args {
            query = query.bind(*a);
        }
        let done = query.execute(&s.pool).await.map_err(s.query_error(what))?;
        Ok(done.rows_affected())
    }

    /// Runs a query with text parameters and returns its rows.
    async fn rows(
        &self,
        what: &'static str,
        q: &str,
        args: &[&str],
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let s = self.store;
        let q = s.sql(q);
        let mut query = sqlx::query(&q);
        for a in args {
            query = query.bind(*a);
        }
        query.fetch_all(&s.pool).await.map_err(s.query_error(what))
    }

    async fn strings(
        &self,
        what: &'static str,
        q: &str,
        args: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        self.rows(what, q, args)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(self.store.query_error(what))
    }

    async fn pairs(
        &self,
        what: &'static str,
        q: &str,
        args: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(what, q, args)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.store.query_error(what))
    }
}
