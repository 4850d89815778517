//! Flood protection in front of the SIP core, after Kamailio's `pike` module: every source
//! address has a request counter over sampling windows; a source whose rate goes above the
//! allowed density is banned for a while, and everything it sends is dropped unanswered
//! (answering a flood would only amplify it).
//!
//! Data flow: the daemon calls [`Pike::check`] with each datagram's (or framed stream
//! message's) source address and `now` before the message reaches the core, and drops the
//! message unless the verdict is [`Verdict::Allow`]. [`Pike::handle_timeout`] once in a
//! while forgets quiet sources; [`Pike::stats`] feeds the metrics.
//!
//! The rate is a sliding-window estimate: the count of the current window plus the previous
//! window's count weighted by how much of it still overlaps the last `sampling_time_unit`.
//! A plain fixed window would let a sender put `2 * density` requests across a window
//! boundary without being noticed.
//!
//! Memory is bounded: at most [`PikeConfig::max_sources`] sources are tracked; a new source
//! beyond that evicts the longest-tracked one (a spoofed-source flood therefore cannot grow
//! the table, only churn it). Active bans are evicted last.
//!
//! IPv6 sources are counted per /64: one host usually owns a whole /64 and could otherwise
//! step around the counter by changing its interface identifier for every request.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Settings, named after Kamailio's pike parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PikeConfig {
    /// Length of one sampling window (Kamailio `sampling_time_unit`).
    pub sampling_time_unit: Duration,
    /// Requests a source may send per window before it is banned (Kamailio
    /// `reqs_density_per_unit`); 0 disables pike.
    pub reqs_density_per_unit: u32,
    /// How long a ban lasts (Kamailio `remove_latency`).
    pub remove_latency: Duration,
    /// Networks never counted nor banned: trunks, PBXs, the operator's own hosts.
    pub trusted: Vec<(IpAddr, u8)>,
    /// Sources tracked at most.
    pub max_sources: usize,
}

impl Default for PikeConfig {
    fn default() -> Self {
        PikeConfig {
            sampling_time_unit: Duration::from_secs(2),
            reqs_density_per_unit: 30,
            remove_latency: Duration::from_secs(120),
            trusted: Vec::new(),
            max_sources: 100_000,
        }
    }
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on.
    Allow,
    /// This message put its source over the density: it is banned from now on. Drop the
    /// message and log the ban (this verdict comes once per ban).
    Banned,
    /// The source is banned: drop silently.
    Drop,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PikeStats {
    /// Bans started (monotonic).
    pub bans: u64,
    /// Messages dropped because their source was banned, including the one that caused
    /// the ban (monotonic).
    pub dropped: u64,
    /// Sources banned right now (as of the last [`Pike::handle_timeout`]).
    pub banned_sources: u64,
    /// Sources tracked right now.
    pub tracked_sources: u64,
}

#[derive(Debug, Clone)]
struct Source {
    /// Start of the current window.
    window_start: Instant,
    current: u32,
    previous: u32,
    banned_until: Option<Instant>,
    /// Insertion number, to recognise this entry in the eviction queue.
    seq: u64,
}

/// Per-source rate limiter; see the module documentation.
#[derive(Debug)]
pub struct Pike {
    config: PikeConfig,
    sources: HashMap<IpAddr, Source>,
    /// Insertion order, for eviction; items whose `seq` no longer matches are stale.
    order: VecDeque<(IpAddr, u64)>,
    next_seq: u64,
    stats: PikeStats,
}

impl Pike {
    pub fn new(config: PikeConfig) -> Pike {
        Pike {
            config,
            sources: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            stats: PikeStats::default(),
        }
    }

    /// New settings (reload). Counters and bans in force are kept.
    pub fn update_config(&mut self, config: PikeConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &PikeConfig {
        &self.config
    }

    /// Counts one message from `ip` and says whether to let it through.
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        if self.config.reqs_density_per_unit == 0 || self.is_trusted(ip) {
            return Verdict::Allow;
        }
        let key = source_key(ip);
        let unit = self.config.sampling_time_unit.max(Duration::from_millis(1));
        if !self.sources.contains_key(&key) {
            self.make_room(now);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.sources.insert(
                key,
                Source {
                    window_start: now,
                    current: 0,
                    previous: 0,
                    banned_until: None,
                    seq,
                },
            );
            self.order.push_back((key, seq));
        }
        let density = self.config.reqs_density_per_unit;
        let latency = self.config.remove_latency;
        let Some(s) = self.sources.get_mut(&key) else {
            return Verdict::Allow;
        };
        if let Some(until) = s.banned_until {
            if now < until {
                self.stats.dropped += 1;
                return Verdict::Drop;
            }
            // The ban is over: start counting afresh.
            s.banned_until = None;
            s.window_start = now;
            s.current = 0;
            s.previous = 0;
        }
        roll(s, now, unit);
        s.current = s.current.saturating_add(1);
        if estimate(s, now, unit) > f64::from(density) {
            s.banned_until = Some(now + latency);
            self.stats.bans += 1;
            self.stats.dropped += 1;
            return Verdict::Banned;
        }
        Verdict::Allow
    }

    /// Whether `ip` is banned at `now` (without counting anything).
    pub fn is_banned(&self, now: Instant, ip: IpAddr) -> bool {
        self.sources
            .get(&source_key(ip))
            .and_then(|s| s.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Forgets sources that are neither banned nor active in the last two windows, and
    /// refreshes the banned-sources count. Call it every second or so.
    pub fn handle_timeout(&mut self, now: Instant) {
        let unit = self.config.sampling_time_unit.max(Duration::from_millis(1));
        self.sources.retain(|_, s| {
            let banned = s.banned_until.is_some_and(|until| now < until);
            banned || now.saturating_duration_since(s.window_start) < unit * 2
        });
        self.stats.banned_sources = self
            .sources
            .values()
            .filter(|s| s.banned_until.is_some_and(|until| now < until))
            .count() as u64;
        self.stats.tracked_sources = self.sources.len() as u64;
        // The queue keeps stale items for removed sources; rebuild it before it grows
        // far beyond the table.
        if self.order.len() > 2 * self.sources.len() + 1024 {
            let mut live: Vec<(IpAddr, u64)> =
                self.sources.iter().map(|(ip, s)| (*ip, s.seq)).collect();
            live.sort_by_key(|(_, seq)| *seq);
            self.order = live.into();
        }
    }

    pub fn stats(&self) -> PikeStats {
        self.stats
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config
            .trusted
            .iter()
            .any(|(net, len)| cidr_contains(*net, *len, ip))
    }

    /// Evicts until there is room for one more source: the longest-tracked unbanned source
    /// first; if every candidate looked at is banned, the longest-tracked one anyway.
    fn make_room(&mut self, now: Instant) {
        let max = self.config.max_sources.max(1);
        // Each banned source is passed over once per call, so this loop is bounded.
        let mut passed_over = 0usize;
        while self.sources.len() >= max {
            let Some((ip, seq)) = self.order.pop_front() else {
                // Cannot happen (every source is queued); never loop forever regardless.
                self.sources.clear();
                return;
            };
            let Some(s) = self.sources.get(&ip) else {
                continue;
            };
            if s.seq != seq {
                continue;
            }
            let banned = s.banned_until.is_some_and(|until| now < until);
            if banned && passed_over < self.sources.len() {
                passed_over += 1;
                self.order.push_back((ip, seq));
                continue;
            }
            self.sources.remove(&ip);
        }
    }
}

/// Moves the source's windows forward to the one containing `now`.
fn roll(s: &mut Source, now: Instant, unit: Duration) {
    let elapsed = now.saturating_duration_since(s.window_start);
    if elapsed < unit {
        return;
    }
    if elapsed < unit * 2 {
        s.previous = s.current;
        s.window_start += unit;
    } else {
        // Quiet for a whole window or more: nothing carries over.
        s.previous = 0;
        s.window_start = now;
    }
    s.current = 0;
}

/// Requests in the last `unit`: the current window's count plus the overlapping share of
/// the previous window's.
fn estimate(s: &Source, now: Instant, unit: Duration) -> f64 {
    let into = now.saturating_duration_since(s.window_start).as_secs_f64();
    let overlap = (1.0 - into / unit.as_secs_f64()).clamp(0.0, 1.0);
    f64::from(s.current) + f64::from(s.previous) * overlap
}

/// The address a source is counted under: itself, or its /64 for IPv6.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Whether `ip` is inside `net/len`. IPv4-mapped IPv6 addresses match IPv4 networks.
pub fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pike(density: u32) -> Pike {
        Pike::new(PikeConfig {
            sampling_time_unit: Duration::from_secs(2),
            reqs_density_per_unit: density,
            remove_latency: Duration::from_secs(120),
            trusted: vec![(ip("203.0.113.0"), 24)],
            max_sources: 100,
        })
    }

    #[test]
    fn below_density_passes_and_above_is_banned_once() {
        let t0 = Instant::now();
        let mut p = pike(10);
        let a = ip("198.51.100.1");
        for i in 0..10 {
            assert_eq!(
                p.check(t0 + Duration::from_millis(i), a),
                Verdict::Allow,
                "{i}"
            );
        }
        assert_eq!(p.check(t0 + Duration::from_millis(10), a), Verdict::Banned);
        assert_eq!(p.check(t0 + Duration::from_millis(11), a), Verdict::Drop);
        assert_eq!(p.check(t0 + Duration::from_secs(60), a), Verdict::Drop);
        // Others are not affected.
        assert_eq!(p.check(t0, ip("198.51.100.2")), Verdict::Allow);
        let s = p.stats();
        assert_eq!((s.bans, s.dropped), (1, 3));
        p.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(p.stats().banned_sources, 1);
    }

    #[test]
    fn ban_lasts_remove_latency_then_counting_starts_afresh() {
        let t0 = Instant::now();
        let mut p = pike(2);
        let a = ip("198.51.100.1");
        p.check(t0, a);
        p.check(t0, a);
        assert_eq!(p.check(t0, a), Verdict::Banned);
        let later = t0 + Duration::from_secs(119);
        assert_eq!(p.check(later, a), Verdict::Drop);
        assert!(p.is_banned(later, a));
        let after = t0 + Duration::from_secs(120);
        assert!(!p.is_banned(after, a));
        assert_eq!(p.check(after, a), Verdict::Allow);
        assert_eq!(p.check(after, a), Verdict::Allow);
        assert_eq!(p.check(after, a), Verdict::Banned);
        assert_eq!(p.stats().bans, 2);
    }

    #[test]
    fn a_steady_rate_below_the_density_is_never_banned() {
        let t0 = Instant::now();
        let mut p = pike(30);
        let a = ip("198.51.100.1");
        // 14 per second for a minute = 28 per 2 s window, evenly spread. (Exactly at the
        // density is borderline: the window ending on a request also holds the one a
        // whole unit before it.)
        for i in 0..840u64 {
            let now = t0 + Duration::from_millis(i * 1000 / 14);
            assert_eq!(p.check(now, a), Verdict::Allow, "request {i}");
        }
    }

    #[test]
    fn a_burst_across_a_window_boundary_is_caught() {
        let t0 = Instant::now();
        let mut p = pike(30);
        let a = ip("198.51.100.1");
        // 30 just before the boundary, then 30 just after: 60 in 200 ms.
        let mut verdicts = Vec::new();
        for i in 0..30u64 {
            verdicts.push(p.check(t0 + Duration::from_millis(1900 + i), a));
        }
        // The source's window started at 1.9 s; move to its boundary.
        for i in 0..30u64 {
            verdicts.push(p.check(t0 + Duration::from_millis(3900 + i), a));
        }
        assert!(verdicts[..30].iter().all(|v| *v == Verdict::Allow));
        assert!(verdicts.contains(&Verdict::Banned), "{verdicts:?}");
    }

    #[test]
    fn quiet_windows_reset_the_count() {
        let t0 = Instant::now();
        let mut p = pike(5);
        let a = ip("198.51.100.1");
        for round in 0..10u64 {
            let start = t0 + Duration::from_secs(10 * round);
            for i in 0..5 {
                assert_eq!(p.check(start + Duration::from_millis(i), a), Verdict::Allow);
            }
        }
    }

    #[test]
    fn trusted_networks_and_disabled_pike_are_exempt() {
        let t0 = Instant::now();
        let mut p = pike(1);
        for _ in 0..100 {
            assert_eq!(p.check(t0, ip("203.0.113.77")), Verdict::Allow);
        }
        let mut off = pike(0);
        for _ in 0..100 {
            assert_eq!(off.check(t0, ip("198.51.100.1")), Verdict::Allow);
        }
        assert_eq!(p.stats().tracked_sources, 0);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let t0 = Instant::now();
        let mut p = pike(3);
        for i in 1..=3 {
            let a = ip(&format!("2001:db8:1:2::{i}"));
            assert_eq!(p.check(t0, a), Verdict::Allow);
        }
        assert_eq!(p.check(t0, ip("2001:db8:1:2::99")), Verdict::Banned);
        assert!(p.is_banned(t0, ip("2001:db8:1:2:ffff::1")));
        assert!(!p.is_banned(t0, ip("2001:db8:1:3::1")));
    }

    #[test]
    fn table_is_bounded_and_keeps_bans() {
        let t0 = Instant::now();
        let mut p = pike(1);
        let attacker = ip("192.0.2.1");
        p.check(t0, attacker);
        assert_eq!(p.check(t0, attacker), Verdict::Banned);
        // A spoofed-source flood of 10 000 addresses through a 100-entry table.
        for i in 0..10_000u32 {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            p.check(t0 + Duration::from_millis(u64::from(i)), a);
            assert!(p.sources.len() <= 100);
        }
        assert!(p.is_banned(t0 + Duration::from_secs(11), attacker));
        p.handle_timeout(t0 + Duration::from_secs(100));
        // Only the ban is left once everyone else has been quiet for two windows.
        assert_eq!(p.stats().tracked_sources, 1);
        assert_eq!(p.stats().banned_sources, 1);
        assert!(p.order.len() <= 2 * p.sources.len() + 1024);
        p.handle_timeout(t0 + Duration::from_secs(200));
        assert_eq!(p.stats().tracked_sources, 0);
        assert_eq!(p.stats().banned_sources, 0);
    }

    #[test]
    fn cidr_matching() {
        assert!(cidr_contains(ip("10.0.0.0"), 8, ip("10.1.2.3")));
        assert!(!cidr_contains(ip("10.0.0.0"), 8, ip("11.1.2.3")));
        assert!(cidr_contains(ip("0.0.0.0"), 0, ip("11.1.2.3")));
        assert!(cidr_contains(ip("10.0.0.1"), 32, ip("10.0.0.1")));
        assert!(cidr_contains(ip("10.0.0.0"), 8, ip("::ffff:10.9.9.9")));
        assert!(cidr_contains(ip("2001:db8::"), 32, ip("2001:db8:ff::1")));
        assert!(!cidr_contains(ip("2001:db8::"), 32, ip("2001:db9::1")));
        assert!(!cidr_contains(ip("2001:db8::"), 32, ip("10.0.0.1")));
    }
}
