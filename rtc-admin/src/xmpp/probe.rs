//! Is xmppd running? (`rtc-admin xmpp status`, `prosodyctl status`.)
//!
//! Prosody answers from its pid file; xmppd runs under systemd without one, so we ask the
//! daemon itself: its Prometheus endpoint when `prometheus = true` (the `xmppd_*` gauges
//! also say how many clients are on), else its client port, where an XMPP server answers
//! a stream header with its own (RFC 6120 §4.2). Blocking std sockets, hard timeouts.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

/// How long each probe waits.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /metrics` (HTTP/1.0, as Prometheus scrapes) and the `xmppd_*` sample lines.
pub fn xmppd_metrics(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let url = match addr {
        SocketAddr::V6(a) => format!("http://[{}]:{}/metrics", a.ip(), a.port()),
        SocketAddr::V4(a) => format!("http://{a}/metrics"),
    };
    let unreachable = |e: std::io::Error| anyhow!("cannot reach {url}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a server that answers after the first read must get the whole request.
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(unreachable)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{url}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{url}: {status}");
    }
    let lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("xmppd_"))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        bail!("{url} answered without xmppd_* metrics: is it xmppd's endpoint?");
    }
    Ok(lines)
}

/// The value of an unlabelled sample `name` in metrics lines.
pub fn sample(lines: &[String], name: &str) -> Option<f64> {
    lines.iter().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What answered on the client port.
#[derive(Debug, PartialEq, Eq)]
pub enum C2sAnswer {
    /// An XMPP stream header came back.
    Xmpp,
    /// The connection was accepted but nothing XMPP came back (or, on a direct-TLS port,
    /// only the connection was tried).
    Accepted,
}

/// Opens a client connection to `addr`; on a STARTTLS port (`tls` false) sends a stream
/// header for `domain` and waits for the server's.
pub fn c2s(
    addr: SocketAddr,
    tls: bool,
    domain: &str,
    timeout: Duration,
) -> std::io::Result<C2sAnswer> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    if tls {
        return Ok(C2sAnswer::Accepted);
    }
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    stream.write_all(header.as_bytes())?;
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && got.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if text.contains("http://etherx.jabber.org/streams") {
                    // Close politely: we only wanted to see it answer.
                    let _ = stream.write_all(b"</stream:stream>");
                    return Ok(C2sAnswer::Xmpp);
                }
            }
            Err(_) => break,
        }
    }
    Ok(C2sAnswer::Accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        let lines = vec![
            "xmppd_sessions 3".to_owned(),
            "xmppd_c2s_connections 4".to_owned(),
            "xmppd_stanzas_in_total{kind=\"message\"} 9".to_owned(),
        ];
        assert_eq!(sample(&lines, "xmppd_sessions"), Some(3.0));
        assert_eq!(sample(&lines, "xmppd_c2s_connections"), Some(4.0));
        assert_eq!(sample(&lines, "xmppd_rooms"), None);
    }
}
