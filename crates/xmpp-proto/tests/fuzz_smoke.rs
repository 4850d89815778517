//! The CI guard for the `xmpp_stream` fuzz target (which needs nightly and cargo-fuzz):
//! the same driver (`common/stream.rs`) over 100,000 deterministic inputs, mutations and
//! splices of the verdict table's documents (`tests/data/xmpp/`) plus some noise,
//! asserting no panic and the driver's invariants (split independence, bounded memory,
//! serialize -> parse round trips).

#[path = "common/stream.rs"]
mod stream;

use stream::drive;

const INPUTS: usize = 100_000;

/// xorshift64*: deterministic, so a failure reproduces with the same input number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Fragments that sit on the grammar's edges.
const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"/>",
    b"</",
    b"&",
    b"&amp;",
    b"&lt;",
    b"&#x41;",
    b"&#65;",
    b"&#0;",
    b"&#xD;",
    b"&foo;",
    b"'",
    b"\"",
    b"=",
    b":",
    b"]",
    b"]]",
    b"]]>",
    b"<![CDATA[",
    b"<!--",
    b"<?",
    b"<?xml version='1.0'?>",
    b"<!DOCTYPE",
    b" xmlns='urn:x'",
    b" xmlns=''",
    b" xmlns:p='urn:p'",
    b" xmlns:q='urn:p'",
    b"p:",
    b" p:a='1'",
    b" q:a='2'",
    b" xml:lang='en'",
    b"<message>",
    b"</message>",
    b"<body>",
    b"</body>",
    b"<p:x/>",
    b"</stream:stream>",
    b" ",
    b"\t",
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b"\x01",
    b"\xff",
    b"\xc3\xa9",
    b"\xe6\x97",
    b"\xef\xbf\xbe",
    b"\xef\xbb\xbf",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if i < v.len() => v[i] ^= 1 << rng.below(8),
            1 if i < v.len() => v[i] = rng.next() as u8,
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(i..i, t.iter().copied());
            }
            3 => v.truncate(i),
            4 if i < v.len() => {
                let n = rng.below(16).min(v.len() - i);
                v.drain(i..i + n);
            }
            5 => {
                // Splice in a piece of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let a = rng.below(other.len());
                let b = (a + rng.below(80)).min(other.len());
                v.splice(i..i, other[a..b].iter().copied());
            }
            6 if i < v.len() => {
                // Repeat the element starting at the '<' before i.
                let s = v[..i].iter().rposition(|&b| b == b'<').unwrap_or(0);
                let e = v[i..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map_or(v.len(), |p| i + p + 1);
                let piece = v[s..e].to_vec();
                v.splice(s..s, piece);
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                if i < v.len() {
                    let e = (i + t.len()).min(v.len());
                    v.splice(i..e, t.iter().copied());
                }
            }
        }
    }
    // The driver's control byte: limits and chunking.
    v.insert(0, rng.next() as u8);
    v
}

fn noise(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(120);
    let mut v = Vec::with_capacity(len + 128);
    v.push(rng.next() as u8);
    if rng.below(2) == 0 {
        v.extend_from_slice(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        );
    }
    for _ in 0..len {
        if rng.below(3) == 0 {
            v.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
        } else {
            v.push(rng.next() as u8);
        }
    }
    v
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/xmpp");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    let mut seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    // Most documents are refusals; the accepted streams get more turns, so mutations
    // reach stanza building and the round trips too.
    for name in ["client-stream.xml", "server-stream.xml", "negotiation.xml"] {
        let at = files.iter().position(|p| p.ends_with(name)).unwrap();
        for _ in 0..8 {
            seeds.push(seeds[at].clone());
        }
    }
    seeds
}

#[test]
fn xmpp_stream_driver_survives_100k_inputs() {
    let seeds = seeds();
    assert!(seeds.len() >= 20);
    for (i, s) in seeds.iter().enumerate() {
        for control in [0u8, 0x80 | i as u8] {
            let mut input = vec![control];
            input.extend_from_slice(s);
            drive(&input);
        }
    }
    let mut rng = Rng(0x5EED_0F3A_11CE_5500);
    for n in 0..INPUTS {
        let input = if n % 8 == 0 {
            noise(&mut rng)
        } else {
            mutate(&mut rng, &seeds)
        };
        if std::panic::catch_unwind(|| drive(&input)).is_err() {
            panic!("input {n}: b\"{}\"", input.escape_ascii());
        }
    }
}
