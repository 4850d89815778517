//! One TURN storage scenario run against every engine compiled in.
//!
//! SQLite always runs (in a temporary directory). With `--features postgres` /
//! `--features mysql` (or `--all-features`) the same scenario runs against the local
//! PostgreSQL (postgres@127.0.0.1:5432, trust auth) and MariaDB (root@127.0.0.1:3306,
//! empty password) servers, each in a freshly created, uniquely named database that is
//! dropped afterwards. An unreachable server fails the test: it is never skipped.

#![cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]

use rtc_auth::turn::{key_md5, StoredKey};
use rtc_store::{Backend, PeerIpList, RealmOption, RealmOptions, Store, StoreError};

/// Everything a TURN deployment stores, written and read back.
async fn scenario(store: Store) {
    store.migrate_turn().await.unwrap();
    // Migrations only create what is missing, so running them again is harmless.
    store.migrate_turn().await.unwrap();
    let turn = store.turn();

    // Users (turnadmin -a / -d / -l semantics).
    let alice_key = StoredKey::Md5(key_md5("alice", "example.org", "wonderland")).to_hex();
    assert_eq!(
        turn.get_user_key("example.org", "alice").await.unwrap(),
        None
    );
    turn.add_user("example.org", "alice", &alice_key)
        .await
        .unwrap();
    turn.add_user("example.org", "bob", &"ab".repeat(32))
        .await
        .unwrap();
    turn.add_user("other.net", "alice", "00112233445566778899aabbccddeeff")
        .await
        .unwrap();
    assert_eq!(
        turn.get_user_key("example.org", "alice")
            .await
            .unwrap()
            .as_deref(),
        Some(alice_key.as_str())
    );
    // The key must come back exactly (no char(128) padding) so that it parses.
    let bob = turn
        .get_user_key("example.org", "bob")
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        StoredKey::from_hex(&bob),
        Some(StoredKey::Sha256(_))
    ));
    assert_eq!(bob, "ab".repeat(32));
    // Adding again updates.
    let new_key = StoredKey::Md5(key_md5("alice", "example.org", "looking-glass")).to_hex();
    turn.add_user("example.org", "alice", &new_key)
        .await
        .unwrap();
    assert_eq!(
        turn.get_user_key("example.org", "alice").await.unwrap(),
        Some(new_key)
    );
    assert_eq!(
        turn.get_user_key("example.org", "carol").await.unwrap(),
        None
    );
    assert_eq!(turn.get_user_key("nowhere", "alice").await.unwrap(), None);
    assert_eq!(
        turn.list_users(None).await.unwrap(),
        vec![
            ("example.org".to_owned(), "alice".to_owned()),
            ("example.org".to_owned(), "bob".to_owned()),
            ("other.net".to_owned(), "alice".to_owned()),
        ]
    );
    assert_eq!(
        turn.list_users(Some("other.net")).await.unwrap(),
        vec![("other.net".to_owned(), "alice".to_owned())]
    );
    assert!(turn.delete_user("example.org", "bob").await.unwrap());
    assert!(!turn.delete_user("example.org", "bob").await.unwrap());
    assert_eq!(turn.list_users(Some("example.org")).await.unwrap().len(), 1);

    // Values that would break naive quoting go through as bound parameters.
    turn.add_user("example.org", "o'brien?", &alice_key)
        .await
        .unwrap();
    assert!(turn
        .get_user_key("example.org", "o'brien?")
        .await
        .unwrap()
        .is_some());

    // REST API secrets.
    assert!(turn.secrets("example.org").await.unwrap().is_empty());
    turn.add_secret("example.org", "s2").await.unwrap();
    turn.add_secret("example.org", "s1").await.unwrap();
    turn.add_secret("example.org", "s1").await.unwrap();
    turn.add_secret("other.net", "x").await.unwrap();
    assert_eq!(turn.secrets("example.org").await.unwrap(), vec!["s1", "s2"]);
    assert!(turn.delete_secret("example.org", "s2").await.unwrap());
    assert!(!turn.delete_secret("example.org", "s2").await.unwrap());
    turn.add_secret("example.org", "s3").await.unwrap();
    assert_eq!(
        turn.delete_all_secrets(Some("example.org")).await.unwrap(),
        2
    );
    assert_eq!(turn.secrets("other.net").await.unwrap(), vec!["x"]);
    turn.add_secret("example.org", "s4").await.unwrap();
    assert_eq!(turn.delete_all_secrets(None).await.unwrap(), 2);
    assert!(turn.secrets("other.net").await.unwrap().is_empty());

    // Peer address filters: global ('') rows apply to every realm.
    turn.add_peer_ip(PeerIpList::Allowed, "", "172.17.13.200")
        .await
        .unwrap();
    turn.add_peer_ip(PeerIpList::Allowed, "example.org", "172.17.13.201")
        .await
        .unwrap();
    turn.add_peer_ip(PeerIpList::Allowed, "other.net", "172.17.13.202")
        .await
        .unwrap();
    turn.add_peer_ip(PeerIpList::Denied, "", "10.0.0.0-10.255.255.255")
        .await
        .unwrap();
    turn.add_peer_ip(PeerIpList::Denied, "example.org", "::1")
        .await
        .unwrap();
    let (allowed, denied) = turn.peer_ip_lists("example.org").await.unwrap();
    assert_eq!(allowed, vec!["172.17.13.200", "172.17.13.201"]);
    assert_eq!(denied, vec!["10.0.0.0-10.255.255.255", "::1"]);
    let (allowed, denied) = turn.peer_ip_lists("unknown.realm").await.unwrap();
    assert_eq!(allowed, vec!["172.17.13.200"]);
    assert_eq!(denied, vec!["10.0.0.0-10.255.255.255"]);
    assert!(turn
        .delete_peer_ip(PeerIpList::Denied, "example.org", "::1")
        .await
        .unwrap());
    assert!(!turn
        .delete_peer_ip(PeerIpList::Allowed, "example.org", "::1")
        .await
        .unwrap());

    // Realm options.
    assert_eq!(
        turn.realm_options("example.org").await.unwrap(),
        RealmOptions::default()
    );
    turn.set_realm_option("example.org", RealmOption::MaxBps, Some(500_000))
        .await
        .unwrap();
    turn.set_realm_option("example.org", RealmOption::UserQuota, Some(10))
        .await
        .unwrap();
    turn.set_realm_option("example.org", RealmOption::UserQuota, Some(12))
        .await
        .unwrap();
    turn.set_realm_option("other.net", RealmOption::TotalQuota, Some(u64::MAX))
        .await
        .unwrap();
    assert_eq!(
        turn.realm_options("example.org").await.unwrap(),
        RealmOptions {
            max_bps: Some(500_000),
            user_quota: Some(12),
            total_quota: None
        }
    );
    assert_eq!(
        turn.realm_options("other.net").await.unwrap().total_quota,
        Some(u64::MAX)
    );
    turn.set_realm_option("example.org", RealmOption::MaxBps, None)
        .await
        .unwrap();
    assert_eq!(
        turn.realm_options("example.org").await.unwrap().max_bps,
        None
    );
    assert_eq!(
        turn.list_realm_options(None).await.unwrap(),
        vec![
            ("example.org".into(), "user-quota".into(), "12".into()),
            (
                "other.net".into(),
                "total-quota".into(),
                u64::MAX.to_string()
            ),
        ]
    );
    assert_eq!(
        turn.list_realm_options(Some("other.net"))
            .await
            .unwrap()
            .len(),
        1
    );

    // Admin accounts.
    let hash = rtc_auth::admin_password::hash("magi");
    turn.add_admin("bayaz", "", &hash).await.unwrap();
    turn.add_admin("skarling", "north.gov", "plain")
        .await
        .unwrap();
    turn.add_admin("skarling", "example.org", "plain2")
        .await
        .unwrap();
    assert_eq!(
        turn.list_admins().await.unwrap(),
        vec![
            ("bayaz".to_owned(), String::new()),
            ("skarling".to_owned(), "example.org".to_owned()),
        ]
    );
    let (realm, stored) = turn.get_admin("bayaz").await.unwrap().unwrap();
    assert_eq!(realm, "");
    assert!(rtc_auth::admin_password::verify("magi", &stored));
    assert!(turn.get_admin("nobody").await.unwrap().is_none());
    assert!(turn.delete_admin("skarling").await.unwrap());
    assert!(!turn.delete_admin("skarling").await.unwrap());
}

/// Runs the scenario on its own task so that a failed assertion still lets the caller
/// clean up (drop the test database) before the panic is passed on.
async fn run_then(store: Store, cleanup: impl std::future::Future<Output = ()>) {
    let outcome = tokio::spawn(scenario(store.clone())).await;
    store.close().await;
    cleanup.await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unique_db_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("rtc_store_test_{}_{nanos}", std::process::id())
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turndb");
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.exists(), "the database file is created on connect");
    run_then(store, async {}).await;
    // The data is on disk: a second connection through a bare path sees it.
    let again = Store::connect(path.to_str().unwrap()).await.unwrap();
    assert_eq!(again.turn().list_users(None).await.unwrap().len(), 3);
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_in_memory() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    run_then(store, async {}).await;
}

#[tokio::test]
async fn connect_errors_name_the_database() {
    #[cfg(feature = "sqlite")]
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("turndb");
        let err = Store::connect(path.to_str().unwrap()).await.unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    let err = Store::connect("redis://127.0.0.1:6379/0")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadUrl { .. }), "{err:?}");
    assert!(
        err.to_string().contains("redis://127.0.0.1:6379/0"),
        "{err}"
    );

    // Port 1 on loopback: nothing listens there. The password must not leak.
    #[cfg(feature = "postgres")]
    {
        let err = Store::connect("postgres://turn:hunter2@127.0.0.1:1/turndb")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("postgres://turn:***@127.0.0.1:1/turndb"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }
    #[cfg(not(feature = "postgres"))]
    {
        let err = Store::connect("postgres://turn:hunter2@127.0.0.1:1/turndb")
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::BackendNotCompiled { .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres() {
    use sqlx::{Connection as _, Executor as _};
    const SERVER: &str = "postgres://postgres@127.0.0.1:5432";
    sqlx::any::install_default_drivers();
    let name = unique_db_name();
    let mut admin = sqlx::AnyConnection::connect(&format!("{SERVER}/postgres"))
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432 for this test");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let store = Store::connect(&format!("{SERVER}/{name}")).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    run_then(store, async move {
        admin
            .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await
            .unwrap();
    })
    .await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql() {
    use sqlx::{Connection as _, Executor as _};
    const SERVER: &str = "mysql://root@127.0.0.1:3306";
    sqlx::any::install_default_drivers();
    let name = unique_db_name();
    let mut admin = sqlx::AnyConnection::connect(SERVER)
        .await
        .expect("MariaDB/MySQL must be running on 127.0.0.1:3306 for this test");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let store = Store::connect(&format!("mariadb://root@127.0.0.1:3306/{name}"))
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Mysql);
    run_then(store, async move {
        admin
            .execute(format!("DROP DATABASE {name}").as_str())
            .await
            .unwrap();
    })
    .await;
}
