//! An SQLite database laid out by coturn itself (its `turndb/schema.sql`, applied with
//! `sqlite3 turndb < schema.sql`) and filled the way `turnadmin` fills it must be usable
//! as it is: migration must not fail or alter it, and every row must read back.

#![cfg(feature = "sqlite")]

use rtc_store::{PeerIpList, RealmOptions, Store};
use sqlx::{Connection as _, Executor as _};

/// coturn's table definitions (no `IF NOT EXISTS`: coturn creates them once). Its
/// `oauth_key` lacks the `realm` column that our migration would create.
const COTURN_SCHEMA: &str = "
CREATE TABLE turnusers_lt (
    realm varchar(127) default '',
    name varchar(512),
    hmackey char(128),
    PRIMARY KEY (realm,name)
);
CREATE TABLE turn_secret (
    realm varchar(127) default '',
    value varchar(256),
    primary key (realm,value)
);
CREATE TABLE allowed_peer_ip (
    realm varchar(127) default '',
    ip_range varchar(256),
    primary key (realm,ip_range)
);
CREATE TABLE denied_peer_ip (
    realm varchar(127) default '',
    ip_range varchar(256),
    primary key (realm,ip_range)
);
CREATE TABLE turn_origin_to_realm (
    origin varchar(127),
    realm varchar(127),
    primary key (origin)
);
CREATE TABLE turn_realm_option (
    realm varchar(127) default '',
    opt varchar(32),
    value varchar(128),
    primary key (realm,opt)
);
CREATE TABLE oauth_key (
    kid varchar(128),
    ikm_key varchar(256),
    timestamp bigint default 0,
    lifetime integer default 0,
    as_rs_alg varchar(64) default '',
    primary key (kid)
);
CREATE TABLE admin_user (
    name varchar(32),
    realm varchar(127),
    password varchar(127),
    primary key (name)
);
";

/// Rows as `turnadmin` writes them. The hmackey is MD5("ninefingers:north.gov:
/// youhavetoberealistic") in hex, computed with `printf ... | md5sum`; the admin
/// password is coturn's "$5$" salted SHA-256 of "hoodless".
const TURNADMIN_ROWS: &str = "
insert into turnusers_lt (realm, name, hmackey) values('north.gov','ninefingers','bc807ee29df3c9ffa736523fb2c4e8ee');
insert into turn_secret (realm, value) values('north.gov','logen');
insert into turn_realm_option (realm, opt, value) values('north.gov','max-bps','500000');
insert into allowed_peer_ip (ip_range) values('172.17.13.200');
insert into denied_peer_ip (realm, ip_range) values('north.gov','123::45');
insert into admin_user (name, realm, password) values('skarling','north.gov','$5$6fc35c3b0c7d4633$27fca7574f9b79d0cb93ae03e45379470cbbdfcacdd6401f97ebc620f31f54f2');
";

#[tokio::test]
async fn reads_a_database_made_by_coturn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turndb");
    {
        sqlx::any::install_default_drivers();
        let mut conn =
            sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        conn.execute(COTURN_SCHEMA).await.unwrap();
        conn.execute(TURNADMIN_ROWS).await.unwrap();
        conn.close().await.unwrap();
    }

    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate_turn().await.unwrap();
    let turn = store.turn();

    let key = turn
        .get_user_key("north.gov", "ninefingers")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        key,
        rtc_auth::turn::StoredKey::Md5(rtc_auth::turn::key_md5(
            "ninefingers",
            "north.gov",
            "youhavetoberealistic"
        ))
        .to_hex()
    );
    assert_eq!(turn.secrets("north.gov").await.unwrap(), vec!["logen"]);
    assert_eq!(
        turn.realm_options("north.gov").await.unwrap(),
        RealmOptions {
            max_bps: Some(500_000),
            ..RealmOptions::default()
        }
    );
    let (allowed, denied) = turn.peer_ip_lists("north.gov").await.unwrap();
    assert_eq!(allowed, vec!["172.17.13.200"]);
    assert_eq!(denied, vec!["123::45"]);
    let (realm, password) = turn.get_admin("skarling").await.unwrap().unwrap();
    assert_eq!(realm, "north.gov");
    assert!(rtc_auth::admin_password::verify("hoodless", &password));

    // Writing through the store keeps coturn's layout usable by coturn.
    turn.add_peer_ip(PeerIpList::Denied, "", "10.0.0.1")
        .await
        .unwrap();
    turn.add_user("north.gov", "gorst", "7da2270ccfa49786e0115366d3a3d14d")
        .await
        .unwrap();
    assert_eq!(turn.list_users(Some("north.gov")).await.unwrap().len(), 2);
    store.close().await;

    // Migration did not alter coturn's tables: oauth_key still has coturn's columns.
    let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let cols: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info('oauth_key')")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(cols.iter().all(|(c,)| c != "realm"), "{cols:?}");
    assert_eq!(cols.len(), 5);
}
