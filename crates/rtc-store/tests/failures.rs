//! Writes when the database server goes away under load (hardening issue, first item):
//! the server drops every connection of ours again and again, as a restart does, while
//! location batches keep coming. A batch reported committed must be in the table, a
//! failed one must leave nothing of itself behind, and the store must write again as
//! soon as the server lets it, without reopening the pool.
//!
//! The full-disk case (SQLite on a tiny tmpfs) is `sipd/tests/full_disk.rs`.

#![cfg(any(feature = "postgres", feature = "mysql"))]

use rtc_store::{LocationOp, LocationRow, Store};
use sqlx::{Connection as _, Executor as _, Row as _};
use std::collections::BTreeSet;
use std::time::Duration;

fn binding(ruid: &str) -> LocationRow {
    LocationRow {
        ruid: ruid.to_owned(),
        username: ruid.to_owned(),
        domain: Some("falcot.com".to_owned()),
        contact: format!("sip:{ruid}@192.0.2.10:5060"),
        expires: 1_900_000_000,
        q: 1.0,
        callid: format!("{ruid}@192.0.2.10"),
        cseq: 1,
        user_agent: "failure-test".to_owned(),
        last_modified: 1_800_000_000,
        connection_id: -1,
        ..LocationRow::default()
    }
}

/// Drops every other connection to the test database, the way a server restart does.
async fn drop_connections(raw: &mut sqlx::AnyConnection, postgres: bool) -> usize {
    if postgres {
        let rows = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut *raw)
        .await
        .expect("pg_terminate_backend");
        rows.len()
    } else {
        let rows = sqlx::query(
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist \
             WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        )
        .fetch_all(&mut *raw)
        .await
        .expect("processlist");
        for row in &rows {
            let id: i64 = row.try_get(0).unwrap();
            // A connection may end by itself between the SELECT and the KILL.
            let _ = raw.execute(format!("KILL {id}").as_str()).await;
        }
        rows.len()
    }
}

async fn server_drops_connections_under_load(url: String, postgres: bool) {
    let store = Store::connect(&url).await.expect("database");
    store.migrate_sip().await.expect("migrate");
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&url).await.expect("raw");

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut committed, mut failed) = (BTreeSet::new(), BTreeSet::new());
            for batch in 0..120 {
                let ruids: Vec<String> = (0..5).map(|i| format!("b{batch:03}-{i}")).collect();
                let ops: Vec<LocationOp> = ruids
                    .iter()
                    .map(|r| LocationOp::Upsert(binding(r)))
                    .collect();
                match store.sip().apply_location_batch(&ops).await {
                    Ok(()) => committed.extend(ruids),
                    Err(_) => {
                        failed.insert(batch);
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (committed, failed)
        })
    };
    let mut dropped = 0;
    while !writer.is_finished() {
        dropped += drop_connections(&mut raw, postgres).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (committed, failed) = writer.await.expect("writer");
    assert!(
        dropped > 0,
        "no connection was ever dropped; the test proves nothing"
    );
    assert!(
        !committed.is_empty(),
        "nothing committed between the drops ({} batches failed)",
        failed.len()
    );

    // The server is calm again: the same store writes at once.
    store
        .sip()
        .apply_location_batch(&[LocationOp::Upsert(binding("after"))])
        .await
        .expect("writing once the server is back");

    let stored: BTreeSet<String> = store
        .sip()
        .load_locations()
        .await
        .expect("locations")
        .into_iter()
        .map(|r| r.ruid)
        .collect();
    let lost: Vec<_> = committed.difference(&stored).collect();
    assert!(lost.is_empty(), "reported committed but missing: {lost:?}");
    assert!(stored.contains("after"));
    // A batch is one transaction: all of its rows or none (a failed COMMIT may still
    // have committed on the server, so a failed batch may be whole, never partial).
    for batch in 0..120 {
        let present = (0..5)
            .filter(|i| stored.contains(&format!("b{batch:03}-{i}")))
            .count();
        assert!(present == 0 || present == 5, "batch {batch} is partial");
    }
    store.close().await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_drops_connections_under_load() {
    let db = rtc_tests::scratch_db::ScratchDb::create(rtc_tests::scratch_db::Engine::Postgres);
    server_drops_connections_under_load(db.url(), true).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mariadb_drops_connections_under_load() {
    let db = rtc_tests::scratch_db::ScratchDb::create(rtc_tests::scratch_db::Engine::Mysql);
    server_drops_connections_under_load(db.url(), false).await;
}
