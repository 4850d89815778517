#!/usr/bin/python3
"""Real-client XMPP scenarios driven by slixmpp (Debian's python3-slixmpp 1.8.3).

  slix.py login     --mech M [--cb TYPE]     log in with one SASL mechanism, check which was used
  slix.py roster    A B      subscribe/subscribed both ways, both roster items end as "both",
                             roster versioning (an unchanged roster is not sent again)
  slix.py presence  A B      B comes online: A sees it (and B gets A's by probe); B goes
                             offline cleanly, then by a dropped TCP connection: A sees both
  slix.py chat      A B      messages both ways, by full and bare JID; bare JID goes to the
                             resource with the highest priority only
  slix.py offline   A B      A writes to offline B; B logs in and gets each message once,
                             in order, with a <delay/> stamp; a second login gets nothing
  slix.py carbons   A B      A on two resources with carbons (XEP-0280): received and sent
                             copies reach the other resource; <private/> is not copied
  slix.py smacks    A B      stream management (XEP-0198): A enables resumption, its TCP
                             connection is cut (no </stream>), B writes meanwhile, A resumes:
                             every message arrives exactly once, both directions
  slix.py muc       A B C    a room (XEP-0045): create and configure, three occupants,
                             groupchat seen by all, history for a late joiner, discovery;
                             members-only and password rooms refuse, then admit
  slix.py blocking  A B      XEP-0191: A blocks B, B's message bounces, unblock, it passes
  slix.py sendxmpp  A B      go-sendxmpp (another client) logs in as A and writes to B, who
                             runs slixmpp and receives it

A, B, C are --jid/--password, --jid2/--password2, --jid3/--password3. Server options:
--host, --port, --direct-tls, --cafile FILE | --insecure, --tls-max 1.2, --timeout S, -v.
Exit 0 on success; 1 with `FAIL <scenario>: <reason>` on stderr otherwise.
"""

import asyncio
import logging
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import Failure, check, fail  # noqa: E402

try:
    import slixmpp
    from slixmpp.exceptions import IqError, IqTimeout
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath
except ImportError:
    sys.stderr.write("FAIL: slixmpp is missing: run with Debian's /usr/bin/python3 "
                     "(apt-get install python3-slixmpp)\n")
    sys.exit(1)

NS_ROSTER = "jabber:iq:roster"
NS_CLIENT = "jabber:client"
NS_DELAY = "urn:xmpp:delay"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_MUC_OWNER = NS_MUC + "#owner"
NS_MUC_ADMIN = NS_MUC + "#admin"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_BLOCKING = "urn:xmpp:blocking"
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PING = "urn:xmpp:ping"

RUN = uuid.uuid4().hex[:8]  # makes bodies, resources and room names unique per run


def X(tag, ns=NS_CLIENT):
    return f"{{{ns}}}{tag}"


def bare(jid):
    return str(jid).split("/", 1)[0]


def err_condition(el):
    e = el.find(X("error"))
    if e is None:
        return None
    for c in e:
        if c.tag.startswith("{" + NS_STANZA_ERR + "}") and not c.tag.endswith("}text"):
            return c.tag.split("}", 1)[1]
    return "unknown"


def body_of(el):
    b = el.find(X("body"))
    return b.text if b is not None else None


class Inbox:
    """Stanzas received, consumed by the checks that wait for them."""

    def __init__(self, name):
        self.name = name
        self.items = []
        self.seen = []  # ids in arrival order
        self.event = asyncio.Event()

    def put(self, el):
        self.items.append(el)
        self.seen.append(el.get("id"))
        self.event.set()

    def clear(self):
        self.items.clear()

    def take_now(self, pred):
        for i, el in enumerate(self.items):
            if pred(el):
                return self.items.pop(i)
        return None

    async def take(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            el = self.take_now(pred)
            if el is not None:
                return el
            left = deadline - time.monotonic()
            if left <= 0:
                recent = [ET.tostring(e, encoding="unicode")[:160] for e in self.items[-3:]]
                fail(f"{self.name}: {what} did not arrive within {timeout:.0f} s (last stanzas: {recent})")
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def none(self, pred, wait, what):
        """Nothing matching PRED arrives within WAIT seconds."""
        await asyncio.sleep(wait)
        el = self.take_now(pred)
        if el is not None:
            fail(f"{self.name}: {what}: {ET.tostring(el, encoding='unicode')[:300]}")


class Client(slixmpp.ClientXMPP):
    def __init__(self, args, jid, password, resource=None, plugins=(), mech=None, cb=None,
                 plugin_config=None):
        resource = resource or f"t{RUN}"
        super().__init__(f"{bare(jid)}/{resource}", password, plugin_config=plugin_config or {})
        self.args = args
        self.name = f"{bare(jid).split('@')[0]}/{resource}"
        self.auto_authorize = None  # None: we answer subscription requests ourselves (False rejects them)
        self.auto_subscribe = False
        if args.insecure:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE
        elif args.cafile:
            self.ca_certs = Path(args.cafile)
        if args.tls_max == "1.2":
            self.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
        for p in plugins:
            self.register_plugin(p)
        self.forced_mech = mech
        self.cb = cb
        if mech:
            self["feature_mechanisms"].use_mech = mech
        else:
            # Scenarios other than login: the best SCRAM without channel binding. Left to
            # itself, slixmpp 1.8.3 picks a -PLUS mechanism with tls-unique whenever one is
            # offered, which a server on TLS 1.3 (or one without tls-unique, like any rustls
            # server) refuses, and then falls through SCRAM with gs2 'y' down to PLAIN.
            self["feature_mechanisms"].use_mechs = {"SCRAM-SHA-256", "SCRAM-SHA-1"}
        self["feature_mechanisms"].sasl_callback = self._sasl_credentials
        self.msgs = Inbox(self.name + " messages")
        self.pres = Inbox(self.name + " presences")
        self.register_handler(Callback("test messages", MatchXPath(X("message")),
                                       lambda st: self.msgs.put(st.xml)))
        self.register_handler(Callback("test presences", MatchXPath(X("presence")),
                                       lambda st: self.pres.put(st.xml)))
        self.problem = None
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", lambda _e: self.ready.set())
        self.add_event_handler("session_resumed", lambda _e: self.ready.set())
        self.add_event_handler("failed_all_auth", lambda _e: self._problem("authentication failed"))
        self.add_event_handler("failed_auth", lambda st: self._problem(
            f"SASL failure <{st['condition']}/>"))
        self.add_event_handler("stream_error", lambda st: self._problem(
            f"stream error <{st['condition']}/> {st['text'] or ''}".strip()))
        self.add_event_handler("connection_failed", lambda e: self._problem(f"connection failed: {e}"))
        self.add_event_handler("ssl_invalid_chain", lambda e: self._problem(
            f"TLS certificate rejected: {e} (use --cafile FILE or --insecure)"))

    def _problem(self, what):
        if self.problem is None:
            self.problem = what
        self.ready.set()

    async def get_dns_records(self, domain, port=None):
        # --host/--port, never DNS: the JID domain need not resolve.
        return [(self.boundjid.domain, self.args.host, self.args.port)]

    def _sasl_credentials(self, required, optional):
        fm = self["feature_mechanisms"]
        creds = fm._default_credentials(required, optional)
        if "channel_binding" in creds:
            if not (self.forced_mech or "").endswith("-PLUS"):
                # slixmpp 1.8.3 would send gs2 flag 'y' here, which a server offering -PLUS
                # must refuse (RFC 5802 downgrade protection): we chose not to bind.
                creds["channel_binding"] = None
            elif self.cb == "tls-server-end-point":
                from rawxmpp import server_end_point
                creds["channel_binding"] = server_end_point(self.socket.getpeercert(True))
        return creds

    async def start(self, presence=True, priority=None, timeout=15.0):
        self.ready.clear()
        self.problem = None
        self.connect(address=(self.args.host, self.args.port), use_ssl=self.args.direct_tls)
        self.default_domain = self.boundjid.domain  # TLS server name: the JID's domain
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            fail(f"{self.name}: no session within {timeout:.0f} s" +
                 (f" ({self.problem})" if self.problem else ""))
        if self.problem:
            fail(f"{self.name}: {self.problem}")
        if presence:
            self.send_presence(ppriority=priority)
        return self

    async def stop(self):
        if self.transport is None:
            return
        try:
            await asyncio.wait_for(self.disconnect(wait=2.0), 5)
        except (asyncio.TimeoutError, Exception):
            self.abort()

    def kill_tcp(self):
        """Cut the TCP connection with a reset: no </stream:stream>, no TLS close_notify."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    async def iq(self, payload, to=None, itype="get", timeout=10.0):
        """Sends an IQ with PAYLOAD (XML text); returns the answer's XML, error or not."""
        iq = self.make_iq(ito=to, itype=itype)
        iq.append(ET.fromstring(payload))
        try:
            res = await iq.send(timeout=timeout)
            return res.xml
        except IqError as e:
            return e.iq.xml
        except IqTimeout:
            fail(f"{self.name}: no answer to {payload[:80]} within {timeout:.0f} s")

    def msg(self, to, body, mtype="chat", mid=None, extra=""):
        mid = mid or uuid.uuid4().hex[:12]
        el = ET.fromstring(f"<message xmlns='{NS_CLIENT}' type='{mtype}' id='{mid}'>"
                           f"<body>{body}</body>{extra}</message>")
        el.set("to", str(to))
        self.send_raw(ET.tostring(el, encoding="unicode"))
        return mid

    def presence_to(self, to, ptype=None, payload=""):
        el = ET.fromstring(f"<presence xmlns='{NS_CLIENT}'>{payload}</presence>")
        el.set("to", str(to))
        if ptype:
            el.set("type", ptype)
        self.send_raw(ET.tostring(el, encoding="unicode"))

    async def roster_items(self):
        res = await self.iq(f"<query xmlns='{NS_ROSTER}'/>")
        check(res.get("type") == "result", f"{self.name}: roster get failed: {ET.tostring(res, encoding='unicode')[:200]}")
        out = {}
        for it in res.findall(f"{{{NS_ROSTER}}}query/{{{NS_ROSTER}}}item"):
            out[it.get("jid")] = (it.get("subscription", "none"), it.get("ask"))
        return out

    async def ping_server(self):
        return await self.iq(f"<ping xmlns='{NS_PING}'/>", to=self.boundjid.domain)


def clients_for(args, n, **kw):
    accts = [(args.jid, args.password), (args.jid2, args.password2), (args.jid3, args.password3)]
    return [Client(args, j, p, **kw) for j, p in accts[:n]]


async def stop_all(*cs):
    await asyncio.gather(*(c.stop() for c in cs), return_exceptions=True)


# --- scenarios -------------------------------------------------------------------------------

async def sc_login(args):
    c = Client(args, args.jid, args.password, mech=args.mech, cb=args.cb,
               resource=f"login{RUN}")
    if args.mech.endswith("-PLUS") and args.cb == "tls-exporter":
        fail("slixmpp (Python's ssl) cannot compute tls-exporter: use raw.py sasl --cb tls-exporter")
    await c.start(presence=False)
    used = c["feature_mechanisms"].mech.name
    check(used == args.mech, f"logged in with {used}, not {args.mech}")
    tls = c.socket.version() if hasattr(c.socket, "version") else "?"
    res = await c.ping_server()
    check(res.get("type") in ("result", "error"), "no answer to a ping")
    jid = str(c.boundjid)
    await c.stop()
    cb = f", channel binding {args.cb}" if used.endswith("-PLUS") else ""
    return f"{used}{cb} over {tls}, bound {jid}"


async def subscribe_both(a, b, check_rosterver=True):
    """Starting from no relation, makes A and B subscribed both ways; returns notes."""
    ab, bb = bare(a.boundjid), bare(b.boundjid)
    # Start clean: remove each other (cancels any earlier subscription).
    for me, other in ((a, bb), (b, ab)):
        await me.iq(f"<query xmlns='{NS_ROSTER}'><item jid='{other}' subscription='remove'/></query>", itype="set")
    await asyncio.sleep(0.5)
    for c in (a, b):
        c.pres.clear()
        c.msgs.clear()
    # Both fetch the roster: only such "interested" resources get roster pushes and
    # subscription-state presences (RFC 6121 2.1.6).
    await b.roster_items()
    r = await a.roster_items()
    check(bb not in r, f"{a.name}: {bb} still in the roster after removal: {r.get(bb)}")
    # A -> B
    a.presence_to(bb, "subscribe")
    await b.pres.take(lambda p: p.get("type") == "subscribe" and bare(p.get("from")) == ab, 10,
                      f"subscription request from {ab}")
    b.presence_to(ab, "subscribed")
    await a.pres.take(lambda p: p.get("type") == "subscribed" and bare(p.get("from")) == bb, 10,
                      f"'subscribed' from {bb}")
    # Once subscribed, A gets B's current presence.
    await a.pres.take(lambda p: p.get("type") is None and bare(p.get("from")) == bb, 10,
                      f"available presence of {bb} after the subscription")
    # B -> A
    b.presence_to(ab, "subscribe")
    await a.pres.take(lambda p: p.get("type") == "subscribe" and bare(p.get("from")) == bb, 10,
                      f"subscription request from {bb}")
    a.presence_to(bb, "subscribed")
    await b.pres.take(lambda p: p.get("type") == "subscribed" and bare(p.get("from")) == ab, 10,
                      f"'subscribed' from {ab}")
    await b.pres.take(lambda p: p.get("type") is None and bare(p.get("from")) == ab, 10,
                      f"available presence of {ab} after the subscription")
    # Both roster items end as subscription='both' (the state machine settles quickly).
    deadline = time.monotonic() + 5
    while True:
        ra, rb = await a.roster_items(), await b.roster_items()
        sa, sb = ra.get(bb, ("absent", None)), rb.get(ab, ("absent", None))
        if sa[0] == "both" and sb[0] == "both" and not sa[1] and not sb[1]:
            break
        if time.monotonic() > deadline:
            fail(f"roster items are {ab}: {bb} {sa}, {bb}: {ab} {sb}; wanted subscription='both' without ask")
        await asyncio.sleep(0.2)
    return "subscription=both on both sides"


async def rosterver_check(a):
    check("rosterver" in a.features, "the server does not advertise roster versioning "
          "(urn:xmpp:features:rosterver)")
    res = await a.iq(f"<query xmlns='{NS_ROSTER}' ver=''/>")
    q = res.find(f"{{{NS_ROSTER}}}query")
    check(res.get("type") == "result" and q is not None and q.get("ver") is not None,
          f"roster get with ver='' has no version: {ET.tostring(res, encoding='unicode')[:200]}")
    ver = q.get("ver")
    res = await a.iq(f"<query xmlns='{NS_ROSTER}' ver='{ver}'/>")
    q = res.find(f"{{{NS_ROSTER}}}query")
    check(res.get("type") == "result", "roster get with the current version failed")
    check(q is None or len(q) == 0, f"roster get with the current version {ver!r} sent items again")
    return f"roster versioning (ver {ver!r})"


async def sc_roster(args):
    a, b = clients_for(args, 2)
    try:
        await asyncio.gather(a.start(), b.start())
        note = await subscribe_both(a, b)
        note2 = await rosterver_check(a) if not args.no_rosterver else "rosterver not checked"
        return f"{note}; {note2}"
    finally:
        await stop_all(a, b)


async def ensure_mutual(args):
    a, b = clients_for(args, 2, resource=f"setup{RUN}")
    try:
        await asyncio.gather(a.start(), b.start())
        ra, rb = await a.roster_items(), await b.roster_items()
        if ra.get(bare(b.boundjid), ("",))[0] != "both" or rb.get(bare(a.boundjid), ("",))[0] != "both":
            await subscribe_both(a, b)
    finally:
        await stop_all(a, b)


async def sc_presence(args):
    await ensure_mutual(args)
    a = Client(args, args.jid, args.password, resource=f"pa{RUN}")
    await a.start()
    b = None
    try:
        # A's own presence comes back to it; ignore it.
        b = Client(args, args.jid2, args.password2, resource=f"pb{RUN}")
        await b.start()
        bfull = str(b.boundjid)
        await a.pres.take(lambda p: p.get("from") == bfull and p.get("type") is None, 10,
                          f"available presence of {bfull}")
        await b.pres.take(lambda p: p.get("from") == str(a.boundjid) and p.get("type") is None, 10,
                          f"presence of {a.boundjid} (probe answer)")
        await b.stop()
        await a.pres.take(lambda p: p.get("from") == bfull and p.get("type") == "unavailable", 10,
                          f"unavailable presence of {bfull} after a clean logout")
        # Again, but the TCP connection dies without </stream:stream>.
        b = Client(args, args.jid2, args.password2, resource=f"pc{RUN}")
        await b.start()
        bfull = str(b.boundjid)
        await a.pres.take(lambda p: p.get("from") == bfull and p.get("type") is None, 10,
                          f"available presence of {bfull}")
        b.kill_tcp()
        await a.pres.take(lambda p: p.get("from") == bfull and p.get("type") == "unavailable", 20,
                          f"unavailable presence of {bfull} after its TCP connection was reset")
        return "online, offline (logout), offline (connection reset) all seen"
    finally:
        await stop_all(*(c for c in (a, b) if c))


async def sc_chat(args):
    a = Client(args, args.jid, args.password, resource=f"ca{RUN}")
    b1 = Client(args, args.jid2, args.password2, resource=f"cb1{RUN}")
    b2 = Client(args, args.jid2, args.password2, resource=f"cb2{RUN}")
    try:
        await asyncio.gather(a.start(), b1.start(priority=5))
        afull, b1full = str(a.boundjid), str(b1.boundjid)
        body = f"hello b {RUN}"
        mid = a.msg(b1full, body)
        m = await b1.msgs.take(lambda el: el.get("id") == mid, 10, "A's message to B's full JID")
        check(body_of(m) == body and m.get("from") == afull and m.get("type") == "chat",
              f"B got {ET.tostring(m, encoding='unicode')[:300]}")
        body = f"hello a {RUN}"
        mid = b1.msg(bare(afull), body)
        m = await a.msgs.take(lambda el: el.get("id") == mid, 10, "B's message to A's bare JID")
        check(body_of(m) == body and m.get("from") == b1full, f"A got {ET.tostring(m, encoding='unicode')[:300]}")
        # Bare JID routing by priority: b1 (5) gets it, b2 (1) does not.
        await b2.start(priority=1)
        await asyncio.sleep(0.3)
        mid = a.msg(bare(b1full), f"to the highest priority {RUN}")
        await b1.msgs.take(lambda el: el.get("id") == mid, 10, "a message to B's bare JID (priority 5 resource)")
        await b2.msgs.none(lambda el: el.get("id") == mid, 1.0,
                           "the priority-1 resource got a bare-JID message meant for the priority-5 one")
        return "full JID, bare JID, priority routing"
    finally:
        await stop_all(a, b1, b2)


def delay_stamp(el):
    d = el.find(f"{{{NS_DELAY}}}delay")
    if d is None:
        return None, None
    return d.get("stamp"), d.get("from")


def parse_stamp(s):
    s = s.replace("Z", "+00:00")
    return datetime.fromisoformat(s)


async def sc_offline(args):
    a = Client(args, args.jid, args.password, resource=f"oa{RUN}")
    await a.start()
    b = None
    try:
        bb = bare(args.jid2)
        bodies = [f"offline {RUN} #{i}" for i in range(3)]
        ids = [a.msg(bb, body, mtype=("chat" if i != 1 else "normal")) for i, body in enumerate(bodies)]
        res = await a.ping_server()  # the server has handled them once this is answered
        check(res.get("type") in ("result", "error"), "no answer to a ping")
        await asyncio.sleep(0.5)
        b = Client(args, args.jid2, args.password2, resource=f"ob{RUN}")
        await b.start()
        got = []
        for mid, body in zip(ids, bodies):
            m = await b.msgs.take(lambda el, mid=mid: el.get("id") == mid, 10, f"offline message {body!r}")
            got.append(m)
        for m, body in zip(got, bodies):
            check(body_of(m) == body, f"offline message body {body_of(m)!r}, sent {body!r}")
            stamp, dfrom = delay_stamp(m)
            check(stamp, f"offline message {body!r} has no <delay xmlns='{NS_DELAY}'/>")
            t = parse_stamp(stamp)
            skew = abs((datetime.now(timezone.utc) - t).total_seconds())
            check(skew < 300, f"delay stamp {stamp} is {skew:.0f} s off")
            check(bare(m.get("from")) == bare(args.jid), f"offline message from {m.get('from')}")
        arrived = [mid for mid in b.msgs.seen if mid in ids]
        check(arrived == ids, f"offline messages arrived in the order {arrived}, sent {ids}")
        await b.msgs.none(lambda el: el.get("id") in ids, 1.0, "an offline message arrived twice")
        await b.stop()
        b = Client(args, args.jid2, args.password2, resource=f"oc{RUN}")
        await b.start()
        await b.msgs.none(lambda el: el.get("id") in ids, 2.0, "offline messages delivered again at the next login")
        return f"3 messages stored, delivered once with delay stamps (from={delay_stamp(got[0])[1]})"
    finally:
        await stop_all(*(c for c in (a, b) if c))


async def enable_carbons(c):
    res = await c.iq(f"<enable xmlns='{NS_CARBONS}'/>", itype="set")
    check(res.get("type") == "result", f"{c.name}: enabling carbons failed: {ET.tostring(res, encoding='unicode')[:200]}")


def forwarded(el, kind):
    w = el.find(f"{{{NS_CARBONS}}}{kind}")
    if w is None:
        return None
    return w.find(f"{{{NS_FORWARD}}}forwarded/{{{NS_CLIENT}}}message")


async def sc_carbons(args):
    r1 = Client(args, args.jid, args.password, resource=f"r1{RUN}")
    r2 = Client(args, args.jid, args.password, resource=f"r2{RUN}")
    b = Client(args, args.jid2, args.password2, resource=f"cb{RUN}")
    try:
        await asyncio.gather(r1.start(), r2.start(), b.start())
        info = await r1.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=r1.boundjid.domain)
        feats = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
        check(NS_CARBONS in feats, f"server disco#info lacks {NS_CARBONS}")
        await asyncio.gather(enable_carbons(r1), enable_carbons(r2))
        abare, r1full, bfull = bare(r1.boundjid), str(r1.boundjid), str(b.boundjid)
        # Received: B -> A/r1; r2 gets a <received/> copy from A's bare JID.
        body = f"to r1 {RUN}"
        mid = b.msg(r1full, body)
        await r1.msgs.take(lambda el: el.get("id") == mid and body_of(el) == body, 10, "B's message")
        cc = await r2.msgs.take(lambda el: forwarded(el, "received") is not None, 10, "a <received/> carbon")
        check(cc.get("from") == abare, f"carbon wrapper from {cc.get('from')}, must be {abare}")
        inner = forwarded(cc, "received")
        check(body_of(inner) == body and inner.get("from") == bfull and inner.get("to") == r1full,
              f"received carbon carries {ET.tostring(inner, encoding='unicode')[:300]}")
        # Sent: A/r1 -> B; r2 gets a <sent/> copy.
        body = f"from r1 {RUN}"
        mid = r1.msg(bfull, body)
        await b.msgs.take(lambda el: el.get("id") == mid, 10, "r1's message")
        cc = await r2.msgs.take(lambda el: forwarded(el, "sent") is not None, 10, "a <sent/> carbon")
        check(cc.get("from") == abare, f"carbon wrapper from {cc.get('from')}, must be {abare}")
        inner = forwarded(cc, "sent")
        check(body_of(inner) == body and inner.get("to") == bfull and inner.get("from") == r1full,
              f"sent carbon carries {ET.tostring(inner, encoding='unicode')[:300]}")
        await r1.msgs.none(lambda el: forwarded(el, "sent") is not None, 0.5,
                           "the sending resource got a carbon of its own message")
        # <private/> is not copied.
        mid = r1.msg(bfull, f"private {RUN}", extra=f"<private xmlns='{NS_CARBONS}'/>")
        await b.msgs.take(lambda el: el.get("id") == mid, 10, "r1's private message")
        await r2.msgs.none(lambda el: forwarded(el, "sent") is not None, 1.0,
                           "a message marked <private/> was carbon-copied")
        return "received and sent carbons from the bare JID, <private/> respected"
    finally:
        await stop_all(r1, r2, b)


async def sc_smacks(args):
    a = Client(args, args.jid, args.password, resource=f"sa{RUN}", plugins=["xep_0198"],
               plugin_config={"xep_0198": {"allow_resume": True}})
    b = Client(args, args.jid2, args.password2, resource=f"sb{RUN}")
    enabled = asyncio.get_running_loop().create_future()
    a.add_event_handler("sm_enabled", lambda st: enabled.done() or enabled.set_result(st))
    resumed = asyncio.Event()
    a.add_event_handler("session_resumed", lambda _e: resumed.set())
    started = []
    a.add_event_handler("session_start", lambda _e: started.append(time.monotonic()))
    try:
        await asyncio.gather(a.start(), b.start())
        try:
            st = await asyncio.wait_for(enabled, 10)
        except asyncio.TimeoutError:
            fail("stream management was not enabled (no <enabled/>; is urn:xmpp:sm:3 offered?)")
        check(st.xml.get("resume") in ("true", "1"), "<enabled/> without resume='true'")
        check(st.xml.get("id"), "<enabled/> without an id to resume")
        afull, bfull = str(a.boundjid), str(b.boundjid)
        first = f"before {RUN}"
        m0 = b.msg(afull, first)
        await a.msgs.take(lambda el: el.get("id") == m0, 10, "the message before the cut")
        await asyncio.sleep(0.5)  # let acks go both ways
        # A writes, and its connection dies at once: the stanza may or may not have left.
        a_out = a.msg(bfull, f"a at the cut {RUN}")
        a.kill_tcp()
        ids = [b.msg(afull, f"meanwhile {RUN} #{i}") for i in range(5)]
        res = await b.ping_server()
        check(res.get("type") in ("result", "error"), "B: no answer to a ping")
        await asyncio.sleep(0.5)
        a.msgs.clear()
        n_start = len(started)
        await a.start(presence=False)
        check(resumed.is_set(), "the session was not resumed (new session started instead)")
        check(len(started) == n_start, "a new session was bound instead of resuming")
        check(str(a.boundjid) == afull, f"resumed as {a.boundjid}, was {afull}")
        for mid in ids:
            await a.msgs.take(lambda el, mid=mid: el.get("id") == mid, 10, f"message {mid} sent during the outage")
        await b.msgs.take(lambda el: el.get("id") == a_out, 10, "A's message written at the cut")
        await asyncio.sleep(2.0)
        dup_a = [el.get("id") for el in a.msgs.items if el.get("id") in ids + [m0]]
        dup_b = [el.get("id") for el in b.msgs.items if el.get("id") == a_out]
        check(not dup_a, f"A got messages twice after resuming: {dup_a}")
        check(not dup_b, "B got A's message twice")
        # The resumed stream carries traffic both ways.
        m1 = b.msg(afull, f"after {RUN}")
        await a.msgs.take(lambda el: el.get("id") == m1, 10, "a message after resumption")
        return "resumed after a TCP reset: 5 queued messages once each, A's in-flight message once"
    finally:
        await stop_all(a, b)


# --- MUC -------------------------------------------------------------------------------------

def muc_status(el):
    return {s.get("code") for s in el.findall(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}status")}


async def muc_join(c, room, nick, password=None, history=None, expect_error=None, timeout=10):
    hist = f"<history maxstanzas='{history}'/>" if history is not None else ""
    pw = f"<password>{password}</password>" if password else ""
    occ = f"{room}/{nick}"
    c.presence_to(occ, payload=f"<x xmlns='{NS_MUC}'>{hist}{pw}</x>")
    p = await c.pres.take(lambda el: el.get("from") == occ and (
        el.get("type") == "error" or "110" in muc_status(el)), timeout, f"joining {occ}")
    if expect_error:
        check(p.get("type") == "error", f"{c.name} joined {room} but should have been refused with <{expect_error}/>")
        cond = err_condition(p)
        check(cond == expect_error, f"{c.name} refused from {room} with <{cond}/>, wanted <{expect_error}/>")
        return None
    check(p.get("type") != "error", f"{c.name} could not join {occ}: <{err_condition(p)}/>")
    return p


# Fields a room's configuration form may lack (Prosody has no passwordprotectedroom: a
# room with a roomsecret is password-protected); the others must be there.
OPTIONAL_FIELDS = {"muc#roomconfig_passwordprotectedroom", "muc#roomconfig_roomname"}


async def muc_configure(c, room, values):
    form = await c.iq(f"<query xmlns='{NS_MUC_OWNER}'/>", to=room)
    check(form.get("type") == "result", f"room configuration form of {room}: <{err_condition(form)}/>")
    fields = {f.get("var") for f in form.iter(f"{{{NS_DATA}}}field")}
    missing = [k for k in values if k not in fields and k not in OPTIONAL_FIELDS]
    check(not missing, f"room configuration form lacks {missing}")
    xs = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in values.items() if k in fields)
    res = await c.iq(f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='{NS_DATA}' type='submit'>"
                     f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                     f"{xs}</x></query>", to=room, itype="set")
    check(res.get("type") == "result", f"configuring {room}: <{err_condition(res)}/>")


async def muc_create(c, room, nick, values):
    p = await muc_join(c, room, nick)
    check("201" in muc_status(p), f"{room} already existed (no status 201 on creation)")
    await muc_configure(c, room, values)


async def sc_muc(args):
    a, b, c = clients_for(args, 3, resource=f"m{RUN}")
    service = args.muc or f"conference.{args.domain}"
    room = f"room{RUN}@{service}"
    try:
        await asyncio.gather(a.start(), b.start(), c.start())
        info = await a.iq(f"<query xmlns='{NS_DISCO_INFO}'/>", to=service)
        check(info.get("type") == "result", f"disco#info of {service}: <{err_condition(info)}/>")
        feats = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
        check(NS_MUC in feats, f"{service} does not announce {NS_MUC}")
        # Create and configure: a public, non-persistent, open room.
        await muc_create(a, room, "alpha", {
            "muc#roomconfig_roomname": f"Test room {RUN}",
            "muc#roomconfig_persistentroom": "0",
            "muc#roomconfig_publicroom": "1",
            "muc#roomconfig_membersonly": "0",
            "muc#roomconfig_passwordprotectedroom": "0",
        })
        await muc_join(b, room, "bravo")
        await a.pres.take(lambda el: el.get("from") == f"{room}/bravo" and el.get("type") is None, 10,
                          "bravo's presence in the room")
        # Messages before C joins: the history.
        h1 = a.msg(room, f"history one {RUN}", mtype="groupchat")
        h2 = b.msg(room, f"history two {RUN}", mtype="groupchat")
        for cl in (a, b):
            for mid in (h1, h2):
                m = await cl.msgs.take(lambda el, mid=mid: el.get("id") == mid and el.get("type") == "groupchat",
                                       10, f"groupchat message {mid}")
                check(m.get("from", "").startswith(room + "/"), f"groupchat from {m.get('from')}")
        # C joins late and gets both with delay stamps.
        await muc_join(c, room, "charlie", history=20)
        for mid, nick, body in ((h1, "alpha", f"history one {RUN}"), (h2, "bravo", f"history two {RUN}")):
            m = await c.msgs.take(lambda el, body=body: el.get("type") == "groupchat" and body_of(el) == body,
                                  10, f"history message {body!r}")
            check(m.get("from") == f"{room}/{nick}", f"history message from {m.get('from')}, wanted {room}/{nick}")
            check(delay_stamp(m)[0], f"history message {body!r} has no delay stamp")
        # Everyone sees C's message.
        m3 = c.msg(room, f"hello all {RUN}", mtype="groupchat")
        for cl in (a, b, c):
            m = await cl.msgs.take(lambda el: el.get("id") == m3 or body_of(el) == f"hello all {RUN}", 10,
                                   f"charlie's groupchat message at {cl.name}")
            check(m.get("from") == f"{room}/charlie", f"{cl.name}: groupchat from {m.get('from')}")
        # Discovery: the public room is listed by the service.
        items = await a.iq(f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=service)
        listed = {i.get("jid") for i in items.iter(f"{{{NS_DISCO_ITEMS}}}item")}
        check(room in listed, f"{room} not listed in disco#items of {service}: {sorted(listed)[:5]}")
        # Members-only: B is refused, then admitted once a member.
        mroom = f"members{RUN}@{service}"
        await muc_create(a, mroom, "alpha", {"muc#roomconfig_membersonly": "1",
                                             "muc#roomconfig_persistentroom": "0"})
        await muc_join(b, mroom, "bravo", expect_error="registration-required")
        res = await a.iq(f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='member' jid='{bare(b.boundjid)}'/></query>",
                         to=mroom, itype="set")
        check(res.get("type") == "result", f"making bravo a member: <{err_condition(res)}/>")
        await muc_join(b, mroom, "bravo")
        # Password: refused without and with a wrong one, admitted with the right one.
        proom = f"secret{RUN}@{service}"
        await muc_create(a, proom, "alpha", {"muc#roomconfig_passwordprotectedroom": "1",
                                             "muc#roomconfig_roomsecret": "s3cret",
                                             "muc#roomconfig_persistentroom": "0"})
        await muc_join(c, proom, "charlie", expect_error="not-authorized")
        await muc_join(c, proom, "charlie", password="wrong", expect_error="not-authorized")
        await muc_join(c, proom, "charlie", password="s3cret")
        # Leaving: the others see it.
        c.presence_to(f"{room}/charlie", "unavailable")
        await a.pres.take(lambda el: el.get("from") == f"{room}/charlie" and el.get("type") == "unavailable",
                          10, "charlie leaving the room")
        return (f"{room}: 3 occupants, groupchat to all, 2 history messages with delay, listed; "
                "members-only and password rooms refuse then admit")
    finally:
        await stop_all(a, b, c)


async def sc_blocking(args):
    a = Client(args, args.jid, args.password, resource=f"ba{RUN}")
    b = Client(args, args.jid2, args.password2, resource=f"bb{RUN}")
    try:
        await asyncio.gather(a.start(), b.start())
        bb_ = bare(b.boundjid)
        res = await a.iq(f"<block xmlns='{NS_BLOCKING}'><item jid='{bb_}'/></block>", itype="set")
        check(res.get("type") == "result", f"block: <{err_condition(res)}/>")
        res = await a.iq(f"<blocklist xmlns='{NS_BLOCKING}'/>")
        listed = {i.get("jid") for i in res.iter(f"{{{NS_BLOCKING}}}item")}
        check(bb_ in listed, f"blocklist does not list {bb_}: {listed}")
        # To the bare JID: Prosody drops (rather than bounces) blocked messages to an online
        # full JID, so as not to reveal it (its issue 690).
        mid = b.msg(bare(a.boundjid), f"blocked {RUN}")
        e = await b.msgs.take(lambda el: el.get("id") == mid, 10, "the bounce of a message to a blocker")
        check(e.get("type") == "error", f"a blocked message came back as {ET.tostring(e, encoding='unicode')[:200]}")
        await a.msgs.none(lambda el: el.get("id") == mid, 0.5, "a blocked contact's message was delivered")
        mid = a.msg(str(b.boundjid), f"to blocked {RUN}")
        e = await a.msgs.take(lambda el: el.get("id") == mid, 10, "the error for writing to a blocked contact")
        check(e.get("type") == "error", "writing to a blocked contact was not refused")
        res = await a.iq(f"<unblock xmlns='{NS_BLOCKING}'><item jid='{bb_}'/></unblock>", itype="set")
        check(res.get("type") == "result", f"unblock: <{err_condition(res)}/>")
        mid = b.msg(str(a.boundjid), f"unblocked {RUN}")
        await a.msgs.take(lambda el: el.get("id") == mid and el.get("type") == "chat", 10,
                          "a message after unblocking")
        return f"blocked (<{err_condition(e)}/>), unblocked"
    finally:
        await stop_all(a, b)


async def sc_sendxmpp(args):
    exe = args.sendxmpp
    check(subprocess.run(["sh", "-c", f"command -v {exe}"], capture_output=True).returncode == 0,
          f"{exe} not found (apt-get install go-sendxmpp)")
    b = Client(args, args.jid2, args.password2, resource=f"gx{RUN}")
    try:
        await b.start()
        body = f"from go-sendxmpp {RUN}"
        cmd = [exe, "-u", bare(args.jid), "-p", args.password, "-j", f"{args.host}:{args.port}",
               "--timeout", "10", bare(args.jid2)]
        if args.direct_tls:
            cmd.insert(1, "-t")
        env = dict(os.environ)
        with tempfile.TemporaryDirectory() as home:
            env["HOME"] = home  # no ~/.config/go-sendxmpp/sendxmpprc of the caller
            if args.insecure:
                cmd.insert(1, "-n")
            elif args.cafile:
                env["SSL_CERT_FILE"] = args.cafile  # Go's crypto/x509 reads it on Linux
            p = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, env=env)
            try:
                out, _ = await asyncio.wait_for(p.communicate(body.encode() + b"\n"), 30)
            except asyncio.TimeoutError:
                p.kill()
                fail("go-sendxmpp did not finish within 30 s")
            check(p.returncode == 0, f"go-sendxmpp exited {p.returncode}: {out.decode(errors='replace')[-500:]}")
        m = await b.msgs.take(lambda el: (body_of(el) or "").strip() == body, 15, "go-sendxmpp's message")
        check(bare(m.get("from")) == bare(args.jid), f"message from {m.get('from')}")
        return f"go-sendxmpp -> {b.boundjid}: received from {m.get('from')}"
    finally:
        await b.stop()


# --- command line ----------------------------------------------------------------------------

SCENARIOS = {
    "login": (sc_login, 1), "roster": (sc_roster, 2), "presence": (sc_presence, 2),
    "chat": (sc_chat, 2), "offline": (sc_offline, 2), "carbons": (sc_carbons, 2),
    "smacks": (sc_smacks, 2), "muc": (sc_muc, 3), "blocking": (sc_blocking, 2),
    "sendxmpp": (sc_sendxmpp, 2),
}


def main():
    p = common.new_parser(__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, (_fn, n) in SCENARIOS.items():
        sp = sub.add_parser(name)
        common.add_server_options(sp)
        common.add_account_options(sp, n)
        if name == "login":
            sp.add_argument("--mech", required=True,
                            choices=["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                                     "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS"])
            sp.add_argument("--cb", default="tls-unique",
                            choices=["tls-unique", "tls-server-end-point", "tls-exporter"],
                            help="channel binding for -PLUS (slixmpp: tls-unique on TLS 1.2; "
                                 "tls-server-end-point added by this script)")
        if name == "roster":
            sp.add_argument("--no-rosterver", action="store_true", help="skip the versioning check")
        if name == "muc":
            sp.add_argument("--muc", default=None, help="MUC service (default conference.DOMAIN)")
        if name == "sendxmpp":
            sp.add_argument("--sendxmpp", default="go-sendxmpp", help="the go-sendxmpp executable")
    args = p.parse_args()
    if args.cmd != "login":
        args.jid3 = getattr(args, "jid3", None)
        args.password3 = getattr(args, "password3", None)
        args.jid2 = getattr(args, "jid2", None)
    common.finish_server_options(args, args.jid)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    else:
        logging.basicConfig(level=logging.CRITICAL)
    fn = SCENARIOS[args.cmd][0]
    what = f"slix {args.cmd}" + (f" {args.mech}" if args.cmd == "login" else "")

    def run():
        try:
            return asyncio.run(asyncio.wait_for(fn(args), args.timeout))
        except asyncio.TimeoutError:
            raise Failure(f"not done within --timeout {args.timeout:.0f} s")
    return common.run_main(what, run, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
