//! Reading a daemon's Prometheus text endpoint.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET /metrics` over plain HTTP/1.0; the body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("metrics endpoint {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    assert!(resp.starts_with("HTTP/1."), "not an HTTP response: {resp}");
    match resp.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => resp,
    }
}

/// The value of the sample named exactly `series` (`name` or `name{label="v"}`).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name.trim() == series).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_plain_and_labelled_samples() {
        let t = "# HELP a x\n# TYPE a counter\na 3\nb{code=\"401\"} 2\nab 7\n";
        assert_eq!(super::value(t, "a"), Some(3.0));
        assert_eq!(super::value(t, "b{code=\"401\"}"), Some(2.0));
        assert_eq!(super::value(t, "b"), None);
    }
}
