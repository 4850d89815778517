//! `rtc-admin xmpp check [config|certs]`: `prosodyctl check` for xmppd.
//!
//! - **config**: `xmppd.toml` and every enabled host file parse; no unknown key (xmppd
//!   refuses to start on one); each key has the right type and a sane value; every host
//!   has a domain, a certificate and a key that exist; components are `muc` with their
//!   own domain; no domain is served twice; links in `vhosts-enabled` are not broken.
//! - **certs**: for each enabled host, the certificate parses, its names cover the host
//!   and its components (see [`super::cert`]), the key belongs to it, and it is valid
//!   now: an error once expired (or not yet valid), a warning within 30 days of expiry.
//!
//! Every finding names the file and, where there is one, the key. Errors make the command
//! exit 1, warnings do not. The value rules repeat xmppd's main ones so that mistakes are
//! caught before a reload; `xmppd --check-config` remains the complete judge.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::ValueEnum;

use super::cert;
use super::config::{
    list_host_files, normalize_domain, HostFile, HostSettings, XmppConfig, XmppSettings,
    COMPONENT_KEYS, HOST_KEYS, MAIN_KEYS, XMPPD_CONFIG_FILE,
};

/// What to check; both when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckWhat {
    /// The configuration files.
    Config,
    /// The certificates of the enabled hosts.
    Certs,
}

/// Findings so far, printed as they come.
#[derive(Debug, Default)]
struct Report {
    errors: usize,
    warnings: usize,
}

impl Report {
    fn error(&mut self, file: &Path, key: Option<&str>, problem: impl std::fmt::Display) {
        self.errors += 1;
        println!("error: {}", locate(file, key, problem));
    }

    fn warning(&mut self, file: &Path, key: Option<&str>, problem: impl std::fmt::Display) {
        self.warnings += 1;
        println!("warning: {}", locate(file, key, problem));
    }
}

fn locate(file: &Path, key: Option<&str>, problem: impl std::fmt::Display) -> String {
    match key {
        Some(k) => format!("{}: `{k}`: {problem}", file.display()),
        None => format!("{}: {problem}", file.display()),
    }
}

/// The shape a key's value must have.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    /// An integer in a range.
    Int(i64, i64),
    Str,
    NonEmptyStr,
    Ip,
    Interfaces,
    Ports,
    Jids,
    Rate,
}

fn main_kind(key: &str) -> Kind {
    match key {
        "admins" => Kind::Jids,
        "db-url" | "vhosts-available" | "vhosts-enabled" => Kind::NonEmptyStr,
        // RFC 7677 §4 asks for 4096 at least; xmppd caps the cost of one login.
        "scram-iterations" => Kind::Int(4096, 1_000_000),
        "c2s-ports" | "c2s-direct-tls-ports" => Kind::Ports,
        "interfaces" => Kind::Interfaces,
        "c2s-require-encryption" | "allow-plain" | "prometheus" => Kind::Bool,
        // RFC 6120 §13.12: at least 10000 bytes.
        "c2s-stanza-size-limit" => Kind::Int(10_000, 16 << 20),
        "c2s-rate" => Kind::Rate,
        "negotiation-timeout" | "tcp-max-connections" => Kind::Int(1, i64::MAX),
        "prometheus-address" => Kind::Ip,
        "prometheus-port" => Kind::Int(1, 65_535),
        "log-level" => Kind::Str,
        _ => Kind::Int(0, i64::MAX),
    }
}

fn host_kind(key: &str) -> Kind {
    match key {
        "allow-registration" => Kind::Bool,
        "admins" => Kind::Jids,
        _ => Kind::NonEmptyStr,
    }
}

fn component_kind(key: &str) -> Kind {
    match key {
        "restrict-room-creation" => Kind::Bool,
        "max-history-messages" => Kind::Int(0, 1000),
        _ => Kind::NonEmptyStr,
    }
}

/// Why `value` does not fit `kind`, if it does not.
fn misfit(kind: Kind, value: &toml::Value) -> Option<String> {
    use toml::Value as V;
    let strings = |v: &V| -> Result<Vec<String>, String> {
        let V::Array(items) = v else {
            return Err("must be a list of strings".into());
        };
        items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "must be a list of strings".into())
            })
            .collect()
    };
    match (kind, value) {
        (Kind::Bool, V::Boolean(_)) | (Kind::Str, V::String(_)) => None,
        (Kind::Bool, _) => Some("must be true or false".into()),
        (Kind::Str, _) => Some("must be a string".into()),
        (Kind::NonEmptyStr, V::String(s)) if s.trim().is_empty() => {
            Some("must not be empty".into())
        }
        (Kind::NonEmptyStr, V::String(_)) => None,
        (Kind::NonEmptyStr, _) => Some("must be a string".into()),
        (Kind::Int(min, max), V::Integer(n)) if !(min..=max).contains(n) => {
            Some(if max == i64::MAX {
                format!("must be at least {min}")
            } else {
                format!("must be between {min} and {max}")
            })
        }
        (Kind::Int(..), V::Integer(_)) => None,
        (Kind::Int(..), _) => Some("must be an integer".into()),
        (Kind::Ip, V::String(s)) if s.parse::<IpAddr>().is_ok() => None,
        (Kind::Ip, _) => Some("must be an IP address in a string".into()),
        (Kind::Interfaces, v) => match strings(v) {
            Err(e) => Some(e),
            Ok(list) if list.is_empty() => {
                Some("needs at least one address, e.g. \"0.0.0.0\"".into())
            }
            Ok(list) => list
                .iter()
                .find(|i| *i != "*" && i.parse::<IpAddr>().is_err())
                .map(|i| format!("{i:?} is not an IP address (or \"*\")")),
        },
        (Kind::Ports, V::Array(items)) => items
            .iter()
            .find(|p| !p.as_integer().is_some_and(|n| (1..=65_535).contains(&n)))
            .map(|p| format!("{p} is not a port number")),
        (Kind::Ports, _) => Some("must be a list of port numbers".into()),
        (Kind::Jids, v) => match strings(v) {
            Err(e) => Some(e),
            Ok(list) => list
                .iter()
                .find(|j| bare_jid_problem(j).is_some())
                .map(|j| format!("{j:?}: {}", bare_jid_problem(j).unwrap_or_default())),
        },
        (Kind::Rate, V::String(s)) if rate_ok(s) => None,
        (Kind::Rate, _) => {
            Some("must be \"<n>b/s\", \"<n>kb/s\", \"<n>mb/s\" or \"unlimited\"".into())
        }
    }
}

/// `"10kb/s"`-style rates, as Prosody writes its `limits`.
fn rate_ok(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    if s == "unlimited" {
        return true;
    }
    let Some(number) = ["kb/s", "mb/s", "b/s"]
        .iter()
        .find_map(|u| s.strip_suffix(u))
    else {
        return false;
    };
    number.trim().parse::<u64>().is_ok()
}

/// Why `jid` is not a bare `user@domain` JID, if it is not.
fn bare_jid_problem(jid: &str) -> Option<String> {
    let Some((node, domain)) = jid.split_once('@') else {
        return Some("not a bare JID (user@domain)".into());
    };
    if node.is_empty() || domain_problem(domain).is_some() || domain.contains('@') {
        return Some("not a bare JID (user@domain)".into());
    }
    if domain.contains('/') {
        return Some("a bare JID has no resource".into());
    }
    None
}

/// Why `domain` cannot be a served domain, if it cannot (RFC 7622 §3.2, in the shape of
/// DNS names: labels of 1 to 63 characters, 253 at most in all).
fn domain_problem(domain: &str) -> Option<String> {
    let d = domain.trim_end_matches('.');
    if d.is_empty() {
        return Some("empty domain".into());
    }
    if d.len() > 253 {
        return Some("longer than 253 characters".into());
    }
    for label in d.split('.') {
        if label.is_empty() || label.chars().count() > 63 {
            return Some(format!("{domain:?} is not a domain name"));
        }
        if label
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@/:\\\"'<>&[]".contains(c))
        {
            return Some(format!("{domain:?} is not a domain name"));
        }
    }
    None
}

/// Checks each key of a table against `known` and `kind`; `prefix` names nested tables.
fn check_keys(
    table: &toml::Table,
    known: &[&str],
    kind: fn(&str) -> Kind,
    prefix: &str,
    file: &Path,
    r: &mut Report,
) {
    for (key, value) in table {
        let name = format!("{prefix}{key}");
        if !known.contains(&key.as_str()) {
            r.error(
                file,
                Some(&name),
                "unknown key (xmppd refuses to start with it)",
            );
        } else if key != "component" {
            if let Some(why) = misfit(kind(key), value) {
                r.error(file, Some(&name), why);
            }
        }
    }
}

/// Reads and parses a TOML file, reporting why not.
fn read_table(file: &Path, r: &mut Report) -> Option<toml::Table> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            r.error(file, None, format!("cannot read: {e}"));
            return None;
        }
    };
    match toml::from_str(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            r.error(
                file,
                None,
                format!("not valid TOML: {}", e.message().trim()),
            );
            None
        }
    }
}

/// Runs the checks; the exit code is 1 when any error was found.
pub fn run(config_dir: &Path, what: Option<CheckWhat>) -> anyhow::Result<i32> {
    let config = what.is_none_or(|w| w == CheckWhat::Config);
    let certs = what.is_none_or(|w| w == CheckWhat::Certs);
    let path = config_dir.join(XMPPD_CONFIG_FILE);
    let mut r = Report::default();

    let main = read_table(&path, &mut r);
    if config {
        if let Some(main) = &main {
            check_main(main, &path, &mut r);
        }
    }
    // What the other checks need, read leniently (types were reported above).
    let settings: XmppSettings = main.and_then(|t| t.try_into().ok()).unwrap_or_default();
    let cfg = XmppConfig {
        path: path.clone(),
        settings,
    };

    let hosts = if r.errors == 0 || config {
        enabled_hosts(&cfg, config, &mut r)
    } else {
        Vec::new()
    };
    if config {
        check_admins(&cfg, &hosts, &mut r);
    }
    if certs {
        let now = SystemTime::now();
        for host in &hosts {
            check_certificate(host, now, config, &mut r);
        }
    }

    if r.errors == 0 && r.warnings == 0 {
        println!("All checks passed.");
    } else {
        println!(
            "{} error{}, {} warning{}.",
            r.errors,
            if r.errors == 1 { "" } else { "s" },
            r.warnings,
            if r.warnings == 1 { "" } else { "s" }
        );
    }
    Ok(if r.errors > 0 { 1 } else { 0 })
}

fn check_main(main: &toml::Table, path: &Path, r: &mut Report) {
    check_keys(main, MAIN_KEYS, main_kind, "", path, r);
    // Ports: no port twice, at least one.
    let mut seen = Vec::new();
    for key in ["c2s-ports", "c2s-direct-tls-ports"] {
        let default = [match key {
            "c2s-ports" => super::config::DEFAULT_C2S_PORT,
            _ => super::config::DEFAULT_C2S_DIRECT_TLS_PORT,
        } as i64];
        let ports: Vec<i64> = match main.get(key) {
            Some(toml::Value::Array(a)) => a.iter().filter_map(toml::Value::as_integer).collect(),
            Some(_) => continue,
            None => default.to_vec(),
        };
        for p in ports {
            if seen.contains(&p) {
                r.error(path, Some(key), format!("port {p} is listed twice"));
            }
            seen.push(p);
        }
    }
    if seen.is_empty() {
        r.error(
            path,
            Some("c2s-ports"),
            "no client port: set c2s-ports and/or c2s-direct-tls-ports",
        );
    }
}

/// A host file that parsed, with where it lives.
#[derive(Debug)]
struct EnabledHost {
    file: HostFile,
}

/// Lists `vhosts-enabled` and checks each file (with `config`), returning those that
/// parsed for the certificate checks.
fn enabled_hosts(cfg: &XmppConfig, config: bool, r: &mut Report) -> Vec<EnabledHost> {
    let available = cfg.available_dir();
    let enabled = cfg.enabled_dir();
    if config && !available.is_dir() {
        r.warning(
            &cfg.path,
            Some("vhosts-available"),
            format!("{} is not a directory", available.display()),
        );
    }
    let files = match list_host_files(&enabled) {
        Ok(f) => f,
        Err(e) => {
            r.error(
                &cfg.path,
                Some("vhosts-enabled"),
                format!("cannot read directory {}: {e}", enabled.display()),
            );
            return Vec::new();
        }
    };
    if files.is_empty() {
        r.error(
            &cfg.path,
            Some("vhosts-enabled"),
            format!(
                "no virtual host is enabled: link a file from {} into {}",
                available.display(),
                enabled.display()
            ),
        );
    }
    let mut hosts = Vec::new();
    // Every domain served (host or component) and the file claiming it.
    let mut claimed: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink())
            && !file.exists()
        {
            let target = std::fs::read_link(&file).unwrap_or_default();
            r.error(&file, None, format!("broken link to {}", target.display()));
            continue;
        }
        let Some(table) = read_table(&file, r) else {
            continue;
        };
        if config {
            check_host_table(&table, &file, &mut claimed, r);
        }
        let settings: HostSettings = match table.try_into() {
            Ok(s) => s,
            Err(_) => continue, // types reported above
        };
        let host = HostFile {
            path: file.clone(),
            settings,
        };
        if config {
            check_host_paths(&host, r);
        }
        hosts.push(EnabledHost { file: host });
    }
    hosts
}

fn check_host_table(
    table: &toml::Table,
    file: &Path,
    claimed: &mut HashMap<String, PathBuf>,
    r: &mut Report,
) {
    check_keys(table, HOST_KEYS, host_kind, "", file, r);
    let mut claim = |key: &str, raw: Option<&toml::Value>, r: &mut Report| {
        let Some(raw) = raw.and_then(toml::Value::as_str) else {
            if raw.is_none() {
                r.error(file, Some(key), "required");
            }
            return;
        };
        if let Some(why) = domain_problem(raw) {
            r.error(file, Some(key), why);
            return;
        }
        let domain = normalize_domain(raw);
        match claimed.get(&domain) {
            Some(other) => r.error(
                file,
                Some(key),
                format!("{domain} is already served by {}", other.display()),
            ),
            None => {
                claimed.insert(domain, file.to_owned());
            }
        }
    };
    claim("domain", table.get("domain"), r);
    if let Some(domain) = table.get("domain").and_then(toml::Value::as_str) {
        let expected = format!("{}.toml", normalize_domain(domain));
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy() != expected)
        {
            r.warning(
                file,
                None,
                format!("serves {domain} but is not named {expected} (Debian's Prosody layout)"),
            );
        }
    }
    for key in ["certificate", "key"] {
        if !table.contains_key(key) {
            r.error(
                file,
                Some(key),
                "required: every host has its own certificate and key (PEM)",
            );
        }
    }
    match table.get("component") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let prefix = format!("component[{i}].");
                let Some(c) = item.as_table() else {
                    r.error(file, Some(&format!("component[{i}]")), "must be a table");
                    continue;
                };
                check_keys(c, COMPONENT_KEYS, component_kind, &prefix, file, r);
                claim(&format!("{prefix}domain"), c.get("domain"), r);
                match c.get("type").and_then(toml::Value::as_str) {
                    Some("muc") => {}
                    None if !c.contains_key("type") => {
                        r.error(file, Some(&format!("{prefix}type")), "required: \"muc\"")
                    }
                    None => {}
                    Some(other) => r.error(
                        file,
                        Some(&format!("{prefix}type")),
                        format!("{other:?} is not a component type xmppd has (only \"muc\")"),
                    ),
                }
            }
        }
        Some(_) => r.error(file, Some("component"), "must be [[component]] tables"),
    }
}

/// The certificate and key files named by a host file exist.
fn check_host_paths(host: &HostFile, r: &mut Report) {
    for (key, path) in [("certificate", host.certificate()), ("key", host.key())] {
        if let Some(p) = path {
            if !p.is_file() {
                r.error(
                    &host.path,
                    Some(key),
                    format!("{} does not exist", p.display()),
                );
            }
        }
    }
}

/// Admins on a domain that is not served are likely typos: their accounts cannot exist.
fn check_admins(cfg: &XmppConfig, hosts: &[EnabledHost], r: &mut Report) {
    let served: Vec<String> = hosts.iter().map(|h| h.file.domain()).collect();
    for admin in &cfg.settings.admins {
        if let Some((_, domain)) = admin.split_once('@') {
            let domain = normalize_domain(domain);
            if !served.is_empty() && !served.contains(&domain) {
                r.warning(
                    &cfg.path,
                    Some("admins"),
                    format!(
                        "{admin} is not on an enabled domain ({})",
                        served.join(", ")
                    ),
                );
            }
        }
    }
}

/// `config_checked`: missing files were reported by the configuration check already.
fn check_certificate(host: &EnabledHost, now: SystemTime, config_checked: bool, r: &mut Report) {
    let file = &host.file;
    let domain = file.domain();
    let (Some(cert_path), Some(key_path)) = (file.certificate(), file.key()) else {
        if !config_checked {
            r.error(
                &file.path,
                None,
                format!("{domain}: no certificate and key to check"),
            );
        }
        return;
    };
    if config_checked && !(cert_path.is_file() && key_path.is_file()) {
        return;
    }
    let facts = match cert::read_leaf(&cert_path) {
        Ok(f) => f,
        Err(e) => {
            r.error(&cert_path, None, format!("certificate of {domain}: {e}"));
            return;
        }
    };
    if let Err(e) = rtc_tls::CertStore::load(&cert_path, &key_path) {
        r.error(&key_path, None, format!("{domain}: {e}"));
    }
    let mut wanted = vec![domain.clone()];
    wanted.extend(file.components());
    for name in wanted {
        if !cert::covers(&facts.names, &name) {
            r.error(
                &cert_path,
                None,
                format!(
                    "does not cover {name} (it names {}): clients connecting to {name} will \
                     refuse it",
                    if facts.names.is_empty() {
                        "nothing".to_owned()
                    } else {
                        facts.names.join(", ")
                    }
                ),
            );
        }
    }
    if facts.not_before > now {
        r.error(
            &cert_path,
            None,
            format!("not valid before {}", facts.not_before_text),
        );
    }
    let days = cert::days_until(now, facts.not_after);
    if facts.not_after <= now {
        r.error(
            &cert_path,
            None,
            format!("expired on {} ({} days ago)", facts.not_after_text, -days),
        );
    } else if facts.not_after < now + cert::EXPIRY_WARNING {
        r.warning(
            &cert_path,
            None,
            format!(
                "expires on {} (in {days} days): renew it",
                facts.not_after_text
            ),
        );
    }
    if facts.self_signed {
        r.warning(
            &cert_path,
            None,
            format!("self-signed: clients trust it for {domain} only if told to"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let v = |s: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("x = {s}")).unwrap()["x"].clone()
        };
        assert!(misfit(Kind::Bool, &v("true")).is_none());
        assert!(misfit(Kind::Bool, &v("\"yes\"")).is_some());
        assert!(misfit(Kind::Int(4096, 10), &v("10")).is_some());
        assert!(misfit(Kind::Int(1, 65_535), &v("80")).is_none());
        assert!(misfit(Kind::Ports, &v("[5222, 0]")).is_some());
        assert!(misfit(Kind::Ports, &v("[5222]")).is_none());
        assert!(misfit(Kind::Interfaces, &v("[\"*\", \"::1\"]")).is_none());
        assert!(misfit(Kind::Interfaces, &v("[\"localhost\"]")).is_some());
        assert!(misfit(Kind::Jids, &v("[\"joe@falcot.com\"]")).is_none());
        assert!(misfit(Kind::Jids, &v("[\"falcot.com\"]")).is_some());
        assert!(misfit(Kind::Jids, &v("[\"joe@falcot.com/pc\"]")).is_some());
        assert!(misfit(Kind::Rate, &v("\"10kb/s\"")).is_none());
        assert!(misfit(Kind::Rate, &v("\"unlimited\"")).is_none());
        assert!(misfit(Kind::Rate, &v("\"fast\"")).is_some());
        assert!(misfit(Kind::NonEmptyStr, &v("\" \"")).is_some());
        assert!(domain_problem("falcot.com").is_none());
        assert!(domain_problem("falcot.com.").is_none());
        assert!(domain_problem("fal cot.com").is_some());
        assert!(domain_problem("a..b").is_some());
        assert!(domain_problem("").is_some());
    }
}
