//! The XMPP tables (`xmpp_accounts`, `xmpp_data`) on every engine compiled in: SQLite
//! always, the local PostgreSQL and MariaDB servers with `--features postgres` / `mysql`
//! (or `--all-features`), each in a scratch database dropped afterwards.

#![cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]

use rtc_store::{Backend, ScramRow, Store, XmppOp, XmppSecrets};
use sqlx::{Connection as _, Row as _};

/// A second connection to the same database, to look at rows behind the store's back.
struct Raw(sqlx::AnyConnection);

impl Raw {
    async fn open(url: &str) -> Raw {
        sqlx::any::install_default_drivers();
        Raw(sqlx::AnyConnection::connect(url).await.unwrap())
    }

    async fn count(&mut self, sql: &str) -> i64 {
        let row = sqlx::query(sql)
            .fetch_one(&mut self.0)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get(0).unwrap()
    }

    async fn text(&mut self, sql: &str) -> String {
        let row = sqlx::query(sql)
            .fetch_one(&mut self.0)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.try_get(0).unwrap()
    }
}

fn scram(seed: u8, len: usize, iterations: u32) -> ScramRow {
    ScramRow {
        salt: vec![seed; 16],
        iterations,
        stored_key: (0..len).map(|i| seed.wrapping_add(i as u8)).collect(),
        server_key: (0..len).map(|i| seed ^ i as u8).collect(),
    }
}

fn secrets(seed: u8) -> XmppSecrets {
    XmppSecrets {
        sha1: Some(scram(seed, 20, 4096)),
        sha256: Some(scram(seed.wrapping_add(1), 32, 10_000)),
    }
}

fn put(user: &str, store: &str, key: &str, value: &str) -> XmppOp {
    XmppOp::Put {
        host: "example.org".into(),
        user: user.into(),
        store: store.into(),
        key: key.into(),
        value: value.into(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn accounts(store: &Store, raw: &mut Raw) {
    let x = store.xmpp();
    assert!(x
        .create_account("example.org", "juliet", &secrets(1))
        .await
        .unwrap());
    assert!(!x
        .create_account("example.org", "juliet", &secrets(2))
        .await
        .unwrap());
    assert!(x
        .create_account("example.net", "juliet", &secrets(3))
        .await
        .unwrap());
    // One hash only (imported from elsewhere): the other reads back as None.
    let sha256_only = XmppSecrets {
        sha1: None,
        sha256: secrets(4).sha256,
    };
    assert!(x
        .create_account("example.org", "romeo", &sha256_only)
        .await
        .unwrap());

    let a = x.account("example.org", "juliet").await.unwrap().unwrap();
    assert_eq!(a.secrets, secrets(1), "the first create won");
    assert_eq!(
        (a.host.as_str(), a.username.as_str()),
        ("example.org", "juliet")
    );
    assert!(a.created_at.abs_diff(now()) < 60, "{}", a.created_at);
    assert_eq!(
        x.account("example.org", "romeo")
            .await
            .unwrap()
            .unwrap()
            .secrets,
        sha256_only
    );
    assert_eq!(x.account("example.org", "nobody").await.unwrap(), None);
    assert_eq!(x.account("example.com", "juliet").await.unwrap(), None);
    // Hex text in the table, no clear text anywhere.
    let hex = raw
        .text("SELECT sha1_stored_key FROM xmpp_accounts WHERE host = 'example.org' AND username = 'juliet'")
        .await;
    assert_eq!(hex, "0102030405060708090a0b0c0d0e0f1011121314");

    assert!(x
        .set_account("example.org", "juliet", &secrets(9))
        .await
        .unwrap());
    assert_eq!(
        x.account("example.org", "juliet")
            .await
            .unwrap()
            .unwrap()
            .secrets,
        secrets(9)
    );
    assert!(!x
        .set_account("example.org", "nobody", &secrets(9))
        .await
        .unwrap());
    assert_eq!(x.account("example.org", "nobody").await.unwrap(), None);

    assert_eq!(
        x.list_accounts(None).await.unwrap(),
        [
            ("example.net".to_owned(), "juliet".to_owned()),
            ("example.org".to_owned(), "juliet".to_owned()),
            ("example.org".to_owned(), "romeo".to_owned()),
        ]
    );
    assert_eq!(x.list_accounts(Some("example.net")).await.unwrap().len(), 1);
    assert!(x
        .list_accounts(Some("example.com"))
        .await
        .unwrap()
        .is_empty());

    // Deleting an account takes its data along, and only its data.
    x.apply(&[
        put("juliet", "roster", "romeo@example.org", "<item/>"),
        put("juliet", "vcard", "current", "<vCard/>"),
        put("romeo", "roster", "juliet@example.org", "<item/>"),
    ])
    .await
    .unwrap();
    assert!(x.delete_account("example.org", "juliet").await.unwrap());
    assert!(!x.delete_account("example.org", "juliet").await.unwrap());
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM xmpp_data WHERE username = 'juliet'")
            .await,
        0
    );
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM xmpp_data WHERE username = 'romeo'")
            .await,
        1
    );
    assert!(x.account("example.net", "juliet").await.unwrap().is_some());
}

async fn data(store: &Store, raw: &mut Raw) {
    let x = store.xmpp();
    // A burst of offline messages in one batch, keys numbered so they sort in order;
    // written out of order on purpose.
    let mut ops: Vec<XmppOp> = (0..300)
        .rev()
        .map(|i| {
            put(
                "bob",
                "offline",
                &format!("{i:010}"),
                &format!("<message id='m{i}'><body>é {i} &amp; ☃</body></message>"),
            )
        })
        .collect();
    // Keys that differ in case only are different keys (binary collation on MariaDB).
    ops.push(put("bob", "private", "A", "upper"));
    ops.push(put("bob", "private", "a", "lower"));
    ops.push(put("bob", "private", "b", "first"));
    // The same key again in the same batch: the later write wins (native upsert).
    ops.push(put("bob", "private", "b", "second"));
    // A vCard with an avatar is larger than MySQL's TEXT.
    let big = format!("<vCard><PHOTO>{}</PHOTO></vCard>", "A".repeat(200_000));
    ops.push(put("bob", "vcard", "current", &big));
    x.apply(&ops).await.unwrap();

    let offline = x.load("example.org", "bob", "offline", None).await.unwrap();
    assert_eq!(offline.len(), 300);
    assert_eq!(offline[0].0, "0000000000");
    assert_eq!(offline[299].0, "0000000299");
    assert!(offline.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        offline[7].1,
        "<message id='m7'><body>é 7 &amp; ☃</body></message>"
    );
    let private = x.load("example.org", "bob", "private", None).await.unwrap();
    assert_eq!(
        private,
        [
            ("A".to_owned(), "upper".to_owned()),
            ("a".to_owned(), "lower".to_owned()),
            ("b".to_owned(), "second".to_owned()),
        ]
    );
    assert_eq!(
        x.load("example.org", "bob", "private", Some("a"))
            .await
            .unwrap(),
        [("a".to_owned(), "lower".to_owned())]
    );
    assert!(x
        .load("example.org", "bob", "private", Some("c"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        x.load("example.org", "bob", "vcard", Some("current"))
            .await
            .unwrap()[0]
            .1,
        big
    );
    assert!(x
        .load("example.net", "bob", "offline", None)
        .await
        .unwrap()
        .is_empty());

    // Delivery at login: delete what was delivered, keep the rest, add one; one batch.
    let mut ops: Vec<XmppOp> = (0..250)
        .map(|i| XmppOp::Delete {
            host: "example.org".into(),
            user: "bob".into(),
            store: "offline".into(),
            key: format!("{i:010}"),
        })
        .collect();
    ops.push(put("bob", "offline", "0000000300", "<message/>"));
    ops.push(XmppOp::DeleteAll {
        host: "example.org".into(),
        user: "bob".into(),
        store: Some("private".into()),
    });
    x.apply(&ops).await.unwrap();
    assert_eq!(
        x.load("example.org", "bob", "offline", None)
            .await
            .unwrap()
            .len(),
        51
    );
    assert!(x
        .load("example.org", "bob", "private", None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        x.load("example.org", "bob", "vcard", None)
            .await
            .unwrap()
            .len(),
        1
    );

    // Accounts through the batch: created, replaced (created_at kept), deleted with data.
    x.apply(&[XmppOp::PutAccount {
        host: "example.org".into(),
        user: "bob".into(),
        secrets: secrets(5),
    }])
    .await
    .unwrap();
    let created = x.account("example.org", "bob").await.unwrap().unwrap();
    assert_eq!(created.secrets, secrets(5));
    raw.count("SELECT COUNT(*) FROM xmpp_accounts").await;
    x.apply(&[
        XmppOp::PutAccount {
            host: "example.org".into(),
            user: "bob".into(),
            secrets: secrets(6),
        },
        put("bob", "roster", "alice@example.org", "<item/>"),
    ])
    .await
    .unwrap();
    let replaced = x.account("example.org", "bob").await.unwrap().unwrap();
    assert_eq!(replaced.secrets, secrets(6));
    assert_eq!(replaced.created_at, created.created_at);
    x.apply(&[
        XmppOp::DeleteAll {
            host: "example.org".into(),
            user: "bob".into(),
            store: None,
        },
        put("bob", "roster", "carol@example.org", "<item/>"),
    ])
    .await
    .unwrap();
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM xmpp_data WHERE username = 'bob'")
            .await,
        1
    );
    x.apply(&[
        put("bob", "offline", "1", "<message/>"),
        XmppOp::DeleteAccount {
            host: "example.org".into(),
            user: "bob".into(),
        },
    ])
    .await
    .unwrap();
    assert_eq!(x.account("example.org", "bob").await.unwrap(), None);
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM xmpp_data WHERE username = 'bob'")
            .await,
        0
    );
    x.apply(&[]).await.unwrap();

    // All or nothing: a batch whose last write fails leaves no trace. A key longer than
    // its column fails on the server engines (SQLite does not enforce VARCHAR lengths).
    if store.backend() != Backend::Sqlite {
        let result = x
            .apply(&[
                put("carol", "offline", "1", "<message/>"),
                put("carol", "offline", &"k".repeat(400), "<message/>"),
            ])
            .await;
        assert!(result.is_err());
        assert!(x
            .load("example.org", "carol", "offline", None)
            .await
            .unwrap()
            .is_empty());
    }
}

async fn scenario(store: Store, raw_url: String) {
    store.migrate_xmpp().await.unwrap();
    // Idempotent.
    store.migrate_xmpp().await.unwrap();
    let mut raw = Raw::open(&raw_url).await;
    accounts(&store, &mut raw).await;
    data(&store, &mut raw).await;
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
    let path = dir.path().join("xmppd.sqlite");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    run(store, format!("sqlite://{}", path.display())).await;
    // The file is in WAL mode (set by Store::connect): the daemon's commits are durable.
    let mut raw = Raw::open(&format!("sqlite://{}", path.display())).await;
    assert_eq!(raw.text("PRAGMA journal_mode").await, "wal");
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

/// xmppd's promise for offline messages: once `apply` returned, the batch survives the
/// process being killed outright. The child commits, says so, and is SIGKILLed; a fresh
/// open sees every message.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_batch_survives_kill_9() {
    const CHILD_ENV: &str = "RTC_STORE_XMPP_KILL9_DB";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(path) = std::env::var(CHILD_ENV) {
        rt.block_on(async {
            let store = Store::connect(&path).await.unwrap();
            store.migrate_xmpp().await.unwrap();
            let ops: Vec<XmppOp> = (0..200)
                .map(|i| put("bob", "offline", &format!("{i:010}"), "<message/>"))
                .collect();
            store.xmpp().apply(&ops).await.unwrap();
            println!("committed");
            use std::io::Write as _;
            std::io::stdout().flush().unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        });
        return;
    }

    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.sqlite");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_batch_survives_kill_9",
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
        .any(|line| line.ends_with("committed"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(committed, "the child did not commit");
    rt.block_on(async {
        let store = Store::connect(path.to_str().unwrap()).await.unwrap();
        let rows = store
            .xmpp()
            .load("example.org", "bob", "offline", None)
            .await
            .unwrap();
        assert_eq!(rows.len(), 200);
        store.close().await;
    });
}
