//! Probes of a running sipd: `ping` (one SIP OPTIONS over UDP, as `kamctl ping` and
//! `sipsak` send) and `stats` (its Prometheus endpoint).
//!
//! Both are blocking std-socket code with hard timeouts: one request, one answer, and a
//! clear error when nothing answers.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use rand::Rng as _;

/// How long `ping` and `stats` wait for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The parts of a SIP URI (RFC 3261 §19.1.1) that say where to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTarget {
    /// The URI as given, used as the Request-URI.
    pub uri: String,
    pub secure: bool,
    /// Host without IPv6 brackets.
    pub host: String,
    pub port: Option<u16>,
}

/// Parses `sip:[user[:password]@]host[:port][;params][?headers]` (or `sips:`).
pub fn parse_uri(uri: &str) -> anyhow::Result<UriTarget> {
    let bad = |why: &str| anyhow!("{uri:?} is not a SIP URI: {why}");
    let (scheme, rest) = uri.split_once(':').ok_or_else(|| bad("no scheme"))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "sip" => false,
        "sips" => true,
        _ => return Err(bad("the scheme must be sip: or sips:")),
    };
    let rest = rest.split([';', '?']).next().unwrap_or_default();
    let hostport = match rest.rsplit_once('@') {
        Some((_, hp)) => hp,
        None => rest,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| bad("bad port")))
        .transpose()?;
    Ok(UriTarget {
        uri: uri.to_owned(),
        secure,
        host: host.to_owned(),
        port,
    })
}

/// What came back for a ping.
#[derive(Debug)]
pub struct PingReply {
    pub status_line: String,
    pub from: SocketAddr,
    pub round_trip: Duration,
}

/// Sends one OPTIONS request (RFC 3261 §11) for `request_uri` to `to` over UDP and waits
/// up to `timeout` for its final response, matched by Call-ID and CSeq; provisional
/// responses and stray datagrams are skipped.
pub fn ping(request_uri: &str, to: SocketAddr, timeout: Duration) -> anyhow::Result<PingReply> {
    let bind: SocketAddr = match to.ip() {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).context("cannot open a UDP socket")?;
    // Connected: the kernel picks the source address (which Via must name) and drops
    // datagrams from anyone else.
    socket
        .connect(to)
        .with_context(|| format!("cannot send to {to}"))?;
    let local = socket.local_addr()?;
    let mut rng = rand::thread_rng();
    let branch = format!("z9hG4bK{:016x}", rng.gen::<u64>());
    let tag = format!("{:08x}", rng.gen::<u32>());
    let host = match local.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let call_id = format!("{:016x}@{host}", rng.gen::<u64>());
    let request = format!(
        "OPTIONS {request_uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {host}:{port};rport;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:rtc-admin@{host}>;tag={tag}\r\n\
         To: <{request_uri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         User-Agent: rtc-admin/{version}\r\n\
         Content-Length: 0\r\n\r\n",
        port = local.port(),
        version = env!("CARGO_PKG_VERSION"),
    );
    let start = Instant::now();
    let deadline = start + timeout;
    socket
        .send(request.as_bytes())
        .with_context(|| format!("cannot send to {to}"))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "no answer from {to} to OPTIONS {request_uri} within {} s (is sipd running and \
                 listening there?)",
                timeout.as_secs()
            );
        }
        socket.set_read_timeout(Some(left))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            // An ICMP port unreachable for an earlier send surfaces here.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                bail!(
                    "{to} refused OPTIONS {request_uri}: nothing listens there (is sipd running?)"
                )
            }
            Err(e) => return Err(e).with_context(|| format!("receiving from {to}")),
        };
        let round_trip = start.elapsed();
        let Some(status) = final_status_line(&buf[..n], &call_id) else {
            continue;
        };
        return Ok(PingReply {
            status_line: status,
            from: to,
            round_trip,
        });
    }
}

/// The status line of `datagram` if it is a final response to our request (same Call-ID,
/// `CSeq: 1 OPTIONS`).
fn final_status_line(datagram: &[u8], call_id: &str) -> Option<String> {
    let text = std::str::from_utf8(datagram).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.trim_end();
    let code: u16 = status.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
    if code < 200 {
        return None;
    }
    let (mut call_id_ok, mut cseq_ok) = (false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        // Compact forms (RFC 3261 §7.3.3): Call-ID is `i`.
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            call_id_ok = value == call_id;
        } else if name.eq_ignore_ascii_case("cseq") {
            let mut parts = value.split_whitespace();
            cseq_ok = parts.next() == Some("1")
                && parts
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("OPTIONS"));
        }
    }
    (call_id_ok && cseq_ok).then(|| status.to_owned())
}

/// Where to send a ping for `target`: a literal address as given (port 5060 by default,
/// RFC 3261 §19.1.2); one of sipd's own domains without a port to sipd's UDP listener
/// (`sipd_udp`), since DNS need not point there; any other name resolved with the system
/// resolver (A/AAAA only: no RFC 3263 NAPTR/SRV lookups).
pub fn destination(
    target: &UriTarget,
    sipd_serves: bool,
    sipd_udp: Option<SocketAddr>,
) -> anyhow::Result<SocketAddr> {
    if target.secure {
        bail!(
            "{}: sips: needs TLS over TCP; ping sends UDP (use a sip: URI)",
            target.uri
        );
    }
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port.unwrap_or(5060)));
    }
    if let (true, None, Some(addr)) = (sipd_serves, target.port, sipd_udp) {
        return Ok(addr);
    }
    let port = target.port.unwrap_or(5060);
    (target.host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", target.host))?
        .next()
        .ok_or_else(|| anyhow!("{} has no address", target.host))
}

/// `GET /metrics` from sipd's Prometheus endpoint (plain HTTP/1.0, as Prometheus scrapes)
/// and returns the `sipd_*` sample lines.
pub fn sipd_metrics(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let url = match addr {
        SocketAddr::V6(a) => format!("http://[{}]:{}/metrics", a.ip(), a.port()),
        SocketAddr::V4(a) => format!("http://{a}/metrics"),
    };
    let unreachable = |e: std::io::Error| {
        anyhow!(
            "cannot reach sipd's metrics at {url}: {e} (is sipd running with prometheus = true?)"
        )
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(unreachable)?;
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
        .filter(|l| l.starts_with("sipd_"))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        bail!("{url} answered without sipd_* metrics: is it sipd's endpoint?");
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms() {
        let t = parse_uri("sip:alice:pw@example.org:5070;transport=udp?x=y").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.secure),
            ("example.org", Some(5070), false)
        );
        let t = parse_uri("SIPS:[2001:db8::1]:5061").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.secure),
            ("2001:db8::1", Some(5061), true)
        );
        let t = parse_uri("sip:[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", None));
        let t = parse_uri("sip:127.0.0.1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", None));
        for bad in ["example.org", "http://x", "sip:", "sip:h:99999", "sip:[::1"] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations() {
        let sipd: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let t = parse_uri("sip:192.0.2.1").unwrap();
        assert_eq!(
            destination(&t, false, Some(sipd)).unwrap(),
            "192.0.2.1:5060".parse().unwrap()
        );
        let t = parse_uri("sip:sip.example.org").unwrap();
        assert_eq!(destination(&t, true, Some(sipd)).unwrap(), sipd);
        assert!(destination(&parse_uri("sips:192.0.2.1").unwrap(), false, None).is_err());
    }

    #[test]
    fn matches_only_our_final_response() {
        let ok = "SIP/2.0 200 OK\r\nVia: x\r\nCall-ID: abc@h\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(
            final_status_line(ok.as_bytes(), "abc@h").as_deref(),
            Some("SIP/2.0 200 OK")
        );
        let compact = "SIP/2.0 404 Not Found\r\ni: abc@h\r\nCSeq: 1 options\r\n\r\n";
        assert!(final_status_line(compact.as_bytes(), "abc@h").is_some());
        assert!(final_status_line(ok.as_bytes(), "other@h").is_none());
        let trying = "SIP/2.0 100 Trying\r\nCall-ID: abc@h\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert!(final_status_line(trying.as_bytes(), "abc@h").is_none());
        let request = "OPTIONS sip:x SIP/2.0\r\nCall-ID: abc@h\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert!(final_status_line(request.as_bytes(), "abc@h").is_none());
        assert!(final_status_line(b"\xff\xfe", "abc@h").is_none());
    }
}
