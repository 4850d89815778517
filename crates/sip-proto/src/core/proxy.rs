//! The stateful proxy (RFC 3261 section 16): request validation, route pre-processing
//! and loose routing, the home-proxy location lookup with parallel forking, response
//! selection, CANCEL, Timer C, and stateless relaying of ACKs for 2xx.

use super::registrar::{aor_key, received_uri};
use super::*;

/// One request being proxied: its server transaction and the client branches.
pub(super) struct ProxyCtx {
    /// The request as received (after the Via fix-up), to build our own responses.
    request: Message,
    /// Where responses go (the server transaction's peer).
    from: Peer,
    pub(super) branches: Vec<BranchState>,
    best: Option<Message>,
    /// WWW-/Proxy-Authenticate of every 401/407 branch, merged into the one we send
    /// (section 16.7 step 7).
    challenges: Vec<Header>,
    pub(super) finished: bool,
    cancelled: bool,
    invite: bool,
    /// Generation of the armed Timer C (a re-armed timer makes older heap entries void).
    timer_c_gen: u64,
}

pub(super) struct BranchState {
    pub(super) client: ClientTxnId,
    provisional: bool,
    done: bool,
}

/// A request waiting for its next hop's DNS answer.
pub(super) struct PendingResolve {
    #[allow(dead_code)] // kept for debugging output; the deadline queue drives expiry
    since: Instant,
    id: ServerTxnId,
    req: Message,
    from: Peer,
    local: SocketAddr,
    ruri: Uri,
}

/// How long a DNS lookup may take before the request is answered 478.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to send one branch.
struct Target {
    ruri: Uri,
    /// Route values to push on top (a binding's Path, RFC 3327 section 5.3).
    routes: Vec<String>,
    dest: Peer,
}

impl Core {
    /// Every request enters here once it parsed.
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        unix: u64,
        mut req: Message,
        from: Peer,
        local: SocketAddr,
    ) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        *self
            .requests_by_method
            .entry(method.as_str().to_string())
            .or_default() += 1;
        if let Some(ua) = req.header(&HeaderName::UserAgent) {
            let ua = ua.to_ascii_lowercase();
            if self
                .cfg
                .drop_user_agents
                .iter()
                .any(|s| !s.is_empty() && ua.contains(&s.to_ascii_lowercase()))
            {
                // Scanners get nothing at all: no answer tells them a SIP server is here.
                self.stats.dropped_scanners += 1;
                return;
            }
        }
        fix_top_via(&mut req, &from);
        if method != Method::Register {
            // The registrar keeps the Contact as sent (and where it came from apart).
            fix_unreachable_contact(&mut req, &from);
        }
        let id = match self.txn.on_request(now, &req, from.clone()) {
            Incoming::New(id) => id,
            Incoming::Ack2xx => {
                self.forward_ack(now, req, local);
                return;
            }
            _ => return,
        };
        if method == Method::Cancel {
            self.on_cancel(now, id, req);
            return;
        }
        // Section 16.3: reasonable syntax, URI scheme, Max-Forwards, loops, Proxy-Require.
        let to_server = self.targets_server(&req);
        if let Some(Uri::Other { .. }) = req.uri() {
            self.reply(now, id, &req, 416, "Unsupported URI Scheme");
            return;
        }
        match req.max_forwards() {
            Some(0) if method == Method::Options && to_server => {
                self.options_reply(now, id, &req);
                return;
            }
            Some(0) => {
                self.reply(now, id, &req, 483, "Too Many Hops");
                return;
            }
            _ => {}
        }
        if self.is_loop(&req) {
            self.reply(now, id, &req, 482, "Loop Detected");
            return;
        }
        let proxy_require = req.values(&HeaderName::ProxyRequire);
        if !proxy_require.is_empty() {
            let mut r = self.make_response(&req, 420, "Bad Extension");
            r.set_header(HeaderName::Unsupported, proxy_require.join(", "));
            self.send_response(now, id, r);
            return;
        }
        if method == Method::Invite {
            // Section 16.2: a stateful proxy answers INVITE with 100 at once so the UAC
            // stops retransmitting.
            self.reply(now, id, &req, 100, "Trying");
            self.proxies
                .insert(id, ProxyCtx::new(req.clone(), from.clone()));
        }
        // Section 16.4: strict-routing previous hop put our URI in the Request-URI.
        let routes = req.name_addrs(&HeaderName::Route).unwrap_or_default();
        if self.uri_is_us(req.uri()) && !routes.is_empty() && method != Method::Register {
            if let Some(last) = routes.last() {
                req.set_uri(last.uri.clone());
                remove_last_route(&mut req);
            }
        }
        // Loose routing: pop every Route naming us (two when we double record-routed).
        let mut loose_routed = false;
        while let Some(top) = req
            .name_addrs(&HeaderName::Route)
            .ok()
            .and_then(|r| r.into_iter().next())
        {
            if !self.uri_is_us(Some(&top.uri)) {
                break;
            }
            req.remove_first_value(&HeaderName::Route);
            loose_routed = true;
        }
        let in_dialog = req
            .to_header()
            .and_then(|t| t.tag().map(str::to_string))
            .is_some();
        if in_dialog {
            if loose_routed || !req.values(&HeaderName::Route).is_empty() {
                self.forward_single(now, unix, id, req, from, local);
            } else if method == Method::Options && to_server {
                self.options_reply(now, id, &req);
            } else {
                // Kamailio's default config answers the same ("404 Not here").
                self.reply(now, id, &req, 404, "Not here");
            }
            return;
        }
        if method == Method::Register && self.ruri_domain_is_ours(&req) {
            self.on_register(now, unix, id, req, from, local);
            return;
        }
        if to_server {
            if method == Method::Options {
                self.options_reply(now, id, &req);
            } else {
                self.reply(now, id, &req, 404, "Not Found");
            }
            return;
        }
        // Requests from our own users must be authenticated (section 22.3: 407);
        // requests from elsewhere to our users are not (they are incoming calls).
        let from_ours = req.from_header().and_then(|f| {
            f.uri.as_sip().map(|u| {
                (
                    self.is_our_domain(&u.host),
                    u.user_unescaped().unwrap_or_default(),
                    u.host.clone(),
                )
            })
        });
        match from_ours {
            Some((true, user, domain))
                if !self.is_trusted(from.addr.ip()) && method != Method::Ack =>
            {
                self.authenticate(
                    now,
                    unix,
                    id,
                    req,
                    from,
                    local,
                    AuthKind::Proxy,
                    &user,
                    &domain,
                );
            }
            _ => self.route_initial(now, unix, id, req, from, local, false),
        }
    }

    /// A request for the server itself (no user part, our host): OPTIONS keep-alives.
    fn targets_server(&self, req: &Message) -> bool {
        match req.uri().and_then(Uri::as_sip) {
            Some(u) => u.user.is_none() && self.is_local_host(&u.host, u.port),
            None => false,
        }
    }

    fn ruri_domain_is_ours(&self, req: &Message) -> bool {
        req.uri()
            .and_then(Uri::as_sip)
            .is_some_and(|u| self.is_our_domain(&u.host))
    }

    fn uri_is_us(&self, uri: Option<&Uri>) -> bool {
        match uri.and_then(Uri::as_sip) {
            // A Record-Route we inserted has no user part and names a listener.
            Some(u) => {
                u.user.is_none()
                    && self.is_local_host(&u.host, u.port)
                    && (u.port.is_some() || u.params.contains("lr"))
            }
            None => false,
        }
    }

    fn options_reply(&mut self, now: Instant, id: ServerTxnId, req: &Message) {
        let mut r = self.make_response(req, 200, "OK");
        r.set_header(HeaderName::Allow, "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER, MESSAGE".into());
        r.set_header(HeaderName::Other("Accept".into()), "application/sdp".into());
        r.set_header(HeaderName::Supported, "path, outbound".into());
        self.send_response(now, id, r);
    }

    /// Section 16.3 step 4: a Via of ours whose branch carries this very request's loop
    /// hash means it came back unchanged (a spiral changes the Request-URI, so its hash).
    fn is_loop(&self, req: &Message) -> bool {
        let h = loop_hash(req);
        req.vias().iter().any(|v| {
            v.branch().is_some_and(|b| b.ends_with(&h)) && self.is_local_host(&v.host, v.port)
        })
    }

    /// Routing decision for an initial request (authenticated or not needing it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route_initial(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: Message,
        from: Peer,
        local: SocketAddr,
        authenticated: bool,
    ) {
        if self.proxies.get(&id).is_some_and(|c| c.cancelled) {
            return;
        }
        let trusted = self.is_trusted(from.addr.ip());
        let may_relay = trusted || (authenticated && self.cfg.allow_relay);
        // A pre-loaded route set (an outbound proxy beyond us): follow it.
        if let Some(top) = req
            .name_addrs(&HeaderName::Route)
            .ok()
            .and_then(|r| r.into_iter().next())
        {
            if !may_relay {
                self.reply(now, id, &req, 403, "Relaying Forbidden");
                return;
            }
            self.forward_to(now, unix, id, req, from, local, &top.uri);
            return;
        }
        let Some(ruri) = req.uri().and_then(Uri::as_sip).cloned() else {
            self.reply(now, id, &req, 416, "Unsupported URI Scheme");
            return;
        };
        if self.is_our_domain(&ruri.host) {
            let Some(user) = ruri.user_unescaped() else {
                self.reply(now, id, &req, 404, "Not Found");
                return;
            };
            let aor = aor_key(&user, &ruri.host);
            let mut bindings: Vec<Binding> = self
                .location
                .get(&aor)
                .iter()
                .filter(|b| b.expires > unix)
                .cloned()
                .collect();
            if bindings.is_empty() {
                self.reply(now, id, &req, 404, "Not Found");
                return;
            }
            bindings.sort_by_key(|b| std::cmp::Reverse(b.q));
            let targets: Vec<Target> = bindings.iter().filter_map(binding_target).collect();
            if targets.is_empty() {
                self.reply(now, id, &req, 480, "Temporarily Unavailable");
                return;
            }
            self.fork(now, unix, id, req, from, local, targets);
            return;
        }
        if !may_relay {
            self.reply(now, id, &req, 403, "Relaying Forbidden");
            return;
        }
        self.forward_to(now, unix, id, req, from, local, &Uri::Sip(ruri));
    }

    /// In-dialog request after loose routing: to the next Route, else the Request-URI.
    fn forward_single(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: Message,
        from: Peer,
        local: SocketAddr,
    ) {
        let next = req
            .name_addrs(&HeaderName::Route)
            .ok()
            .and_then(|r| r.into_iter().next())
            .map(|n| n.uri)
            .or_else(|| req.uri().cloned());
        if req.method() == Some(&Method::Invite) && !self.proxies.contains_key(&id) {
            self.proxies
                .insert(id, ProxyCtx::new(req.clone(), from.clone()));
        }
        match next {
            Some(next) => self.forward_to(now, unix, id, req, from, local, &next),
            None => self.reply(now, id, &req, 400, "No Route"),
        }
    }

    /// Sends `req` (Request-URI unchanged) towards `next_hop`: at once for an IP address,
    /// after an RFC 3263 lookup ([`Output::Resolve`]) for a host name.
    #[allow(clippy::too_many_arguments)]
    fn forward_to(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: Message,
        from: Peer,
        local: SocketAddr,
        next_hop: &Uri,
    ) {
        let ruri = req.uri().cloned().expect("request");
        if let Some(dest) = uri_peer(next_hop) {
            let t = Target {
                ruri,
                routes: vec![],
                dest,
            };
            self.fork(now, unix, id, req, from, local, vec![t]);
            return;
        }
        let Some(u) = next_hop.as_sip() else {
            self.reply(now, id, &req, 416, "Unsupported URI Scheme");
            return;
        };
        let transport = u.transport().and_then(|t| Transport::from_via_token(&t));
        let rid = self.next_resolve_id;
        self.next_resolve_id += 1;
        self.outputs.push_back(Output::Resolve {
            id: rid,
            host: u.host.clone(),
            port: u.port,
            transport,
            secure: u.secure,
        });
        self.resolving.insert(
            rid,
            PendingResolve {
                since: now,
                id,
                req,
                from,
                local,
                ruri,
            },
        );
        self.resolve_deadlines
            .push_back((now + RESOLVE_TIMEOUT, rid));
    }

    /// The answer to an [`Output::Resolve`]: destinations in preference order (RFC 3263
    /// section 4: SRV priority and weight already applied). The first one is used; none
    /// at all is 478, as Kamailio answers an unresolvable destination.
    pub(super) fn resolved_inner(&mut self, now: Instant, unix: u64, rid: u64, peers: Vec<Peer>) {
        let Some(p) = self.resolving.remove(&rid) else {
            return;
        };
        // The first destination we have a socket for (an AAAA answer is no use without an
        // IPv6 listener).
        let usable = |d: &Peer| {
            self.cfg
                .listeners
                .iter()
                .any(|l| l.transport == d.transport && l.addr.is_ipv4() == d.addr.is_ipv4())
        };
        match peers.into_iter().find(usable) {
            Some(dest) => {
                let t = Target {
                    ruri: p.ruri,
                    routes: vec![],
                    dest,
                };
                self.fork(now, unix, p.id, p.req, p.from, p.local, vec![t]);
            }
            None => self.reply(now, p.id, &p.req, 478, "Unresolvable Destination"),
        }
    }

    pub(super) fn expire_resolves(&mut self, now: Instant) {
        while let Some(&(at, rid)) = self.resolve_deadlines.front() {
            if at > now {
                break;
            }
            self.resolve_deadlines.pop_front();
            if let Some(p) = self.resolving.remove(&rid) {
                self.reply(now, p.id, &p.req, 478, "Unresolvable Destination");
            }
        }
    }

    /// Section 16.6 for every target, all at once (parallel forking).
    #[allow(clippy::too_many_arguments)]
    fn fork(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: Message,
        from: Peer,
        local: SocketAddr,
        targets: Vec<Target>,
    ) {
        let method = req.method().cloned().expect("request");
        let record_route = req.to_header().is_none_or(|t| t.tag().is_none())
            && matches!(
                method,
                Method::Invite
                    | Method::Subscribe
                    | Method::Refer
                    | Method::Notify
                    | Method::Update
                    | Method::Message
                    | Method::Options
                    | Method::Info
                    | Method::Publish
                    | Method::Other(_)
            );
        let inbound = self
            .cfg
            .listeners
            .iter()
            .find(|l| l.addr == local && l.transport == from.transport)
            .cloned();
        let hash = loop_hash(&req);
        let mut ctx = self
            .proxies
            .remove(&id)
            .unwrap_or_else(|| ProxyCtx::new(req.clone(), from.clone()));
        for t in targets {
            let Some(out) = self
                .listener_for(t.dest.transport, t.dest.addr.ip(), local)
                .cloned()
            else {
                continue;
            };
            let mut m = req.clone();
            m.set_uri(t.ruri);
            let mf = req
                .max_forwards()
                .map_or(MAX_FORWARDS, |m| m.saturating_sub(1));
            m.set_header(HeaderName::MaxForwards, mf.to_string());
            for r in t.routes.iter().rev() {
                m.push_front(HeaderName::Route, r.clone());
            }
            if record_route && method != Method::Register {
                // Double Record-Route when the two legs use different sockets, so each
                // side's in-dialog requests reach us on the right one (Kamailio r2).
                if let Some(inb) = &inbound {
                    if inb.addr != out.addr || inb.transport != out.transport {
                        m.push_front(HeaderName::RecordRoute, rr_value(inb));
                    }
                }
                m.push_front(HeaderName::RecordRoute, rr_value(&out));
            }
            let branch = format!("z9hG4bK{}.{}", self.random_hex(), hash);
            m.push_front(
                HeaderName::Via,
                format!(
                    "SIP/2.0/{} {};branch={branch};rport",
                    out.transport.via_token(),
                    listener_host(&out)
                ),
            );
            let dest = t.dest;
            let cid = self.txn.send_request(now, m, dest);
            self.branches.insert(cid, id);
            ctx.branches.push(BranchState {
                client: cid,
                provisional: false,
                done: false,
            });
        }
        if ctx.branches.is_empty() {
            self.proxies.insert(id, ctx);
            self.reply(now, id, &req, 503, "No Usable Transport");
            self.finish(now, id);
            return;
        }
        if ctx.invite {
            ctx.timer_c_gen += 1;
            self.timer_c.push(Reverse((
                now + self.cfg.invite_timeout,
                ctx.timer_c_gen,
                id,
            )));
        }
        let _ = unix;
        self.proxies.insert(id, ctx);
    }

    /// ACK for a 2xx: no transaction, relayed statelessly along the route set (section
    /// 16.11, RFC 3261 section 13.2.2.4).
    fn forward_ack(&mut self, _now: Instant, mut req: Message, local: SocketAddr) {
        while let Some(top) = req
            .name_addrs(&HeaderName::Route)
            .ok()
            .and_then(|r| r.into_iter().next())
        {
            if !self.uri_is_us(Some(&top.uri)) {
                break;
            }
            req.remove_first_value(&HeaderName::Route);
        }
        let next = req
            .name_addrs(&HeaderName::Route)
            .ok()
            .and_then(|r| r.into_iter().next())
            .map(|n| n.uri)
            .or_else(|| req.uri().cloned());
        let Some(dest) = next.as_ref().and_then(uri_peer) else {
            return;
        };
        if self.uri_is_us(next.as_ref()) || self.targets_server(&req) {
            return; // An ACK for a 2xx we generated ourselves: nothing to relay.
        }
        let Some(out) = self
            .listener_for(dest.transport, dest.addr.ip(), local)
            .cloned()
        else {
            return;
        };
        let mf = req
            .max_forwards()
            .map_or(MAX_FORWARDS, |m| m.saturating_sub(1));
        req.set_header(HeaderName::MaxForwards, mf.to_string());
        let branch = format!("z9hG4bK{}", self.random_hex());
        req.push_front(
            HeaderName::Via,
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                out.transport.via_token(),
                listener_host(&out)
            ),
        );
        self.outputs.push_back(Output::Transmit(Transmit {
            peer: dest,
            data: req.encode(),
        }));
    }

    /// Section 9.2 / 16.10: CANCEL answered 200 hop by hop, then every pending branch of
    /// the matching INVITE is cancelled; the INVITE itself ends with the 487 from
    /// downstream (or ours when nothing was forwarded yet).
    fn on_cancel(&mut self, now: Instant, id: ServerTxnId, req: Message) {
        let Some(inv) = self.txn.find_invite_for_cancel(&req) else {
            self.reply(now, id, &req, 481, "Call/Transaction Does Not Exist");
            return;
        };
        self.reply(now, id, &req, 200, "OK");
        let Some(ctx) = self.proxies.get_mut(&inv) else {
            return;
        };
        if ctx.finished || ctx.cancelled {
            return;
        }
        ctx.cancelled = true;
        let pending: Vec<ClientTxnId> = ctx
            .branches
            .iter()
            .filter(|b| !b.done)
            .map(|b| b.client)
            .collect();
        if ctx.branches.is_empty() {
            let invite = ctx.request.clone();
            self.reply(now, inv, &invite, 487, "Request Terminated");
            self.finish(now, inv);
            return;
        }
        for c in pending {
            self.txn.cancel(now, c);
        }
    }

    /// A response from downstream (section 16.7).
    pub(super) fn on_response(&mut self, now: Instant, unix: u64, msg: Message, from: Peer) {
        let Some(code) = msg.status() else { return };
        match self.txn.on_response_match(now, &msg, from.clone()) {
            ResponseMatch::Matched(cid, ev) => {
                let Some(&sid) = self.branches.get(&cid) else {
                    return;
                };
                match ev {
                    ResponseEvent::Provisional(m) => {
                        self.branch_provisional(now, sid, cid, m, &from)
                    }
                    ResponseEvent::Final(m) if (200..300).contains(&code) => {
                        self.branch_2xx(now, sid, cid, m, &from)
                    }
                    ResponseEvent::Final(m) => self.branch_final(now, unix, sid, cid, m),
                    ResponseEvent::Retransmitted2xx(m) => {
                        self.relay_2xx_retransmission(sid, m, &from)
                    }
                }
            }
            // Retransmitted finals (already re-ACKed) and answers to our own CANCELs.
            ResponseMatch::Absorbed => {}
            ResponseMatch::Stray => self.forward_stateless_response(msg),
        }
    }

    fn branch_provisional(
        &mut self,
        now: Instant,
        sid: ServerTxnId,
        cid: ClientTxnId,
        mut m: Message,
        from: &Peer,
    ) {
        let Some(ctx) = self.proxies.get_mut(&sid) else {
            return;
        };
        if let Some(b) = ctx.branches.iter_mut().find(|b| b.client == cid) {
            b.provisional = true;
        }
        if ctx.finished || m.status() == Some(100) {
            return;
        }
        if ctx.invite {
            // Section 16.7 step 2: a provisional response restarts Timer C.
            ctx.timer_c_gen += 1;
            let gen = ctx.timer_c_gen;
            self.timer_c
                .push(Reverse((now + self.cfg.invite_timeout, gen, sid)));
        }
        m.remove_first_value(&HeaderName::Via);
        fix_nated_contact(&mut m, from);
        self.send_response(now, sid, m);
    }

    fn branch_2xx(
        &mut self,
        now: Instant,
        sid: ServerTxnId,
        cid: ClientTxnId,
        mut m: Message,
        from: &Peer,
    ) {
        let Some(ctx) = self.proxies.get_mut(&sid) else {
            return;
        };
        if let Some(b) = ctx.branches.iter_mut().find(|b| b.client == cid) {
            b.done = true;
        }
        let others: Vec<ClientTxnId> = ctx
            .branches
            .iter()
            .filter(|b| !b.done)
            .map(|b| b.client)
            .collect();
        m.remove_first_value(&HeaderName::Via);
        fix_nated_contact(&mut m, from);
        if ctx.finished {
            // A 2xx from a second branch after the first: forwarded too (section 16.7
            // step 5), statelessly, as the server transaction is gone.
            let peer = ctx.from.clone();
            self.count_reply(200);
            self.outputs.push_back(Output::Transmit(Transmit {
                peer,
                data: m.encode(),
            }));
            return;
        }
        // Section 16.7 step 10: a 2xx ends every other branch.
        for c in others {
            self.txn.cancel(now, c);
        }
        self.send_response(now, sid, m);
        self.finish(now, sid);
    }

    fn relay_2xx_retransmission(&mut self, sid: ServerTxnId, mut m: Message, from: &Peer) {
        let Some(ctx) = self.proxies.get(&sid) else {
            return;
        };
        let peer = ctx.from.clone();
        m.remove_first_value(&HeaderName::Via);
        fix_nated_contact(&mut m, from);
        self.outputs.push_back(Output::Transmit(Transmit {
            peer,
            data: m.encode(),
        }));
    }

    fn branch_final(
        &mut self,
        now: Instant,
        _unix: u64,
        sid: ServerTxnId,
        cid: ClientTxnId,
        mut m: Message,
    ) {
        let Some(ctx) = self.proxies.get_mut(&sid) else {
            return;
        };
        if let Some(b) = ctx.branches.iter_mut().find(|b| b.client == cid) {
            b.done = true;
        }
        let code = m.status().unwrap_or(500);
        m.remove_first_value(&HeaderName::Via);
        if code == 401 || code == 407 {
            for h in &m.headers {
                if matches!(
                    h.name,
                    HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate
                ) {
                    ctx.challenges.push(h.clone());
                }
            }
        }
        if ctx
            .best
            .as_ref()
            .is_none_or(|b| rank(code) < rank(b.status().unwrap_or(500)))
        {
            ctx.best = Some(m);
        }
        let six = (600..700).contains(&code);
        let pending: Vec<ClientTxnId> = ctx
            .branches
            .iter()
            .filter(|b| !b.done)
            .map(|b| b.client)
            .collect();
        if six {
            // Section 16.7 step 10 again: a 6xx ends the search.
            for c in &pending {
                self.txn.cancel(now, *c);
            }
        }
        if pending.is_empty() || six {
            self.send_best(now, sid);
        }
    }

    /// Section 16.7 step 6-7: the best final response once every branch is done.
    fn send_best(&mut self, now: Instant, sid: ServerTxnId) {
        let Some(ctx) = self.proxies.get_mut(&sid) else {
            return;
        };
        if ctx.finished {
            return;
        }
        let mut best = match ctx.best.take() {
            Some(b) => b,
            None => {
                let req = ctx.request.clone();
                self.make_response(&req, 408, "Request Timeout")
            }
        };
        let Some(ctx) = self.proxies.get_mut(&sid) else {
            return;
        };
        if best.status() == Some(503) {
            // A 503 from downstream would make the UAC blame *us* (section 16.7 step 6).
            best.start = crate::message::StartLine::Response {
                code: 500,
                reason: "Server Internal Error".into(),
            };
        }
        if matches!(best.status(), Some(401) | Some(407)) {
            best.headers.retain(|h| {
                !matches!(
                    h.name,
                    HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate
                )
            });
            best.headers.append(&mut ctx.challenges);
        }
        self.send_response(now, sid, best);
        self.finish(now, sid);
    }

    /// A client transaction timed out (Timer B/F: 408) or its transport failed (503).
    pub(super) fn branch_failed(
        &mut self,
        now: Instant,
        unix: u64,
        cid: ClientTxnId,
        code: u16,
        reason: &str,
    ) {
        let Some(&sid) = self.branches.get(&cid) else {
            return;
        };
        let Some(ctx) = self.proxies.get(&sid) else {
            return;
        };
        let req = ctx.request.clone();
        let mut r = self.make_response(&req, code, reason);
        // branch_final pops a Via; give it one to pop.
        r.push_front(HeaderName::Via, "SIP/2.0/UDP timeout.invalid".into());
        self.branch_final(now, unix, sid, cid, r);
    }

    pub(super) fn fire_timer_c(&mut self, now: Instant, sid: ServerTxnId) {
        // Lazy heap: only the newest generation counts.
        let _ = now;
        let Some(ctx) = self.proxies.get_mut(&sid) else {
            return;
        };
        if ctx.finished {
            return;
        }
        let pending: Vec<ClientTxnId> = ctx
            .branches
            .iter()
            .filter(|b| !b.done)
            .map(|b| b.client)
            .collect();
        for b in ctx.branches.iter_mut() {
            b.done = true;
        }
        for c in pending {
            self.txn.cancel(now, c);
        }
        self.send_best(now, sid);
    }

    /// Marks a context answered; contexts linger for 2xx retransmissions.
    pub(super) fn finish(&mut self, now: Instant, sid: ServerTxnId) {
        if let Some(ctx) = self.proxies.get_mut(&sid) {
            if ctx.finished {
                return;
            }
            ctx.finished = true;
            self.lingering.push_back((now + LINGER, sid));
        }
    }

    /// A response no transaction claims (a late 2xx): section 16.7 / 16.11, relayed by
    /// its Via if the top one is ours.
    fn forward_stateless_response(&mut self, mut msg: Message) {
        let vias = msg.vias();
        let Some(top) = vias.first() else { return };
        if !self.is_local_host(&top.host, top.port) {
            return;
        }
        msg.remove_first_value(&HeaderName::Via);
        let Some(next) = msg.top_via() else { return };
        let Some(transport) = Transport::from_via_token(&next.transport) else {
            return;
        };
        let host = next
            .received()
            .map(str::to_string)
            .unwrap_or_else(|| next.host.clone());
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return;
        };
        let port = next.rport().flatten().or(next.port).unwrap_or(5060);
        let dest = Peer {
            transport,
            addr: SocketAddr::new(ip, port),
            conn: None,
        };
        self.outputs.push_back(Output::Transmit(Transmit {
            peer: dest,
            data: msg.encode(),
        }));
    }
}

impl ProxyCtx {
    fn new(request: Message, from: Peer) -> ProxyCtx {
        let invite = request.method() == Some(&Method::Invite);
        ProxyCtx {
            request,
            from,
            branches: Vec::new(),
            best: None,
            challenges: Vec::new(),
            finished: false,
            cancelled: false,
            invite,
            timer_c_gen: 0,
        }
    }
}

/// Section 16.7 step 6 preference: 6xx first, then the lowest class; within 4xx the
/// ones a UAC can act on (401, 407, 415, 420, 484) first.
fn rank(code: u16) -> u32 {
    let class = u32::from(code / 100);
    if class == 6 {
        return 0;
    }
    let bonus = match code {
        401 | 407 | 415 | 420 | 484 => 0,
        408 => 2,
        _ => 1,
    };
    class * 10 + bonus
}

/// RFC 3581 section 4 / RFC 3261 section 18.2.1: note where a request really came from,
/// so responses find their way back through NAT.
fn fix_top_via(req: &mut Message, from: &Peer) {
    let Some(mut via) = req.top_via() else { return };
    let ip = from.addr.ip().to_string();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let mut changed = false;
    if host != ip {
        via.params.set("received", Some(&ip));
        changed = true;
    }
    if via.params.get("rport") == Some(None) {
        via.params.set("rport", Some(&from.addr.port().to_string()));
        changed = true;
    }
    if changed {
        req.remove_first_value(&HeaderName::Via);
        req.push_front(HeaderName::Via, via.to_string());
    }
}

/// Kamailio's fix_nated_contact: a Contact naming a private address that is not where
/// the message came from is rewritten to the source, so the other side's in-dialog
/// requests reach the UA through its NAT. A Contact on an unreachable host is rewritten
/// too ([`fix_unreachable_contact`]).
fn fix_nated_contact(msg: &mut Message, from: &Peer) {
    let Some(mut c) = single_contact(msg) else {
        return;
    };
    let Uri::Sip(u) = &mut c.uri else { return };
    if contact_to_connection(u, from) {
        msg.set_header(HeaderName::Contact, c.to_string());
        return;
    }
    let Ok(ip) = u
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return;
    };
    if !is_private(ip) || SocketAddr::new(ip, u.port.unwrap_or(5060)) == from.addr {
        return;
    }
    u.host = match from.addr.ip() {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    };
    u.port = Some(from.addr.port());
    msg.set_header(HeaderName::Contact, c.to_string());
}

/// A request's Contact on a host nobody can reach ([`contact_to_connection`]) is
/// rewritten to the connection it came over, so the requests of the dialog the other side
/// sends back reach the UA.
fn fix_unreachable_contact(msg: &mut Message, from: &Peer) {
    let Some(mut c) = single_contact(msg) else {
        return;
    };
    let Uri::Sip(u) = &mut c.uri else { return };
    if contact_to_connection(u, from) {
        msg.set_header(HeaderName::Contact, c.to_string());
    }
}

/// The one Contact of a message (dialog-creating requests and their responses have one).
fn single_contact(msg: &Message) -> Option<NameAddr> {
    let Ok(Some(Contacts::List(list))) = msg.contacts() else {
        return None;
    };
    let mut list = list.into_iter();
    let first = list.next()?;
    list.next().is_none().then_some(first)
}

/// A UA that cannot listen (a browser on WebSocket, RFC 7118) puts a `.invalid` host in
/// its Contact, a name that never resolves (RFC 6761 section 6.4): it is reachable only
/// over the connection its messages arrive on. The URI is pointed at that connection's
/// address and transport, which the daemon maps back to the open connection (RFC 3261
/// section 18.1.1 reuse), as Kamailio's add_contact_alias does for such clients. Returns
/// whether `u` was changed; any other host is left alone.
fn contact_to_connection(u: &mut crate::uri::SipUri, from: &Peer) -> bool {
    let invalid = u
        .host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.eq_ignore_ascii_case("invalid"));
    if !invalid || !from.transport.is_reliable() {
        return false;
    }
    u.host = match from.addr.ip() {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    };
    u.port = Some(from.addr.port());
    let token = from.transport.via_token().to_ascii_lowercase();
    u.params.set("transport", Some(&token));
    true
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_private() || (v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64),
        IpAddr::V6(v) => (v.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The part of our branch that identifies the request for loop detection (section 16.6
/// step 8): the fields a spiral changes, hashed.
fn loop_hash(req: &Message) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        for b in s.bytes().chain(std::iter::once(0)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    eat(&req.uri().map(|u| u.to_string()).unwrap_or_default());
    eat(req.call_id().unwrap_or(""));
    eat(&req.cseq().map(|c| c.seq.to_string()).unwrap_or_default());
    eat(&req
        .from_header()
        .and_then(|f| f.tag().map(str::to_string))
        .unwrap_or_default());
    eat(&req
        .to_header()
        .and_then(|f| f.tag().map(str::to_string))
        .unwrap_or_default());
    eat(&req.values(&HeaderName::ProxyRequire).join(","));
    format!("{h:016x}")
}

fn listener_host(l: &Listener) -> String {
    match &l.advertise {
        Some(a) if a.contains(':') && !a.ends_with(']') => a.clone(),
        Some(a) => format!("{a}:{}", l.addr.port()),
        None => super::registrar::sockaddr_text(l.addr),
    }
}

fn rr_value(l: &Listener) -> String {
    let t = match l.transport {
        Transport::Udp => String::new(),
        t => format!(";transport={}", t.via_token().to_ascii_lowercase()),
    };
    format!("<sip:{}{t};lr>", listener_host(l))
}

/// Removes the last Route value (strict-router pre-processing, section 16.4).
fn remove_last_route(req: &mut Message) {
    let mut all = req.values(&HeaderName::Route);
    all.pop();
    req.remove_headers(&HeaderName::Route);
    for v in all.into_iter().rev() {
        req.push_front(HeaderName::Route, v);
    }
}

/// Next hop of a URI with an IP literal host (RFC 3263 section 4 for the transport and
/// default port); a host name goes out as an [`Output::Resolve`] instead.
pub(super) fn uri_peer(uri: &Uri) -> Option<Peer> {
    let u = uri.as_sip()?;
    let ip: IpAddr = u
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let transport = Transport::for_uri(u.transport().as_deref(), u.secure);
    let port = u.port.unwrap_or(transport.default_port());
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
        conn: None,
    })
}

/// Where to send a request for a binding: its live connection, else the first Path
/// hop, else where the REGISTER came from (NAT), else the contact itself.
fn binding_target(b: &Binding) -> Option<Target> {
    let ruri = Uri::parse(&b.contact).ok()?;
    let routes: Vec<String> = b
        .path
        .as_deref()
        .map(|p| {
            p.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut dest = if let Some(first) = routes.first() {
        let na = NameAddr::parse(first).ok()?;
        uri_peer(&na.uri)?
    } else if let Some(r) = &b.received {
        uri_peer(&Uri::parse(r).ok()?)?
    } else {
        uri_peer(&ruri)?
    };
    if routes.is_empty() {
        dest.conn = b.conn;
    }
    let _ = received_uri;
    Some(Target { ruri, routes, dest })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a `.invalid` Contact on a connection is pointed at the connection; addresses
    /// and resolvable names stay as the UA wrote them.
    #[test]
    fn unreachable_contacts_point_at_their_connection() {
        let msg = |contact: &str| {
            let text = format!(
                "INVITE sip:bob@sip.test SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1\r\n\
                 From: <sip:alice@sip.test>;tag=1\r\nTo: <sip:bob@sip.test>\r\nCall-ID: c1\r\n\
                 CSeq: 1 INVITE\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(text.as_bytes(), &crate::message::Limits::default()).unwrap()
        };
        let peer = |transport: Transport| Peer {
            transport,
            addr: "198.51.100.9:51000".parse().unwrap(),
            conn: Some(3),
        };
        let fixed = |contact: &str, transport: Transport| {
            let mut m = msg(contact);
            fix_unreachable_contact(&mut m, &peer(transport));
            m.header(&HeaderName::Contact).unwrap().to_string()
        };
        assert_eq!(
            fixed(
                "<sip:alice@df7jal23ls0d.invalid;transport=ws;ob>",
                Transport::Wss
            ),
            "<sip:alice@198.51.100.9:51000;ob;transport=wss>"
        );
        assert_eq!(
            fixed(
                "<sip:alice@DF7JAL23LS0D.INVALID;transport=ws>",
                Transport::Ws
            ),
            "<sip:alice@198.51.100.9:51000;transport=ws>"
        );
        for (contact, transport) in [
            (
                "<sip:alice@df7jal23ls0d.invalid;transport=ws>",
                Transport::Udp,
            ),
            (
                "<sip:alice@192.168.1.20:5060;transport=tcp>",
                Transport::Tcp,
            ),
            ("<sip:alice@pc.example.com;transport=tls>", Transport::Tls),
        ] {
            assert_eq!(fixed(contact, transport), contact);
        }
    }

    #[test]
    fn ranks() {
        assert!(rank(603) < rank(200));
        assert!(rank(486) < rank(500));
        assert!(rank(407) < rank(404));
        assert!(rank(404) < rank(408));
        assert!(rank(302) < rank(404));
    }
}
