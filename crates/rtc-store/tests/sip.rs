//! The SIP tables (Kamailio 5.6's `version`, `subscriber`, `location` and our
//! `subscriber_sha256`) on every engine compiled in: SQLite always, the local PostgreSQL
//! and MariaDB servers with `--features postgres` / `mysql` (or `--all-features`), each in a
//! scratch database dropped afterwards. Rows that Kamailio's tools write (`kamctl add`,
//! `kamctl passwd`, `kamctl rm`, schema defaults) are written here with plain SQL, the way
//! those tools do, next to the store's own writes.

#![cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]

use rtc_auth::sip::{ha1, ha1b, DigestAlgorithm};
use rtc_store::{Backend, LocationOp, LocationRow, Store};
use sqlx::{Connection as _, Executor as _, Row as _};

const MD5: DigestAlgorithm = DigestAlgorithm::Md5;
const SHA256: DigestAlgorithm = DigestAlgorithm::Sha256;
/// A fixed "now" (2027-01-15 08:00:00 UTC) so that stored dates are predictable.
const NOW: u64 = 1_800_000_000;

/// A second connection to the same database, for what Kamailio's tools do by hand.
struct Raw(sqlx::AnyConnection);

impl Raw {
    async fn open(url: &str) -> Raw {
        sqlx::any::install_default_drivers();
        Raw(sqlx::AnyConnection::connect(url).await.unwrap())
    }

    async fn exec(&mut self, sql: &str) {
        self.0
            .execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn table_exists(&mut self, backend: Backend, table: &str) -> bool {
        let sql = match backend {
            Backend::Sqlite => format!(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
            ),
            Backend::Postgres => format!(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '{table}'"
            ),
            Backend::Mysql => format!(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '{table}'"
            ),
        };
        self.count(&sql).await > 0
    }

    async fn count(&mut self, sql: &str) -> i64 {
        let row = sqlx::query(sql)
            .fetch_one(&mut self.0)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get(0).unwrap()
    }
}

fn binding(ruid: &str, user: &str, domain: Option<&str>, expires: u64) -> LocationRow {
    LocationRow {
        ruid: ruid.to_owned(),
        username: user.to_owned(),
        domain: domain.map(str::to_owned),
        contact: format!("sip:{user}@192.0.2.10:5060;transport=udp"),
        expires,
        q: 1.0,
        callid: format!("{ruid}-call@192.0.2.10"),
        cseq: 1,
        user_agent: "softphone/1.0".to_owned(),
        last_modified: NOW,
        connection_id: -1,
        ..LocationRow::default()
    }
}

fn sorted(mut rows: Vec<LocationRow>) -> Vec<LocationRow> {
    rows.sort_by(|a, b| a.ruid.cmp(&b.ruid));
    rows
}

/// Subscribers and credentials, including what `kamctl` does behind our back.
async fn subscribers(store: &Store, raw: &mut Raw) {
    let sip = store.sip();
    assert!(sip
        .add_subscriber("alice", "example.org", "example.org", "secret")
        .await
        .unwrap());
    assert!(!sip
        .add_subscriber("alice", "example.org", "example.org", "other")
        .await
        .unwrap());
    assert!(sip
        .add_subscriber("bob", "example.org", "example.org", "pw")
        .await
        .unwrap());
    assert!(sip
        .add_subscriber("alice", "other.net", "example.org", "pw2")
        .await
        .unwrap());
    assert_eq!(
        sip.list_subscribers(None).await.unwrap(),
        [
            ("alice".to_owned(), "example.org".to_owned()),
            ("bob".to_owned(), "example.org".to_owned()),
            ("alice".to_owned(), "other.net".to_owned()),
        ]
    );
    assert_eq!(
        sip.list_subscribers(Some("other.net")).await.unwrap(),
        [("alice".to_owned(), "other.net".to_owned())]
    );
    // No clear text is ever stored.
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM subscriber WHERE password <> ''")
            .await,
        0
    );

    let c = sip
        .credentials("alice", "example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ha1_md5, "543e1aec5d3614f03141652d6ada51b2");
    assert_eq!(c.ha1b_md5, "1441a999b257bcd0cf5166930039876a");
    assert_eq!(
        c.ha1_sha256.as_deref(),
        Some("d1659fff7a501be15962adc35514ca6a5868905695f2dd1093741f931e000a1f")
    );
    assert_eq!(
        c.ha1b_sha256.as_deref(),
        Some("eff6e137e37e2995cde26ec021fde2bc3b152390ab0cc9351c4d4475e0fe8848")
    );
    assert!(!format!("{c:?}").contains("543e"), "HA1 in Debug output");
    assert_eq!(sip.credentials("carol", "example.org").await.unwrap(), None);
    assert_eq!(sip.credentials("alice", "nowhere").await.unwrap(), None);

    // Our passwd: both hashes follow.
    assert!(sip
        .set_password("alice", "example.org", "example.org", "new")
        .await
        .unwrap());
    let c = sip
        .credentials("alice", "example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ha1_md5, ha1(MD5, "alice", "example.org", "new"));
    assert_eq!(
        c.ha1_sha256.unwrap(),
        ha1(SHA256, "alice", "example.org", "new")
    );
    assert!(!sip
        .set_password("carol", "example.org", "example.org", "x")
        .await
        .unwrap());

    // `kamctl passwd alice@example.org kamctl`: new ha1/ha1b (and, by default, the clear
    // password), our table untouched. The old SHA-256 hash must stop counting at once.
    raw.exec(&format!(
        "UPDATE subscriber SET password = 'kamctl', ha1 = '{}', ha1b = '{}' \
         WHERE username = 'alice' AND domain = 'example.org'",
        ha1(MD5, "alice", "example.org", "kamctl"),
        ha1b(MD5, "alice", "example.org", "example.org", "kamctl"),
    ))
    .await;
    let c = sip
        .credentials("alice", "example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ha1_md5, ha1(MD5, "alice", "example.org", "kamctl"));
    assert_eq!(c.ha1_sha256, None);
    assert_eq!(c.ha1b_sha256, None);
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM subscriber_sha256 WHERE username = 'alice' AND domain = 'example.org'")
            .await,
        1,
        "the stale row is still there; only the join ignores it"
    );
    // Our passwd again brings SHA-256 back.
    assert!(sip
        .set_password("alice", "example.org", "example.org", "secret")
        .await
        .unwrap());
    assert!(sip
        .credentials("alice", "example.org")
        .await
        .unwrap()
        .unwrap()
        .ha1_sha256
        .is_some());

    // `kamctl add carol@example.org pw`: a row without our table's companion.
    raw.exec(&format!(
        "INSERT INTO subscriber (username, domain, password, ha1, ha1b) \
         VALUES ('carol', 'example.org', 'pw', '{}', '{}')",
        ha1(MD5, "carol", "example.org", "pw"),
        ha1b(MD5, "carol", "example.org", "example.org", "pw"),
    ))
    .await;
    let c = sip
        .credentials("carol", "example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ha1_md5, ha1(MD5, "carol", "example.org", "pw"));
    assert_eq!(c.ha1_sha256, None);

    // `kamctl rm alice@other.net` leaves our row behind; adding the user again replaces it.
    raw.exec("DELETE FROM subscriber WHERE username = 'alice' AND domain = 'other.net'")
        .await;
    assert!(sip
        .add_subscriber("alice", "other.net", "example.org", "fresh")
        .await
        .unwrap());
    assert_eq!(
        sip.credentials("alice", "other.net")
            .await
            .unwrap()
            .unwrap()
            .ha1_sha256
            .unwrap(),
        ha1(SHA256, "alice", "example.org", "fresh")
    );

    assert!(sip.delete_subscriber("bob", "example.org").await.unwrap());
    assert!(!sip.delete_subscriber("bob", "example.org").await.unwrap());
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM subscriber_sha256 WHERE username = 'bob'")
            .await,
        0
    );
    // Names that would break naive quoting are bound parameters.
    assert!(sip
        .add_subscriber("o'brien?", "example.org", "example.org", "x")
        .await
        .unwrap());
    assert!(sip
        .credentials("o'brien?", "example.org")
        .await
        .unwrap()
        .is_some());
}

/// Bindings: batches, upserts in place, deletes, purge, and dates as Kamailio stores them.
async fn locations(store: &Store, raw: &mut Raw) {
    let sip = store.sip();
    assert!(sip.load_locations().await.unwrap().is_empty());
    let mut a2 = binding("a2", "alice", Some("example.org"), NOW + 60);
    a2.q = 0.5;
    a2.received = Some("sip:198.51.100.7:40112".to_owned());
    a2.path = Some("<sip:edge.example.org;lr>".to_owned());
    a2.socket = Some("udp:192.0.2.1:5060".to_owned());
    a2.methods = Some(8191);
    a2.instance = Some("<urn:uuid:00000000-0000-1000-8000-000a95a0e128>".to_owned());
    a2.reg_id = 1;
    a2.flags = 4;
    a2.cflags = 64;
    a2.server_id = 2;
    a2.connection_id = 17;
    a2.keepalive = 1;
    a2.partition = 3;
    a2.cseq = i32::MAX;
    let written = vec![
        binding("a1", "alice", Some("example.org"), NOW + 3600),
        a2,
        binding("b1", "bob", Some("example.org"), 0), // permanent
        binding("c1", "carol", Some("example.org"), NOW - 10),
        binding("d1", "dave", None, NOW + 30),
        // The edges of the date range.
        binding("e1", "eve", Some("example.org"), 1),
        binding("e2", "eve", Some("example.org"), 253_402_300_799),
    ];
    sip.apply_location_batch(
        &written
            .iter()
            .cloned()
            .map(LocationOp::Upsert)
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(sorted(sip.load_locations().await.unwrap()), written);
    let alice = sorted(
        sip.locations_for("alice", Some("example.org"))
            .await
            .unwrap(),
    );
    assert_eq!(alice, written[..2]);
    assert_eq!(
        sip.locations_for("dave", None).await.unwrap(),
        [written[4].clone()]
    );
    assert!(sip
        .locations_for("dave", Some("example.org"))
        .await
        .unwrap()
        .is_empty());

    // Stored the way Kamailio's drivers store dates.
    match store.backend() {
        Backend::Sqlite => {
            assert_eq!(
                raw.count(
                    "SELECT COUNT(*) FROM location WHERE ruid = 'a1' AND typeof(expires) = 'real' \
                     AND datetime(expires) = '2027-01-15 09:00:00' \
                     AND datetime(last_modified) = '2027-01-15 08:00:00'"
                )
                .await,
                1
            );
        }
        Backend::Postgres | Backend::Mysql => {
            assert_eq!(
                raw.count(
                    "SELECT COUNT(*) FROM location WHERE ruid = 'a1' \
                     AND expires = '2027-01-15 09:00:00' AND last_modified = '2027-01-15 08:00:00'"
                )
                .await,
                1
            );
            assert_eq!(
                raw.count(
                    "SELECT COUNT(*) FROM location WHERE ruid = 'b1' AND expires = '1970-01-01 00:00:00'"
                )
                .await,
                1
            );
        }
    }

    // A refresh updates the row in place: same id, new values.
    let first_id =
        "SELECT COUNT(*) FROM location WHERE ruid = 'a1' AND id = (SELECT MIN(id) FROM location)";
    assert_eq!(raw.count(first_id).await, 1);
    let mut a1 = binding("a1", "alice", Some("example.org"), NOW + 7200);
    a1.contact = "sip:alice@203.0.113.9:5070".to_owned();
    a1.cseq = 2;
    a1.last_modified = NOW + 5;
    sip.apply_location_batch(&[LocationOp::Upsert(a1.clone())])
        .await
        .unwrap();
    assert_eq!(raw.count(first_id).await, 1);
    let rows = sorted(sip.load_locations().await.unwrap());
    assert_eq!(rows.len(), written.len());
    assert_eq!(rows[0], a1);

    // A row as Kamailio's schema defaults leave it (text dates in SQLite too).
    raw.exec("INSERT INTO location (ruid, username, contact) VALUES ('k1', 'kam', 'sip:kam@h')")
        .await;
    let k1 = sip.locations_for("kam", None).await.unwrap();
    assert_eq!(k1.len(), 1);
    assert_eq!(k1[0].expires, 1_906_234_335, "2030-05-28 21:32:15");
    assert_eq!(k1[0].last_modified, 946_684_801, "2000-01-01 00:00:01");
    assert_eq!(k1[0].callid, "Default-Call-ID");
    assert_eq!((k1[0].q, k1[0].cseq), (1.0, 1));

    // Purge keeps permanent and live bindings; then deletes by ruid and by AOR, in one
    // batch.
    sip.apply_location_batch(&[
        LocationOp::PurgeExpired { now_unix: NOW },
        LocationOp::Delete {
            ruid: "a2".to_owned(),
        },
        LocationOp::DeleteAor {
            username: "dave".to_owned(),
            domain: None,
        },
        LocationOp::Delete {
            ruid: "no-such-ruid".to_owned(),
        },
    ])
    .await
    .unwrap();
    let left: Vec<String> = sorted(sip.load_locations().await.unwrap())
        .into_iter()
        .map(|r| r.ruid)
        .collect();
    assert_eq!(left, ["a1", "b1", "e2", "k1"]);
    sip.apply_location_batch(&[LocationOp::DeleteAor {
        username: "alice".to_owned(),
        domain: Some("example.org".to_owned()),
    }])
    .await
    .unwrap();
    assert!(sip
        .locations_for("alice", Some("example.org"))
        .await
        .unwrap()
        .is_empty());
    sip.apply_location_batch(&[]).await.unwrap();

    // All or nothing: a batch whose last write fails leaves no trace. (A 65-character
    // ruid overflows VARCHAR(64) on the servers; SQLite does not enforce lengths.)
    if store.backend() != Backend::Sqlite {
        let result = sip
            .apply_location_batch(&[
                LocationOp::Delete {
                    ruid: "b1".to_owned(),
                },
                LocationOp::Upsert(binding(&"x".repeat(65), "x", None, NOW)),
            ])
            .await;
        assert!(result.is_err());
        assert_eq!(
            sip.locations_for("bob", Some("example.org"))
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

/// Everything, on one engine. `raw_url` opens a second connection for plain SQL.
async fn scenario(store: Store, raw_url: String) {
    store.migrate_sip().await.unwrap();
    // Migrations only create what is missing, so running them again is harmless.
    store.migrate_sip().await.unwrap();
    let mut raw = Raw::open(&raw_url).await;
    for (table, version) in [("version", 1), ("subscriber", 7), ("location", 9)] {
        assert_eq!(
            raw.count(&format!(
                "SELECT COUNT(*) FROM version WHERE table_name = '{table}' AND table_version = {version}"
            ))
            .await,
            1,
            "{table}"
        );
    }
    assert_eq!(raw.count("SELECT COUNT(*) FROM version").await, 3);

    subscribers(&store, &mut raw).await;
    locations(&store, &mut raw).await;

    // Backup and restore through a snapshot; drop and create again in between.
    let sip = store.sip();
    let snapshot = sip.snapshot().await.unwrap();
    assert_eq!(snapshot.subscribers.len(), 4);
    assert_eq!(
        snapshot
            .subscribers
            .iter()
            .find(|s| s.username == "carol")
            .unwrap()
            .password,
        "pw",
        "Kamailio's clear password column survives a backup"
    );
    assert_eq!(
        snapshot.sha256.len(),
        3,
        "alice twice and o'brien?; bob's went with him, carol never had one"
    );
    let counts = sip.counts().await.unwrap();
    assert_eq!(counts.subscribers, 4);
    assert_eq!(counts.locations as usize, snapshot.locations.len());
    store.drop_sip().await.unwrap();
    for table in ["subscriber", "subscriber_sha256", "location"] {
        assert!(!raw.table_exists(store.backend(), table).await, "{table}");
    }
    assert!(
        !raw.table_exists(store.backend(), "version").await,
        "nothing else used the version table"
    );
    store.migrate_sip().await.unwrap();
    assert_eq!(store.sip().counts().await.unwrap().total(), 0);
    store.sip().restore(&snapshot).await.unwrap();
    assert_eq!(store.sip().snapshot().await.unwrap(), snapshot);
    // Restoring replaces, it does not add.
    store.sip().restore(&snapshot).await.unwrap();
    assert_eq!(store.sip().counts().await.unwrap(), counts);

    // A version row of another Kamailio module keeps the table when SIP tables go.
    raw.exec("INSERT INTO version (table_name, table_version) VALUES ('acc', 5)")
        .await;
    store.drop_sip().await.unwrap();
    assert_eq!(raw.count("SELECT COUNT(*) FROM version").await, 2);
    raw.0.close().await.unwrap();
}

/// Runs the scenario on its own task so that a failed assertion still lets the caller
/// clean up before the panic is passed on.
async fn run(store: Store, raw_url: String) {
    let outcome = tokio::spawn(scenario(store.clone(), raw_url)).await;
    store.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipd.sqlite");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    run(store, format!("sqlite://{}", path.display())).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres() {
    let db = rtc_tests::scratch_db::ScratchDb::create(rtc_tests::scratch_db::Engine::Postgres);
    let store = Store::connect(&db.url()).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    run(store, db.url()).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql() {
    let db = rtc_tests::scratch_db::ScratchDb::create(rtc_tests::scratch_db::Engine::Mysql);
    let store = Store::connect(&db.url()).await.unwrap();
    assert_eq!(store.backend(), Backend::Mysql);
    run(store, db.url()).await;
}

/// A database made by Kamailio 5.6's `kamdbctl create` (its SQLite DDL, no IF NOT EXISTS)
/// and filled by Kamailio itself must be used as it is: the migration neither fails nor
/// touches it, and Kamailio's rows read back.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_kamailio_database_is_used_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kamailio.sqlite");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut raw = Raw::open(&url).await;
    for statement in [
        "CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL, table_name VARCHAR(32) NOT NULL, \
         table_version INTEGER DEFAULT 0 NOT NULL, CONSTRAINT version_table_name_idx UNIQUE (table_name))",
        "INSERT INTO version (table_name, table_version) values ('version','1')",
        "CREATE TABLE subscriber (id INTEGER PRIMARY KEY NOT NULL, username VARCHAR(64) DEFAULT '' NOT NULL, \
         domain VARCHAR(64) DEFAULT '' NOT NULL, password VARCHAR(64) DEFAULT '' NOT NULL, \
         ha1 VARCHAR(128) DEFAULT '' NOT NULL, ha1b VARCHAR(128) DEFAULT '' NOT NULL, \
         CONSTRAINT subscriber_account_idx UNIQUE (username, domain))",
        "CREATE INDEX subscriber_username_idx ON subscriber (username)",
        // An older deployment's table version: it must stay as it is.
        "INSERT INTO version (table_name, table_version) values ('subscriber','6')",
        "CREATE TABLE location (id INTEGER PRIMARY KEY NOT NULL, ruid VARCHAR(64) DEFAULT '' NOT NULL, \
         username VARCHAR(64) DEFAULT '' NOT NULL, domain VARCHAR(64) DEFAULT NULL, \
         contact VARCHAR(512) DEFAULT '' NOT NULL, received VARCHAR(128) DEFAULT NULL, \
         path VARCHAR(512) DEFAULT NULL, \
         expires TIMESTAMP WITHOUT TIME ZONE DEFAULT '2030-05-28 21:32:15' NOT NULL, \
         q REAL DEFAULT 1.0 NOT NULL, callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL, \
         cseq INTEGER DEFAULT 1 NOT NULL, \
         last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL, \
         flags INTEGER DEFAULT 0 NOT NULL, cflags INTEGER DEFAULT 0 NOT NULL, \
         user_agent VARCHAR(255) DEFAULT '' NOT NULL, socket VARCHAR(64) DEFAULT NULL, \
         methods INTEGER DEFAULT NULL, instance VARCHAR(255) DEFAULT NULL, \
         reg_id INTEGER DEFAULT 0 NOT NULL, server_id INTEGER DEFAULT 0 NOT NULL, \
         connection_id INTEGER DEFAULT 0 NOT NULL, keepalive INTEGER DEFAULT 0 NOT NULL, \
         partition INTEGER DEFAULT 0 NOT NULL, CONSTRAINT location_ruid_idx UNIQUE (ruid))",
        "INSERT INTO version (table_name, table_version) values ('location','9')",
        // What kamctl add wrote (clear password kept, as its default STORE_PLAINTEXT_PW=1).
        "INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES \
         ('alice', '127.0.0.1', 'secret', '18af59e93bb3331aac9fe77419a6ec78', '')",
        // What Kamailio 5.6.3's usrloc wrote for a sipsak REGISTER (db_mode 1): REAL Julian
        // days half a second early, q -1 for "not given", connection -1 for UDP.
        "INSERT INTO location (ruid, username, domain, contact, received, path, expires, q, \
         callid, cseq, last_modified, flags, cflags, user_agent, socket, methods, instance, \
         reg_id, server_id, connection_id, keepalive, partition) VALUES ('uloc-6b081a92-24fc-1', \
         'alice', NULL, 'sip:alice@127.0.0.1:5999', NULL, NULL, 2461370.98962384, -1.0, \
         '992448065@127.0.0.1', 1, 2461370.98615162, 0, 0, 'sipsak 0.9.8.1', \
         'udp:127.0.0.1:25060', NULL, NULL, 0, 0, -1, 0, 0)",
    ] {
        raw.exec(statement).await;
    }
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    store.migrate_sip().await.unwrap();
    assert_eq!(
        raw.count(
            "SELECT COUNT(*) FROM version WHERE table_name = 'subscriber' AND table_version = 6"
        )
        .await,
        1
    );
    // The existing table's missing 5.6 indexes are not added behind the operator's back.
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'location' AND sql IS NOT NULL")
            .await,
        0
    );
    let sip = store.sip();
    let c = sip
        .credentials("alice", "127.0.0.1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ha1_md5, "18af59e93bb3331aac9fe77419a6ec78");
    assert_eq!(c.ha1_sha256, None);
    let rows = sip.load_locations().await.unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.expires, 1_795_693_504, "2026-11-26 11:45:04 UTC");
    assert_eq!(r.last_modified, 1_795_693_204, "five minutes earlier");
    assert_eq!(
        (r.q, r.connection_id, r.domain.as_deref()),
        (-1.0, -1, None)
    );
    assert_eq!(r.socket.as_deref(), Some("udp:127.0.0.1:25060"));
    // Written back by us, Kamailio reads the same second: its `+ 0.5` and truncation on
    // our exact Julian day gives the stored second.
    sip.apply_location_batch(&[LocationOp::Upsert(r.clone())])
        .await
        .unwrap();
    let row = sqlx::query("SELECT expires FROM location")
        .fetch_one(&mut raw.0)
        .await
        .unwrap();
    let jd: f64 = row.try_get(0).unwrap();
    let kamailio_reads = (86_400.0 * (jd - 2_440_587.5) + 0.5) as u64;
    assert_eq!(kamailio_reads, 1_795_693_504);
    store.close().await;
}

/// The registrar's promise: once `apply_location_batch` returned, the bindings survive the
/// process being killed outright. The child commits a batch (which stays in the WAL, not
/// yet checkpointed into the main file), says so, and is SIGKILLed; a fresh open sees it.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_commit_survives_kill_9() {
    const CHILD_ENV: &str = "RTC_STORE_SIP_KILL9_DB";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(path) = std::env::var(CHILD_ENV) {
        rt.block_on(async {
            let store = Store::connect(&path).await.unwrap();
            store.migrate_sip().await.unwrap();
            let ops: Vec<LocationOp> = (0..200)
                .map(|i| LocationOp::Upsert(binding(&format!("k{i}"), &format!("u{i}"), None, NOW)))
                .collect();
            store.sip().apply_location_batch(&ops).await.unwrap();
            println!("committed");
            use std::io::Write as _;
            std::io::stdout().flush().unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        });
        return;
    }

    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipd.sqlite");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_commit_survives_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let committed = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest may print "test ... " on the same line first.
        .any(|line| line.ends_with("committed"));
    let wal = std::fs::metadata(dir.path().join("sipd.sqlite-wal")).map(|m| m.len());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(committed, "the child did not commit");
    assert!(
        wal.as_ref().is_ok_and(|len| *len > 0),
        "the batch should be in the write-ahead log: {wal:?}"
    );
    rt.block_on(async {
        let store = Store::connect(path.to_str().unwrap()).await.unwrap();
        assert_eq!(store.sip().load_locations().await.unwrap().len(), 200);
        store.close().await;
    });
}

/// How long a batch of 1000 REGISTERs takes on SQLite (WAL, synchronous = FULL), against
/// the same writes committed one by one. Printed; run with `--nocapture` to see it.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_batch_timing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipd.sqlite");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    store.migrate_sip().await.unwrap();
    let sip = store.sip();
    let rows = |generation: u64| -> Vec<LocationOp> {
        (0..1000)
            .map(|i| {
                let mut row = binding(
                    &format!("ruid-{i}"),
                    &format!("user{i}"),
                    Some("example.org"),
                    NOW + 3600 + generation,
                );
                row.cseq = generation as i32;
                LocationOp::Upsert(row)
            })
            .collect()
    };
    let inserts = rows(1);
    let start = std::time::Instant::now();
    sip.apply_location_batch(&inserts).await.unwrap();
    let insert_batch = start.elapsed();
    let refreshes = rows(2);
    let start = std::time::Instant::now();
    sip.apply_location_batch(&refreshes).await.unwrap();
    let update_batch = start.elapsed();
    let singles = rows(3);
    let start = std::time::Instant::now();
    for op in &singles[..100] {
        sip.apply_location_batch(std::slice::from_ref(op))
            .await
            .unwrap();
    }
    let hundred_commits = start.elapsed();
    eprintln!(
        "SQLite, 1000 location upserts: one batch of new rows {insert_batch:?}, one batch of \
         refreshes {update_batch:?}; 100 upserts committed one by one {hundred_commits:?}"
    );
    assert_eq!(sip.load_locations().await.unwrap().len(), 1000);
    store.close().await;
}
