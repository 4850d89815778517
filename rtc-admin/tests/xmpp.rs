//! End-to-end tests of `rtc-admin xmpp`: the real binary against real databases (a SQLite
//! file found through xmppd.toml's relative `db-url`; PostgreSQL and MariaDB scratch
//! databases through `-b`), real certificate files (rtc_tls::self_signed, rcgen for
//! expired and expiring ones), a fake `/etc/letsencrypt` tree, and small stand-ins for a
//! running xmppd (a TCP listener answering a stream header, an HTTP /metrics responder).

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{admin, admin_with_input, fails, ok};
use rtc_auth::scram::{self, ScramHash};
use rtc_store::{ScramRow, Store, XmppOp};

/// A config dir laid out as Debian's Prosody: xmppd.toml, vhosts-available/falcot.com.toml
/// linked from vhosts-enabled, and a self-signed certificate for the host and its MUC
/// component in certs/.
struct Instance {
    dir: tempfile::TempDir,
}

impl Instance {
    fn new(extra_main: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("xmppd.toml"),
            format!(
                "admins = [\"joe@falcot.com\"]\ndb-url = \"xmppd.sqlite\"\nscram-iterations = 4096\n\
                 c2s-ports = [5222]\n{extra_main}"
            ),
        )
        .unwrap();
        for sub in ["vhosts-available", "vhosts-enabled", "certs"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let instance = Instance { dir };
        instance.write_cert("falcot.com", &["falcot.com", "conference.falcot.com"]);
        instance.host_file(
            "falcot.com",
            "# Falcot's XMPP service.\ndomain = \"falcot.com\"\n\
             certificate = \"../certs/falcot.com.crt\"\nkey = \"../certs/falcot.com.key\"\n\
             allow-registration = false\n\n[[component]]\ndomain = \"conference.falcot.com\"\n\
             type = \"muc\"\n",
        );
        instance.enable("falcot.com");
        instance
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn host_file(&self, domain: &str, text: &str) -> PathBuf {
        let file = self.path().join(format!("vhosts-available/{domain}.toml"));
        std::fs::write(&file, text).unwrap();
        file
    }

    fn enable(&self, domain: &str) {
        std::os::unix::fs::symlink(
            format!("../vhosts-available/{domain}.toml"),
            self.path().join(format!("vhosts-enabled/{domain}.toml")),
        )
        .unwrap();
    }

    /// certs/<stem>.crt and .key, self-signed for `names`.
    fn write_cert(&self, stem: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (cert, key) = rtc_tls::self_signed(&names).unwrap();
        std::fs::write(self.path().join(format!("certs/{stem}.crt")), cert).unwrap();
        std::fs::write(self.path().join(format!("certs/{stem}.key")), key).unwrap();
    }

    fn sqlite_url(&self) -> String {
        self.path().join("xmppd.sqlite").display().to_string()
    }
}

fn with_store<T>(url: &str, f: impl AsyncFnOnce(&Store) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(url).await.unwrap();
        let out = f(&store).await;
        store.close().await;
        out
    })
}

/// A SCRAM client's proof for `password` against stored secrets verifies.
fn logs_in(hash: ScramHash, row: &ScramRow, password: &str) -> bool {
    let salted = scram::salted_password(hash, password, &row.salt, row.iterations);
    let auth_message = b"n=juliet,r=abc,r=abcdef,s=c2FsdA==,i=4096,c=biws,r=abcdef";
    let proof = scram::client_proof(hash, &scram::client_key(hash, &salted), auth_message);
    scram::verify_client_proof(hash, &row.stored_key, auth_message, &proof)
}

fn assert_password(url: &str, host: &str, user: &str, password: &str, iterations: u32) {
    let account = with_store(url, async |s| s.xmpp().account(host, user).await.unwrap())
        .unwrap_or_else(|| panic!("{user}@{host} not stored"));
    let sha1 = account.secrets.sha1.expect("SCRAM-SHA-1 secrets");
    let sha256 = account.secrets.sha256.expect("SCRAM-SHA-256 secrets");
    for (hash, row) in [(ScramHash::Sha1, &sha1), (ScramHash::Sha256, &sha256)] {
        assert_eq!(row.salt.len(), 16);
        assert_eq!(row.iterations, iterations);
        assert!(logs_in(hash, row, password), "{hash:?} with {password:?}");
        assert!(!logs_in(hash, row, "wrong"));
    }
}

/// adduser / passwd / deluser on the database that `db` (nothing: the config's; or
/// `-b URL`) selects; `url` opens it for checks.
fn account_commands(inst: &Instance, db: &[&str], url: &str) {
    let d = inst.path();
    let cmd = |rest: &[&str]| -> Vec<String> {
        ["xmpp"]
            .iter()
            .chain(db)
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |rest: &[&str], input: &str| {
        let args = cmd(rest);
        admin_with_input(
            d,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            input,
        )
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let out = run(&["adduser", "Juliet@Falcot.com"], "pencil\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_password(url, "falcot.com", "juliet", "pencil", 4096);
    // A second account with a password that has a space and non-ASCII letters, CRLF.
    let out = run(&["adduser", "romeo@falcot.com"], "rosé wine\r\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_password(url, "falcot.com", "romeo", "rosé wine", 4096);

    let out = run(&["adduser", "juliet@falcot.com"], "other\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("juliet@falcot.com exists already"),
        "{}",
        stderr(&out)
    );
    assert_password(url, "falcot.com", "juliet", "pencil", 4096);
    for (jid, input, why) in [
        ("nurse@falcot.com", "", "empty password"),
        ("nurse@falcot.com", "\n", "empty password"),
        ("nurse@falcot.com", "a\u{7}b\n", "unusable password"),
        // Refused before the password is read (so no input: it would meet a closed pipe).
        ("nurse@verona.it", "", "verona.it is not a host of xmppd"),
        ("nurse", "", "not an account JID"),
        ("nurse@falcot.com/balcony", "", "without a resource"),
    ] {
        let out = run(&["adduser", jid], input);
        assert_eq!(out.status.code(), Some(1), "{jid}");
        assert!(stderr(&out).contains(why), "{jid}: {}", stderr(&out));
    }
    assert!(with_store(url, async |s| s
        .xmpp()
        .account("falcot.com", "nurse")
        .await
        .unwrap())
    .is_none());

    let out = run(&["passwd", "juliet@falcot.com"], "romeo!\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_password(url, "falcot.com", "juliet", "romeo!", 4096);
    let out = run(&["passwd", "nurse@falcot.com"], "x\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no account nurse@falcot.com"),
        "{}",
        stderr(&out)
    );

    // deluser takes the account's data along, and nobody else's.
    with_store(url, async |s| {
        let put = |user: &str| XmppOp::Put {
            host: "falcot.com".into(),
            user: user.into(),
            store: "roster".into(),
            key: "x@falcot.com".into(),
            value: "<item/>".into(),
        };
        s.xmpp()
            .apply(&[put("juliet"), put("romeo")])
            .await
            .unwrap();
    });
    let out = run(&["deluser", "juliet@falcot.com"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let (account, juliet_data, romeo_data) = with_store(url, async |s| {
        let x = s.xmpp();
        (
            x.account("falcot.com", "juliet").await.unwrap(),
            x.load("falcot.com", "juliet", "roster", None)
                .await
                .unwrap(),
            x.load("falcot.com", "romeo", "roster", None).await.unwrap(),
        )
    });
    assert!(account.is_none() && juliet_data.is_empty());
    assert_eq!(romeo_data.len(), 1);
    let out = run(&["deluser", "juliet@falcot.com"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no account juliet@falcot.com"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn accounts_on_sqlite() {
    let inst = Instance::new("");
    account_commands(&inst, &[], &inst.sqlite_url());
    // A host that is available but not enabled gets told how to enable it.
    inst.host_file("verona.it", "domain = \"verona.it\"\n");
    let e = String::from_utf8(
        admin_with_input(inst.path(), &["xmpp", "adduser", "nurse@verona.it"], "").stderr,
    )
    .unwrap();
    assert!(e.contains("enable it: ln -s"), "{e}");
    use std::os::unix::fs::MetadataExt as _;
    let mode = std::fs::metadata(inst.path().join("xmppd.sqlite"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o077, 0, "the database is private: {mode:o}");
}

#[cfg(feature = "postgres")]
#[test]
fn accounts_on_postgres() {
    use rtc_tests::scratch_db::{Engine, ScratchDb};
    let db = ScratchDb::create(Engine::Postgres);
    let inst = Instance::new("");
    account_commands(&inst, &["-b", &db.url()], &db.url());
    assert!(!inst.path().join("xmppd.sqlite").exists());
}

#[cfg(feature = "mysql")]
#[test]
fn accounts_on_mysql() {
    use rtc_tests::scratch_db::{Engine, ScratchDb};
    let db = ScratchDb::create(Engine::Mysql);
    let inst = Instance::new("");
    account_commands(&inst, &["-b", &db.url()], &db.url());
}

/// `check` on an instance: exit status and the findings printed.
fn check(inst: &Instance, args: &[&str]) -> (i32, String) {
    let mut all = vec!["xmpp", "check"];
    all.extend_from_slice(args);
    let out = admin(inst.path(), &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_a_good_configuration() {
    let inst = Instance::new("");
    let (code, out) = check(&inst, &[]);
    assert_eq!(code, 0, "{out}");
    // Self-signed is worth a warning, not an error.
    assert!(
        out.contains("warning: ") && out.contains("self-signed"),
        "{out}"
    );
    assert!(out.contains("0 errors, 1 warning."), "{out}");
    // A wildcard certificate covers the component; a plain copy in vhosts-enabled works
    // (its `../certs/` is the same directory, seen from vhosts-enabled).
    inst.write_cert("falcot.com", &["falcot.com", "*.falcot.com"]);
    let enabled = inst.path().join("vhosts-enabled/falcot.com.toml");
    std::fs::remove_file(&enabled).unwrap();
    std::fs::copy(
        inst.path().join("vhosts-available/falcot.com.toml"),
        &enabled,
    )
    .unwrap();
    let (code, out) = check(&inst, &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_reports_configuration_mistakes_with_file_and_key() {
    let inst =
        Instance::new("c2s-port = 5222\nc2s-stanza-size-limit = 100\nprometheus = \"yes\"\n");
    inst.host_file(
        "verona.it",
        "domain = \"verona.it\"\ncertificate = \"/nonexistent/verona.crt\"\nallow-registrations = true\n\
         [[component]]\ndomain = \"conference.falcot.com\"\ntype = \"irc\"\nlogging = true\n",
    );
    inst.enable("verona.it");
    std::os::unix::fs::symlink(
        "../vhosts-available/gone.toml",
        inst.path().join("vhosts-enabled/gone.toml"),
    )
    .unwrap();
    let (code, out) = check(&inst, &["config"]);
    assert_eq!(code, 1, "{out}");
    let main = inst.path().join("xmppd.toml").display().to_string();
    let verona = inst
        .path()
        .join("vhosts-enabled/verona.it.toml")
        .display()
        .to_string();
    for expected in [
        format!("error: {main}: `c2s-port`: unknown key"),
        format!("error: {main}: `c2s-stanza-size-limit`: must be between 10000 and 16777216"),
        format!("error: {main}: `prometheus`: must be true or false"),
        format!("error: {verona}: `allow-registrations`: unknown key"),
        format!("error: {verona}: `key`: required"),
        format!("error: {verona}: `certificate`: /nonexistent/verona.crt does not exist"),
        format!("error: {verona}: `component[0].logging`: unknown key"),
        format!("error: {verona}: `component[0].type`: \"irc\" is not a component type"),
        format!(
            "error: {verona}: `component[0].domain`: conference.falcot.com is already served by"
        ),
        "gone.toml: broken link to ../vhosts-available/gone.toml".to_owned(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in\n{out}");
    }
    // Certificates were not looked at.
    assert!(!out.contains("self-signed"), "{out}");

    // Not TOML at all, and no enabled host.
    let inst = Instance::new("admins = [\n");
    let (code, out) = check(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("xmppd.toml: not valid TOML"), "{out}");
    let inst = Instance::new("");
    std::fs::remove_file(inst.path().join("vhosts-enabled/falcot.com.toml")).unwrap();
    let (code, out) = check(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`vhosts-enabled`: no virtual host is enabled"),
        "{out}"
    );
}

/// Days since 1970-01-01 to a civil date (for rcgen's dates).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((yoe + era * 400 + i64::from(m <= 2)) as i32, m, d)
}

/// A certificate for `names` valid from `from` to `until` days from today.
fn dated_cert(names: &[&str], from: i64, until: i64) -> (String, String) {
    let today = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400) as i64;
    let date = |days: i64| {
        let (y, m, d) = civil_from_days(today + days);
        rcgen::date_time_ymd(y, m, d)
    };
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = date(from);
    params.not_after = date(until);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn check_reports_certificate_problems() {
    let inst = Instance::new("");
    let crt = inst.path().join("certs/falcot.com.crt");
    let key = inst.path().join("certs/falcot.com.key");
    let crt_shown = crt.display().to_string();

    // Names: the component is not covered.
    inst.write_cert("falcot.com", &["falcot.com"]);
    let (code, out) = check(&inst, &["certs"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "error: {crt_shown}: does not cover conference.falcot.com (it names falcot.com)"
        )),
        "{out}"
    );

    // The key of another certificate.
    inst.write_cert("falcot.com", &["falcot.com", "conference.falcot.com"]);
    inst.write_cert("other", &["falcot.com", "conference.falcot.com"]);
    std::fs::copy(inst.path().join("certs/other.key"), &key).unwrap();
    let (code, out) = check(&inst, &["certs"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("error: {}", key.display())), "{out}");

    // Expired a year ago.
    let (c, k) = dated_cert(&["falcot.com", "conference.falcot.com"], -400, -35);
    std::fs::write(&crt, c).unwrap();
    std::fs::write(&key, k).unwrap();
    let (code, out) = check(&inst, &["certs"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("error: {crt_shown}: expired on ")),
        "{out}"
    );
    assert!(out.contains("(35 days ago)"), "{out}");

    // Expiring in ten days: a warning only.
    let (c, k) = dated_cert(&["falcot.com", "conference.falcot.com"], -80, 10);
    std::fs::write(&crt, c).unwrap();
    std::fs::write(&key, k).unwrap();
    let (code, out) = check(&inst, &["certs"]);
    assert_eq!(code, 0, "{out}");
    // Midnight ten days from today: nine whole days and some hours.
    assert!(
        out.contains(&format!("warning: {crt_shown}: expires on ")) && out.contains("(in 9 days)"),
        "{out}"
    );

    // Not yet valid.
    let (c, k) = dated_cert(&["falcot.com", "conference.falcot.com"], 3, 90);
    std::fs::write(&crt, c).unwrap();
    std::fs::write(&key, k).unwrap();
    let (code, out) = check(&inst, &["certs"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid before"), "{out}");

    // Not a certificate; the configuration check alone does not care.
    std::fs::write(&crt, "hello").unwrap();
    let (code, out) = check(&inst, &["certs"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("error: {crt_shown}: certificate of falcot.com")),
        "{out}"
    );
    assert_eq!(check(&inst, &["config"]).0, 0);
}

/// certbot's layout: live/<name>/{fullchain,privkey}.pem are links into archive/.
fn letsencrypt_tree(root: &Path, domain: &str, names: &[&str]) -> PathBuf {
    let archive = root.join("archive").join(domain);
    let live = root.join("live").join(domain);
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let (cert, key) = rtc_tls::self_signed(&names).unwrap();
    std::fs::write(archive.join("fullchain1.pem"), &cert).unwrap();
    std::fs::write(archive.join("privkey1.pem"), &key).unwrap();
    std::fs::set_permissions(
        archive.join("privkey1.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    for (link, target) in [
        ("fullchain.pem", "fullchain1.pem"),
        ("privkey.pem", "privkey1.pem"),
    ] {
        std::os::unix::fs::symlink(format!("../../archive/{domain}/{target}"), live.join(link))
            .unwrap();
    }
    root.join("live")
}

#[test]
fn cert_import_from_letsencrypt() {
    let inst = Instance::new("");
    let d = inst.path();
    // The host file points elsewhere before the import.
    let host_file = inst.host_file(
        "falcot.com",
        "# Falcot's XMPP service.\ndomain = \"falcot.com\"\n\
         certificate = \"/etc/ssl/old.pem\" # from the old server\nkey = \"/etc/ssl/old.key\"\n\
         \n[[component]]\ndomain = \"conference.falcot.com\"\ntype = \"muc\"\n",
    );
    let le = tempfile::tempdir().unwrap();
    let live = letsencrypt_tree(
        le.path(),
        "falcot.com",
        &["falcot.com", "conference.falcot.com"],
    );
    let empty = tempfile::tempdir().unwrap();

    let out = ok(
        d,
        &[
            "xmpp",
            "cert",
            "import",
            "falcot.com",
            empty.path().to_str().unwrap(),
            live.to_str().unwrap(),
        ],
    );
    assert!(out.contains("imported"), "{out}");
    let crt = d.join("certs/falcot.com.crt");
    let key = d.join("certs/falcot.com.key");
    assert_eq!(
        std::fs::read(&crt).unwrap(),
        std::fs::read(le.path().join("archive/falcot.com/fullchain1.pem")).unwrap()
    );
    assert!(!std::fs::symlink_metadata(&crt)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The host file now points at them, comments and layout kept; the link stays a link.
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "# Falcot's XMPP service.\ndomain = \"falcot.com\"\n\
         certificate = \"../certs/falcot.com.crt\"\nkey = \"../certs/falcot.com.key\"\n\
         \n[[component]]\ndomain = \"conference.falcot.com\"\ntype = \"muc\"\n"
    );
    assert!(
        std::fs::symlink_metadata(d.join("vhosts-enabled/falcot.com.toml"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let (code, out) = check(&inst, &[]);
    assert_eq!(code, 0, "{out}");
    // Importing again: already pointing there.
    let out = ok(
        d,
        &[
            "xmpp",
            "cert",
            "import",
            "falcot.com",
            live.to_str().unwrap(),
        ],
    );
    assert!(out.contains("already points at them"), "{out}");

    // The directory of the host itself (/etc/letsencrypt/live/falcot.com) also works.
    let host_dir = live.join("falcot.com");
    ok(
        d,
        &[
            "xmpp",
            "cert",
            "import",
            "falcot.com",
            host_dir.to_str().unwrap(),
        ],
    );

    // HOST.crt / HOST.key, for a host without a file: copied, and told what to set.
    let flat = tempfile::tempdir().unwrap();
    let (c, k) = rtc_tls::self_signed(&["verona.it".to_owned()]).unwrap();
    std::fs::write(flat.path().join("verona.it.crt"), c).unwrap();
    std::fs::write(flat.path().join("verona.it.key"), k).unwrap();
    let out = ok(
        d,
        &[
            "xmpp",
            "cert",
            "import",
            "verona.it",
            flat.path().to_str().unwrap(),
        ],
    );
    assert!(d.join("certs/verona.it.key").is_file());
    assert!(
        out.contains("no host file for verona.it") && out.contains("certificate = "),
        "{out}"
    );

    // A host file this tool does not edit: it says what to set instead.
    let odd = inst.host_file(
        "verona.it",
        "domain = \"verona.it\"\ncertificate = \"\"\"\n/etc/ssl/v.pem\"\"\"\nkey = \"/etc/ssl/v.key\"\n",
    );
    let before = std::fs::read_to_string(&odd).unwrap();
    let out = ok(
        d,
        &[
            "xmpp",
            "cert",
            "import",
            "verona.it",
            flat.path().to_str().unwrap(),
        ],
    );
    assert!(out.contains("set these yourself"), "{out}");
    assert_eq!(std::fs::read_to_string(&odd).unwrap(), before);

    // Nothing found; a key that does not match is refused before anything is replaced.
    let e = fails(
        d,
        &[
            "xmpp",
            "cert",
            "import",
            "nowhere.org",
            live.to_str().unwrap(),
        ],
    );
    assert!(e.contains("no certificate for nowhere.org"), "{e}");
    let (_, other_key) = rtc_tls::self_signed(&["verona.it".to_owned()]).unwrap();
    std::fs::write(flat.path().join("verona.it.key"), other_key).unwrap();
    let before = std::fs::read(d.join("certs/verona.it.key")).unwrap();
    fails(
        d,
        &[
            "xmpp",
            "cert",
            "import",
            "verona.it",
            flat.path().to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(d.join("certs/verona.it.key")).unwrap(),
        before
    );
}

#[test]
fn about_lists_paths_hosts_and_database() {
    let inst = Instance::new("");
    let out = ok(inst.path(), &["xmpp", "about"]);
    assert!(
        out.contains(&format!(
            "config: {}",
            inst.path().join("xmppd.toml").display()
        )),
        "{out}"
    );
    assert!(
        out.contains("  falcot.com (components: conference.falcot.com)"),
        "{out}"
    );
    assert!(out.contains("not created yet"), "{out}");
    admin_with_input(
        inst.path(),
        &["xmpp", "adduser", "juliet@falcot.com"],
        "x\n",
    );
    let out = ok(inst.path(), &["xmpp", "about"]);
    assert!(
        out.contains("database: SQLite") && out.contains("(1 accounts)"),
        "{out}"
    );
}

/// A free port on loopback (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn status_probes_the_client_port() {
    let port = free_port();
    let inst = Instance::new("");
    let main = inst.path().join("xmppd.toml");
    let text = std::fs::read_to_string(&main).unwrap().replace(
        "c2s-ports = [5222]",
        &format!("c2s-ports = [{port}]\ninterfaces = [\"127.0.0.1\"]"),
    );
    std::fs::write(&main, text).unwrap();

    let out = admin(inst.path(), &["xmpp", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "xmppd is not running: nothing accepts connections on 127.0.0.1:{port}"
        )),
        "{stdout}"
    );

    // Something that answers a stream header the way an XMPP server does.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap();
        let header = String::from_utf8_lossy(&buf[..n]).into_owned();
        conn.write_all(
            b"<?xml version='1.0'?><stream:stream from='falcot.com' id='1' version='1.0' \
              xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        )
        .unwrap();
        let _ = conn.read(&mut buf);
        header
    });
    let out = ok(inst.path(), &["xmpp", "status"]);
    assert!(
        out.contains(&format!(
            "xmppd is running: 127.0.0.1:{port} answers XMPP streams for falcot.com"
        )),
        "{out}"
    );
    let header = server.join().unwrap();
    assert!(header.contains("to='falcot.com'"), "{header}");
}

#[test]
fn status_reads_the_metrics_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        conn.write_all(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n\
              # HELP xmppd_sessions Sessions\nxmppd_sessions 2\nxmppd_c2s_connections 3\n",
        )
        .unwrap();
    });
    let inst = Instance::new(&format!(
        "prometheus = true\nprometheus-port = {}\n",
        addr.port()
    ));
    let out = ok(inst.path(), &["xmpp", "status"]);
    assert!(
        out.contains("xmppd is running: 3 client connections, 2 sessions"),
        "{out}"
    );
}
