//! The location table on a disk that fills up (hardening issue, first item): sipd must
//! answer 200 only for bindings that are on disk, route only to those, and recover by
//! itself once space is back.
//!
//! Before the fix, a failed COMMIT sent its connection back to the pool with the
//! transaction still open: that connection kept SQLite's write lock, every later batch
//! got `database is locked`, REGISTERs were acknowledged whose rows never reached the
//! file, and nothing recovered until a restart.
//!
//! Needs root (it mounts a small tmpfs), like the rest of the suite's CI.

use rtc_store::Store;
use rtc_tests::sipd::{Sipd, DOMAIN};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn sipd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sipd"))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A tmpfs of a fixed size, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("sipd-full-disk-")
            .tempdir()
            .expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed (the test needs root)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system with `file` until the kernel says it is full, then gives back
/// `spare` bytes, so that the next few commits fit and the ones after do not.
fn fill_leaving(file: &Path, spare: u64) {
    let mut f = std::fs::File::create(file).expect("filler");
    let block = vec![0x5au8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    drop(f);
    let keep = written.saturating_sub(spare);
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(keep))
        .expect("shrinking the filler");
}

/// One REGISTER from a trusted source (no digest round) for `user`, padded with a long
/// User-Agent so each binding takes real space; the final status, or `None` when no
/// final answer came within 15 s (before the fix a locked database took 5 s per batch).
fn register(server: SocketAddr, user: &str) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let local = sock.local_addr().unwrap();
    let pad = "x".repeat(600);
    let request = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{user}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{DOMAIN}>;tag=t-{user}\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: full-disk-{user}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@{local}>;expires=3600\r\n\
         User-Agent: full-disk-test/{pad}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 65536];
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            sock.send_to(request.as_bytes(), server).unwrap();
            next_send = Instant::now() + Duration::from_secs(1);
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = text.get(8..11)?.parse().ok()?;
            if code >= 200 {
                return Some(code);
            }
        }
    }
    None
}

fn stored_users(db: &Path) -> BTreeSet<String> {
    block_on(async {
        let store = Store::connect(&db.to_string_lossy())
            .await
            .expect("database");
        let rows = store.sip().load_locations().await.expect("locations");
        rows.into_iter().map(|r| r.username).collect()
    })
}

#[test]
fn full_disk_acknowledges_only_what_is_stored_and_recovers_when_space_is_back() {
    let tmpfs = Tmpfs::mount("4m");
    let db: PathBuf = tmpfs.path().join("sipd.sqlite");
    let mut s = Sipd::builder(sipd_bin())
        .set("db-url", &format!("{:?}", db.to_string_lossy()))
        .set("trusted", "[\"127.0.0.1\"]")
        .set("pike-reqs-density-per-unit", "100000")
        .prometheus()
        .start();
    let filler = tmpfs.path().join("filler");
    fill_leaving(&filler, 48 * 1024);

    let mut acknowledged = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for i in 0..40 {
        let user = format!("u{i:03}");
        match register(s.addr(), &user) {
            Some(200) => {
                acknowledged.insert(user);
            }
            Some(500) => {
                refused.insert(user);
            }
            other => panic!("REGISTER of {user}: unexpected answer {other:?}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "the disk never filled up; the test proves nothing (acknowledged {})",
        acknowledged.len()
    );
    assert!(
        s.log().contains("full"),
        "the log names the cause:\n{}",
        s.log()
    );
    // Only committed bindings are routable.
    std::thread::sleep(Duration::from_millis(1500));
    let contacts = rtc_tests::metrics::value(&s.metrics(), "sipd_registered_contacts");
    assert_eq!(contacts, Some(acknowledged.len() as f64));

    // Space comes back: sipd recovers without a restart.
    std::fs::remove_file(&filler).expect("freeing space");
    for i in 0..5 {
        let user = format!("after{i}");
        assert_eq!(
            register(s.addr(), &user),
            Some(200),
            "REGISTER of {user} once space is back; log:\n{}",
            s.log()
        );
        acknowledged.insert(user);
    }

    // kill -9: every acknowledged binding is on disk, and no refused one.
    s.kill_and_restart();
    let stored = stored_users(&db);
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let ghosts: Vec<_> = refused.intersection(&stored).collect();
    assert!(ghosts.is_empty(), "answered 500 but stored: {ghosts:?}");
    drop(s);
    drop(tmpfs);
}
