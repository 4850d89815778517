//! Free ports on 127.0.0.1 for daemons under test.
//!
//! Daemons need ports known before they start (they are written into config files, and a
//! TURN server's UDP and TCP listeners share one number), so port 0 does not do. Ports are
//! handed out from a process-wide counter, so parallel tests in one binary never get the
//! same port, starting at an offset derived from the process id, so concurrently running
//! test binaries start far apart; each candidate is then probed by binding it. The range
//! stays below Linux's ephemeral range (32768-60999) so the kernel does not hand the same
//! port to some unrelated outgoing socket while the daemon starts.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

const FIRST: u32 = 10_000;
const LAST: u32 = 32_000;

fn next_block(len: u32) -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = LAST - FIRST;
    let counter = NEXT.get_or_init(|| AtomicU32::new((std::process::id() * 211) % span));
    let n = counter.fetch_add(len, Ordering::Relaxed);
    let start = FIRST + n % span;
    if start + len > LAST {
        // The block would straddle the end of the range: take the next one instead.
        return next_block(len);
    }
    start as u16
}

fn udp_free(port: u16) -> bool {
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

/// A port free for both UDP and TCP on 127.0.0.1, never returned twice in this process.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..10_000 {
        let port = next_block(1);
        if udp_free(port) && tcp_free(port) {
            return port;
        }
    }
    panic!("no free UDP+TCP port between {FIRST} and {LAST} on 127.0.0.1");
}

/// `n` consecutive ports, all free for UDP on 127.0.0.1, as `(min, max)`: a relay port
/// range (`min-port`/`max-port`) that no other test in this process will be given.
pub fn free_port_range(n: u16) -> (u16, u16) {
    assert!(n > 0, "an empty port range");
    for _ in 0..1_000 {
        let min = next_block(u32::from(n));
        let max = min + (n - 1);
        if (min..=max).all(udp_free) {
            return (min, max);
        }
    }
    panic!("no {n} consecutive free UDP ports between {FIRST} and {LAST} on 127.0.0.1");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let p = free_udp_tcp_port();
            assert!(seen.insert(p), "port {p} returned twice");
        }
        let (min, max) = free_port_range(20);
        assert_eq!(max - min, 19);
        assert!((min..=max).all(|p| !seen.contains(&p)));
    }
}
