//! Strict configuration loading shared by every daemon of the suite (turnd, sipd, xmppd).
//!
//! Data flow: the TOML file is read and parsed into a table (syntax errors carry the line and
//! column) -> variables named `<PREFIX>_<KEY>` from the environment are parsed as TOML values
//! and laid over that table -> the merged table is deserialised into the daemon's config type
//! through figment, whose deserialiser tracks the key path of every error -> that path is
//! mapped back to where the value came from (the file, or the exact environment variable) so
//! every [`ConfigError`] says *which file or variable*, *which key* and *what is wrong*.
//!
//! Strictness comes from the config types themselves: they are expected to use
//! `#[serde(deny_unknown_fields, rename_all = "kebab-case")]`. That makes a misspelt key in the
//! file an error, and because environment overrides are merged into the same table, a
//! misspelt `TURND_MIN_PROT` variable is an error naming that variable rather than being
//! silently ignored.
//!
//! Nested tables are reached with a double underscore: `TURND_TLS__CERT_FILE` overrides
//! `cert-file` inside `[tls]`.
//!
//! Semantic checks that serde cannot express (ranges, cross-field rules) go through
//! [`Problems`], which collects every complaint about one file so an operator fixes them all
//! in one pass.
#![forbid(unsafe_code)]

use std::fmt::{self, Display};
use std::path::Path;

use figment::providers::Serialized;
use figment::Figment;
use serde::de::DeserializeOwned;

/// One configuration problem: the file (or environment variable) it is in, the key if known,
/// and what is wrong. Daemons print it verbatim and exit, so it must stand on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{}", .file, KeyPrefix(.key.as_deref()), .problem)]
pub struct ConfigError {
    /// The file path, the `origin` given to [`load_str`], or `environment variable NAME`.
    pub file: String,
    /// Dotted key path (`tls.cert-file`), when the problem is about one key.
    pub key: Option<String>,
    /// Human-readable description of what is wrong.
    pub problem: String,
}

impl ConfigError {
    /// Builds an error; used by daemons for checks done after loading.
    pub fn new(file: impl Into<String>, key: Option<&str>, problem: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            key: key.map(str::to_owned),
            problem: problem.into(),
        }
    }
}

/// Renders "key `k`: " or nothing, so the Display format has a single shape.
struct KeyPrefix<'a>(Option<&'a str>);

impl Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, "key `{key}`: "),
            None => Ok(()),
        }
    }
}

/// Collects semantic validation problems for one file so they are all reported together.
#[derive(Debug)]
pub struct Problems {
    file: String,
    found: Vec<(String, String)>,
}

impl Problems {
    /// Starts an empty collection for `file` (the same name the loader used).
    pub fn new(file: impl Into<String>) -> Self {
        Problems {
            file: file.into(),
            found: Vec::new(),
        }
    }

    /// Records that `key` has `problem`.
    pub fn push(&mut self, key: &str, problem: impl Display) {
        self.found.push((key.to_owned(), problem.to_string()));
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `Ok` when nothing was pushed. A single problem keeps its key in [`ConfigError::key`];
    /// several are listed one per line in [`ConfigError::problem`] so none is hidden.
    pub fn into_result(mut self) -> Result<(), ConfigError> {
        match self.found.len() {
            0 => Ok(()),
            1 => {
                let (key, problem) = self.found.remove(0);
                Err(ConfigError::new(self.file, Some(&key), problem))
            }
            n => {
                let mut problem = format!("{n} problems:");
                for (key, p) in &self.found {
                    problem.push_str(&format!("\n  key `{key}`: {p}"));
                }
                Err(ConfigError::new(self.file, None, problem))
            }
        }
    }
}

/// Loads the TOML file at `path` into `T`, then applies `<env_prefix>_<KEY>` overrides from
/// the process environment (see the crate docs for the naming rule).
pub fn load<T: DeserializeOwned>(path: &Path, env_prefix: &str) -> Result<T, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&origin, None, format!("cannot read file: {e}")))?;
    let mut env = Vec::new();
    let wanted = format!("{env_prefix}_");
    for (name, value) in std::env::vars_os() {
        // Only our own prefix matters; other variables may legitimately be non-UTF-8.
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if env_prefix.is_empty() || !name.starts_with(&wanted) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::new(env_origin(&name), None, "value is not valid UTF-8"))?;
        env.push((name, value));
    }
    load_str(&text, &origin, &env, env_prefix)
}

/// Like [`load`] but from an in-memory document and an explicit environment, so tests do not
/// depend on (or mutate) the process environment. `origin` names the document in errors.
/// An empty `env_prefix` disables environment overrides.
pub fn load_str<T: DeserializeOwned>(
    toml: &str,
    origin: &str,
    env: &[(String, String)],
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let mut table: toml::Table = toml
        .parse()
        .map_err(|e: toml::de::Error| syntax_error(origin, toml, &e))?;
    let overrides = env_overrides(env, env_prefix)?;
    for ov in &overrides {
        insert_override(&mut table, ov)?;
    }
    extract(table, origin, &overrides)
}

/// One environment variable turned into a key path and value.
#[derive(Clone)]
struct Override {
    var: String,
    path: Vec<String>,
    raw: String,
    value: toml::Value,
}

fn env_origin(var: &str) -> String {
    format!("environment variable {var}")
}

fn env_overrides(env: &[(String, String)], prefix: &str) -> Result<Vec<Override>, ConfigError> {
    if prefix.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = format!("{prefix}_");
    let mut out: Vec<Override> = env
        .iter()
        .filter_map(|(name, raw)| Some((name, name.strip_prefix(&wanted)?, raw)))
        .map(|(name, rest, raw)| {
            let path: Vec<String> = rest
                .split("__")
                .map(|seg| seg.to_ascii_lowercase().replace('_', "-"))
                .collect();
            if path.iter().any(|seg| seg.is_empty()) {
                return Err(ConfigError::new(
                    env_origin(name),
                    None,
                    "malformed name: expected PREFIX_KEY or PREFIX_TABLE__KEY",
                ));
            }
            Ok(Override {
                var: name.clone(),
                path,
                raw: raw.clone(),
                value: parse_env_value(raw),
            })
        })
        .collect::<Result<_, _>>()?;
    // Deterministic order so a conflict (`X_TLS=1` and `X_TLS__CERT=..`) always reports alike.
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// Environment values are TOML values when they parse as exactly one (`8080`, `true`,
/// `["a", "b"]`), otherwise plain strings, so `TURND_REALM=example.org` needs no quoting.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) if t.len() == 1 => t.remove("v").unwrap_or_else(|| raw.into()),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn insert_override(table: &mut toml::Table, ov: &Override) -> Result<(), ConfigError> {
    let (last, parents) = ov
        .path
        .split_last()
        .expect("env_overrides never yields an empty path");
    let mut cur = table;
    for (i, seg) in parents.iter().enumerate() {
        let entry = cur
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::new(
                    env_origin(&ov.var),
                    Some(&ov.path[..=i].join(".")),
                    "is not a table, so it has no sub-keys to override",
                ))
            }
        };
    }
    cur.insert(last.clone(), ov.value.clone());
    Ok(())
}

fn extract<T: DeserializeOwned>(
    mut table: toml::Table,
    origin: &str,
    overrides: &[Override],
) -> Result<T, ConfigError> {
    let mut overrides: Vec<Override> = overrides.to_vec();
    // Each retry turns one non-string override into a string, so this loop is bounded.
    loop {
        let err = match Figment::from(Serialized::defaults(&table)).extract::<T>() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let err = err
            .into_iter()
            .next()
            .expect("a figment error has an entry");
        // A value like `TURND_SECRET=1234` parses as an integer; when the key wants a string,
        // the operator meant the text, so retry with it rather than rejecting it.
        if let figment::error::Kind::InvalidType(..) = err.kind {
            if let Some(ov) = overrides
                .iter_mut()
                .find(|o| o.path == err.path && !o.value.is_str())
            {
                ov.value = toml::Value::String(ov.raw.clone());
                insert_override(&mut table, ov)?;
                continue;
            }
        }
        return Err(translate(err, origin, &overrides));
    }
}

/// Turns a figment error into a [`ConfigError`] naming the full key and the value's source.
fn translate(err: figment::Error, origin: &str, overrides: &[Override]) -> ConfigError {
    use figment::error::Kind;
    let mut path = err.path.clone();
    let problem = match &err.kind {
        Kind::UnknownField(field, expected) => {
            // figment already appends the unknown key itself to the path; serde may not.
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key, expected one of: {}", expected.join(", "))
            }
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "missing required key".to_owned()
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value {actual}, expected {expected}")
        }
        other => other.to_string(),
    };
    // The longest override path that is a prefix of the error path supplied the bad value
    // (an error inside an overridden array belongs to that variable too).
    let source = overrides
        .iter()
        .filter(|o| path.starts_with(&o.path))
        .max_by_key(|o| o.path.len())
        .map(|o| env_origin(&o.var))
        .unwrap_or_else(|| origin.to_owned());
    let key = (!path.is_empty()).then(|| path.join("."));
    ConfigError {
        file: source,
        key,
        problem,
    }
}

fn syntax_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim_end().to_owned();
    let problem = match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("syntax error at line {line}, column {col}: {message}")
        }
        None => format!("syntax error: {message}"),
    };
    ConfigError::new(origin, None, problem)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Tls {
        cert_file: String,
        #[serde(default)]
        reload: bool,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Conf {
        realm: String,
        #[serde(default)]
        min_port: u16,
        #[serde(default)]
        verbose: bool,
        #[serde(default)]
        static_secret: Option<String>,
        #[serde(default)]
        denied_peer_ip: Vec<String>,
        tls: Option<Tls>,
    }

    const BASE: &str = "realm = \"example.org\"\nmin-port = 49152\n";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_env(toml: &str, pairs: &[(&str, &str)]) -> Result<Conf, ConfigError> {
        load_str(toml, "turnd.toml", &env(pairs), "TURND")
    }

    #[test]
    fn loads_plain_file() {
        let c = load_env(BASE, &[]).unwrap();
        assert_eq!(c.realm, "example.org");
        assert_eq!(c.min_port, 49152);
        assert!(!c.verbose);
        assert!(c.tls.is_none());
    }

    #[test]
    fn env_overrides_int_bool_string_array() {
        let c = load_env(
            BASE,
            &[
                ("TURND_MIN_PORT", "50000"),
                ("TURND_VERBOSE", "true"),
                ("TURND_REALM", "other.example"),
                ("TURND_DENIED_PEER_IP", r#"["10.0.0.0/8", "fc00::/7"]"#),
                ("UNRELATED_MIN_PORT", "1"),
                ("TURNDX", "ignored: no underscore after the prefix"),
            ],
        )
        .unwrap();
        assert_eq!(c.min_port, 50000);
        assert!(c.verbose);
        assert_eq!(c.realm, "other.example");
        assert_eq!(c.denied_peer_ip, vec!["10.0.0.0/8", "fc00::/7"]);
    }

    #[test]
    fn numeric_env_value_for_string_key_stays_text() {
        let c = load_env(BASE, &[("TURND_STATIC_SECRET", "0123")]).unwrap();
        assert_eq!(c.static_secret.as_deref(), Some("0123"));
        let c = load_env(BASE, &[("TURND_REALM", "true")]).unwrap();
        assert_eq!(c.realm, "true");
    }

    #[test]
    fn nested_env_override() {
        let c = load_env(
            BASE,
            &[
                ("TURND_TLS__CERT_FILE", "/a.pem"),
                ("TURND_TLS__RELOAD", "true"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.tls,
            Some(Tls {
                cert_file: "/a.pem".into(),
                reload: true
            })
        );
    }

    #[test]
    fn unknown_env_var_is_named() {
        let e = load_env(BASE, &[("TURND_MIN_PROT", "1")]).unwrap_err();
        assert_eq!(e.file, "environment variable TURND_MIN_PROT");
        assert_eq!(e.key.as_deref(), Some("min-prot"));
        assert!(e.problem.contains("unknown key"), "{e}");
    }

    #[test]
    fn wrong_type_from_env_names_variable() {
        let e = load_env(BASE, &[("TURND_MIN_PORT", "lots")]).unwrap_err();
        assert_eq!(e.file, "environment variable TURND_MIN_PORT");
        assert_eq!(e.key.as_deref(), Some("min-port"));
        assert!(e.problem.contains("u16"), "{e}");
        let e = load_env(BASE, &[("TURND_MIN_PORT", "70000")]).unwrap_err();
        assert_eq!(e.file, "environment variable TURND_MIN_PORT");
    }

    #[test]
    fn wrong_type_in_array_from_env_names_variable() {
        let e = load_env(BASE, &[("TURND_DENIED_PEER_IP", "[1, 2]")]).unwrap_err();
        assert_eq!(e.file, "environment variable TURND_DENIED_PEER_IP");
        assert!(
            e.key.as_deref().unwrap().starts_with("denied-peer-ip"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_in_file() {
        let e = load_env("realm = \"x\"\nmax-prot = 3\n", &[]).unwrap_err();
        assert_eq!(e.file, "turnd.toml");
        assert_eq!(e.key.as_deref(), Some("max-prot"));
        assert!(e.problem.contains("unknown key"));
        assert!(e
            .to_string()
            .starts_with("turnd.toml: key `max-prot`: unknown key"));
    }

    #[test]
    fn unknown_nested_key_has_full_path() {
        let e = load_env(
            "realm = \"x\"\n[tls]\ncert-file = \"a\"\nkey-fiel = \"b\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.key-fiel"));
    }

    #[test]
    fn wrong_type_in_file() {
        let e = load_env("realm = \"x\"\nmin-port = \"low\"\n", &[]).unwrap_err();
        assert_eq!(e.file, "turnd.toml");
        assert_eq!(e.key.as_deref(), Some("min-port"));
        assert!(e.problem.contains("expected u16"), "{e}");
        assert!(e.problem.contains("string"), "{e}");
    }

    #[test]
    fn missing_required_key() {
        let e = load_env("min-port = 1\n", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("realm"));
        assert_eq!(e.problem, "missing required key");
    }

    #[test]
    fn syntax_error_has_line() {
        let e = load_env("realm = \"x\"\n\nmin-port = = 3\n", &[]).unwrap_err();
        assert_eq!(e.file, "turnd.toml");
        assert_eq!(e.key, None);
        assert!(e.problem.contains("line 3"), "{e}");
    }

    #[test]
    fn env_into_scalar_as_table_is_error() {
        let e = load_env(BASE, &[("TURND_REALM__X", "1")]).unwrap_err();
        assert_eq!(e.file, "environment variable TURND_REALM__X");
        assert_eq!(e.key.as_deref(), Some("realm"));
        let e = load_env(BASE, &[("TURND___X", "1")]).unwrap_err();
        assert_eq!(e.file, "environment variable TURND___X");
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let e = load::<Conf>(&path, "RTC_CONFIG_TEST_UNUSED").unwrap_err();
        assert_eq!(e.file, path.display().to_string());
        assert!(e.problem.contains("cannot read"), "{e}");
    }

    #[test]
    fn loads_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turnd.toml");
        std::fs::write(&path, BASE).unwrap();
        let c: Conf = load(&path, "RTC_CONFIG_TEST_UNUSED").unwrap();
        assert_eq!(c.min_port, 49152);
    }

    #[test]
    fn display_formats() {
        let e = ConfigError::new("f.toml", Some("realm"), "must not be empty");
        assert_eq!(e.to_string(), "f.toml: key `realm`: must not be empty");
        let e = ConfigError::new("f.toml", None, "cannot read file");
        assert_eq!(e.to_string(), "f.toml: cannot read file");
    }

    #[test]
    fn problems_collects_all() {
        assert!(Problems::new("f").into_result().is_ok());

        let mut p = Problems::new("f.toml");
        p.push("min-port", "must be below max-port");
        let e = p.into_result().unwrap_err();
        assert_eq!(e.key.as_deref(), Some("min-port"));

        let mut p = Problems::new("f.toml");
        p.push("min-port", "must be below max-port");
        p.push("realm", "must not be empty");
        let e = p.into_result().unwrap_err();
        assert_eq!(e.key, None);
        assert_eq!(
            e.to_string(),
            "f.toml: 2 problems:\n  key `min-port`: must be below max-port\n  key `realm`: must not be empty"
        );
    }
}
