//! One client-to-server connection from its first byte (RFC 6120 sections 4 to 7): the
//! stream header and its checks, stream features, STARTTLS (section 5), SASL (section
//! 6), resource binding (section 7), XEP-0198 resumption instead of binding, and every
//! stream error (section 4.9). Once a resource is bound, stanzas go to `session.rs`.

use super::*;
use crate::sasl::{Mechanism, SaslError, SaslServer, Step};
use crate::xml::{Limits, StreamHeader, XmlError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Events parsed but not yet processed while the connection waits on storage (a SCRAM
/// credentials lookup, a user's state for bind). A client pipelining more than this
/// before the answer is abusive (policy-violation).
const MAX_INBOX: usize = 256;
/// Failed SASL attempts on one connection before it is closed (RFC 6120 section 6.4.5
/// lets the server limit retries).
const MAX_SASL_FAILURES: u32 = 5;
/// XEP-0440: channel-binding types announced with SCRAM-*-PLUS.
pub(crate) const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// RFC 7395 section 3.3.2: the namespace of `<open/>` and `<close/>` on a WebSocket.
pub(crate) const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// What the daemon says about a new connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnParams {
    pub(crate) kind: ConnKind,
    pub(crate) framing: Framing,
    pub(crate) role: Role,
    pub(crate) peer: SocketAddr,
}

/// Where SASL stands on a connection.
pub(crate) enum Auth {
    None,
    /// An exchange in progress; `generation` ties asynchronous answers to it.
    Sasl {
        server: Box<SaslServer>,
        generation: u64,
    },
    /// Authenticated as this bare JID; the stream has been (or is being) restarted.
    Done(Jid),
}

pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) kind: ConnKind,
    pub(crate) framing: Framing,
    pub(crate) role: Role,
    #[allow(dead_code)]
    pub(crate) peer: SocketAddr,
    parser: StreamParser,
    inbox: VecDeque<StreamEvent>,
    pub(crate) tls: Option<TlsInfo>,
    /// `<proceed/>` sent: nothing is read until the handshake completes.
    awaiting_tls: bool,
    /// Our header for the current stream has been sent.
    opened: bool,
    /// The virtual host chosen by the first header's `to`.
    pub(crate) host: Option<String>,
    pub(crate) auth: Auth,
    sasl_failures: u32,
    sasl_generation: u64,
    pub(crate) session: Option<SessionId>,
    /// Waiting for storage: events stay in the inbox.
    busy: bool,
    /// Stream closed by us or the peer; only [`Server::connection_closed`] is expected.
    pub(crate) closing: bool,
    /// Read budget in bytes (token bucket refilled at `c2s_rate`).
    bucket: f64,
    bucket_at: Instant,
}

/// Largest stanza accepted before SASL success (Prosody allows 10 KiB there too).
pub(crate) const PREAUTH_STANZA_LIMIT: usize = 10 * 1024;

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        params: ConnParams,
        limits: Limits,
        rate: u32,
        now: Instant,
    ) -> Conn {
        let bucket = Conn::burst(rate, &limits);
        let ConnParams {
            kind,
            framing,
            role,
            peer,
        } = params;
        Conn {
            id,
            kind,
            framing,
            role,
            peer,
            // Until authenticated, stanzas are small (SASL exchanges, bind): anything
            // bigger is refused with policy-violation long before the full limit, so an
            // unauthenticated peer cannot make the server hold 256 KiB per connection.
            parser: new_parser(
                framing,
                role,
                Limits {
                    max_stanza_bytes: limits.max_stanza_bytes.min(PREAUTH_STANZA_LIMIT),
                    ..limits
                },
            ),
            inbox: VecDeque::new(),
            tls: None,
            awaiting_tls: false,
            opened: false,
            host: None,
            auth: Auth::None,
            sasl_failures: 0,
            sasl_generation: 0,
            session: None,
            busy: false,
            closing: false,
            bucket,
            bucket_at: now,
        }
    }

    /// The bare JID authenticated on this connection.
    pub(crate) fn user(&self) -> Option<&Jid> {
        match &self.auth {
            Auth::Done(j) => Some(j),
            _ => None,
        }
    }

    fn burst(rate: u32, limits: &Limits) -> f64 {
        (f64::from(rate) * 2.0).max(limits.max_stanza_bytes as f64 * 2.0)
    }

    /// Spends `n` bytes of the budget; `false` when the client is far beyond it (it
    /// kept sending while the daemon should have paused reading).
    fn spend(&mut self, now: Instant, n: usize, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let burst = Conn::burst(rate, self.parser.limits());
        let elapsed = now.saturating_duration_since(self.bucket_at).as_secs_f64();
        self.bucket_at = now;
        self.bucket = (self.bucket + elapsed * f64::from(rate)).min(burst);
        self.bucket -= n as f64;
        self.bucket >= -burst
    }

    pub(crate) fn paused_until(&self, rate: u32) -> Option<Instant> {
        if rate == 0 || self.bucket >= 0.0 {
            return None;
        }
        Some(self.bucket_at + Duration::from_secs_f64(-self.bucket / f64::from(rate)))
    }
}

impl Server {
    pub(crate) fn on_tls_established(&mut self, _now: Instant, cid: ConnId, info: TlsInfo) {
        if let Some(c) = self.conns.get_mut(&cid) {
            c.tls = Some(info);
            c.awaiting_tls = false;
        }
    }

    pub(crate) fn on_data(&mut self, now: Instant, cid: ConnId, bytes: &[u8]) {
        let rate = self.cfg.c2s_rate;
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        // After <proceed/> anything before the handshake is plaintext injected ahead of
        // TLS (RFC 6120 section 5.4.3.3): never read.
        if c.closing || c.awaiting_tls {
            return;
        }
        if !c.spend(now, bytes.len(), rate) {
            self.stream_error(now, cid, "policy-violation", None);
            return;
        }
        // Events complete before an error still count (the parser hands them out
        // first), so a stanza followed by garbage is processed, then the stream closed.
        let fed = c.parser.feed(bytes);
        let mut err = None;
        loop {
            match c.parser.next_event() {
                Ok(Some(ev)) => match c.framing {
                    Framing::Stream => c.inbox.push_back(ev),
                    Framing::WebSocket => match unframe(ev, c.role) {
                        Ok(ev) => c.inbox.push_back(ev),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    },
                },
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if err.is_none() && fed.is_ok() && c.framing == Framing::WebSocket && c.parser.in_element()
        {
            // RFC 7395 section 3.3.3: a message holds whole elements, a stanza is never
            // split over messages.
            err = Some(XmlError::NotWellFormed(
                "element split over WebSocket messages".into(),
            ));
        }
        let err = err.or(fed.err());
        if c.inbox.len() > MAX_INBOX {
            self.stream_error(now, cid, "policy-violation", None);
            return;
        }
        self.pump(now, cid);
        if let Some(e) = err {
            self.xml_error(now, cid, &e);
        }
    }

    /// A parser error closes the stream with its condition (RFC 6120 section 4.9.3).
    fn xml_error(&mut self, now: Instant, cid: ConnId, e: &XmlError) {
        self.stream_error(now, cid, e.condition(), None);
    }

    /// Processes queued events until the connection has to wait.
    pub(crate) fn pump(&mut self, now: Instant, cid: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&cid) else {
                return;
            };
            if c.busy || c.closing || c.awaiting_tls {
                return;
            }
            let Some(ev) = c.inbox.pop_front() else {
                return;
            };
            // On a byte stream the parser only gives elements after a header, and a
            // header only at the start or after a restart. WebSocket messages can come
            // in any order: an element before `<open/>` (at the start or instead of the
            // restart after SASL, RFC 7395 sections 3.4 and 3.7), or an `<open/>` in the
            // middle of a stream, is refused.
            let out_of_order = c.framing == Framing::WebSocket
                && match &ev {
                    StreamEvent::Header(_) => c.opened,
                    StreamEvent::Element(_) => !c.opened,
                    StreamEvent::End => false,
                };
            if out_of_order {
                self.stream_error(now, cid, "bad-format", None);
                return;
            }
            match ev {
                StreamEvent::Header(h) => self.on_header(now, cid, h),
                StreamEvent::Element(e) => self.on_element(now, cid, e),
                StreamEvent::End => self.on_stream_end(now, cid),
            }
        }
    }

    /// RFC 6120 section 4.7: answer the header, or refuse it with the section 4.9.3
    /// condition (our own header goes first either way, section 4.9.1.2).
    fn on_header(&mut self, now: Instant, cid: ConnId, h: StreamHeader) {
        let to =
            h.to.as_deref()
                .map(|t| t.trim_end_matches('.').to_ascii_lowercase());
        let Some(c) = self.conns.get(&cid) else {
            return;
        };
        let version_ok = h
            .version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.trim().parse::<u32>().ok())
            .is_some_and(|major| major >= 1);
        let known = to.as_deref().filter(|t| self.is_local_domain(t));
        let err = if h.default_ns != c.role.content_ns() {
            // Section 4.9.3.10: jabber:server (or anything else) on a client port.
            Some("invalid-namespace")
        } else if known.is_none() || (c.host.is_some() && c.host.as_deref() != known) {
            // Section 4.9.3.6; after a restart the host cannot change.
            Some("host-unknown")
        } else if !version_ok {
            // Section 4.7.5: we only speak XMPP 1.0 (no pre-RFC jabber:iq:auth).
            Some("unsupported-version")
        } else {
            None
        };
        if c.host.is_none() {
            let host = known.map(str::to_string);
            if let Some(c) = self.conns.get_mut(&cid) {
                c.host = host;
            }
        }
        if let Some(cond) = err {
            self.stream_error(now, cid, cond, None);
            return;
        }
        let header = self.stream_header(cid, h.from.as_deref());
        let features = self.features(cid);
        let mut out = if self.is_websocket(cid) {
            // RFC 7395 section 3.3.3: `<open/>` and the features are two messages, the
            // features a document of their own.
            self.send_raw(cid, header);
            let mut out = format!("<stream:features xmlns:stream='{}'>", ns::STREAM);
            for f in features {
                f.write_to(&mut out, "");
            }
            out
        } else {
            let mut out = header;
            out.push_str("<stream:features>");
            for f in features {
                f.write_to(&mut out, ns::CLIENT);
            }
            out
        };
        out.push_str("</stream:features>");
        self.send_raw(cid, out);
    }

    pub(crate) fn is_websocket(&self, cid: ConnId) -> bool {
        self.conns
            .get(&cid)
            .is_some_and(|c| c.framing == Framing::WebSocket)
    }

    /// The end of our stream: `</stream:stream>`, or RFC 7395 section 3.6 `<close/>`.
    pub(crate) fn stream_end_tag(&self, cid: ConnId) -> String {
        if self.is_websocket(cid) {
            format!("<close xmlns='{NS_FRAMING}'/>")
        } else {
            "</stream:stream>".to_string()
        }
    }

    /// Our `<stream:stream>` for `cid` (RFC 6120 section 4.7: fresh id each stream,
    /// `from` our host, `to` the client's `from` when it gave one).
    fn stream_header(&mut self, cid: ConnId, peer_from: Option<&str>) -> String {
        let id = self.random_id();
        let Some(c) = self.conns.get_mut(&cid) else {
            return String::new();
        };
        c.opened = true;
        let mut s = match c.framing {
            Framing::Stream => format!(
                "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='",
                c.role.content_ns(),
                ns::STREAM
            ),
            // RFC 7395 section 3.4: the same attributes on `<open/>`, no XML declaration
            // (section 3.3.3).
            Framing::WebSocket => format!("<open xmlns='{NS_FRAMING}' id='"),
        };
        s.push_str(&id);
        s.push('\'');
        if let Some(host) = &c.host {
            s.push_str(" from='");
            crate::xml::escape_attr(host, &mut s);
            s.push('\'');
        }
        if let Some(f) = peer_from.filter(|f| Jid::parse(f).is_ok()) {
            s.push_str(" to='");
            crate::xml::escape_attr(f, &mut s);
            s.push('\'');
        }
        s.push_str(" version='1.0' xml:lang='en'");
        s.push_str(match c.framing {
            Framing::Stream => ">",
            Framing::WebSocket => "/>",
        });
        s
    }

    /// SASL mechanisms on offer (RFC 6120 section 6.3.3), strongest first: -PLUS only
    /// with channel-binding data (RFC 5802 section 6), PLAIN only under TLS.
    pub(crate) fn offered_mechanisms(&self, c: &Conn) -> Vec<Mechanism> {
        let mut v = Vec::new();
        if c.tls.is_none() && c.kind == ConnKind::C2sStartTls && self.cfg.require_encryption {
            return v;
        }
        let cb = c
            .tls
            .as_ref()
            .is_some_and(|t| t.tls_exporter.is_some() || t.tls_server_end_point.is_some());
        if cb {
            v.push(Mechanism::ScramSha256Plus);
            v.push(Mechanism::ScramSha1Plus);
        }
        v.push(Mechanism::ScramSha256);
        v.push(Mechanism::ScramSha1);
        if c.tls.is_some() && self.cfg.allow_plain {
            v.push(Mechanism::Plain);
        }
        v
    }

    /// Stream features for the connection's stage (RFC 6120 section 4.3.2).
    fn features(&self, cid: ConnId) -> Vec<Element> {
        let Some(c) = self.conns.get(&cid) else {
            return Vec::new();
        };
        let mut f = Vec::new();
        if c.user().is_some() {
            f.push(Element::new("bind", ns::BIND));
            // RFC 3921 session establishment, kept for old clients (RFC 6121 Appendix E).
            f.push(
                Element::new("session", ns::SESSION).child(Element::new("optional", ns::SESSION)),
            );
            f.push(Element::new("sm", sm::NS_SM));
            f.push(Element::new("csi", csi::NS_CSI));
            // RFC 6121 section 2.6.1 roster versioning.
            f.push(Element::new("ver", "urn:xmpp:features:rosterver"));
            // XEP-0115 section 6.3: our capabilities (`caps.rs`).
            if let Some(h) = &c.host {
                f.push(self.server_caps(h));
            }
            return f;
        }
        // RFC 7395 section 3.9: a WebSocket's TLS is the WebSocket's, never STARTTLS.
        let tls_pending =
            c.tls.is_none() && c.kind == ConnKind::C2sStartTls && c.framing == Framing::Stream;
        if tls_pending {
            let mut st = Element::new("starttls", ns::TLS);
            if self.cfg.require_encryption {
                st.push(Element::new("required", ns::TLS));
            }
            f.push(st);
            if self.cfg.require_encryption {
                // Section 5.3.1: nothing else while TLS is mandatory to negotiate.
                return f;
            }
        }
        let mut mechs = Element::new("mechanisms", ns::SASL);
        for m in self.offered_mechanisms(c) {
            mechs.push(Element::new("mechanism", ns::SASL).text_node(m.name()));
        }
        f.push(mechs);
        if let Some(t) = &c.tls {
            // XEP-0440: which channel bindings SCRAM-*-PLUS can use here.
            let mut cb = Element::new("sasl-channel-binding", NS_SASL_CB);
            if t.tls_exporter.is_some() {
                cb.push(Element::new("channel-binding", NS_SASL_CB).attr("type", "tls-exporter"));
            }
            if t.tls_server_end_point.is_some() {
                cb.push(
                    Element::new("channel-binding", NS_SASL_CB)
                        .attr("type", "tls-server-end-point"),
                );
            }
            if cb.elements().next().is_some() {
                f.push(cb);
            }
        }
        if c.host
            .as_deref()
            .and_then(|h| self.vhost(h))
            .is_some_and(|v| v.allow_registration)
        {
            // XEP-0077 section 8.
            f.push(Element::new(
                "register",
                "http://jabber.org/features/iq-register",
            ));
        }
        if let Some(h) = &c.host {
            // XEP-0115 section 6.3 (`caps.rs`).
            f.push(self.server_caps(h));
        }
        f
    }

    fn on_element(&mut self, now: Instant, cid: ConnId, e: Element) {
        let Some(c) = self.conns.get(&cid) else {
            return;
        };
        match (c.session, c.user().is_some()) {
            (Some(sid), _) => self.on_bound_element(now, cid, sid, e),
            (None, true) => self.on_authenticated_element(now, cid, e),
            (None, false) => self.on_preauth_element(now, cid, e),
        }
    }

    /// What a top-level element we do not accept here is worth (RFC 6120 section
    /// 4.9.3): stanzas in another namespace `invalid-namespace` (4.9.3.10), stanzas
    /// before authentication `not-authorized` (4.9.3.12), anything else
    /// `unsupported-stanza-type` (4.9.3.24).
    pub(crate) fn refuse_element(
        &mut self,
        now: Instant,
        cid: ConnId,
        e: &Element,
        authenticated: bool,
    ) {
        let stanza = matches!(e.name.as_str(), "message" | "presence" | "iq");
        let cond = if stanza && e.ns != ns::CLIENT {
            "invalid-namespace"
        } else if stanza && !authenticated {
            "not-authorized"
        } else {
            "unsupported-stanza-type"
        };
        self.stream_error(now, cid, cond, None);
    }

    fn on_preauth_element(&mut self, now: Instant, cid: ConnId, e: Element) {
        match (e.ns.as_str(), e.name.as_str()) {
            (ns::TLS, "starttls") => self.on_starttls(now, cid),
            (ns::SASL, "auth") => self.on_sasl_auth(now, cid, &e),
            (ns::SASL, "response") => self.on_sasl_response(now, cid, &e),
            (ns::SASL, "abort") => {
                if let Some(c) = self.conns.get_mut(&cid) {
                    c.auth = Auth::None;
                }
                self.sasl_failure(now, cid, SaslError::Aborted.condition());
            }
            (sm::NS_SM, "enable" | "resume") => self.sm_failed(cid, "unexpected-request", None),
            (ns::CLIENT, "iq") if self.tls_ok(cid) => {
                // XEP-0077 in-band registration is the only thing allowed before auth.
                let handler = iq::MODULES.iter().find_map(|m| m.preauth_iq);
                match handler {
                    Some(h) => h(self, now, cid, e),
                    None => self.refuse_element(now, cid, &e, false),
                }
            }
            _ => self.refuse_element(now, cid, &e, false),
        }
    }

    /// TLS is up, or not required on this connection.
    fn tls_ok(&self, cid: ConnId) -> bool {
        self.conns.get(&cid).is_some_and(|c| {
            c.tls.is_some() || c.kind == ConnKind::C2sDirectTls || !self.cfg.require_encryption
        })
    }

    /// RFC 6120 section 5.4.2: `<proceed/>`, then the daemon runs the handshake. What
    /// the parser already holds is dropped, the next stream starts after TLS.
    fn on_starttls(&mut self, now: Instant, cid: ConnId) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        if c.kind != ConnKind::C2sStartTls || c.tls.is_some() || c.framing != Framing::Stream {
            // Section 5.4.2.2: failure case, then close the stream.
            let failure = format!("<failure xmlns='{}'/>", ns::TLS);
            let end = self.stream_end_tag(cid);
            if self.is_websocket(cid) {
                self.send_raw(cid, failure);
                self.send_raw(cid, end);
            } else {
                self.send_raw(cid, failure + &end);
            }
            self.close_conn(now, cid);
            return;
        }
        c.awaiting_tls = true;
        c.parser.reset();
        c.inbox.clear();
        c.opened = false;
        self.send_raw(cid, format!("<proceed xmlns='{}'/>", ns::TLS));
        self.outputs.push_back(Output::StartTls { conn: cid });
    }

    fn on_sasl_auth(&mut self, now: Instant, cid: ConnId, e: &Element) {
        let seed = self.random_u64();
        let Some(c) = self.conns.get(&cid) else {
            return;
        };
        if c.tls.is_none() && c.kind == ConnKind::C2sStartTls && self.cfg.require_encryption {
            // RFC 6120 section 6.5.4.
            self.sasl_failure(now, cid, SaslError::EncryptionRequired.condition());
            return;
        }
        let offered = self.offered_mechanisms(c);
        let mech = e
            .get_attr("mechanism")
            .and_then(Mechanism::from_name)
            .filter(|m| offered.contains(m));
        let Some(mech) = mech else {
            // Section 6.5.7.
            self.sasl_failure(now, cid, SaslError::InvalidMechanism.condition());
            return;
        };
        let initial = match decode_sasl(&e.text()) {
            Ok(i) => i,
            Err(()) => {
                // Section 6.5.5.
                self.sasl_failure(now, cid, "incorrect-encoding");
                return;
            }
        };
        let host = c.host.clone().unwrap_or_default();
        let mut server = Box::new(
            SaslServer::new(mech, c.tls.as_ref(), seed)
                .with_fake_account(self.fake_key, self.cfg.scram_iterations)
                .with_domain(&host),
        );
        // Section 6.4.2: no initial response (or a zero-length one) gets an empty
        // challenge, and the client-first message comes as a response.
        let r = server.start(&initial.unwrap_or_default());
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        c.sasl_generation += 1;
        let generation = c.sasl_generation;
        c.auth = Auth::Sasl { server, generation };
        self.sasl_step(now, cid, r);
    }

    fn on_sasl_response(&mut self, now: Instant, cid: ConnId, e: &Element) {
        let data = match decode_sasl(&e.text()) {
            Ok(d) => d.unwrap_or_default(),
            Err(()) => {
                if let Some(c) = self.conns.get_mut(&cid) {
                    c.auth = Auth::None;
                }
                self.sasl_failure(now, cid, "incorrect-encoding");
                return;
            }
        };
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        let r = match &mut c.auth {
            Auth::Sasl { server, .. } => server.response(&data),
            _ => Err(SaslError::MalformedRequest),
        };
        self.sasl_step(now, cid, r);
    }

    /// Acts on what the SASL exchange wants next.
    fn sasl_step(&mut self, now: Instant, cid: ConnId, r: Result<Step, SaslError>) {
        match r {
            Ok(Step::NeedSecrets { username }) => {
                let Some(c) = self.conns.get_mut(&cid) else {
                    return;
                };
                let Auth::Sasl { generation, .. } = c.auth else {
                    return;
                };
                let host = c.host.clone().unwrap_or_default();
                match Jid::from_parts(Some(&username), &host, None) {
                    Ok(bare) => {
                        c.busy = true;
                        let node = bare.node().unwrap_or_default().to_string();
                        self.fetch_account_then(&host, &node, move |s, now, secrets| {
                            s.sasl_secrets(now, cid, generation, secrets)
                        });
                    }
                    // Not a possible account: same path as an unknown one.
                    Err(_) => self.sasl_secrets(now, cid, generation, Ok(None)),
                }
            }
            Ok(Step::Challenge(data)) if data.is_empty() => {
                self.send_raw(cid, format!("<challenge xmlns='{}'/>", ns::SASL));
            }
            Ok(Step::Challenge(data)) => {
                let out = format!(
                    "<challenge xmlns='{}'>{}</challenge>",
                    ns::SASL,
                    encode_sasl(&data)
                );
                self.send_raw(cid, out);
            }
            Ok(Step::Success {
                username,
                authzid,
                additional,
            }) => self.sasl_success(now, cid, &username, authzid.as_deref(), &additional),
            Err(e) => {
                if let Some(c) = self.conns.get_mut(&cid) {
                    c.auth = Auth::None;
                }
                self.sasl_failure(now, cid, e.condition());
            }
        }
    }

    fn sasl_secrets(
        &mut self,
        now: Instant,
        cid: ConnId,
        generation: u64,
        secrets: Result<Option<AccountSecrets>, StoreFailed>,
    ) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        c.busy = false;
        let secrets = match secrets {
            Ok(s) => s,
            Err(StoreFailed) => {
                let current =
                    matches!(&c.auth, Auth::Sasl { generation: g, .. } if *g == generation);
                if current {
                    // RFC 6120 section 6.5.12: a temporary error on our side, not the
                    // client's credentials; it may try again.
                    c.auth = Auth::None;
                    self.sasl_failure(now, cid, "temporary-auth-failure");
                    self.pump(now, cid);
                }
                return;
            }
        };
        let r = match &mut c.auth {
            Auth::Sasl {
                server,
                generation: g,
                ..
            } if *g == generation => server.secrets(secrets.as_ref()),
            _ => return,
        };
        self.sasl_step(now, cid, r);
        self.pump(now, cid);
    }

    /// RFC 6120 section 6.4.6: `<success/>` with the additional data (SCRAM's
    /// server-final message), then the stream restarts.
    fn sasl_success(
        &mut self,
        now: Instant,
        cid: ConnId,
        username: &str,
        authzid: Option<&str>,
        additional: &[u8],
    ) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        let host = c.host.clone().unwrap_or_default();
        let Ok(bare) = Jid::from_parts(Some(username), &host, None) else {
            c.auth = Auth::None;
            self.sasl_failure(now, cid, SaslError::NotAuthorized.condition());
            return;
        };
        // Section 6.3.8 / 6.5.6: the authzid, if any, was checked by the SASL server
        // (built `with_domain`) to be the user's own bare JID.
        let _ = authzid;
        c.auth = Auth::Done(bare);
        // The restarted stream (RFC 6120 6.4.6) gets the full stanza size limit.
        c.parser = new_parser(c.framing, c.role, self.cfg.limits);
        c.inbox.clear();
        c.opened = false;
        self.stats.auth_successes += 1;
        let out = if additional.is_empty() {
            format!("<success xmlns='{}'/>", ns::SASL)
        } else {
            format!(
                "<success xmlns='{}'>{}</success>",
                ns::SASL,
                encode_sasl(additional)
            )
        };
        self.send_raw(cid, out);
    }

    /// `<failure/>` with the section 6.5 condition. Wrong passwords and unknown users
    /// both end here with `not-authorized`, byte for byte the same.
    fn sasl_failure(&mut self, now: Instant, cid: ConnId, condition: &str) {
        let out = format!("<failure xmlns='{}'><{condition}/></failure>", ns::SASL);
        self.send_raw(cid, out);
        if condition == "not-authorized" {
            self.stats.auth_failures += 1;
            let Some(c) = self.conns.get_mut(&cid) else {
                return;
            };
            c.sasl_failures += 1;
            if c.sasl_failures >= MAX_SASL_FAILURES {
                self.stream_error(now, cid, "policy-violation", None);
            }
        }
    }

    /// Authenticated, not yet bound: bind, XEP-0198 resumption, nothing else.
    fn on_authenticated_element(&mut self, now: Instant, cid: ConnId, e: Element) {
        let is_bind = e.name == "iq"
            && e.ns == ns::CLIENT
            && e.get_attr("type") == Some("set")
            && e.get_child("bind", ns::BIND).is_some();
        if is_bind {
            self.on_bind(now, cid, e);
            return;
        }
        match (e.ns.as_str(), e.name.as_str()) {
            (sm::NS_SM, "resume") => self.sm_resume(now, cid, &e),
            (sm::NS_SM, "enable") => self.sm_failed(cid, "unexpected-request", None),
            (ns::CLIENT, "iq") if e.get_child("session", ns::SESSION).is_some() => {
                // RFC 3921 session before bind: not allowed (section 3 of RFC 3921).
                self.send_element_conn(
                    cid,
                    stanza::error_reply(&e, &StanzaError::new("not-allowed")),
                );
            }
            // RFC 6120 section 7.1: stanzas need a bound resource first.
            (ns::CLIENT, "message" | "presence" | "iq") => {
                self.stream_error(now, cid, "not-authorized", None)
            }
            _ => self.refuse_element(now, cid, &e, true),
        }
    }

    /// RFC 6120 section 7: the client's resource (validated, section 7.7.2.1) or one of
    /// ours (section 7.6), once the user's state is loaded.
    fn on_bind(&mut self, now: Instant, cid: ConnId, iq: Element) {
        let Some(c) = self.conns.get(&cid) else {
            return;
        };
        let Some(bare) = c.user().cloned() else {
            return;
        };
        let requested = iq
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text().trim().to_string())
            .filter(|r| !r.is_empty());
        let full = match requested {
            Some(r) => match bare.with_resource(&r) {
                Ok(j) => j,
                Err(_) => {
                    self.send_element_conn(
                        cid,
                        stanza::error_reply(&iq, &StanzaError::new("bad-request")),
                    );
                    return;
                }
            },
            None => {
                let r = self.random_id();
                match bare.with_resource(&r) {
                    Ok(j) => j,
                    Err(_) => return,
                }
            }
        };
        if let Some(c) = self.conns.get_mut(&cid) {
            c.busy = true;
        }
        self.with_user(now, &bare, true, move |s, now, ready| {
            s.finish_bind(now, cid, iq, full, ready)
        });
    }

    fn finish_bind(
        &mut self,
        now: Instant,
        cid: ConnId,
        iq: Element,
        full: Jid,
        ready: users::Ready,
    ) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        c.busy = false;
        if c.closing {
            return;
        }
        if ready != users::Ready::Ok {
            self.send_element_conn(
                cid,
                stanza::error_reply(&iq, &StanzaError::new("internal-server-error")),
            );
            self.pump(now, cid);
            return;
        }
        // Section 7.7.2.2: the same full JID again replaces the old session, which is
        // told `conflict` (Prosody's default).
        if let Some(old) = self.by_full.get(&full).copied() {
            self.kick_session(now, old, "conflict");
        }
        let sid = self.create_session(now, cid, full.clone());
        let result = stanza::iq_result(
            &iq,
            Some(
                Element::new("bind", ns::BIND)
                    .child(Element::new("jid", ns::BIND).text_node(&full.to_string())),
            ),
        );
        let mut result = result;
        result.remove_attr("from");
        result.remove_attr("to");
        self.send_to_session(now, sid, result);
        self.pump(now, cid);
    }

    /// Elements of a bound stream.
    fn on_bound_element(&mut self, now: Instant, cid: ConnId, sid: SessionId, e: Element) {
        match (e.ns.as_str(), e.name.as_str()) {
            (ns::CLIENT, "message" | "presence" | "iq") => self.on_client_stanza(now, sid, e),
            (sm::NS_SM, _) => self.on_sm_element(now, cid, sid, &e),
            (csi::NS_CSI, "active" | "inactive") => self.on_csi(now, sid, e.name == "active"),
            _ => self.refuse_element(now, cid, &e, true),
        }
    }

    /// The client closed its stream (RFC 6120 section 4.4): we close ours. A clean close
    /// ends the session for good, no XEP-0198 hibernation.
    fn on_stream_end(&mut self, now: Instant, cid: ConnId) {
        let end = self.stream_end_tag(cid);
        self.send_raw(cid, end);
        self.close_conn(now, cid);
    }

    /// Closes the connection after what is queued; its session ends now.
    pub(crate) fn close_conn(&mut self, now: Instant, cid: ConnId) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        let sid = c.session.take();
        self.outputs.push_back(Output::Close { conn: cid });
        if let Some(sid) = sid {
            self.destroy_session(now, sid);
        }
    }

    /// Sends a stream error (RFC 6120 section 4.9) and closes: our header first if it has
    /// not been sent (section 4.9.1.2), then `<stream:error/>` and `</stream:stream>`.
    pub(crate) fn stream_error(
        &mut self,
        now: Instant,
        cid: ConnId,
        condition: &str,
        app: Option<Element>,
    ) {
        let Some(c) = self.conns.get(&cid) else {
            return;
        };
        if c.closing {
            return;
        }
        let ws = c.framing == Framing::WebSocket;
        let mut out = if c.opened {
            String::new()
        } else {
            self.stream_header(cid, None)
        };
        if ws {
            // RFC 7395 section 3.5: the error, then `<close/>`, each a message.
            self.send_raw(cid, std::mem::take(&mut out));
            out = format!("<stream:error xmlns:stream='{}'><", ns::STREAM);
        } else {
            out.push_str("<stream:error><");
        }
        out.push_str(condition);
        out.push_str(" xmlns='");
        out.push_str(ns::STREAMS_ERR);
        out.push_str("'/>");
        if let Some(app) = app {
            app.write_to(&mut out, ns::STREAM);
        }
        out.push_str("</stream:error>");
        let end = self.stream_end_tag(cid);
        if ws {
            self.send_raw(cid, out);
            self.send_raw(cid, end);
        } else {
            self.send_raw(cid, out + &end);
        }
        self.stats.stream_errors += 1;
        self.close_conn(now, cid);
    }

    /// The socket is gone. A bound session with XEP-0198 resumption enabled hibernates
    /// (section 5); any other ends now.
    pub(crate) fn on_connection_closed(&mut self, now: Instant, cid: ConnId, _reason: CloseReason) {
        let Some(c) = self.conns.remove(&cid) else {
            return;
        };
        self.stats.c2s_connections = self.conns.len() as u64;
        if let Some(sid) = c.session {
            self.session_lost(now, sid);
        }
    }

    /// RFC 6120 section 4.9.3.4: too slow to authenticate and bind.
    pub(crate) fn negotiation_timeout(&mut self, now: Instant, cid: ConnId) {
        let pending = self
            .conns
            .get(&cid)
            .is_some_and(|c| c.session.is_none() && !c.closing);
        if pending {
            self.stream_error(now, cid, "connection-timeout", None);
        }
    }

    /// An element as written on `cid`: relative to the stream's default namespace, or
    /// over WebSocket as a document of its own (RFC 7395 section 3.3.3), its namespace
    /// declared.
    pub(crate) fn element_xml(&self, cid: ConnId, e: &Element) -> String {
        match self.conns.get(&cid) {
            Some(c) if c.framing == Framing::WebSocket => e.to_xml(""),
            Some(c) => e.to_xml(c.role.content_ns()),
            None => e.to_xml(ns::CLIENT),
        }
    }

    pub(crate) fn send_raw(&mut self, cid: ConnId, data: String) {
        if data.is_empty() {
            return;
        }
        self.outputs.push_back(Output::Send {
            conn: cid,
            data: data.into_bytes(),
        });
    }

    /// Sends an element straight on a connection (negotiation answers; no XEP-0198
    /// counting).
    pub(crate) fn send_element_conn(&mut self, cid: ConnId, e: Option<Element>) {
        if let Some(e) = e {
            self.count_out(&e.name);
            let data = self.element_xml(cid, &e);
            self.send_raw(cid, data);
        }
    }
}

/// A parser for a new stream on a connection. Over WebSocket, each message is a
/// document of its own (RFC 7395 section 3.3.3); they are read as the children of a
/// stream header the client never sends, fed here, so one parser, with its limits and
/// refusals, serves both framings.
fn new_parser(framing: Framing, role: Role, limits: Limits) -> StreamParser {
    let mut p = StreamParser::new(limits);
    if framing == Framing::WebSocket {
        let header = format!(
            "<stream:stream xmlns='{}' xmlns:stream='{}'>",
            role.content_ns(),
            ns::STREAM
        );
        // A fixed, well-formed header: neither can fail, and the header event it gives
        // is not the client's.
        let _ = p.feed(header.as_bytes());
        let _ = p.next_event();
    }
    p
}

/// RFC 7395 sections 3.4 and 3.6: `<open/>` is the stream header, `<close/>` its end;
/// anything else is content. The end of the wrapper (a client writing
/// `</stream:stream>`) is no part of the framing.
fn unframe(ev: StreamEvent, role: Role) -> Result<StreamEvent, XmlError> {
    match ev {
        StreamEvent::Element(e) if e.ns == NS_FRAMING && e.name == "open" => {
            let attr = |n: &str| e.get_attr(n).map(str::to_string);
            Ok(StreamEvent::Header(StreamHeader {
                default_ns: role.content_ns().to_string(),
                to: attr("to"),
                from: attr("from"),
                id: attr("id"),
                version: attr("version"),
                lang: attr("xml:lang"),
            }))
        }
        StreamEvent::Element(e) if e.ns == NS_FRAMING && e.name == "close" => Ok(StreamEvent::End),
        StreamEvent::Element(e) => Ok(StreamEvent::Element(e)),
        StreamEvent::Header(_) | StreamEvent::End => Err(XmlError::NotWellFormed(
            "stream header or end tag in a WebSocket message".into(),
        )),
    }
}

/// SASL data in an element (RFC 6120 section 6.4.2): empty = none, `=` = zero-length,
/// else base64 (`Err` on bad encoding).
fn decode_sasl(text: &str) -> Result<Option<Vec<u8>>, ()> {
    let t: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match t.as_str() {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        _ => B64.decode(t.as_bytes()).map(Some).map_err(|_| ()),
    }
}

fn encode_sasl(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_string()
    } else {
        B64.encode(data)
    }
}
