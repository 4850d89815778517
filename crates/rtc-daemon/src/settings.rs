//! Settings every daemon has, and the split between settings a reload can apply and those
//! that need a restart.
//!
//! Each daemon's resolved configuration keeps what is bound at start (sockets, database,
//! certificate files, the `/metrics` endpoint, the log filter) in a struct of its own,
//! serialized under the configuration's key names. On SIGHUP the daemon applies only its
//! reloadable part and hands both static parts to [`restart_needed`], which names every key
//! whose value differs: the type is the list of what needs a restart, so adding a static
//! key cannot be forgotten in a hand-kept list.

use serde::Serialize;
use std::net::IpAddr;

/// The `/metrics` endpoint and the log filter, under the same keys in every daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ShellSettings {
    /// Serve `/metrics` at all.
    pub prometheus: bool,
    pub prometheus_address: IpAddr,
    pub prometheus_port: u16,
    /// Tracing filter (`info`, `debug`, `sipd=debug,...`).
    pub log_level: String,
}

/// The keys whose values differ between two snapshots of static settings, sorted by name
/// (nested `#[serde(flatten)]` structs count as top level, fields
/// marked `#[serde(skip)]` not at all).
pub fn restart_needed<T: Serialize>(running: &T, new: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(running), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    old.into_iter()
        .filter(|(k, v)| new.get(k) != Some(v))
        .map(|(k, _)| k)
        .collect()
}

/// Logs a warning for each key [`restart_needed`] finds.
pub fn warn_restart_needed<T: Serialize>(running: &T, new: &T) {
    for key in restart_needed(running, new) {
        tracing::warn!("reload: `{key}` changed; it takes effect at the next restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Static {
        listen: Vec<String>,
        db_url: String,
        #[serde(skip)]
        _derived: u8,
        #[serde(flatten)]
        shell: ShellSettings,
    }

    fn base() -> Static {
        Static {
            listen: vec!["udp:0.0.0.0:5060".into()],
            db_url: "a.sqlite".into(),
            _derived: 0,
            shell: ShellSettings {
                prometheus: false,
                prometheus_address: IpAddr::from([127, 0, 0, 1]),
                prometheus_port: 9091,
                log_level: "info".into(),
            },
        }
    }

    #[test]
    fn names_the_keys_that_changed_by_their_config_names() {
        assert!(restart_needed(&base(), &base()).is_empty());
        let mut new = base();
        new.db_url = "b.sqlite".into();
        new.shell.prometheus_port = 9999;
        new._derived = 7;
        assert_eq!(
            restart_needed(&base(), &new),
            vec!["db-url".to_string(), "prometheus-port".to_string()]
        );
    }
}
