//! The CI guard for the `sip_message` fuzz target (which needs nightly and cargo-fuzz):
//! the same driver (`common/decode.rs`) over 100,000 deterministic inputs, mutations
//! and splices of the RFC 4475 torture messages plus some noise, asserting no panic and
//! the driver's invariants.

#[path = "common/decode.rs"]
mod decode;

use decode::decode_all;

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
    b",",
    b";",
    b"\"",
    b"<",
    b">",
    b"\\",
    b":",
    b"%",
    b"%0",
    b"%00",
    b"@",
    b"[",
    b"]",
    b"=",
    b"?",
    b"&",
    b" ",
    b"\t",
    b"\r\n",
    b"\r\n ",
    b"\n",
    b"\r",
    b"\0",
    b"SIP/2.0",
    b"sip:",
    b"sips:",
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
    b"Content-Length: 3\r\n",
    b"l: 99999999999999999999\r\n",
    b"*",
    b";tag=",
    b";rport",
    b"[::1]",
    b"\xff",
    b"\xc3\xa4",
    b"Contact: *\r\n",
    b"\r\n\r\n",
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
                // Duplicate the line around i.
                let s = v[..i]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let e = v[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(v.len(), |p| i + p + 1);
                let line = v[s..e].to_vec();
                v.splice(s..s, line);
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
    v
}

fn noise(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(120);
    let mut v = Vec::with_capacity(len + 32);
    if rng.below(2) == 0 {
        v.extend_from_slice(b"INVITE sip:a@b SIP/2.0\r\n");
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
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    let mut seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    seeds.push(
        b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK77;rport=5060;received=2001:db8::2\r\n\
From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: x@y\r\n\
CSeq: 2 REGISTER\r\nMax-Forwards: 70\r\nExpires: 600\r\n\
Contact: <sip:alice@[2001:db8::1];transport=tcp;ob>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;q=0.5\r\n\
Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"abc\", uri=\"sip:example.com\", response=\"0123\", qop=auth, nc=00000001, cnonce=\"x\"\r\n\
Path: <sip:edge.example.com;lr>\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    );
    seeds.push(
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"b\", qop=\"auth,auth-int\", nonce=\"n\", algorithm=SHA-256\r\n\
Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    );
    seeds
}

#[test]
fn sip_decoder_survives_100k_inputs() {
    let seeds = seeds();
    for s in &seeds {
        decode_all(s);
    }
    let mut rng = Rng(0x5EED_0F51_7A11_CE55);
    for n in 0..INPUTS {
        let input = if n % 8 == 0 {
            noise(&mut rng)
        } else {
            mutate(&mut rng, &seeds)
        };
        if std::panic::catch_unwind(|| decode_all(&input)).is_err() {
            panic!("input {n}: b\"{}\"", input.escape_ascii());
        }
    }
}
