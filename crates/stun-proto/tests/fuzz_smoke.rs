//! The CI guard for the fuzz targets (which need nightly and cargo-fuzz): the same
//! decoding and server-driving code over 200,000 deterministic inputs, half pure noise and
//! half mutations of valid requests, asserting no panic and the invariants in
//! `common/decode.rs`.

#[path = "common/decode.rs"]
mod decode;

use decode::{decode_all, Driver};

const INPUTS: usize = 200_000;
/// A fresh server every so often, so permissions (300 s) are alive for most inputs.
const INPUTS_PER_DRIVER: usize = 10_000;

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
        (self.next() % n as u64) as usize
    }
}

fn noise(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(160);
    let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    // Often make it look like STUN or ChannelData so parsing goes past the first check.
    match rng.below(4) {
        0 if len >= 8 => {
            v[0] &= 0x03;
            v[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            if rng.below(2) == 0 {
                let l = (len.saturating_sub(20) & !3) as u16;
                v[2..4].copy_from_slice(&l.to_be_bytes());
                v.truncate(20 + usize::from(l));
            }
        }
        1 if len >= 4 => v[0] = 0x40 | (v[0] & 0x0F),
        _ => {}
    }
    v
}

/// Byte flips, length-field edits, truncation, extension and splices of a valid seed.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        let i = rng.below(v.len());
        match rng.below(7) {
            0 => v[i] ^= 1 << rng.below(8),
            1 => v[i] = rng.next() as u8,
            // Attribute and header length fields sit at offsets 2 mod 4 after the header.
            2 => {
                let at = (i & !3) + 2;
                if at + 1 < v.len() {
                    let x = rng.next() as u16;
                    v[at..at + 2].copy_from_slice(&x.to_be_bytes());
                }
            }
            3 => v.truncate(i),
            4 => v.extend((0..rng.below(12)).map(|_| rng.next() as u8)),
            5 => {
                let n = rng.below(8).min(v.len() - i);
                v.drain(i..i + n);
            }
            _ => {
                let b = rng.next() as u8;
                v.insert(i, b);
            }
        }
    }
    v
}

#[test]
fn decoders_and_server_survive_200k_inputs() {
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let mut driver = Driver::new();
    let seeds = driver.seeds();
    for seed in &seeds {
        decode_all(seed);
        driver.feed(seed);
    }
    let before = driver.server.stats().clone();
    for n in 0..INPUTS {
        if n % INPUTS_PER_DRIVER == 0 && n > 0 {
            driver = Driver::new();
        }
        let input = if n % 2 == 0 {
            noise(&mut rng)
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        decode_all(&input);
        driver.feed(&input);
    }
    // The last driver saw 10,000 inputs; most were dropped and counted, not answered.
    let s = driver.server.stats();
    assert!(s.malformed > before.malformed);
    // Mutated Send indications and ChannelData frames reached the relaying paths.
    assert!(s.packets_to_peers > 0);
    assert!(s.packets_from_clients >= INPUTS_PER_DRIVER as u64);
}
