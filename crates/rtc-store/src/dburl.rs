//! Database URL classification: which engine, what to hand sqlx, what to show in errors.

use std::path::Path;

use crate::{Backend, StoreError};

/// A parsed database location.
pub(crate) struct Target {
    pub backend: Backend,
    /// What sqlx's `Any` driver gets.
    pub sqlx_url: String,
    /// The URL as the user wrote it, password masked.
    pub shown_url: String,
    pub in_memory: bool,
    /// The SQLite file, when the target is one: created with owner-only permissions if
    /// missing, since it holds keys that authenticate users.
    pub file: Option<std::path::PathBuf>,
}

pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
    let shown_url = mask_password(url);
    let bad = |reason: &str| StoreError::BadUrl {
        url: shown_url.clone(),
        reason: reason.to_owned(),
    };
    if url.trim().is_empty() {
        return Err(bad("empty"));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, params) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(bad("no database file path"));
        }
        if path == ":memory:" {
            return Ok(Target {
                backend: Backend::Sqlite,
                sqlx_url: url.to_owned(),
                shown_url,
                in_memory: true,
                file: None,
            });
        }
        // The URL path is already percent-encoded (sqlx decodes it); only make a
        // relative path absolute so that `sqlite://turndb` means the file in the current
        // directory rather than a URL host.
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            let cwd = std::env::current_dir()
                .map_err(|e| bad(&format!("cannot resolve relative path: {e}")))?;
            format!("{}/{path}", percent_encode_path(&cwd))
        };
        return Ok(Target {
            backend: Backend::Sqlite,
            // A URL that opens read-only (or in memory) must not create the file.
            file: (!params.is_some_and(|p| {
                p.split('&')
                    .any(|kv| kv.starts_with("mode=") && kv != "mode=rwc")
            }))
            .then(|| percent_decode(&path).into()),
            sqlx_url: sqlite_url(&path, params),
            shown_url,
            in_memory: false,
        });
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let (backend, scheme) = match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => (Backend::Postgres, "postgres"),
            "mysql" | "mariadb" => (Backend::Mysql, "mysql"),
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?}; expected sqlite, postgres or mysql"
                )))
            }
        };
        return Ok(Target {
            backend,
            sqlx_url: format!("{scheme}://{rest}"),
            shown_url,
            in_memory: false,
            file: None,
        });
    }
    // No scheme: a filesystem path to an SQLite file, as coturn's `userdb` takes it.
    let path = Path::new(url);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| bad(&format!("cannot resolve relative path: {e}")))?
            .join(path)
    };
    Ok(Target {
        backend: Backend::Sqlite,
        sqlx_url: sqlite_url(&percent_encode_path(&absolute), None),
        shown_url,
        in_memory: false,
        file: Some(absolute),
    })
}

/// `sqlite://<path>?<params>`, adding `mode=rwc` (create if missing) unless a mode is set.
fn sqlite_url(encoded_path: &str, params: Option<&str>) -> String {
    match params {
        Some(p) if p.split('&').any(|kv| kv.starts_with("mode=")) => {
            format!("sqlite://{encoded_path}?{p}")
        }
        Some(p) if !p.is_empty() => format!("sqlite://{encoded_path}?{p}&mode=rwc"),
        _ => format!("sqlite://{encoded_path}?mode=rwc"),
    }
}

/// Percent-encodes every byte of a path that is not unreserved or `/`, so that `?`, `#`,
/// `%` and spaces in file names survive the trip through a URL.
fn percent_encode_path(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes URL percent-encoding (`%2F` -> `/`); invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces the password in `scheme://user:password@host...` with `***`.
pub(crate) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_round_trips_and_tolerates_junk() {
        let p = Path::new("/srv/a b?c#d%e/ü");
        assert_eq!(percent_decode(&percent_encode_path(p)), p.to_string_lossy());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%é%41"), "%éA");
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_password("postgres://turn:s3cr@t@db.example:5432/coturn"),
            "postgres://turn:***@db.example:5432/coturn"
        );
        assert_eq!(
            mask_password("mysql://root@127.0.0.1/db"),
            "mysql://root@127.0.0.1/db"
        );
        assert_eq!(mask_password("/var/db/turndb"), "/var/db/turndb");
    }

    #[test]
    fn classifies_urls() {
        let t = parse("sqlite:///var/db/turndb").ok().unwrap();
        assert_eq!(t.backend, Backend::Sqlite);
        assert_eq!(t.sqlx_url, "sqlite:///var/db/turndb?mode=rwc");

        let t = parse("sqlite:///var/db/turndb?mode=ro").ok().unwrap();
        assert_eq!(t.sqlx_url, "sqlite:///var/db/turndb?mode=ro");

        let t = parse("sqlite://turndb").ok().unwrap();
        assert!(t.sqlx_url.starts_with("sqlite:///"), "{}", t.sqlx_url);
        assert!(t.sqlx_url.ends_with("/turndb?mode=rwc"), "{}", t.sqlx_url);

        let t = parse("/tmp/a dir/turn?db").ok().unwrap();
        assert_eq!(t.sqlx_url, "sqlite:///tmp/a%20dir/turn%3Fdb?mode=rwc");
        assert_eq!(t.shown_url, "/tmp/a dir/turn?db");

        assert!(parse("sqlite::memory:").ok().unwrap().in_memory);

        let t = parse("postgresql://u:p@h/db").ok().unwrap();
        assert_eq!(t.backend, Backend::Postgres);
        assert_eq!(t.sqlx_url, "postgres://u:p@h/db");
        assert_eq!(t.shown_url, "postgresql://u:***@h/db");

        let t = parse("mariadb://root@127.0.0.1:3306/coturn").ok().unwrap();
        assert_eq!(t.backend, Backend::Mysql);
        assert_eq!(t.sqlx_url, "mysql://root@127.0.0.1:3306/coturn");

        assert!(matches!(
            parse("redis://127.0.0.1/0"),
            Err(StoreError::BadUrl { .. })
        ));
        assert!(matches!(parse(""), Err(StoreError::BadUrl { .. })));
        assert!(matches!(parse("sqlite://"), Err(StoreError::BadUrl { .. })));
    }
}
