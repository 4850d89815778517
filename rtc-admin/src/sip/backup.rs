//! The file format of `rtc-admin sip db backup` / `restore`: JSON lines, one record per
//! line, so that a backup taken on one engine restores on another (kamdbctl's SQL dumps
//! are engine-specific) and a damaged line names its number.
//!
//! ```text
//! {"record":"header","format":"rtc-admin sip backup","version":1,"created":1800000000}
//! {"record":"subscriber","username":"alice","domain":"sip.example.org","password":"","ha1":"..","ha1b":".."}
//! {"record":"subscriber_sha256","username":"alice","domain":"sip.example.org","ha1_md5":"..",..}
//! {"record":"location","ruid":"..","username":"alice",..,"expires":1800003600,..}
//! ```
//!
//! Dates are Unix seconds; the engine's own date form is produced again on restore. The
//! file holds HA1s (each as good as a password within its realm), so it is created
//! readable by its owner only.

use std::io::{BufRead, Write};

use anyhow::{anyhow, bail, Context as _};
use rtc_store::{LocationRow, Sha256Row, SipSnapshot, SubscriberRow};
use serde::{Deserialize, Serialize};

const FORMAT: &str = "rtc-admin sip backup";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record {
    Header {
        format: String,
        version: u32,
        #[serde(default)]
        created: u64,
    },
    Subscriber(Subscriber),
    SubscriberSha256(Sha256),
    Location(Location),
}

#[derive(Debug, Serialize, Deserialize)]
struct Subscriber {
    username: String,
    domain: String,
    password: String,
    ha1: String,
    ha1b: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sha256 {
    username: String,
    domain: String,
    ha1_md5: String,
    ha1_sha256: String,
    ha1b_sha256: String,
}

/// A `location` row; optional columns may be absent from the line.
#[derive(Debug, Serialize, Deserialize)]
struct Location {
    ruid: String,
    username: String,
    #[serde(default)]
    domain: Option<String>,
    contact: String,
    #[serde(default)]
    received: Option<String>,
    #[serde(default)]
    path: Option<String>,
    expires: u64,
    q: f32,
    callid: String,
    cseq: i32,
    flags: i32,
    cflags: i32,
    user_agent: String,
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    methods: Option<i32>,
    #[serde(default)]
    instance: Option<String>,
    reg_id: i32,
    last_modified: u64,
    server_id: i32,
    connection_id: i32,
    keepalive: i32,
    partition: i32,
}

impl From<&LocationRow> for Location {
    fn from(r: &LocationRow) -> Location {
        Location {
            ruid: r.ruid.clone(),
            username: r.username.clone(),
            domain: r.domain.clone(),
            contact: r.contact.clone(),
            received: r.received.clone(),
            path: r.path.clone(),
            expires: r.expires,
            q: r.q,
            callid: r.callid.clone(),
            cseq: r.cseq,
            flags: r.flags,
            cflags: r.cflags,
            user_agent: r.user_agent.clone(),
            socket: r.socket.clone(),
            methods: r.methods,
            instance: r.instance.clone(),
            reg_id: r.reg_id,
            last_modified: r.last_modified,
            server_id: r.server_id,
            connection_id: r.connection_id,
            keepalive: r.keepalive,
            partition: r.partition,
        }
    }
}

impl From<Location> for LocationRow {
    fn from(r: Location) -> LocationRow {
        LocationRow {
            ruid: r.ruid,
            username: r.username,
            domain: r.domain,
            contact: r.contact,
            received: r.received,
            path: r.path,
            expires: r.expires,
            q: r.q,
            callid: r.callid,
            cseq: r.cseq,
            flags: r.flags,
            cflags: r.cflags,
            user_agent: r.user_agent,
            socket: r.socket,
            methods: r.methods,
            instance: r.instance,
            reg_id: r.reg_id,
            last_modified: r.last_modified,
            server_id: r.server_id,
            connection_id: r.connection_id,
            keepalive: r.keepalive,
            partition: r.partition,
        }
    }
}

/// Writes a snapshot as backup lines.
pub fn write(out: &mut impl Write, snapshot: &SipSnapshot, now_unix: u64) -> anyhow::Result<()> {
    let mut line = |record: &Record| -> anyhow::Result<()> {
        serde_json::to_writer(&mut *out, record)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    line(&Record::Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        created: now_unix,
    })?;
    for s in &snapshot.subscribers {
        line(&Record::Subscriber(Subscriber {
            username: s.username.clone(),
            domain: s.domain.clone(),
            password: s.password.clone(),
            ha1: s.ha1.clone(),
            ha1b: s.ha1b.clone(),
        }))?;
    }
    for s in &snapshot.sha256 {
        line(&Record::SubscriberSha256(Sha256 {
            username: s.username.clone(),
            domain: s.domain.clone(),
            ha1_md5: s.ha1_md5.clone(),
            ha1_sha256: s.ha1_sha256.clone(),
            ha1b_sha256: s.ha1b_sha256.clone(),
        }))?;
    }
    for l in &snapshot.locations {
        line(&Record::Location(l.into()))?;
    }
    out.flush()?;
    Ok(())
}

/// Reads backup lines back; `name` (the file) goes into errors with the line number.
pub fn read(input: impl BufRead, name: &str) -> anyhow::Result<SipSnapshot> {
    let mut snapshot = SipSnapshot::default();
    let mut header = false;
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| anyhow!("{name}:{}: not a backup record: {e}", i + 1))?;
        match record {
            Record::Header {
                format, version, ..
            } => {
                if format != FORMAT || version != VERSION {
                    bail!(
                        "{name}:{}: a {format:?} version {version} file; this rtc-admin reads \
                         {FORMAT:?} version {VERSION}",
                        i + 1
                    );
                }
                header = true;
            }
            _ if !header => {
                bail!("{name}: no header line: not a backup written by `rtc-admin sip db backup`")
            }
            Record::Subscriber(s) => snapshot.subscribers.push(SubscriberRow {
                username: s.username,
                domain: s.domain,
                password: s.password,
                ha1: s.ha1,
                ha1b: s.ha1b,
            }),
            Record::SubscriberSha256(s) => snapshot.sha256.push(Sha256Row {
                username: s.username,
                domain: s.domain,
                ha1_md5: s.ha1_md5,
                ha1_sha256: s.ha1_sha256,
                ha1b_sha256: s.ha1b_sha256,
            }),
            Record::Location(l) => snapshot.locations.push(l.into()),
        }
    }
    if !header {
        bail!("{name}: empty, or not a backup written by `rtc-admin sip db backup`");
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let snapshot = SipSnapshot {
            subscribers: vec![SubscriberRow {
                username: "alice".into(),
                domain: "d".into(),
                password: String::new(),
                ha1: "a".into(),
                ha1b: "b".into(),
            }],
            sha256: vec![Sha256Row {
                username: "alice".into(),
                domain: "d".into(),
                ha1_md5: "a".into(),
                ha1_sha256: "c".into(),
                ha1b_sha256: "e".into(),
            }],
            locations: vec![LocationRow {
                ruid: "r".into(),
                username: "alice".into(),
                domain: Some("d".into()),
                contact: "sip:alice@h".into(),
                expires: 1_800_000_000,
                q: 0.5,
                methods: Some(8191),
                ..LocationRow::default()
            }],
        };
        let mut out = Vec::new();
        write(&mut out, &snapshot, 1).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.starts_with("{\"record\":\"header\""), "{text}");
        assert_eq!(read(&out[..], "f").unwrap(), snapshot);

        let e = read(&b""[..], "f").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let body = text.lines().skip(1).collect::<Vec<_>>().join("\n");
        let e = read(body.as_bytes(), "f").unwrap_err().to_string();
        assert!(e.contains("no header"), "{e}");
        let e = read(
            &b"{\"record\":\"header\",\"format\":\"rtc-admin sip backup\",\"version\":1}\n{oops\n"
                [..],
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f:2:"), "{e}");
        let e = read(
            &b"{\"record\":\"header\",\"format\":\"rtc-admin sip backup\",\"version\":9}\n"[..],
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
