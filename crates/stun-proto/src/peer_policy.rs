//! Which peer addresses a relay may send to (RFC 8656 §21.3: a relay must not become a way
//! into the operator's own network).
//!
//! Secure by default: loopback, private, link-local (cloud metadata at 169.254.169.254),
//! CGNAT, multicast, documentation, ULA, site-local, Teredo, 6to4 and the other
//! special-purpose ranges of the IANA registries are refused unless the operator allows
//! them. Every IPv4-in-IPv6 spelling (mapped, compatible, SIIT-translated, NAT64) is
//! reduced to its IPv4 address first so `::ffff:127.0.0.1` cannot slip past the IPv4 list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An inclusive address range, written as coturn does (`10.0.0.1-10.0.0.255` or a single
/// address) or as CIDR (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.first, self.last, ip) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(x)) => a <= x && x <= b,
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(x)) => a <= x && x <= b,
            _ => false,
        }
    }

    fn cidr4(a: [u8; 4], bits: u32) -> IpRange {
        let base = u32::from_be_bytes(a);
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        IpRange {
            first: IpAddr::V4(Ipv4Addr::from(base & mask)),
            last: IpAddr::V4(Ipv4Addr::from((base & mask) | !mask)),
        }
    }

    fn cidr6(a: Ipv6Addr, bits: u32) -> IpRange {
        let base = u128::from(a);
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        IpRange {
            first: IpAddr::V6(Ipv6Addr::from(base & mask)),
            last: IpAddr::V6(Ipv6Addr::from((base & mask) | !mask)),
        }
    }
}

impl FromStr for IpRange {
    type Err = String;
    fn from_str(s: &str) -> Result<IpRange, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let first: IpAddr = a.trim().parse().map_err(|_| format!("bad address `{a}`"))?;
            let last: IpAddr = b.trim().parse().map_err(|_| format!("bad address `{b}`"))?;
            if first.is_ipv4() != last.is_ipv4() || first > last {
                return Err(format!("`{s}` is not an ascending range of one family"));
            }
            return Ok(IpRange { first, last });
        }
        if let Some((a, bits)) = s.split_once('/') {
            let ip: IpAddr = a.parse().map_err(|_| format!("bad address `{a}`"))?;
            let bits: u32 = bits.parse().map_err(|_| format!("bad prefix `{bits}`"))?;
            return match ip {
                IpAddr::V4(v4) if bits <= 32 => Ok(IpRange::cidr4(v4.octets(), bits)),
                IpAddr::V6(v6) if bits <= 128 => Ok(IpRange::cidr6(v6, bits)),
                _ => Err(format!("prefix /{bits} too long")),
            };
        }
        let ip: IpAddr = s.parse().map_err(|_| format!("bad address `{s}`"))?;
        Ok(IpRange {
            first: ip,
            last: ip,
        })
    }
}

/// Reduces IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), IPv4-compatible
/// (`::a.b.c.d`), SIIT IPv4-translated (`::ffff:0:a.b.c.d`, RFC 2765 §2.1, which a
/// stateless translator turns back into the IPv4 packet) and NAT64 well-known-prefix
/// (`64:ff9b::a.b.c.d`, RFC 6052 §2.1) addresses to the IPv4 address they reach, so one
/// IPv4 rule covers every spelling.
///
/// The other prefixes that embed an IPv4 address are refused whole by the built-in list
/// instead: the RFC 8215 local-use NAT64 prefix `64:ff9b:1::/48` (the operator picks
/// where in it the address sits, RFC 6052 §2.2), 6to4 `2002::/16` (RFC 3056) and Teredo
/// `2001::/32` (RFC 4380, inside `2001::/23`).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let o = v6.octets();
            let embedded = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
            let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
            let translated = s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0;
            // ::a.b.c.d (deprecated, RFC 4291 §2.5.5.1); :: and ::1 stay IPv6.
            let compatible = s[..6] == [0; 6] && u32::from(embedded) > 1;
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if mapped || translated || compatible || nat64 {
                IpAddr::V4(embedded)
            } else {
                ip
            }
        }
    }
}

/// Special-purpose ranges refused by default (IANA IPv4/IPv6 special-purpose registries,
/// RFC 6890 and successors), loopback included: loopback is governed separately by
/// `allow-loopback-peers`.
fn default_denied() -> Vec<IpRange> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ]
    .iter()
    .map(|s| s.parse().expect("static range"))
    .collect()
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// The peer policy of one server: operator lists plus the built-in defaults.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// `allowed-peer-ip`: wins over every deny rule (as in coturn).
    pub allowed: Vec<IpRange>,
    /// `denied-peer-ip`: added to the defaults.
    pub denied: Vec<IpRange>,
    /// `allow-loopback-peers`.
    pub allow_loopback: bool,
    /// Built-in special-purpose ranges. There is deliberately no switch to drop them: only
    /// `allowed-peer-ip` punches through, so an operator names exactly what they open.
    builtin: Vec<IpRange>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        PeerPolicy::new(Vec::new(), Vec::new(), false)
    }
}

impl PeerPolicy {
    pub fn new(allowed: Vec<IpRange>, denied: Vec<IpRange>, allow_loopback: bool) -> Self {
        PeerPolicy {
            allowed,
            denied,
            allow_loopback,
            builtin: default_denied(),
        }
    }

    /// May the relay send to (and accept from) `ip`?
    pub fn permits(&self, ip: IpAddr) -> bool {
        let raw = ip;
        let ip = canonical(ip);
        let listed = |list: &[IpRange]| list.iter().any(|r| r.contains(ip) || r.contains(raw));
        if listed(&self.allowed) {
            return true;
        }
        if is_loopback(ip) {
            return self.allow_loopback && !listed(&self.denied);
        }
        !(listed(&self.denied) || listed(&self.builtin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_refuse_special_purpose_in_every_spelling() {
        let p = PeerPolicy::default();
        for bad in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "169.254.169.254",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(p.permits(ip(good)), "{good} must be allowed");
        }
    }

    /// Each IPv6 form that embeds a refused IPv4 address (loopback, private, cloud
    /// metadata), next to the textual variants a client may send.
    #[test]
    fn ipv4_embedded_in_ipv6_is_refused_in_every_form() {
        let p = PeerPolicy::default();
        for bad in [
            // IPv4-mapped, RFC 4291 §2.5.5.2.
            "::ffff:7f00:1",
            "::ffff:a00:1",
            // IPv4-compatible, RFC 4291 §2.5.5.1.
            "::7f00:1",
            "::a9fe:a9fe",
            // SIIT IPv4-translated, RFC 2765 §2.1 / RFC 6052.
            "::ffff:0:7f00:1",
            "::ffff:0:127.0.0.1",
            "0:0:0:0:ffff:0:7f00:1",
            "::ffff:0:7f01:203",
            "::ffff:0:a00:1",
            "::ffff:0:c0a8:101",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:0:0",
            // NAT64 well-known prefix, RFC 6052 §2.1.
            "64:ff9b::127.0.0.1",
            "64:ff9b::a00:1",
            // NAT64 local-use prefix, RFC 8215, at the /96 and the /48 positions of
            // RFC 6052 §2.2.
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:7f00:0:100::",
            // 6to4, RFC 3056.
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            // Teredo, RFC 4380: server 127.0.0.1, client 127.0.0.1 (obfuscated).
            "2001:0:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} must be refused");
        }
        // A public address in the translated form is still a public address.
        assert!(p.permits(ip("::ffff:0:808:808")));
        assert_eq!(canonical(ip("::ffff:0:7f00:1")), ip("127.0.0.1"));
        // The loopback switch and the operator's IPv4 lists apply to it as to the address.
        let p = PeerPolicy::new(Vec::new(), vec!["8.8.8.0/24".parse().unwrap()], true);
        assert!(p.permits(ip("::ffff:0:7f00:1")));
        assert!(!p.permits(ip("::ffff:0:808:808")));
    }

    #[test]
    fn operator_lists() {
        let p = PeerPolicy::new(
            vec!["10.0.0.0-10.0.0.255".parse().unwrap()],
            vec!["8.8.8.0/24".parse().unwrap()],
            true,
        );
        assert!(p.permits(ip("10.0.0.7")));
        assert!(p.permits(ip("::ffff:10.0.0.7")));
        assert!(!p.permits(ip("10.0.1.7")));
        assert!(!p.permits(ip("8.8.8.8")));
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("::1")));
        assert!(!p.permits(ip("169.254.169.254")));
    }

    #[test]
    fn range_syntax() {
        assert!("10.0.0.5-10.0.0.1".parse::<IpRange>().is_err());
        assert!("10.0.0.1-::1".parse::<IpRange>().is_err());
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
        let r: IpRange = "fe80::/10".parse().unwrap();
        assert!(r.contains(ip("febf::1")));
        assert!(!r.contains(ip("fec0::1")));
    }
}
