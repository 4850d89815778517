#!/usr/bin/env python3
"""XMPP load client for bench/xmpp.sh: asyncio and raw sockets (standard library only), so
that one process drives hundreds of connections. Speaks just enough XMPP: STARTTLS (or direct
TLS), SASL SCRAM-SHA-1/SCRAM-SHA-256 (or PLAIN), resource binding, presence, messages.

  xmpp_load.py logins --duration S --concurrency C    log in (TCP, TLS, SASL, bind) and out,
                                                       as many times as possible, C at once
  xmpp_load.py msgs   --rate R --duration S           pairs of online clients send chat
                                                       messages to each other at R/s in all
  xmpp_load.py hold                                    log every user in, print READY, stay
                                                       online until SIGTERM

Users come from --users FILE (lines `localpart password`), --part K --parts N selects every
N-th line starting at K. Results: one JSON object written to --out (counts, times, CPU, and
the latencies in ms for the percentiles that bench/xmpp_report.py computes).

A SCRAM client normally computes PBKDF2 with the server's iteration count at every login. The
server stores only the derived keys (it never runs PBKDF2 at login), so to measure the server
and not this client, `logins` first logs every one of its users in once (untimed), caching
the salted password per user and salt; the timed logins reuse it.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import signal
import ssl
import sys
import time
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"

BODY_RE = re.compile(rb"<body>t=(\d+) ")


class LoginError(Exception):
    pass


class Parser:
    """Top-level elements of the server's stream."""

    def __init__(self, reader):
        self.reader = reader
        self.reset()

    def reset(self):
        self.p = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.queue = []

    async def next(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.queue:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoginError("timeout")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                raise LoginError("connection closed by the server")
            self.p.feed(data)
            for ev, el in self.p.read_events():
                if ev == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.queue.append(el)
                    elif self.depth == 0:
                        raise LoginError("stream closed by the server")
        el = self.queue.pop(0)
        if el.tag == f"{{{NS_STREAM}}}error":
            raise LoginError("stream error " + ",".join(c.tag.split("}")[-1] for c in el))
        return el


class Conn:
    def __init__(self, reader, writer, jid, parser):
        self.reader, self.writer, self.jid, self.parser = reader, writer, jid, parser


class Client:
    def __init__(self, args):
        self.args = args
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if args.cafile:
            self.ctx.load_verify_locations(args.cafile)
        else:
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE
        self.salted = {}  # (user, salt, iterations) -> salted password
        self.pbkdf2 = 0

    def header(self):
        return ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' "
                f"to='{self.args.domain}' version='1.0'>").encode()

    async def login(self, user, password, resource_, presence=False, timeout=30.0):
        a = self.args
        if a.direct_tls:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                a.host, a.port, ssl=self.ctx, server_hostname=a.domain), timeout)
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(a.host, a.port), timeout)
        try:
            p = Parser(reader)
            writer.write(self.header())
            feats = await p.next(timeout)
            if not a.direct_tls:
                if feats.find(f"{{{NS_TLS}}}starttls") is None:
                    raise LoginError("no STARTTLS offered")
                writer.write(f"<starttls xmlns='{NS_TLS}'/>".encode())
                el = await p.next(timeout)
                if el.tag != f"{{{NS_TLS}}}proceed":
                    raise LoginError("STARTTLS refused")
                await asyncio.wait_for(writer.start_tls(self.ctx, server_hostname=a.domain), timeout)
                p.reset()
                writer.write(self.header())
                feats = await p.next(timeout)
            mechs = [m.text for m in feats.iter(f"{{{NS_SASL}}}mechanism")]
            if a.mech not in mechs:
                raise LoginError(f"{a.mech} not offered ({mechs})")
            await self.sasl(p, writer, user, password, timeout)
            p.reset()
            writer.write(self.header())
            feats = await p.next(timeout)
            writer.write(f"<iq type='set' id='b'><bind xmlns='{NS_BIND}'><resource>{resource_}"
                         "</resource></bind></iq>".encode())
            el = await p.next(timeout)
            j = el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
            if el.get("type") != "result" or j is None:
                raise LoginError("bind failed")
            sess = feats.find(f"{{{NS_SESSION}}}session")
            if sess is not None and sess.find(f"{{{NS_SESSION}}}optional") is None:
                writer.write(f"<iq type='set' id='s'><session xmlns='{NS_SESSION}'/></iq>".encode())
                await p.next(timeout)
            if presence:
                writer.write(b"<presence/>")
            return Conn(reader, writer, j.text, p)
        except BaseException:
            writer.close()
            raise

    async def sasl(self, p, writer, user, password, timeout):
        mech = self.args.mech
        if mech == "PLAIN":
            raw = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            writer.write(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{raw}</auth>".encode())
            el = await p.next(timeout)
            if el.tag != f"{{{NS_SASL}}}success":
                raise LoginError("PLAIN failed")
            return
        hname = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech]
        nonce = base64.b64encode(os.urandom(15)).decode()
        first_bare = f"n={user},r={nonce}"
        writer.write(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>"
                     f"{base64.b64encode(('n,,' + first_bare).encode()).decode()}</auth>".encode())
        el = await p.next(timeout)
        if el.tag != f"{{{NS_SASL}}}challenge":
            raise LoginError("SASL refused: " + ",".join(c.tag.split("}")[-1] for c in el))
        server_first = base64.b64decode(el.text).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salt, iters = attrs["s"], int(attrs["i"])
        key = (user, salt, iters)
        salted = self.salted.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac(hname, password.encode(), base64.b64decode(salt), iters)
            self.salted[key] = salted
            self.pbkdf2 += 1
        client_key = hmac.new(salted, b"Client Key", hname).digest()
        stored = hashlib.new(hname, client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored, auth_msg, hname).digest()
        proof = base64.b64encode(bytes(x ^ y for x, y in zip(client_key, sig))).decode()
        final = base64.b64encode(f"{without_proof},p={proof}".encode()).decode()
        writer.write(f"<response xmlns='{NS_SASL}'>{final}</response>".encode())
        el = await p.next(timeout)
        if el.tag != f"{{{NS_SASL}}}success":
            raise LoginError("SASL failed: " + ",".join(c.tag.split("}")[-1] for c in el))
        server_key = hmac.new(salted, b"Server Key", hname).digest()
        want = base64.b64encode(hmac.new(server_key, auth_msg, hname).digest()).decode()
        got = base64.b64decode((el.text or "").strip()).decode()
        if got != "v=" + want:
            raise LoginError("bad server signature")


def load_users(args):
    users = []
    with open(args.users) as f:
        for i, line in enumerate(f):
            if i % args.parts == args.part:
                u, pw = line.split()
                users.append((u, pw))
    if args.count:
        users = users[:args.count]
    if not users:
        sys.exit("no users for this part")
    return users


async def close(conn):
    try:
        conn.writer.write(b"</stream:stream>")
        conn.writer.close()
    except Exception:
        pass


async def run_logins(args, client, users):
    errors = {}

    def err(e):
        k = f"{type(e).__name__}: {e}"[:120]
        errors[k] = errors.get(k, 0) + 1

    # Untimed: every user once, filling the salted-password cache.
    sem = asyncio.Semaphore(args.concurrency)

    async def warm(u, pw, i):
        async with sem:
            try:
                c = await client.login(u, pw, f"w{i}")
                await close(c)
            except Exception as e:
                err(e)

    await asyncio.gather(*(warm(u, pw, i) for i, (u, pw) in enumerate(users)))
    warm_errors = sum(errors.values())
    errors.clear()
    lat, ok = [], 0
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    end = t0 + args.duration
    nxt = [0]

    async def worker(w):
        nonlocal ok
        while time.monotonic() < end:
            i = nxt[0]
            nxt[0] += 1
            u, pw = users[i % len(users)]
            s = time.monotonic()
            try:
                c = await client.login(u, pw, f"l{w}")
                lat.append((time.monotonic() - s) * 1000)
                ok += 1
                await close(c)
            except Exception as e:
                err(e)

    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"ok": ok, "failed": sum(errors.values()), "errors": errors, "warm_errors": warm_errors,
            "wall_s": wall, "t0": t0, "lat_ms": lat, "cpu_s": cpu(ru0, ru1),
            "pbkdf2": client.pbkdf2}


def cpu(a, b):
    return (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)


async def login_all(args, client, users, prefix):
    sem = asyncio.Semaphore(args.concurrency)
    conns, errors = [], {}

    async def one(i, u, pw):
        async with sem:
            try:
                conns.append((i, await client.login(u, pw, f"{prefix}{i}", presence=True)))
            except Exception as e:
                k = f"{type(e).__name__}: {e}"[:120]
                errors[k] = errors.get(k, 0) + 1

    await asyncio.gather(*(one(i, u, pw) for i, (u, pw) in enumerate(users)))
    conns.sort(key=lambda x: x[0])
    return [c for _, c in conns], errors


async def drain(conn, on_data=None):
    try:
        while True:
            data = await conn.reader.read(65536)
            if not data:
                return
            if on_data:
                on_data(data)
    except Exception:
        return


async def run_msgs(args, client, users):
    if len(users) % 2:
        users = users[:-1]
    conns, errors = await login_all(args, client, users, "m")
    if errors or len(conns) != len(users):
        return {"ok": 0, "failed": len(users) - len(conns), "errors": errors, "login_failed": True}
    lat = []
    recv_times = []
    received = [0]

    def make_handler():
        buf = [b""]

        def on_data(data):
            now = time.monotonic_ns()
            b = buf[0] + data
            last = 0
            for m in BODY_RE.finditer(b):
                lat.append((now - int(m.group(1))) / 1e6)
                recv_times.append(now)
                last = m.end()
            b = b[last:]
            buf[0] = b[-256:] if len(b) > 4096 else b
        return on_data

    readers = [asyncio.ensure_future(drain(c, make_handler())) for c in conns]
    await asyncio.sleep(1.0)  # presence echoes settle
    # Directed links: pair k is (2k, 2k+1); messages go both ways, round robin.
    links = []
    for k in range(0, len(conns), 2):
        links.append((conns[k], conns[k + 1].jid))
        links.append((conns[k + 1], conns[k].jid))
    rate = args.rate
    tick = args.tick_ms / 1000
    sent = 0
    li = 0
    pad = "x" * max(0, args.body_len - 24)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    t0_ns = time.monotonic_ns()
    end = t0 + args.duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int(rate * (now - t0)) - sent
        if due > 0:
            ts = time.monotonic_ns()
            for _ in range(due):
                c, to = links[li]
                li = (li + 1) % len(links)
                c.writer.write(f"<message to='{to}' type='chat'><body>t={ts} {pad}</body></message>".encode())
            sent += due
        await asyncio.sleep(tick)
    t1 = time.monotonic()
    t1_ns = time.monotonic_ns()
    # Stragglers.
    deadline = time.monotonic() + args.drain
    while len(lat) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    # Sustained delivery: messages received inside the sending window, after its first second.
    w0 = t0_ns + 1_000_000_000
    in_window = sum(1 for t in recv_times if w0 <= t <= t1_ns)
    window_s = max(1e-3, (t1_ns - w0) / 1e9)
    for c in conns:
        await close(c)
    for r in readers:
        r.cancel()
    return {"ok": len(lat), "sent": sent, "received": len(lat), "lost": max(0, sent - len(lat)),
            "failed": 0, "errors": errors, "wall_s": t1 - t0, "in_window": in_window,
            "window_s": window_s, "lat_ms": lat, "cpu_s": cpu(ru0, ru1), "clients": len(conns)}


async def run_hold(args, client, users):
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    conns, errors = await login_all(args, client, users, "h")
    wall = time.monotonic() - t0
    readers = [asyncio.ensure_future(drain(c)) for c in conns]
    print(f"READY {len(conns)} {sum(errors.values())}", flush=True)
    # Stay online until SIGTERM (or the time limit).
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.duration)
    except asyncio.TimeoutError:
        pass
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    alive = sum(1 for r in readers if not r.done())
    for c in conns:
        await close(c)
    for r in readers:
        r.cancel()
    return {"ok": len(conns), "failed": sum(errors.values()), "errors": errors, "wall_s": wall,
            "alive": alive, "cpu_s": cpu(ru0, ru1), "lat_ms": []}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["logins", "msgs", "hold"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--direct-tls", action="store_true")
    p.add_argument("--cafile", default=None, help="CA to trust (default: no verification)")
    p.add_argument("--mech", default="SCRAM-SHA-1", choices=["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
    p.add_argument("--users", required=True)
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--count", type=int, default=0, help="use only the first COUNT users of this part")
    p.add_argument("--concurrency", type=int, default=20, help="logins in flight at once")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=1000.0, help="msgs: messages/s sent by this process")
    p.add_argument("--tick-ms", type=float, default=5.0)
    p.add_argument("--body-len", type=int, default=64)
    p.add_argument("--drain", type=float, default=5.0, help="msgs: seconds to wait for stragglers")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    users = load_users(args)
    client = Client(args)
    fn = {"logins": run_logins, "msgs": run_msgs, "hold": run_hold}[args.mode]
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    res = asyncio.run(fn(args, client, users))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    res["total_wall_s"] = time.monotonic() - t0
    res["total_cpu_s"] = cpu(ru0, ru1)
    res["mode"] = args.mode
    with open(args.out, "w") as f:
        json.dump(res, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
