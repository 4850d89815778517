use sip_proto::message::{Limits, Message};
use std::time::Instant;
const REGISTER: &[u8] = b"REGISTER sip:registrar.biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Bob <sip:bob@biloxi.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4>;expires=7200\r\n\
User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n\
Supported: replaces, outbound, gruu\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\
\r\n";
fn main() {
    let limits = Limits::default();
    let files: Vec<Vec<u8>> = std::fs::read_dir("crates/sip-proto/tests/data/rfc4475")
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    for (name, data, n) in [("REGISTER", REGISTER.to_vec(), 1_000_000usize)] {
        let t = Instant::now();
        let mut ok = 0;
        for _ in 0..n {
            if Message::parse(std::hint::black_box(&data), &limits).is_ok() {
                ok += 1;
            }
        }
        let dt = t.elapsed();
        println!(
            "{name}: {:.2} us/parse ({ok} ok, {} bytes)",
            dt.as_secs_f64() * 1e6 / n as f64,
            data.len()
        );
        let m = Message::parse(&data, &limits).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(std::hint::black_box(&m).encode());
        }
        println!(
            "{name}: {:.2} us/encode",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
        let t = Instant::now();
        for _ in 0..n {
            let m = std::hint::black_box(&m);
            std::hint::black_box((
                m.top_via(),
                m.from_header(),
                m.to_header(),
                m.cseq(),
                m.contacts(),
            ));
        }
        println!(
            "{name}: {:.2} us/typed accessors (top_via, from, to, cseq, contacts)",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
    let t = Instant::now();
    let n = 20_000;
    for _ in 0..n {
        for f in &files {
            std::hint::black_box(Message::parse(f, &limits).is_ok());
        }
    }
    println!(
        "torture corpus: {:.2} us/message avg",
        t.elapsed().as_secs_f64() * 1e6 / (n * files.len()) as f64
    );
}
