//! The RFC 4475 torture messages (`tests/data/rfc4475/`, byte-exact copies of
//! `shared/testdata/sip/rfc4475`), each with the verdict of the RFC section that
//! describes it, not the `_V`/`_I` suffix of its file name, which the upstream corpus
//! got wrong for several messages (`TC_BADVERS_V`, `TC_LWSSTART_V`, `TC_MISMATCH01_V`,
//! `TC_INV2543_I`...).
//!
//! - Messages the RFC calls valid, or well-formed but semantically odd (3.1.1, 3.2, 3.3
//!   except 3.3.1/3.3.8/3.3.9, 3.4), must parse; a few parsed values are checked, and the
//!   message must encode and parse back to an equal `Message`.
//! - Invalid ones (3.1.2, and the three 3.3 ones the RFC answers with 400) must fail with
//!   the status the RFC names, and `error_response` must produce the answer where the RFC
//!   says one is sent (requests), and nothing for responses, which are dropped.
//! - Where RFC 4475 lets an element choose between refusing and being liberal, the table
//!   says which way this parser goes and why.
//! - Semantic answers the parser cannot give (416, 420, 483...) are noted with the layer
//!   that gives them; the test checks that `parse` extracts what that layer needs.

use sip_proto::message::{
    error_response, parse_auth_header, Contacts, Header, HeaderName, Limits, Message, Method,
    ParseError, StartLine,
};
use sip_proto::uri::{SipUri, Uri};

/// What RFC 4475 expects, as this parser implements it.
enum Expect {
    /// Parses; the function checks a few values.
    Parses(fn(&Message)),
    /// `parse` fails with `status` and this reason; `answered`: `error_response` gives a
    /// response (RFC 3261 section 8.2.6), otherwise the input is only dropped.
    Fails {
        status: u16,
        reason: &'static str,
        answered: bool,
    },
}

struct Case {
    file: &'static str,
    /// RFC 4475 section (or "-" for the corpus's extra file).
    section: &'static str,
    /// The RFC's verdict and who acts on it.
    note: &'static str,
    expect: Expect,
}

macro_rules! data {
    ($f:literal) => {
        include_bytes!(concat!("data/rfc4475/", $f))
    };
}

fn file(name: &str) -> &'static [u8] {
    match name {
        "TC_BADASPEC_I.dat" => data!("TC_BADASPEC_I.dat"),
        "TC_BADBRANCH_V.dat" => data!("TC_BADBRANCH_V.dat"),
        "TC_BADDATE_V.dat" => data!("TC_BADDATE_V.dat"),
        "TC_BADDN_I.dat" => data!("TC_BADDN_I.dat"),
        "TC_BADINV01_I.dat" => data!("TC_BADINV01_I.dat"),
        "TC_BADVERS_V.dat" => data!("TC_BADVERS_V.dat"),
        "TC_BCAST_V.dat" => data!("TC_BCAST_V.dat"),
        "TC_BEXT01_V.dat" => data!("TC_BEXT01_V.dat"),
        "TC_BIGCODE_V.dat" => data!("TC_BIGCODE_V.dat"),
        "TC_CLERR_I.dat" => data!("TC_CLERR_I.dat"),
        "TC_CPARAM01_V.dat" => data!("TC_CPARAM01_V.dat"),
        "TC_CPARAM02_V.dat" => data!("TC_CPARAM02_V.dat"),
        "TC_DBLREQ.dat" => data!("TC_DBLREQ.dat"),
        "TC_ESC01_V.dat" => data!("TC_ESC01_V.dat"),
        "TC_ESC02_V.dat" => data!("TC_ESC02_V.dat"),
        "TC_ESCNULL_V.dat" => data!("TC_ESCNULL_V.dat"),
        "TC_ESCRURI_V.dat" => data!("TC_ESCRURI_V.dat"),
        "TC_INSUF_I.dat" => data!("TC_INSUF_I.dat"),
        "TC_INTMETH.dat" => data!("TC_INTMETH.dat"),
        "TC_INV2543_I.dat" => data!("TC_INV2543_I.dat"),
        "TC_INVUT_V.dat" => data!("TC_INVUT_V.dat"),
        "TC_LONGREQ_V.dat" => data!("TC_LONGREQ_V.dat"),
        "TC_LTGTRURI_I.dat" => data!("TC_LTGTRURI_I.dat"),
        "TC_LWSDISP_V.dat" => data!("TC_LWSDISP_V.dat"),
        "TC_LWSRURI_I.dat" => data!("TC_LWSRURI_I.dat"),
        "TC_LWSSTART_V.dat" => data!("TC_LWSSTART_V.dat"),
        "TC_MCL01_I.dat" => data!("TC_MCL01_I.dat"),
        "TC_MISMATCH01_V.dat" => data!("TC_MISMATCH01_V.dat"),
        "TC_MISMATCH02_V.dat" => data!("TC_MISMATCH02_V.dat"),
        "TC_MPART01.dat" => data!("TC_MPART01.dat"),
        "TC_MULTI01_I.dat" => data!("TC_MULTI01_I.dat"),
        "TC_NCL_I.dat" => data!("TC_NCL_I.dat"),
        "TC_NOREASON_V.dat" => data!("TC_NOREASON_V.dat"),
        "TC_NOVELSC_V.dat" => data!("TC_NOVELSC_V.dat"),
        "TC_QUOTBAL_I.dat" => data!("TC_QUOTBAL_I.dat"),
        "TC_REGAUT01_V.dat" => data!("TC_REGAUT01_V.dat"),
        "TC_REGBADCT_I.dat" => data!("TC_REGBADCT_I.dat"),
        "TC_REGESCRT_V.dat" => data!("TC_REGESCRT_V.dat"),
        "TC_SCALAR02_V.dat" => data!("TC_SCALAR02_V.dat"),
        "TC_SCALARLG_V.dat" => data!("TC_SCALARLG_V.dat"),
        "TC_SDP01_V.dat" => data!("TC_SDP01_V.dat"),
        "TC_SEMIURI_V.dat" => data!("TC_SEMIURI_V.dat"),
        "TC_TEST_I.dat" => data!("TC_TEST_I.dat"),
        "TC_TRANSPORTS_V.dat" => data!("TC_TRANSPORTS_V.dat"),
        "TC_TRWS_I.dat" => data!("TC_TRWS_I.dat"),
        "TC_UNKSCM_V.dat" => data!("TC_UNKSCM_V.dat"),
        "TC_UNKSM2_V.dat" => data!("TC_UNKSM2_V.dat"),
        "TC_UNREASON_V.dat" => data!("TC_UNREASON_V.dat"),
        "TC_WSINV.dat" => data!("TC_WSINV.dat"),
        "TC_ZEROMF_V.dat" => data!("TC_ZEROMF_V.dat"),
        other => panic!("no file {other}"),
    }
}

const fn fails(status: u16, reason: &'static str, answered: bool) -> Expect {
    Expect::Fails {
        status,
        reason,
        answered,
    }
}

fn h<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.header(&HeaderName::parse(name))
}

fn sip_uri(u: &Uri) -> &SipUri {
    u.as_sip().expect("a SIP URI")
}

fn body_after_headers(data: &[u8]) -> &[u8] {
    let at = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &data[at + 4..]
}

static CASES: &[Case] = &[
    // 3.1.1 Valid messages.
    Case {
        file: "TC_WSINV.dat",
        section: "3.1.1.1",
        note: "valid: folding, odd whitespace, compact and mixed-case names",
        expect: Expect::Parses(|m| {
            assert_eq!(m.method(), Some(&Method::Invite));
            assert!(sip_uri(m.uri().unwrap()).params.contains("unknownparam"));
            let to = m.to_header().unwrap();
            assert_eq!(to.tag(), Some("1918181833n"));
            assert_eq!(sip_uri(&to.uri).user.as_deref(), Some("vivekg"));
            let from = m.from_header().unwrap();
            assert_eq!(from.display.as_deref(), Some(r#"J Rosenberg \\\""#));
            assert_eq!(from.tag(), Some("98asjd8"));
            assert_eq!(m.max_forwards(), Some(68));
            let cseq = m.cseq().unwrap();
            assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
            let vias = m.vias();
            let got: Vec<_> = vias
                .iter()
                .map(|v| (v.transport.as_str(), v.host.as_str(), v.branch().unwrap()))
                .collect();
            assert_eq!(
                got,
                [
                    ("UDP", "192.0.2.2", "390skdjuw"),
                    ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
                    ("UDP", "192.168.255.111", "z9hG4bK30239"),
                ]
            );
            assert_eq!(h(m, "Subject"), Some(""));
            assert_eq!(
                h(m, "newfangledheader"),
                Some("newfangled value continued newfangled value")
            );
            assert_eq!(h(m, "UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            assert_eq!(c[0].display.as_deref(), Some(r#"Quoted string \"\""#));
            assert_eq!(c[0].params.get("newparam"), Some(Some("newvalue")));
            assert!(c[0].params.contains("secondparam"));
            assert_eq!(c[0].qvalue(), Ok(Some(330)));
            let route = m.name_addrs(&HeaderName::Route).unwrap();
            let params = &sip_uri(&route[0].uri).params;
            assert!(params.contains("lr") && params.contains("unknown-no-value"));
            assert_eq!(params.get("unknownwith"), Some(Some("value")));
            assert_eq!(m.body.len(), 150);
        }),
    },
    Case {
        file: "TC_INTMETH.dat",
        section: "3.1.1.2",
        note: "valid: every token character, odd URI user/password, UTF-8 and NUL in quotes",
        expect: Expect::Parses(|m| {
            let method = "!interesting-Method0123456789_*+`.%indeed'~";
            assert_eq!(m.method(), Some(&Method::Other(method.into())));
            assert_eq!(m.cseq().unwrap().method.as_str(), method);
            let uri = sip_uri(m.uri().unwrap());
            assert_eq!(
                uri.user.as_deref(),
                Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
            );
            assert_eq!(
                uri.password.as_deref(),
                Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
            );
            assert_eq!(uri.host, "example.com");
            let to = m.to_header().unwrap();
            assert_eq!(
                to.display.as_deref(),
                Some("BEL:\\\x07 NUL:\\\0 DEL:\\\x7f")
            );
            // The comma inside <> does not split the To value.
            assert_eq!(m.values(&HeaderName::To).len(), 1);
            let from = m.from_header().unwrap();
            assert_eq!(
                from.display.as_deref(),
                Some("token1~` token2'+_ token3*%!.-")
            );
            assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
            assert_eq!(
                from.params.get_unquoted("fromParam''~+*_!.-%").as_deref(),
                Some("\u{0440}\u{0430}\u{0431}\u{043e}\u{0442}\u{0430}\u{044e}\u{0449}\u{0438}\u{0439}")
            );
            assert_eq!(
                m.call_id(),
                Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
            );
            assert_eq!(
                h(m, "extensionHeader-!.%*+_`'~"),
                Some("\u{feff}\u{5927}\u{505c}\u{96fb}")
            );
            assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
        }),
    },
    Case {
        file: "TC_ESC01_V.dat",
        section: "3.1.1.3",
        note: "valid: %HH escapes in user parts and URI parameters",
        expect: Expect::Parses(|m| {
            let uri = sip_uri(m.uri().unwrap());
            assert_eq!(uri.user.as_deref(), Some("sips%3Auser%40example.com"));
            assert_eq!(
                uri.user_unescaped().as_deref(),
                Some("sips:user@example.com")
            );
            assert_eq!(uri.host, "example.net");
            let to = m.to_header().unwrap();
            assert_eq!(sip_uri(&to.uri).user_unescaped().as_deref(), Some("user"));
            assert_eq!(sip_uri(&to.uri).aor(), "user@example.com");
            let from = m.from_header().unwrap();
            assert_eq!(
                sip_uri(&from.uri).user_unescaped().as_deref(),
                Some("I have spaces")
            );
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            let contact = sip_uri(&c[0].uri);
            assert!(contact.params.contains("%6C%72"));
            assert_eq!(contact.params.get("n%61me"), Some(Some("v%61lue%25%34%31")));
            // Escaped unreserved characters equal themselves (RFC 3261 section 19.1.4).
            let plain = SipUri::parse("sip:caller@host5.example.net;lr;name=value%2541").unwrap();
            assert!(contact.equivalent(&plain));
            assert_eq!(h(m, "Content-Type"), Some("application/sdp"));
        }),
    },
    Case {
        file: "TC_ESCNULL_V.dat",
        section: "3.1.1.4",
        note: "valid: %00 in user parts",
        expect: Expect::Parses(|m| {
            let to = m.to_header().unwrap();
            assert_eq!(
                sip_uri(&to.uri).user_unescaped().as_deref(),
                Some("null-\0-null")
            );
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            let users: Vec<_> = c
                .iter()
                .map(|n| sip_uri(&n.uri).user_unescaped().unwrap())
                .collect();
            assert_eq!(users, ["\0", "\0\0"]);
            assert_eq!(h(m, "Content-Length"), Some("0"));
        }),
    },
    Case {
        file: "TC_ESC02_V.dat",
        section: "3.1.1.5",
        note: "valid: % where it is not an escape (method, display name, header name, branch)",
        expect: Expect::Parses(|m| {
            assert_eq!(m.method(), Some(&Method::Other("RE%47IST%45R".into())));
            assert_eq!(m.to_header().unwrap().display.as_deref(), Some("%Z%45"));
            assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK209%fzsnel234"));
            // "C%6Fntact" is another header, not Contact.
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            assert_eq!(c.len(), 2);
            assert_eq!(h(m, "C%6Fntact"), Some("<sip:alias2@host2.example.com>"));
        }),
    },
    Case {
        file: "TC_LWSDISP_V.dat",
        section: "3.1.1.6",
        note: "valid: no LWS between display name and <",
        expect: Expect::Parses(|m| {
            let from = m.from_header().unwrap();
            assert_eq!(from.display.as_deref(), Some("caller"));
            assert_eq!(from.tag(), Some("323"));
        }),
    },
    Case {
        file: "TC_LONGREQ_V.dat",
        section: "3.1.1.7",
        note: "valid: long values, 34 Via values in mixed-case and compact lines",
        expect: Expect::Parses(|m| {
            let vias = m.vias();
            assert_eq!(vias.len(), 34);
            assert_eq!(vias[0].host, "sip33.example.com");
            assert_eq!(vias[33].received(), Some("192.0.2.5"));
            assert_eq!(vias[33].branch().unwrap().len(), 215);
            let to = m.to_header().unwrap();
            assert!(to.display.unwrap().ends_with("extreme proportion"));
            assert_eq!(sip_uri(&to.uri).port, Some(6000));
            assert!(sip_uri(&to.uri).params.contains(
                "verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongParameterNameWithNoValue"
            ));
            let from = m.from_header().unwrap();
            assert_eq!(from.tag().unwrap().len(), 155);
            assert_eq!(m.body.len(), 150);
        }),
    },
    Case {
        file: "TC_DBLREQ.dat",
        section: "3.1.1.8",
        note: "valid: the INVITE after Content-Length: 0 in the datagram is discarded",
        expect: Expect::Parses(|m| {
            assert_eq!(m.method(), Some(&Method::Register));
            assert_eq!(m.call_id(), Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
            assert!(m.body.is_empty());
        }),
    },
    Case {
        file: "TC_SEMIURI_V.dat",
        section: "3.1.1.9",
        note: "valid: ; in the user part is not a URI parameter",
        expect: Expect::Parses(|m| {
            let uri = sip_uri(m.uri().unwrap());
            assert_eq!(uri.user.as_deref(), Some("user;par=u%40example.net"));
            assert_eq!(uri.host, "example.com");
            assert!(uri.params.0.is_empty());
            assert_eq!(m.values(&HeaderName::parse("Accept")).len(), 6);
        }),
    },
    Case {
        file: "TC_TRANSPORTS_V.dat",
        section: "3.1.1.10",
        note: "valid: SCTP, TLS and an unknown transport in Via",
        expect: Expect::Parses(|m| {
            let t: Vec<_> = m.vias().into_iter().map(|v| v.transport).collect();
            assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
            assert_eq!(m.call_id(), Some("transports.kijh4akdnaqjkwendsasfdj"));
        }),
    },
    Case {
        file: "TC_MPART01.dat",
        section: "3.1.1.11",
        note: "valid: multipart body with binary content, kept byte for byte",
        expect: Expect::Parses(|m| {
            assert_eq!(m.method(), Some(&Method::Message));
            assert_eq!(m.body.len(), 553);
            assert_eq!(m.body, body_after_headers(file("TC_MPART01.dat")));
            assert_eq!(m.top_via().unwrap().rport(), Some(None));
        }),
    },
    Case {
        file: "TC_UNREASON_V.dat",
        section: "3.1.1.12",
        note: "valid: reason phrase with UTF-8",
        expect: Expect::Parses(|m| {
            assert_eq!(
                m.start,
                StartLine::Response {
                    code: 200,
                    reason: "= 2**3 * 5**2 \u{043d}\u{043e} \u{0441}\u{0442}\u{043e} \
                             \u{0434}\u{0435}\u{0432}\u{044f}\u{043d}\u{043e}\u{0441}\u{0442}\u{043e} \
                             \u{0434}\u{0435}\u{0432}\u{044f}\u{0442}\u{044c} - \
                             \u{043f}\u{0440}\u{043e}\u{0441}\u{0442}\u{043e}\u{0435}"
                        .into()
                }
            );
        }),
    },
    Case {
        file: "TC_NOREASON_V.dat",
        section: "3.1.1.13",
        note: "valid: empty reason phrase",
        expect: Expect::Parses(|m| {
            assert_eq!(
                m.start,
                StartLine::Response {
                    code: 100,
                    reason: String::new()
                }
            );
        }),
    },
    // 3.1.2 Invalid messages.
    Case {
        file: "TC_BADINV01_I.dat",
        section: "3.1.2.1",
        note: "invalid, 400: empty Via/Contact parameters and values (;;,;,,)",
        expect: fails(400, "Bad Via header", true),
    },
    Case {
        file: "TC_CLERR_I.dat",
        section: "3.1.2.2",
        note: "invalid, 400 on UDP: Content-Length larger than the datagram",
        expect: fails(400, "Content-Length larger than message", true),
    },
    Case {
        file: "TC_NCL_I.dat",
        section: "3.1.2.3",
        note: "invalid, 400: negative Content-Length",
        expect: fails(400, "Bad Content-Length header", true),
    },
    Case {
        file: "TC_SCALAR02_V.dat",
        section: "3.1.2.4",
        note: "invalid, 400 for the CSeq above 2^32-1 (Max-Forwards 300, Expires values too large)",
        expect: fails(400, "Bad CSeq header", true),
    },
    Case {
        file: "TC_SCALARLG_V.dat",
        section: "3.1.2.5",
        note: "invalid response (CSeq, Retry-After, Warning too large): dropped, never answered",
        expect: fails(400, "Bad CSeq header", false),
    },
    Case {
        file: "TC_QUOTBAL_I.dat",
        section: "3.1.2.6",
        note: "invalid, 400: unterminated quoted string in To",
        expect: fails(400, "Bad To header", true),
    },
    Case {
        file: "TC_LTGTRURI_I.dat",
        section: "3.1.2.7",
        note: "invalid, 400: Request-URI in <>",
        expect: fails(400, "Bad Request-URI", true),
    },
    Case {
        file: "TC_LWSRURI_I.dat",
        section: "3.1.2.8",
        note: "invalid, 400: LWS inside the Request-URI",
        expect: fails(400, "Bad Request-URI", true),
    },
    Case {
        file: "TC_LWSSTART_V.dat",
        section: "3.1.2.9",
        note: "invalid (RFC: refusing is acceptable; we refuse): two SPs between elements",
        expect: fails(400, "Bad Request-URI", true),
    },
    Case {
        file: "TC_TRWS_I.dat",
        section: "3.1.2.10",
        note: "invalid (RFC: refusing is acceptable; we refuse): SPs after SIP/2.0",
        expect: fails(400, "Bad Request-Line", true),
    },
    Case {
        file: "TC_ESCRURI_V.dat",
        section: "3.1.2.11",
        note: "invalid (RFC: 400 acceptable; we refuse, RFC 3261 table 1): headers in Request-URI",
        expect: fails(400, "Bad Request-URI", true),
    },
    Case {
        file: "TC_BADDATE_V.dat",
        section: "3.1.2.12",
        note: "invalid Date zone; RFC: do not refuse unless Date matters. It does not to a \
               proxy: Date is not parsed, the message passes",
        expect: Expect::Parses(|m| {
            assert_eq!(
                m.header(&HeaderName::Date),
                Some("Fri, 01 Jan 2010 16:00:00 EST")
            );
        }),
    },
    Case {
        file: "TC_REGBADCT_I.dat",
        section: "3.1.2.13",
        note: "invalid Contact addr-spec with ?; RFC: 400 reasonable. Contact is parsed lazily: \
               Message::contacts() fails, the registrar answers 400",
        expect: Expect::Parses(|m| {
            assert_eq!(m.contacts().unwrap_err().status(), 400);
        }),
    },
    Case {
        file: "TC_BADASPEC_I.dat",
        section: "3.1.2.14",
        note: "invalid, 400: spaces inside <> in To",
        expect: fails(400, "Bad To header", true),
    },
    Case {
        file: "TC_BADDN_I.dat",
        section: "3.1.2.15",
        note: "invalid, 400: unquoted display names with commas. The corpus file lacks the \
               final empty line; bad_display_names_with_the_empty_line_restored checks the rest",
        expect: fails(400, "Missing end of headers", true),
    },
    Case {
        file: "TC_BADVERS_V.dat",
        section: "3.1.2.16",
        note: "invalid, 505: SIP/7.0",
        expect: fails(505, "Version Not Supported", true),
    },
    Case {
        file: "TC_MISMATCH01_V.dat",
        section: "3.1.2.17",
        note: "invalid, 400: CSeq method differs from the start line",
        expect: fails(400, "CSeq method does not match", true),
    },
    Case {
        file: "TC_MISMATCH02_V.dat",
        section: "3.1.2.18",
        note: "invalid, RFC prefers 501 but accepts 400: unknown method with CSeq mismatch",
        expect: fails(400, "CSeq method does not match", true),
    },
    Case {
        file: "TC_BIGCODE_V.dat",
        section: "3.1.2.19",
        note: "invalid response code 4294967301: dropped, never answered",
        expect: fails(400, "Bad Status-Line", false),
    },
    // 3.2 Transaction layer semantics.
    Case {
        file: "TC_BADBRANCH_V.dat",
        section: "3.2.1",
        note: "well-formed; branch is only the magic cookie: the transaction layer (txn) \
               matches it the RFC 2543 way",
        expect: Expect::Parses(|m| {
            assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK"));
        }),
    },
    // 3.3 Application-layer semantics.
    Case {
        file: "TC_INSUF_I.dat",
        section: "3.3.1",
        note: "400: no Call-ID, From or To; answered with what is there (Via, CSeq)",
        expect: fails(400, "Missing From header", true),
    },
    Case {
        file: "TC_UNKSCM_V.dat",
        section: "3.3.2",
        note: "well-formed; unknown Request-URI scheme: proxy core answers 416 on Uri::Other",
        expect: Expect::Parses(|m| {
            assert_eq!(
                m.uri(),
                Some(&Uri::Other {
                    scheme: "nobodyKnowsThisScheme".into(),
                    rest: "totallyopaquecontent".into()
                })
            );
        }),
    },
    Case {
        file: "TC_NOVELSC_V.dat",
        section: "3.3.3",
        note: "well-formed; soap.beep Request-URI: proxy core answers 416 unless it routes it",
        expect: Expect::Parses(|m| {
            assert!(matches!(m.uri(), Some(Uri::Other { scheme, rest })
                if scheme == "soap.beep" && rest == "//192.0.2.103:3002"));
        }),
    },
    Case {
        file: "TC_UNKSM2_V.dat",
        section: "3.3.4",
        note: "well-formed; non-SIP URIs in To/From/Contact: a proxy forwards, the registrar \
               answers 400 (To must be a SIP/SIPS AOR)",
        expect: Expect::Parses(|m| {
            assert!(
                matches!(m.to_header().unwrap().uri, Uri::Other { ref scheme, .. } if scheme == "isbn")
            );
            let from = m.from_header().unwrap();
            assert!(matches!(from.uri, Uri::Other { ref scheme, .. } if scheme == "http"));
            assert_eq!(from.tag(), Some("3234233"));
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            assert_eq!(c[0].uri.to_string(), "name:John_Smith");
        }),
    },
    Case {
        file: "TC_BEXT01_V.dat",
        section: "3.3.5",
        note: "well-formed; unknown Proxy-Require: proxy core answers 420 (Require is the UAS's)",
        expect: Expect::Parses(|m| {
            assert_eq!(
                m.values(&HeaderName::ProxyRequire),
                ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
            );
            assert_eq!(m.values(&HeaderName::Require).len(), 2);
        }),
    },
    Case {
        file: "TC_INVUT_V.dat",
        section: "3.3.6",
        note: "well-formed; unknown Content-Type: a UAS answers 415, a proxy forwards",
        expect: Expect::Parses(|m| {
            assert_eq!(
                m.header(&HeaderName::ContentType),
                Some("application/unknownformat")
            );
            assert_eq!(m.body.len(), 40);
        }),
    },
    Case {
        file: "TC_REGAUT01_V.dat",
        section: "3.3.7",
        note: "well-formed; unknown auth scheme: the registrar challenges (401)",
        expect: Expect::Parses(|m| {
            let (scheme, params) =
                parse_auth_header(m.header(&HeaderName::Authorization).unwrap()).unwrap();
            assert_eq!(scheme, "NoOneKnowsThisScheme");
            assert_eq!(params, [("opaque-data".to_string(), "here".to_string())]);
        }),
    },
    Case {
        file: "TC_MULTI01_I.dat",
        section: "3.3.8",
        note: "400: several values in single-value headers",
        expect: fails(400, "Multiple From headers", true),
    },
    Case {
        file: "TC_MCL01_I.dat",
        section: "3.3.9",
        note: "400: two Content-Length headers",
        expect: fails(400, "Multiple Content-Length headers", true),
    },
    Case {
        file: "TC_BCAST_V.dat",
        section: "3.3.10",
        note: "well-formed response; broadcast address in the second Via: the proxy core \
               must not send there",
        expect: Expect::Parses(|m| {
            assert_eq!(m.vias()[1].host, "255.255.255.255");
        }),
    },
    Case {
        file: "TC_ZEROMF_V.dat",
        section: "3.3.11",
        note: "well-formed; Max-Forwards 0: the proxy core answers 483 (or OPTIONS itself)",
        expect: Expect::Parses(|m| {
            assert_eq!(m.max_forwards(), Some(0));
        }),
    },
    Case {
        file: "TC_CPARAM01_V.dat",
        section: "3.3.12",
        note: "well-formed; addr-spec Contact: unknownparam is a header parameter",
        expect: Expect::Parses(|m| {
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            assert_eq!(c[0].params.get("unknownparam"), Some(None));
            assert!(sip_uri(&c[0].uri).params.0.is_empty());
        }),
    },
    Case {
        file: "TC_CPARAM02_V.dat",
        section: "3.3.13",
        note: "well-formed; name-addr Contact: unknownparam is a URI parameter",
        expect: Expect::Parses(|m| {
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            assert!(c[0].params.0.is_empty());
            assert_eq!(sip_uri(&c[0].uri).params.get("unknownparam"), Some(None));
        }),
    },
    Case {
        file: "TC_REGESCRT_V.dat",
        section: "3.3.14",
        note: "well-formed; escaped Route in a Contact URI: the registrar stores it as is",
        expect: Expect::Parses(|m| {
            let Ok(Some(Contacts::List(c))) = m.contacts() else {
                panic!("contacts")
            };
            assert_eq!(
                sip_uri(&c[0].uri).headers.as_deref(),
                Some("Route=%3Csip:sip.example.com%3E")
            );
        }),
    },
    Case {
        file: "TC_SDP01_V.dat",
        section: "3.3.15",
        note: "well-formed; unacceptable Accept: a UAS answers 406, a proxy forwards",
        expect: Expect::Parses(|m| {
            assert_eq!(h(m, "Accept"), Some("text/nobodyKnowsThis"));
        }),
    },
    // 3.4 Backward compatibility.
    Case {
        file: "TC_INV2543_I.dat",
        section: "3.4.1",
        note: "valid RFC 2543 INVITE: no branch, no From tag, no Content-Length, no Max-Forwards",
        expect: Expect::Parses(|m| {
            assert_eq!(m.top_via().unwrap().branch(), None);
            assert_eq!(m.from_header().unwrap().tag(), None);
            assert_eq!(m.max_forwards(), None);
            assert_eq!(m.header(&HeaderName::ContentLength), None);
            assert_eq!(m.body, body_after_headers(file("TC_INV2543_I.dat")));
            assert_eq!(m.body.len(), 105);
        }),
    },
    // Not an RFC 4475 message: an extra file of the upstream corpus.
    Case {
        file: "TC_TEST_I.dat",
        section: "-",
        note: "not in RFC 4475: no SIP-Version, a header line without colon, no Via: 400, \
               not answerable",
        expect: fails(400, "Bad Request-Line", false),
    },
];

/// Parses, encodes and parses again: the same message, except that a Content-Length is
/// added when there was none, and a second encoding gives the same bytes.
fn assert_round_trip(m: &Message) {
    let bytes = m.encode();
    let again = Message::parse(&bytes, &Limits::default())
        .unwrap_or_else(|e| panic!("re-parse: {e}\n{}", String::from_utf8_lossy(&bytes)));
    let mut expected = m.clone();
    if expected.header(&HeaderName::ContentLength).is_none() {
        expected.headers.push(Header {
            name: HeaderName::ContentLength,
            value: m.body.len().to_string(),
        });
    }
    assert_eq!(again, expected);
    assert_eq!(again.encode(), bytes);
}

#[test]
fn the_table_covers_every_file() {
    let mut names: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".dat"))
            .collect();
    names.sort();
    let mut table: Vec<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    table.sort();
    assert_eq!(names, table);
    assert_eq!(CASES.len(), 50);
}

#[test]
fn torture_messages_get_the_rfc_verdict() {
    let limits = Limits::default();
    for case in CASES {
        let data = file(case.file);
        let ctx = format!("{} ({}: {})", case.file, case.section, case.note);
        match (&case.expect, Message::parse(data, &limits)) {
            (Expect::Parses(check), Ok(m)) => {
                check(&m);
                assert_round_trip(&m);
            }
            (Expect::Parses(_), Err(e)) => panic!("{ctx}: refused with {e}"),
            (Expect::Fails { .. }, Ok(_)) => panic!("{ctx}: accepted"),
            (
                Expect::Fails {
                    status,
                    reason,
                    answered,
                },
                Err(e),
            ) => {
                assert_eq!(e.status(), *status, "{ctx}");
                assert_eq!(e.reason(), *reason, "{ctx}");
                let answer = error_response(data, &e);
                assert_eq!(answer.is_some(), *answered, "{ctx}");
                if let Some(a) = answer {
                    let text = String::from_utf8(a).unwrap();
                    assert!(
                        text.starts_with(&format!("SIP/2.0 {status} {reason}\r\n")),
                        "{ctx}: {text}"
                    );
                    assert!(text.contains("\r\nVia: "), "{ctx}");
                    assert!(text.contains("\r\nCSeq: "), "{ctx}");
                    assert!(text.ends_with("\r\nContent-Length: 0\r\n\r\n"), "{ctx}");
                }
            }
        }
    }
}

/// The error responses that RFC 4475 expects for requests whose dialog headers are
/// intact parse as responses themselves, with the To tag added.
#[test]
fn error_responses_are_well_formed_where_the_headers_allow() {
    for file_name in [
        "TC_CLERR_I.dat",
        "TC_NCL_I.dat",
        "TC_LTGTRURI_I.dat",
        "TC_LWSRURI_I.dat",
        "TC_LWSSTART_V.dat",
        "TC_TRWS_I.dat",
        "TC_ESCRURI_V.dat",
        "TC_MISMATCH01_V.dat",
        "TC_MISMATCH02_V.dat",
        "TC_MCL01_I.dat",
    ] {
        let data = file(file_name);
        let err = Message::parse(data, &Limits::default()).unwrap_err();
        let answer = error_response(data, &err).unwrap();
        let r = Message::parse(&answer, &Limits::default())
            .unwrap_or_else(|e| panic!("{file_name}: {e}"));
        assert_eq!(r.status(), Some(400));
        assert!(r.to_header().unwrap().tag().is_some(), "{file_name}");
    }
    // 505 copies the Via with its SIP/7.0 verbatim, as RFC 3261 section 8.2.6 says.
    let data = file("TC_BADVERS_V.dat");
    let answer = error_response(data, &ParseError::VersionNotSupported).unwrap();
    let text = String::from_utf8(answer).unwrap();
    assert!(text.contains("\r\nVia: SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\n"));
    // 3.3.1: no From, To or Call-ID to copy; Via and CSeq are enough to match.
    let data = file("TC_INSUF_I.dat");
    let err = Message::parse(data, &Limits::default()).unwrap_err();
    let text = String::from_utf8(error_response(data, &err).unwrap()).unwrap();
    assert_eq!(
        text,
        "SIP/2.0 400 Missing From header\r\n\
         Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\r\n\
         CSeq: 193942 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
}

/// RFC 4475 3.1.2.15 as the RFC prints it (the corpus file lost its last empty line).
#[test]
fn bad_display_names_with_the_empty_line_restored() {
    let mut data = file("TC_BADDN_I.dat").to_vec();
    data.extend_from_slice(b"\r\n");
    let err = Message::parse(&data, &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "Bad From header");
    let text = String::from_utf8(error_response(&data, &err).unwrap()).unwrap();
    assert!(text.contains("\r\nFrom: Bell, Alexander <sip:a.g.bell@example.com>;tag=43\r\n"));
}

/// Each torture message that parses also frames as one message on a stream when it has
/// a Content-Length, with any trailing datagram bytes left for the next frame.
#[test]
fn torture_messages_frame_on_a_stream() {
    use sip_proto::message::{frame, Frame};
    let limits = Limits::default();
    for case in CASES {
        let data = file(case.file);
        let Ok(m) = Message::parse(data, &limits) else {
            continue;
        };
        let encoded = m.encode();
        let mut stream = encoded.clone();
        stream.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            frame(&stream, &limits),
            Ok(Frame::Message { len: encoded.len() }),
            "{}",
            case.file
        );
        assert_eq!(
            frame(&stream[encoded.len()..], &limits),
            Ok(Frame::KeepAlive { len: 4, ping: true })
        );
    }
}
