//! Reading a daemon's Prometheus text endpoint.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// [`scrape`] of a daemon on 127.0.0.1 at `port`, which must be set (the builder's
/// `.prometheus()`).
pub fn scrape_local(port: Option<u16>) -> String {
    let port = port.expect("started without .prometheus()");
    scrape(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Waits up to 5 s, scraping 127.0.0.1 at `port`, until `series` is at least `min`; its
/// value. Panics with the last scrape otherwise.
pub fn wait_at_least(port: Option<u16>, series: &str, min: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape_local(port);
        let v = value(&text, series);
        if v.is_some_and(|v| v >= min) {
            return v.unwrap_or_default();
        }
        if Instant::now() > deadline {
            panic!("{series} never reached {min} (last {v:?}); metrics:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

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
