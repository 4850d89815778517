//! Digest authentication of requests (RFC 3261 section 22, RFC 7616, RFC 8760 for
//! SHA-256): challenges, parking a request while the subscriber's HA1 is fetched, and
//! verification. An unknown user and a wrong password get the very same answer (a new
//! challenge), so accounts cannot be enumerated.

use super::*;

impl Core {
    /// Starts or finishes digest authentication of `req` against `domain` (the realm).
    /// Either answers (challenge, 403) or parks the request until
    /// [`Core::handle_credentials`]; the caller does nothing more with it.
    #[allow(clippy::too_many_arguments)] // the request's whole context, passed through once
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: Message,
        from: Peer,
        local: SocketAddr,
        kind: AuthKind,
        identity: &str,
        domain: &str,
    ) {
        let header = match kind {
            AuthKind::Www => HeaderName::Authorization,
            AuthKind::Proxy => HeaderName::ProxyAuthorization,
        };
        let creds = req
            .headers
            .iter()
            .filter(|h| h.name == header)
            .filter_map(|h| parse_digest(&h.value))
            .find(|d| d.realm.eq_ignore_ascii_case(domain));
        let Some(auth) = creds else {
            self.challenge(now, unix, id, &req, kind, domain, false);
            return;
        };
        match self.nonces.check(&auth.nonce, unix) {
            NonceState::Bogus => {
                self.stats.auth_failures += 1;
                self.challenge(now, unix, id, &req, kind, domain, false);
                return;
            }
            NonceState::Stale => {
                self.challenge(now, unix, id, &req, kind, domain, true);
                return;
            }
            NonceState::Fresh => {}
        }
        if !self.cfg.algorithms.contains(&auth.algorithm)
            || auth.qop.as_deref().is_some_and(|q| q != "auth")
        {
            self.stats.auth_failures += 1;
            self.challenge(now, unix, id, &req, kind, domain, false);
            return;
        }
        // The authenticated user must be the one the request speaks for (Kamailio's
        // auth_check / check_to, check_from): nobody registers or calls as someone else.
        if !auth.username.eq_ignore_ascii_case(identity) {
            self.stats.auth_failures += 1;
            self.reply(now, id, &req, 403, "Forbidden auth ID");
            return;
        }
        let key = (auth.username.clone(), domain.to_ascii_lowercase());
        let parked = Parked {
            since: now,
            id,
            req,
            from,
            local,
            auth,
        };
        self.park_deadlines
            .push_back((now + PARK_TIMEOUT, key.clone()));
        match self.parked.get_mut(&key) {
            Some(list) => list.push(parked),
            None => {
                self.parked.insert(key.clone(), vec![parked]);
                self.outputs.push_back(Output::FetchCredentials {
                    username: key.0,
                    domain: key.1,
                });
            }
        }
    }

    /// Finishes a parked request once its credentials are known.
    pub(super) fn resume_authenticated(
        &mut self,
        now: Instant,
        unix: u64,
        p: Parked,
        creds: Option<&Credentials>,
    ) {
        let Some(method) = p.req.method().cloned() else {
            return;
        };
        let kind = if method == Method::Register {
            AuthKind::Www
        } else {
            AuthKind::Proxy
        };
        let realm = p.auth.realm.clone();
        let ha1 = creds.and_then(|c| match p.auth.algorithm {
            DigestAlgorithm::Md5 => Some(c.ha1_md5.as_str()),
            DigestAlgorithm::Sha256 => c.ha1_sha256.as_deref(),
        });
        // Without a subscriber, verify against a throw-away HA1 anyway so both paths do
        // the same work before the same answer.
        let dummy = "0".repeat(64);
        let ok = rtc_auth::sip::verify_response(
            p.auth.algorithm,
            ha1.unwrap_or(&dummy),
            &p.auth.nonce,
            p.auth.nc.as_deref(),
            p.auth.cnonce.as_deref(),
            p.auth.qop.as_deref(),
            method.as_str(),
            &p.auth.uri,
            &p.auth.response,
        ) && ha1.is_some();
        if !ok {
            self.stats.auth_failures += 1;
            self.challenge(now, unix, p.id, &p.req, kind, &realm, false);
            return;
        }
        let nc = match p.auth.nc.as_deref().map(|n| u32::from_str_radix(n, 16)) {
            None => None,
            Some(Ok(n)) if n > 0 => Some(n),
            Some(_) => {
                self.stats.auth_failures += 1;
                self.challenge(now, unix, p.id, &p.req, kind, &realm, false);
                return;
            }
        };
        if p.auth.qop.is_some() != nc.is_some() || !self.nonces.consume(&p.auth.nonce, nc, unix) {
            // A replayed Authorization: never accepted twice, but a legitimate UA that
            // raced gets a fresh nonce without bothering its user.
            self.stats.auth_failures += 1;
            self.challenge(now, unix, p.id, &p.req, kind, &realm, true);
            return;
        }
        let mut req = p.req;
        // Credentials are for us only: never passed on (Kamailio consume_credentials).
        if kind == AuthKind::Proxy {
            req.remove_headers(&HeaderName::ProxyAuthorization);
        }
        match kind {
            AuthKind::Www => self.register_authenticated(now, unix, p.id, req, p.from, p.local),
            AuthKind::Proxy => self.route_initial(now, unix, p.id, req, p.from, p.local, true),
        }
    }

    /// 401/407 with one challenge per configured algorithm, preferred first (RFC 8760
    /// section 2.4), each with a fresh nonce and qop=auth.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn challenge(
        &mut self,
        now: Instant,
        unix: u64,
        id: ServerTxnId,
        req: &Message,
        kind: AuthKind,
        realm: &str,
        stale: bool,
    ) {
        self.stats.auth_challenges += 1;
        let (code, reason, header) = match kind {
            AuthKind::Www => (401, "Unauthorized", HeaderName::WwwAuthenticate),
            AuthKind::Proxy => (
                407,
                "Proxy Authentication Required",
                HeaderName::ProxyAuthenticate,
            ),
        };
        let mut r = self.make_response(req, code, reason);
        let algs = self.cfg.algorithms.clone();
        for alg in algs {
            let nonce = self.nonces.issue(unix);
            let mut v = format!(
                "Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={}",
                alg.name()
            );
            if stale {
                v.push_str(", stale=true");
            }
            r.headers.push(Header {
                name: header.clone(),
                value: v,
            });
        }
        match kind {
            // The registrar challenges statelessly, as Kamailio does: a retransmitted
            // REGISTER just gets a fresh challenge, and a burst of registrations keeps
            // half as many transactions.
            AuthKind::Www => {
                self.count_reply(code);
                self.txn.respond_and_forget(now, id, r);
            }
            // A 407 to an INVITE stays stateful: its ACK must be absorbed and the 407
            // retransmitted over UDP until then (RFC 3261 section 17.2.1).
            AuthKind::Proxy => self.send_response(now, id, r),
        }
    }
}

/// Digest credentials from one header value; `None` when it is not a usable Digest
/// credential (missing fields, unknown algorithm: the caller then challenges).
fn parse_digest(value: &str) -> Option<DigestAuth> {
    let (scheme, params) = parse_auth_header(value)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let get = |n: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let algorithm = match get("algorithm") {
        None => DigestAlgorithm::Md5,
        Some(a) => DigestAlgorithm::from_name(&a)?,
    };
    Some(DigestAuth {
        username: get("username")?,
        realm: get("realm")?,
        nonce: get("nonce")?,
        uri: get("uri")?,
        response: get("response")?,
        algorithm,
        qop: get("qop"),
        nc: get("nc"),
        cnonce: get("cnonce"),
    })
}
