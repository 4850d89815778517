//! The registrar (RFC 3261 section 10.3) and the in-memory location table it keeps:
//! Path (RFC 3327), Outbound's instance/reg-id bindings (RFC 5626 section 6), and the
//! NAT fix-up (received address, connection reuse) that lets sipd reach UAs behind NAT.

use super::*;

/// Every binding by AOR (`user@domain`, lower-case domain), plus the connections they
/// were registered over and an expiry index.
///
/// Memory matters here (the registrar holds every contact of the organisation): the AOR
/// string is shared by the map, the expiry index and the connection index, each AOR's
/// bindings sit in a vector of exactly their number, and the expiry index has one entry
/// per AOR (its earliest expiry), replaced rather than added to on every refresh.
#[derive(Default)]
pub(super) struct Location {
    by_aor: HashMap<Arc<str>, Vec<Binding>>,
    by_conn: HashMap<ConnId, HashSet<Arc<str>>>,
    /// (earliest expiry among the AOR's bindings, AOR).
    expiry: BTreeSet<(u64, Arc<str>)>,
    count: usize,
}

pub(super) fn aor_key(user: &str, domain: &str) -> String {
    format!("{user}@{}", domain.to_ascii_lowercase())
}

impl Location {
    pub(super) fn len(&self) -> usize {
        self.count
    }

    pub(super) fn insert(&mut self, b: Binding) {
        let aor = aor_key(&b.username, &b.domain);
        let mut list = self.get(&aor).to_vec();
        list.retain(|x| x.ruid != b.ruid);
        list.push(b);
        self.set(&aor, list);
    }

    pub(super) fn get(&self, aor: &str) -> &[Binding] {
        self.by_aor.get(aor).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(super) fn find_ruid(&self, ruid: &str) -> Option<&Binding> {
        self.by_aor.values().flatten().find(|b| b.ruid == ruid)
    }

    /// Replaces an AOR's bindings, keeping the indexes right.
    pub(super) fn set(&mut self, aor: &str, mut list: Vec<Binding>) {
        let key: Arc<str> = match self.by_aor.remove_entry(aor) {
            Some((key, old)) => {
                self.count -= old.len();
                if let Some(first) = old.iter().map(|b| b.expires).min() {
                    self.expiry.remove(&(first, key.clone()));
                }
                for b in &old {
                    if let Some(c) = b.conn {
                        if let Some(set) = self.by_conn.get_mut(&c) {
                            set.remove(aor);
                            if set.is_empty() {
                                self.by_conn.remove(&c);
                            }
                        }
                    }
                }
                key
            }
            None => Arc::from(aor),
        };
        if list.is_empty() {
            return;
        }
        list.shrink_to_fit();
        self.count += list.len();
        for b in &list {
            if let Some(c) = b.conn {
                self.by_conn.entry(c).or_default().insert(key.clone());
            }
        }
        if let Some(first) = list.iter().map(|b| b.expires).min() {
            self.expiry.insert((first, key.clone()));
        }
        self.by_aor.insert(key, list);
    }

    /// The connection is gone: its bindings stay (routed by their received address from
    /// now on) but must not point at a dead connection id.
    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        for aor in self.by_conn.remove(&conn).unwrap_or_default() {
            if let Some(list) = self.by_aor.get_mut(&aor) {
                for b in list.iter_mut().filter(|b| b.conn == Some(conn)) {
                    b.conn = None;
                }
            }
        }
    }

    /// Removes every binding expired at `unix`, except those of AORs for which `busy` is
    /// true; returns the removed ones.
    pub(super) fn expire(&mut self, unix: u64, busy: impl Fn(&str) -> bool) -> Vec<Binding> {
        let due: Vec<Arc<str>> = self
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= unix)
            .map(|(_, aor)| aor.clone())
            .filter(|aor| !busy(aor))
            .collect();
        let mut gone = Vec::new();
        for aor in due {
            let (dead, live): (Vec<Binding>, Vec<Binding>) = self
                .get(&aor)
                .iter()
                .cloned()
                .partition(|b| b.expires <= unix);
            // `set` replaces this AOR's index entry with its next expiry (or none).
            self.set(&aor, live);
            gone.extend(dead);
        }
        gone
    }
}

impl Core {
    /// REGISTER for one of our domains: checks the AOR, then authenticates (401).
    pub(super) fn on_register(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: Message,
        from: Peer,
        local: SocketAddr,
    ) {
        let Some(to) = req.to_header() else {
            self.reply(now, id, &req, 400, "Bad To header");
            return;
        };
        let Some(uri) = to.uri.as_sip() else {
            self.reply(now, id, &req, 404, "Not Found");
            return;
        };
        // Section 10.3 step 3: the AOR must belong to a domain we serve.
        if !self
            .cfg
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&uri.host))
        {
            self.reply(now, id, &req, 404, "Not Found");
            return;
        }
        let Some(user) = uri.user_unescaped() else {
            self.reply(now, id, &req, 400, "Bad To header: no user");
            return;
        };
        // Section 10.3 step 2: extensions we do not support in Require get 420.
        if let Some(bad) = self.unsupported_required(&req) {
            let mut r = self.make_response(&req, 420, "Bad Extension");
            r.set_header(HeaderName::Unsupported, bad);
            self.send_response(now, id, r);
            return;
        }
        if self.is_trusted(from.addr.ip()) && req.header(&HeaderName::Authorization).is_none() {
            // Trusted peers (PBXs, trunks) register without digest, like Kamailio's
            // allow_trusted() in front of www_authorize.
            self.register_authenticated(now, unix, id, req, from, local);
            return;
        }
        let domain = uri.host.clone();
        self.authenticate(
            now,
            unix,
            id,
            req,
            from,
            local,
            AuthKind::Www,
            &user,
            &domain,
        );
    }

    fn unsupported_required(&self, req: &Message) -> Option<String> {
        const KNOWN: [&str; 2] = ["path", "outbound"];
        let bad: Vec<String> = req
            .values(&HeaderName::Require)
            .into_iter()
            .filter(|o| !KNOWN.iter().any(|k| k.eq_ignore_ascii_case(o)))
            .collect();
        (!bad.is_empty()).then(|| bad.join(", "))
    }

    /// Steps 6-8 of section 10.3 once the REGISTER is authenticated.
    pub(super) fn register_authenticated(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: Message,
        from: Peer,
        local: SocketAddr,
    ) {
        let Some((user, domain)) = req.to_header().and_then(|t| {
            t.uri.as_sip().map(|u| {
                (
                    u.user_unescaped().unwrap_or_default(),
                    u.host.to_ascii_lowercase(),
                )
            })
        }) else {
            self.reply(now, id, &req, 400, "Bad To header");
            return;
        };
        let aor = aor_key(&user, &domain);
        if let Some(waiting) = self.registering.get_mut(&aor) {
            // The AOR's previous change is not committed yet; computing this one from
            // memory now could build on a change that then fails.
            waiting.push_back(QueuedRegister {
                id,
                req,
                from,
                local,
            });
            return;
        }
        let contacts = match req.contacts() {
            Ok(c) => c,
            Err(_) => {
                self.reply(now, id, &req, 400, "Bad Contact header");
                return;
            }
        };
        let header_expires = match req.expires() {
            Ok(e) => e,
            Err(_) => {
                self.reply(now, id, &req, 400, "Bad Expires header");
                return;
            }
        };
        let call_id = req.call_id().unwrap_or("").to_string();
        let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
        let current: Vec<Binding> = self
            .location
            .get(&aor)
            .iter()
            .filter(|b| b.expires > unix)
            .cloned()
            .collect();
        let mut next = current.clone();
        let mut ops = Vec::new();
        let mut outbound = false;
        match contacts {
            None => {}
            Some(Contacts::Star) => {
                // Section 10.3 step 6: "*" only with Expires: 0 and alone.
                if header_expires != Some(0) || req.values(&HeaderName::Contact).len() != 1 {
                    self.reply(now, id, &req, 400, "Invalid Contact: *");
                    return;
                }
                next.retain(|b| b.call_id == call_id && b.cseq >= cseq);
            }
            Some(Contacts::List(list)) => {
                let source = received_uri(&from);
                let socket = format!(
                    "{}:{}",
                    from.transport.via_token().to_ascii_lowercase(),
                    sockaddr_text(local)
                );
                let path = {
                    let p = req.values(&HeaderName::Path);
                    (!p.is_empty()).then(|| p.join(","))
                };
                let user_agent = req.header(&HeaderName::UserAgent).unwrap_or("").to_string();
                for c in list {
                    let expires = match c.params.get("expires") {
                        Some(Some(v)) => v.parse::<u32>().unwrap_or(self.cfg.default_expires),
                        _ => header_expires.unwrap_or(self.cfg.default_expires),
                    };
                    if expires != 0 && expires < self.cfg.min_expires {
                        // Section 10.3 step 7: too brief -> 423 with our minimum.
                        let mut r = self.make_response(&req, 423, "Interval Too Brief");
                        r.set_header(HeaderName::MinExpires, self.cfg.min_expires.to_string());
                        self.send_response(now, id, r);
                        return;
                    }
                    let expires = expires.min(self.cfg.max_expires);
                    let instance = c
                        .params
                        .get("+sip.instance")
                        .flatten()
                        .map(|s| s.trim_matches('"').to_string());
                    let reg_id = c
                        .params
                        .get("reg-id")
                        .flatten()
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(0);
                    if instance.is_some() && reg_id > 0 {
                        outbound = true;
                    }
                    let contact = c.uri.to_string();
                    let q = match c.params.get("q") {
                        Some(Some(v)) => parse_q(v).unwrap_or(1000),
                        _ => 1000,
                    };
                    let pos = next.iter().position(|b| match (&instance, reg_id) {
                        (Some(i), r) if r > 0 => {
                            b.instance.as_deref() == Some(i.as_str()) && b.reg_id == r
                        }
                        _ => same_contact(&b.contact, &c.uri),
                    });
                    if let Some(p) = pos {
                        let b = &next[p];
                        if b.call_id == call_id && b.cseq >= cseq {
                            // Step 7: an older or repeated CSeq of the same Call-ID must
                            // not overwrite the binding.
                            self.reply(now, id, &req, 400, "Stale CSeq");
                            return;
                        }
                        if expires == 0 {
                            next.remove(p);
                            continue;
                        }
                    } else if expires == 0 {
                        continue;
                    }
                    let received = (!contact_matches_source(&c.uri, &from)).then(|| source.clone());
                    let ruid = match pos {
                        Some(p) => next[p].ruid.clone(),
                        None => format!("sipd-{}", self.random_hex()),
                    };
                    let b = Binding {
                        ruid,
                        username: user.clone(),
                        domain: domain.clone(),
                        contact,
                        received,
                        path: path.clone(),
                        expires: unix + u64::from(expires),
                        q,
                        call_id: call_id.clone(),
                        cseq,
                        user_agent: user_agent.clone(),
                        socket: Some(socket.clone()),
                        instance,
                        reg_id,
                        last_modified: unix,
                        conn: if from.transport.is_reliable() {
                            from.conn
                        } else {
                            None
                        },
                    };
                    match pos {
                        Some(p) => next[p] = b,
                        None => next.push(b),
                    }
                }
                if self.cfg.max_contacts > 0 && next.len() > self.cfg.max_contacts {
                    self.reply(now, id, &req, 503, "Too Many Registered Contacts");
                    return;
                }
            }
        }
        for old in &current {
            match next.iter().find(|b| b.ruid == old.ruid) {
                None => ops.push(BindingOp::Delete {
                    ruid: old.ruid.clone(),
                }),
                Some(b) if b != old => ops.push(BindingOp::Upsert(Box::new(b.clone()))),
                Some(_) => {}
            }
        }
        for b in &next {
            if !current.iter().any(|o| o.ruid == b.ruid) {
                ops.push(BindingOp::Upsert(Box::new(b.clone())));
            }
        }
        // Section 10.3 step 8: 200 with every current binding and its remaining time.
        let mut r = self.make_response(&req, 200, "OK");
        for b in &next {
            let mut v = format!("<{}>;expires={}", b.contact, b.expires.saturating_sub(unix));
            if b.q != 1000 {
                v.push_str(&format!(";q={}", format_q(b.q)));
            }
            if let Some(i) = &b.instance {
                v.push_str(&format!(";+sip.instance=\"{i}\""));
            }
            if b.reg_id > 0 {
                v.push_str(&format!(";reg-id={}", b.reg_id));
            }
            r.headers.push(Header {
                name: HeaderName::Contact,
                value: v,
            });
        }
        for p in req.values(&HeaderName::Path) {
            r.headers.push(Header {
                name: HeaderName::Path,
                value: p,
            });
        }
        if outbound {
            // RFC 5626 section 6: the registrar tells the UA it applied outbound.
            r.headers.push(Header {
                name: HeaderName::Require,
                value: "outbound".into(),
            });
        }
        r.headers.push(Header {
            name: HeaderName::Date,
            value: http_date(unix),
        });
        if ops.is_empty() {
            self.location.set(&aor, next);
            self.send_response(now, id, r);
            return;
        }
        let store_id = self.next_store_id;
        self.next_store_id += 1;
        self.registering.insert(aor.clone(), VecDeque::new());
        self.held.insert(
            store_id,
            HeldReply {
                id,
                response: r,
                aor,
                bindings: next,
            },
        );
        self.outputs.push_back(Output::Store { id: store_id, ops });
    }

    /// The store of a REGISTER's binding changes finished: install them (committed) or
    /// answer 500 (not stored, memory untouched), then run the REGISTERs that queued
    /// behind it for the same AOR.
    pub(super) fn finish_register(&mut self, now: Instant, unix: u64, store_id: u64, ok: bool) {
        let Some(h) = self.held.remove(&store_id) else {
            // A purge of expired bindings: memory dropped them already.
            return;
        };
        if ok {
            self.location.set(&h.aor, h.bindings);
            self.send_response(now, h.id, h.response);
        } else {
            let req = self.txn.server_txn_request(h.id).cloned();
            if let Some(req) = req {
                let r = self.make_response(&req, 500, "Location Store Failed");
                self.send_response(now, h.id, r);
            }
        }
        let mut waiting = self.registering.remove(&h.aor).unwrap_or_default();
        while let Some(q) = waiting.pop_front() {
            self.register_authenticated(now, unix, q.id, q.req, q.from, q.local);
            if let Some(queue) = self.registering.get_mut(&h.aor) {
                // That one is in flight now; the rest wait for it.
                queue.extend(waiting);
                break;
            }
        }
    }

    pub(super) fn expire_bindings(&mut self, unix: u64) {
        // An AOR with a change in flight is left alone: its refresh keeps the binding's
        // ruid, and a Delete queued behind the refresh's Upsert would remove the row the
        // UA was just told is registered. It expires at the next tick if that change
        // fails; if it commits, it installs the bindings with their new expiry.
        let registering = &self.registering;
        let gone = self
            .location
            .expire(unix, |aor| registering.contains_key(aor));
        if gone.is_empty() {
            return;
        }
        let id = self.next_store_id;
        self.next_store_id += 1;
        let ops = gone
            .into_iter()
            .map(|b| BindingOp::Delete { ruid: b.ruid })
            .collect();
        self.outputs.push_back(Output::Store { id, ops });
    }
}

/// Whether a Contact already names the address the REGISTER came from (no NAT between).
/// Over TCP/TLS only the address counts: a client connects from an ephemeral port and
/// names its listening port in the Contact, which is not a sign of NAT.
fn contact_matches_source(uri: &Uri, from: &Peer) -> bool {
    let Some(u) = uri.as_sip() else { return true };
    let host = u.host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = host.parse::<IpAddr>() else {
        return false;
    };
    let port = u.port.unwrap_or(if u.secure { 5061 } else { 5060 });
    ip == from.addr.ip() && (from.transport.is_reliable() || port == from.addr.port())
}

fn same_contact(stored: &str, uri: &Uri) -> bool {
    match (Uri::parse(stored), uri) {
        (Ok(Uri::Sip(a)), Uri::Sip(b)) => a.equivalent(b),
        (Ok(a), b) => a.to_string() == b.to_string(),
        (Err(_), b) => stored == b.to_string(),
    }
}

pub(super) fn sockaddr_text(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

/// Kamailio's `received` value: where the REGISTER really came from.
pub(super) fn received_uri(from: &Peer) -> String {
    let base = format!("sip:{}", sockaddr_text(from.addr));
    match from.transport {
        Transport::Udp => base,
        t => format!("{base};transport={}", t.via_token().to_ascii_lowercase()),
    }
}

/// `q` (RFC 3261 section 20.10 qvalue) as thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let f: f32 = v.parse().ok()?;
    (0.0..=1.0)
        .contains(&f)
        .then(|| (f * 1000.0).round() as u16)
}

fn format_q(q: u16) -> String {
    let s = format!("{}.{:03}", q / 1000, q % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// RFC 1123 date for the Date header (RFC 3261 section 20.17), from Unix seconds.
pub(super) fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_795_693_000), "Thu, 26 Nov 2026 11:36:40 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(1000), "1");
        assert_eq!(format_q(125), "0.125");
    }
}
