//! Certificates for xmppd's virtual hosts: what `check` looks at, and `cert import`
//! (`prosodyctl cert import`).
//!
//! A client checks the certificate against the domain it connects to (RFC 6120 §13.7.2,
//! RFC 6125): the leaf's DNS subject alternative names must cover the host and every
//! component on it (a MUC service on `conference.falcot.com` is reached through the same
//! TLS port and certificate). A wildcard covers one leftmost label only
//! (`*.falcot.com` covers `conference.falcot.com`, not `falcot.com` nor
//! `a.b.falcot.com`), as RFC 6125 §6.4.3 allows. The subject's common name counts only
//! when the certificate has no DNS names at all (RFC 6125 §6.4.4).
//!
//! `cert import HOST PATH...` follows Prosody: in each PATH, in order, it looks for
//! `HOST/fullchain.pem` + `HOST/privkey.pem` (the `/etc/letsencrypt/live` layout), then
//! `HOST.crt` + `HOST.key`, then, when PATH itself is named HOST, `fullchain.pem` +
//! `privkey.pem` inside it. The first pair found is checked (the key must match the
//! certificate), copied to `<config-dir>/certs/HOST.crt` and `HOST.key` (key mode 0600;
//! owner and group of files being replaced are kept, so a daemon running as its own user
//! can still read them), and the host's file is pointed at them. Copies are written to a
//! temporary file and renamed, so xmppd reloading at that moment reads the old pair or the
//! new one, never half of one. The host file is edited only when its top-level
//! `certificate`/`key` lines are plain one-line settings; otherwise the command says what
//! to set by hand.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use super::config::{HostFile, XmppConfig};

/// What `check` needs to know about a host's leaf certificate.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// DNS names it is valid for (SAN dNSNames, or the CN when it has none), lower case.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// RFC 3339 forms of the two dates, for messages.
    pub not_before_text: String,
    pub not_after_text: String,
    /// Subject equals issuer: clients trust it only if told to.
    pub self_signed: bool,
}

/// Reads the first (leaf) certificate of a PEM file.
pub fn read_leaf(path: &Path) -> anyhow::Result<CertFacts> {
    let pem = std::fs::read(path).map_err(|e| anyhow!("cannot read: {e}"))?;
    let chain = x509_cert::Certificate::load_pem_chain(&pem)
        .map_err(|e| anyhow!("not a PEM certificate chain: {e}"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("no certificate in the file"))?;
    let tbs = leaf.tbs_certificate();
    let mut names = Vec::new();
    match tbs.get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => {
            for name in san.0 {
                if let GeneralName::DnsName(dns) = name {
                    names.push(dns.as_str().to_ascii_lowercase());
                }
            }
        }
        Ok(None) => {}
        Err(e) => bail!("bad subjectAltName extension: {e}"),
    }
    if names.is_empty() {
        if let Ok(Some(cn)) = tbs.subject().common_name() {
            names.push(cn.value().to_ascii_lowercase());
        }
    }
    let validity = tbs.validity();
    Ok(CertFacts {
        names,
        not_before: validity.not_before.to_system_time(),
        not_after: validity.not_after.to_system_time(),
        not_before_text: validity.not_before.to_date_time().to_string(),
        not_after_text: validity.not_after.to_date_time().to_string(),
        self_signed: tbs.subject() == tbs.issuer(),
    })
}

/// Whether `names` cover `domain` (see the module documentation for wildcards).
pub fn covers(names: &[String], domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|name| {
        let name = name.trim_end_matches('.');
        match name.strip_prefix("*.") {
            Some(parent) => domain
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => name == domain,
        }
    })
}

/// Whole days from `now` to `then`; negative when `then` is past.
pub fn days_until(now: SystemTime, then: SystemTime) -> i64 {
    match then.duration_since(now) {
        Ok(d) => (d.as_secs() / 86_400) as i64,
        Err(e) => -((e.duration().as_secs() / 86_400) as i64),
    }
}

/// How long before expiry `check` warns.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// A certificate and key found for a host.
#[derive(Debug)]
struct Found {
    cert: PathBuf,
    key: PathBuf,
}

/// Prosody's search order, in each path in turn.
fn find(host: &str, paths: &[PathBuf]) -> Option<Found> {
    for dir in paths {
        let mut candidates = vec![
            (
                dir.join(host).join("fullchain.pem"),
                dir.join(host).join("privkey.pem"),
            ),
            (
                dir.join(format!("{host}.crt")),
                dir.join(format!("{host}.key")),
            ),
        ];
        if dir.file_name().is_some_and(|n| n == host) {
            candidates.push((dir.join("fullchain.pem"), dir.join("privkey.pem")));
        }
        for (cert, key) in candidates {
            if cert.is_file() && key.is_file() {
                return Some(Found { cert, key });
            }
        }
    }
    None
}

/// `cert import HOST PATH...`.
pub fn import(config: &XmppConfig, host: &str, paths: &[PathBuf]) -> anyhow::Result<()> {
    let host = super::config::normalize_domain(host);
    let found = find(&host, paths).ok_or_else(|| {
        anyhow!(
            "no certificate for {host} in {}: looked for {host}/fullchain.pem with \
             {host}/privkey.pem, and {host}.crt with {host}.key",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    // The pair must be usable before anything is replaced.
    rtc_tls::CertStore::load(&found.cert, &found.key)?;
    let facts = read_leaf(&found.cert).with_context(|| format!("{}", found.cert.display()))?;
    if !covers(&facts.names, &host) {
        eprintln!(
            "warning: {} does not cover {host} (it names {}); importing it anyway",
            found.cert.display(),
            facts.names.join(", ")
        );
    }

    let certs = config.certs_dir();
    std::fs::create_dir_all(&certs)
        .with_context(|| format!("cannot create {}", certs.display()))?;
    let cert_dest = certs.join(format!("{host}.crt"));
    let key_dest = certs.join(format!("{host}.key"));
    copy_atomically(&found.cert, &cert_dest, 0o644)?;
    copy_atomically(&found.key, &key_dest, 0o600)?;
    println!(
        "imported {} and {} as {} and {}",
        found.cert.display(),
        found.key.display(),
        cert_dest.display(),
        key_dest.display()
    );

    match config.host_file_for(&host) {
        None => println!(
            "no host file for {host} in {}: create one there with\n  domain = \"{host}\"\n  \
             certificate = \"{}\"\n  key = \"{}\"",
            config.available_dir().display(),
            cert_dest.display(),
            key_dest.display()
        ),
        Some(file) => point_host_file(&file, &cert_dest, &key_dest)?,
    }
    Ok(())
}

/// Sets `certificate` and `key` of a host file to the imported pair, unless they already
/// lead there; says what to set when the file cannot be edited safely.
fn point_host_file(file: &HostFile, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let same = |set: Option<PathBuf>, want: &Path| {
        set.and_then(|p| std::fs::canonicalize(p).ok()) == std::fs::canonicalize(want).ok()
    };
    if same(file.certificate(), cert) && same(file.key(), key) {
        println!(
            "{} already points at them: `systemctl reload xmppd` to use them",
            file.path.display()
        );
        return Ok(());
    }
    // The real file: a link in vhosts-enabled stays a link.
    let real = std::fs::canonicalize(&file.path).unwrap_or_else(|_| file.path.clone());
    let base = file.base_dir();
    let cert_value = relative_path(&base, cert);
    let key_value = relative_path(&base, key);
    let manual = |why: &str| {
        println!(
            "{}: {why}; set these yourself:\n  certificate = \"{}\"\n  key = \"{}\"",
            real.display(),
            cert_value.display(),
            key_value.display()
        );
    };
    let text = match std::fs::read_to_string(&real) {
        Ok(t) => t,
        Err(e) => {
            manual(&format!("cannot read it ({e})"));
            return Ok(());
        }
    };
    let edited = match set_top_level(&text, &[("certificate", &cert_value), ("key", &key_value)]) {
        Ok(t) => t,
        Err(why) => {
            manual(&why);
            return Ok(());
        }
    };
    if let Err(e) = write_atomically(&real, edited.as_bytes(), None) {
        manual(&format!("cannot write it ({e:#})"));
        return Ok(());
    }
    println!(
        "{}: certificate and key now point at them; `systemctl reload xmppd` to use them",
        real.display()
    );
    Ok(())
}

/// `to` relative to `from_dir` when they share the config directory's prefix, else
/// absolute: `../certs/falcot.com.crt` from `vhosts-available`, as the shipped example.
fn relative_path(from_dir: &Path, to: &Path) -> PathBuf {
    let from = std::fs::canonicalize(from_dir).unwrap_or_else(|_| from_dir.to_owned());
    let to_dir = to.parent().unwrap_or(Path::new("/"));
    let to_dir = std::fs::canonicalize(to_dir).unwrap_or_else(|_| to_dir.to_owned());
    let Some(name) = to.file_name() else {
        return to.to_owned();
    };
    let from_parts: Vec<_> = from.components().collect();
    let to_parts: Vec<_> = to_dir.components().collect();
    let common = from_parts
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    // Only up to one level up: further than that the absolute path is clearer.
    if common <= 1 || from_parts.len() - common > 1 {
        return to_dir.join(name);
    }
    let mut out = PathBuf::new();
    for _ in common..from_parts.len() {
        out.push("..");
    }
    for part in &to_parts[common..] {
        out.push(part);
    }
    out.join(name)
}

/// Replaces (or adds, after `domain`) top-level `key = "value"` lines of a TOML text,
/// keeping everything else byte for byte. Refuses anything but plain one-line settings,
/// and checks that the result parses to the original with just those values changed.
fn set_top_level(text: &str, settings: &[(&str, &Path)]) -> Result<String, String> {
    let original: toml::Table =
        toml::from_str(text).map_err(|e| format!("it does not parse ({e})"))?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let top_level_end = lines
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let quoted = |p: &Path| -> Result<String, String> {
        let s = p.to_str().ok_or("the path is not UTF-8")?;
        Ok(toml::Value::String(s.to_owned()).to_string())
    };
    for (name, value) in settings {
        let new_line = format!("{name} = {}", quoted(value)?);
        let matching: Vec<usize> = (0..top_level_end)
            .filter(|&i| {
                let l = lines[i].trim_start();
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .collect();
        match matching.as_slice() {
            [i] => lines[*i] = new_line,
            [] => {
                let at = (0..top_level_end)
                    .find(|&i| {
                        let l = lines[i].trim_start();
                        l.strip_prefix("domain")
                            .is_some_and(|rest| rest.trim_start().starts_with('='))
                    })
                    .map_or(top_level_end, |i| i + 1);
                lines.insert(at, new_line);
            }
            _ => return Err(format!("`{name}` is set more than once")),
        }
    }
    let mut edited = lines.join("\n");
    if text.ends_with('\n') {
        edited.push('\n');
    }
    let parsed: toml::Table =
        toml::from_str(&edited).map_err(|_| "its layout is not one this tool edits".to_owned())?;
    let mut expected = original;
    for (name, value) in settings {
        expected.insert(
            name.to_string(),
            toml::Value::String(value.to_string_lossy().into_owned()),
        );
    }
    if parsed != expected {
        return Err("its layout is not one this tool edits".to_owned());
    }
    Ok(edited)
}

/// Copies `from` to `to` through a temporary file and a rename, with `mode`; an existing
/// `to` keeps its owner and group.
fn copy_atomically(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let data = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    write_atomically(to, &data, Some(mode))
}

/// Writes `data` to `path` through `path.tmp` and a rename. `mode` `None`: the existing
/// file's mode (or 0644). Owner and group of an existing file are kept.
fn write_atomically(path: &Path, data: &[u8], mode: Option<u32>) -> anyhow::Result<()> {
    let existing = std::fs::metadata(path).ok();
    let mode = mode
        .or_else(|| existing.as_ref().map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".rtc-admin.tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        // The umask may have narrowed the mode given to open.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(m) = &existing {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_domains() {
        let names = vec!["falcot.com".to_owned(), "*.falcot.com".to_owned()];
        assert!(covers(&names, "falcot.com"));
        assert!(covers(&names, "Conference.Falcot.com."));
        assert!(!covers(&names, "a.b.falcot.com"));
        assert!(!covers(&names, "falcot.org"));
        let wildcard_only = vec!["*.falcot.com".to_owned()];
        assert!(!covers(&wildcard_only, "falcot.com"));
        assert!(!covers(&wildcard_only, ".falcot.com"));
        assert!(!covers(&[], "falcot.com"));
    }

    #[test]
    fn days_either_way() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        assert_eq!(
            days_until(now, now + Duration::from_secs(10 * 86_400 + 5)),
            10
        );
        assert_eq!(days_until(now, now - Duration::from_secs(5)), 0);
        assert_eq!(days_until(now, now - Duration::from_secs(2 * 86_400)), -2);
    }

    #[test]
    fn editing_host_files() {
        let text = "# falcot\ndomain = \"falcot.com\"\ncertificate = \"old.crt\" # old\n\
                    key = \"old.key\"\n\n[[component]]\ndomain = \"conference.falcot.com\"\n\
                    type = \"muc\"\n";
        let edited = set_top_level(
            text,
            &[
                ("certificate", Path::new("../certs/falcot.com.crt")),
                ("key", Path::new("../certs/falcot.com.key")),
            ],
        )
        .unwrap();
        assert_eq!(
            edited,
            "# falcot\ndomain = \"falcot.com\"\ncertificate = \"../certs/falcot.com.crt\"\n\
             key = \"../certs/falcot.com.key\"\n\n[[component]]\ndomain = \"conference.falcot.com\"\n\
             type = \"muc\"\n"
        );
        // Missing keys are added after `domain`; `key` of a component is not touched.
        let text =
            "domain = \"falcot.com\"\n[[component]]\ndomain = \"c.falcot.com\"\ntype = \"muc\"\n";
        let edited = set_top_level(text, &[("key", Path::new("/k"))]).unwrap();
        assert_eq!(
            edited,
            "domain = \"falcot.com\"\nkey = \"/k\"\n[[component]]\ndomain = \"c.falcot.com\"\ntype = \"muc\"\n"
        );
        // A multi-line value is not edited.
        let text = "domain = \"f\"\ncertificate = \"\"\"\n/x\"\"\"\n";
        assert!(set_top_level(text, &[("certificate", Path::new("/c"))]).is_err());
        assert!(set_top_level("domain = ", &[("key", Path::new("/k"))]).is_err());
    }

    #[test]
    fn relative_paths_stay_short() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("vhosts-available")).unwrap();
        std::fs::create_dir_all(root.join("certs")).unwrap();
        assert_eq!(
            relative_path(&root.join("vhosts-available"), &root.join("certs/a.crt")),
            Path::new("../certs/a.crt")
        );
        assert_eq!(
            relative_path(&root.join("certs"), &root.join("certs/a.crt")),
            Path::new("a.crt")
        );
        assert_eq!(
            relative_path(Path::new("/"), &root.join("certs/a.crt")),
            std::fs::canonicalize(root.join("certs"))
                .unwrap()
                .join("a.crt")
        );
    }
}
