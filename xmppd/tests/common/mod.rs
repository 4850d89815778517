//! Helpers shared by xmppd's integration tests.

use rtc_tests::xmppd::DOMAIN;
use std::path::Path;

/// Creates `user@falcot.com` with `password` in the database at `db`, as `rtc-admin xmpp
/// adduser` would: SCRAM secrets only (4096 PBKDF2 rounds, the RFC 7677 minimum, to keep
/// debug-build tests quick).
pub fn add_account(db: &Path, user: &str, password: &str) {
    add_account_url(&db.to_string_lossy(), user, password);
}

/// [`add_account`] for any database URL (PostgreSQL, MariaDB).
pub fn add_account_url(url: &str, user: &str, password: &str) {
    use rtc_auth::scram::{derive_keys, ScramHash};
    use rtc_store::{ScramRow, XmppSecrets};
    let row = |alg| {
        let salt = rand::random::<[u8; 16]>().to_vec();
        let (stored_key, server_key) = derive_keys(alg, password, &salt, 4096);
        ScramRow {
            salt,
            iterations: 4096,
            stored_key,
            server_key,
        }
    };
    let secrets = XmppSecrets {
        sha1: Some(row(ScramHash::Sha1)),
        sha256: Some(row(ScramHash::Sha256)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = rtc_store::Store::connect(url).await.unwrap();
        store.migrate_xmpp().await.unwrap();
        let created = store
            .xmpp()
            .create_account(DOMAIN, user, &secrets)
            .await
            .unwrap();
        assert!(created, "{user} exists already");
        store.close().await;
    });
}
