#!/usr/bin/python3
"""Raw-socket XMPP checks (no XMPP library): SASL mechanisms and channel binding, and bad
input that must end in the right stream or stanza error, after which the server must still
accept a normal login.

  raw.py sasl           --mech M [--cb TYPE] [--if-offered] [--expect-failure COND] ...
  raw.py login          a normal login (TLS, SCRAM, bind) and a ping: the health check
  raw.py billion-laughs a DTD with nested entities        -> <restricted-xml/>
  raw.py xxe            a DTD with an external entity     -> <restricted-xml/>, nothing leaked
  raw.py oversized      one stanza larger than the limit  -> <policy-violation/>
  raw.py bad-jid        invalid JIDs in to=               -> <jid-malformed/> stanza errors
                        (or <improper-addressing/>), a bad stream to= -> <host-unknown/>,
                        a forged from= is replaced (or <invalid-from/>)
  raw.py preauth        a stanza before authentication    -> <not-authorized/>
  raw.py slow-header    a stream header never finished    -> <connection-timeout/>

Every bad-input check then logs in afresh with --jid/--password and pings the server.
Common options: --host, --port, --direct-tls, --cafile FILE | --insecure, --tls-max 1.2,
--timeout S, -v. Exit 0 on success, 1 on failure (message on stderr), 2 on usage errors.
Run with Debian's /usr/bin/python3 (python3-openssl and python3-cryptography for -PLUS).
"""

import os
import select
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from xml.sax.saxutils import escape, quoteattr  # noqa: E402

import common  # noqa: E402
from common import Failure, Skip, check, fail, local_of  # noqa: E402
from rawxmpp import (NS_CLIENT, NS_SASL, NS_STANZA_ERR, NS_STREAM, NS_TLS, Conn,  # noqa: E402
                     StreamEnded, expect_stream_error, login, q, to_str)

HEADER = ("<?xml version='1.0'?>{dtd}<stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to={to} version='1.0'>")


def health(args, what="fresh login after the bad input"):
    """A new connection, TLS, SASL, bind and a ping: the server is still serving."""
    c = login(args, args.jid, args.password, resource=f"health-{os.getpid()}")
    try:
        ans = c.ping_server()
        check(ans.get("type") in ("result", "error"), f"{what}: ping answered with {to_str(ans)[:200]}")
    finally:
        c.close()
    return c.jid


def have_openssl():
    try:
        import OpenSSL  # noqa: F401
        return True
    except ImportError:
        return False


# --- sasl ------------------------------------------------------------------------------------

def cmd_sasl(args):
    mech = args.mech
    plus = mech.endswith("-PLUS")
    backend = "openssl" if plus and have_openssl() and args.cb in ("auto", "tls-exporter", "tls-unique") else "std"
    if plus and args.cb == "tls-exporter" and backend != "openssl":
        fail("tls-exporter needs pyOpenSSL: apt-get install python3-openssl")
    c = Conn(args, tls_backend=backend)
    notes = []
    feats = c.open_stream()
    if not args.direct_tls:
        check(feats.find(f"{{{NS_TLS}}}starttls") is not None, "no STARTTLS offered on the plain stream")
        pre = c.mechanisms()
        check("PLAIN" not in pre, f"PLAIN offered before TLS: {pre}")
        if feats.find(f"{{{NS_TLS}}}starttls/{{{NS_TLS}}}required") is not None:
            notes.append("STARTTLS required")
        c.starttls()
    mechs = c.mechanisms()
    if mech not in mechs:
        if args.if_offered:
            raise Skip(f"{mech} not offered over {c.tls.version()} (offered: {' '.join(mechs)})")
        fail(f"{mech} not offered over {c.tls.version()} (offered: {' '.join(mechs)})")
    cb = None
    if plus:
        listed = c.cb_types()
        if args.cb != "auto":
            cb = args.cb
            if listed is not None and cb not in listed:
                fail(f"channel binding {cb} not among the types the server lists (XEP-0440): {listed}")
        elif listed:
            usable = ["tls-exporter", "tls-server-end-point", "tls-unique"]
            if backend != "openssl":
                usable.remove("tls-exporter")
            if c.tls.version() == "TLSv1.3":
                usable = [t for t in usable if t != "tls-unique"]
            cb = next((t for t in usable if t in listed), None)
            check(cb, f"no usable channel binding among those listed: {listed}")
        else:
            cb = "tls-exporter" if c.tls.version() == "TLSv1.3" else "tls-unique"
        notes.append(f"server lists channel bindings {listed}" if listed is not None
                     else "no XEP-0440 channel-binding list")
    password = args.password
    status, detail = c.auth(mech, local_of(args.jid), password, cb_type=cb, gs2_flag=args.gs2_flag)
    if args.expect_failure:
        check(status == "failure", f"{mech} succeeded but a failure was expected")
        check(args.expect_failure in ("any", detail),
              f"{mech} failed with <{detail}/>, expected <{args.expect_failure}/>")
        c.close()
        if args.jid and args.health_password:
            args.password = args.health_password
            health(args)
        return f"{mech} refused with <{detail}/> over {c.tls.version()}"
    check(status == "success", f"{mech} failed: <{detail}/>")
    feats = c.open_stream()
    check(feats.find(f"{{{NS_SASL}}}mechanisms") is None, "SASL offered again after success")
    jid = c.bind(f"sasl-{os.getpid()}")
    ans = c.ping_server()
    check(ans.get("type") in ("result", "error"), "no answer to a ping after login")
    c.close()
    return f"{detail}, {c.tls.version()}, bound {jid}" + (f" ({'; '.join(notes)})" if notes else "")


def cmd_login(args):
    c = login(args, args.jid, args.password, mech=args.mech, resource=f"login-{os.getpid()}")
    ans = c.ping_server()
    c.close()
    return f"logged in as {c.jid}, ping {ans.get('type')}"


# --- bad input -------------------------------------------------------------------------------

def raw_conn(args, after_tls):
    """A connection ready for a new stream header: after STARTTLS if AFTER_TLS."""
    c = Conn(args)
    if after_tls and not args.direct_tls:
        c.open_stream()
        c.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = c.next()
        check(el.tag == f"{{{NS_TLS}}}proceed", f"STARTTLS answered with {to_str(el)[:200]}")
        c._start_tls()
    c._reset_parser()
    return c


def laughs_dtd(levels):
    ents = ['<!ENTITY lol0 "lol">']
    for i in range(1, levels + 1):
        ents.append(f'<!ENTITY lol{i} "' + f"&lol{i - 1};" * 10 + '">')
    return "<!DOCTYPE stream:stream [" + "".join(ents) + "]>"


def cmd_billion_laughs(args):
    c = raw_conn(args, args.after_tls)
    c.send(HEADER.format(dtd=laughs_dtd(9), to=quoteattr(args.domain)))
    c.send_partial(f"<message to={quoteattr(args.domain)}><body>&lol9;</body></message>")
    cond = expect_stream_error(c, ["restricted-xml"] + args.accept, args.wait, "billion laughs")
    c.close(graceful=False)
    jid = health(args)
    return f"<{cond}/>, then logged in as {jid}"


def cmd_xxe(args):
    c = raw_conn(args, args.after_tls)
    dtd = f'<!DOCTYPE stream:stream [<!ENTITY xxe SYSTEM "file://{args.secret_file}">]>'
    c.send(HEADER.format(dtd=dtd, to=quoteattr(args.domain)))
    c.send_partial(f"<message to={quoteattr(args.domain)}><body>&xxe;</body></message>")
    cond = expect_stream_error(c, ["restricted-xml"] + args.accept, args.wait, "external entity")
    c.close(graceful=False)
    secret = open(args.secret_file, "rb").read().strip()[:64] if os.path.exists(args.secret_file) else b""
    if secret:
        check(secret not in bytes(c.received), f"the server sent back content of {args.secret_file}")
    jid = health(args)
    return f"<{cond}/>, nothing of {args.secret_file} echoed, then logged in as {jid}"


def flood(c, head, size, tail):
    """Sends HEAD, SIZE filler bytes, TAIL in chunks, stopping as soon as the server speaks
    or closes. Returns the bytes sent."""
    sent = 0
    if not c.send_partial(head):
        return sent
    chunk = b"A" * 16384
    while sent < size:
        r, _, _ = select.select([c.sock], [], [], 0)
        if r:
            return sent
        n = min(len(chunk), size - sent)
        if not c.send_partial(chunk[:n]):
            return sent
        sent += n
    c.send_partial(tail)
    return sent


def cmd_oversized(args):
    if args.stage == "authed":
        c = login(args, args.jid, args.password, resource=f"big-{os.getpid()}")
    else:
        c = Conn(args)
        c.open_stream()
        c.negotiate_tls()
    head = f"<message to={quoteattr(args.domain)} type='chat' id='big'><body>"
    sent = flood(c, head, args.size, "</body></message>")
    cond = expect_stream_error(c, ["policy-violation"] + args.accept, args.wait, f"{args.size}-byte stanza ({args.stage})")
    c.close(graceful=False)
    jid = health(args)
    return (f"<{cond}/> after {sent // 1024} KiB of a {args.size // 1024} KiB stanza ({args.stage}), "
            f"then logged in as {jid}")


BAD_JIDS = [
    ("two @", "a@b@{d}"),
    ("empty localpart", "@{d}"),
    ("empty resourcepart", "{d}/"),
    ("empty domainpart", "user@"),
    ("1024-byte localpart", "x" * 1024 + "@{d}"),
    ("space in localpart", "us er@{d}"),
    ("quote in localpart", 'a"b@{d}'),
    ("ideographic space in localpart", "a\u3000b@{d}"),
    ("1024-byte resourcepart", "user@{d}/" + "r" * 1024),
]


def stanza_error(el):
    err = el.find(f"{{{NS_CLIENT}}}error")
    if err is None:
        return None
    for c in err:
        if c.tag.startswith(f"{{{NS_STANZA_ERR}}}") and q(c.tag) != "text":
            return q(c.tag)
    return "error without condition"


def cmd_bad_jid(args):
    results = []
    c = login(args, args.jid, args.password, resource=f"badjid-{os.getpid()}")
    for i, (label, pattern) in enumerate(BAD_JIDS):
        bad = pattern.format(d=args.domain)
        for kind in ("message", "iq"):
            sid = f"{kind}{i}"
            if kind == "message":
                c.send(f"<message to={quoteattr(bad)} id='{sid}' type='chat'><body>bad jid</body></message>")
            else:
                c.send(f"<iq to={quoteattr(bad)} id='{sid}' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
            try:
                while True:
                    el = c.next(args.wait)
                    if el.get("id") == sid:
                        break
            except TimeoutError:
                fail(f"{label} ({kind} to {bad[:40]!r}): no answer within {args.wait:.0f} s")
            except StreamEnded as e:
                check(e.condition == "improper-addressing",
                      f"{label} ({kind}): the server ended the stream with <{e.condition}/>, "
                      "wanted a <jid-malformed/> error or <improper-addressing/>")
                results.append(f"{label}/{kind}: improper-addressing")
                c.close(graceful=False)
                c = login(args, args.jid, args.password, resource=f"badjid-{os.getpid()}-{i}")
                continue
            check(el.get("type") == "error",
                  f"{label} ({kind} to {bad[:40]!r}): answered with {to_str(el)[:300]}, not an error")
            cond = stanza_error(el)
            check(cond == "jid-malformed",
                  f"{label} ({kind} to {bad[:40]!r}): error <{cond}/>, wanted <jid-malformed/>")
            results.append(f"{label}/{kind}")
        # Still alive after each one.
        ans = c.ping_server(iq_id=f"alive{i}")
        check(ans.get("type") in ("result", "error"), f"session dead after {label}")
    # A forged from=: the server must stamp our own full JID (or end the stream).
    forged = f"someone-else@{args.domain}/x"
    c.send(f"<message from={quoteattr(forged)} to={quoteattr(c.jid)} id='forged' "
           f"type='chat'><body>forged from</body></message>")
    note = ""
    try:
        deadline = time.monotonic() + args.wait
        while True:
            el = c.next(max(0.1, deadline - time.monotonic()))
            if el.get("id") == "forged":
                break
        if el.get("type") == "error":
            note = f"forged from= refused with <{stanza_error(el)}/>"
        else:
            check(el.get("from") == c.jid,
                  f"a message sent with from={forged} arrived with from={el.get('from')}")
            note = "forged from= replaced by the session's JID"
    except TimeoutError:
        fail("a message to our own bare JID with a forged from= never came back (nor an error)")
    except StreamEnded as e:
        check(e.condition == "invalid-from", f"forged from= ended the stream with <{e.condition}/>")
        note = "forged from= ended the stream with <invalid-from/>"
    c.close()
    # A bad to= in the stream header itself.
    h = Conn(args)
    h._reset_parser()
    h.send(HEADER.format(dtd="", to=quoteattr("a@b@" + args.domain)))
    hcond = expect_stream_error(h, ["host-unknown", "improper-addressing"] + args.accept, args.wait, "invalid to= in the stream header")
    h.close(graceful=False)
    jid = health(args)
    return (f"{len(results)} bad to= answered ({', '.join(results[:3])}, ...); {note}; "
            f"stream to='a@b@{args.domain}' -> <{hcond}/>; then logged in as {jid}")


def cmd_preauth(args):
    c = Conn(args)
    c.open_stream()
    allowed = ["not-authorized"] + args.accept
    if args.before_tls:
        check(not args.direct_tls, "--before-tls makes no sense with --direct-tls")
        allowed.append("policy-violation")
    else:
        c.negotiate_tls()
    if args.stanza == "iq":
        c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    elif args.stanza == "message":
        c.send(f"<message to={quoteattr(args.jid)} id='m1'><body>before auth</body></message>")
    else:
        c.send("<presence/>")
    cond = expect_stream_error(c, allowed, args.wait, f"{args.stanza} before authentication")
    c.close(graceful=False)
    jid = health(args)
    return f"<{cond}/> ({args.stanza}, {'before' if args.before_tls else 'after'} TLS), then logged in as {jid}"


def cmd_slow_header(args):
    c = Conn(args)
    c._reset_parser()
    t0 = time.monotonic()
    if not args.silent:
        c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               "xmlns:stream='http://etherx.jabber.org/streams' "
               f"to={quoteattr(args.domain)} version='1.0'")
    # Keep the header unfinished: a space now and then (still inside the start tag).
    deadline = t0 + args.wait
    cond = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"no stream error within {args.wait:.0f} s of an unfinished stream header")
        try:
            el = c.next(min(left, args.drip) if args.drip and not args.silent else left)
            fail(f"the server sent {to_str(el)[:200]} to an unfinished header")
        except TimeoutError:
            if args.drip and not args.silent and not c.send_partial(" "):
                fail("the server closed the connection without a stream error")
            continue
        except StreamEnded as e:
            if e.condition is None:
                fail(f"the server {e.how} without a stream error after {time.monotonic() - t0:.1f} s")
            check(e.condition in ["connection-timeout"] + args.accept,
                  f"stream error <{e.condition}/>, wanted <connection-timeout/>")
            cond = e.condition
            break
        except Failure as e:
            if "stream starts with" in str(e):
                fail(f"the server answered without its own stream header first: {e}")
            raise
    waited = time.monotonic() - t0
    check(c.wait_closed(5), "the server sent <connection-timeout/> but did not close the connection")
    c.close(graceful=False)
    jid = health(args)
    return f"<{cond}/> after {waited:.1f} s, then logged in as {jid}"


# --- command line ----------------------------------------------------------------------------

def main():
    p = common.new_parser(__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name, help_, wait=None):
        sp = sub.add_parser(name, help=help_)
        common.add_server_options(sp)
        common.add_account_options(sp, 1, "for the health check" if name not in ("sasl", "login") else "")
        if wait is not None:
            sp.add_argument("--accept", action="append", default=[], metavar="COND",
                            help="also accept this stream error (for servers known to differ, "
                                 "e.g. Prosody 0.12)")
            sp.add_argument("--wait", type=float, default=wait,
                            help=f"seconds to wait for the server's answer (default {wait:.0f})")
        return sp

    sp = cmd("sasl", "log in with one SASL mechanism")
    sp.add_argument("--mech", required=True,
                    choices=["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                             "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS"])
    sp.add_argument("--cb", default="auto",
                    choices=["auto", "tls-unique", "tls-server-end-point", "tls-exporter"],
                    help="channel binding for -PLUS (auto: from the server's XEP-0440 list, "
                         "else tls-exporter on TLS 1.3 and tls-unique on TLS 1.2)")
    sp.add_argument("--if-offered", action="store_true",
                    help="exit 0 with SKIP when the server does not offer the mechanism")
    sp.add_argument("--expect-failure", metavar="COND",
                    help="the login must fail with this SASL condition (or 'any')")
    sp.add_argument("--gs2-flag", choices=["n", "y"], default=None,
                    help="gs2 channel-binding flag for a non-PLUS SCRAM ('y' while the server "
                         "offers -PLUS must be refused: downgrade protection)")
    sp.add_argument("--health-password", default=None,
                    help="with --expect-failure: the right password, to log in afterwards")
    sp = cmd("login", "a normal login and a ping")
    sp.add_argument("--mech", default=None)
    sp = cmd("billion-laughs", "nested entities in a DTD", 15)
    sp.add_argument("--after-tls", action="store_true", help="send it in the stream after STARTTLS")
    sp = cmd("xxe", "an external entity in a DTD", 15)
    sp.add_argument("--after-tls", action="store_true", help="send it in the stream after STARTTLS")
    sp.add_argument("--secret-file", default="/etc/passwd", help="file the entity points at")
    sp = cmd("oversized", "one stanza above the size limit", 30)
    sp.add_argument("--size", type=int, default=1 << 20, help="bytes of body (default 1 MiB)")
    sp.add_argument("--stage", choices=["preauth", "authed"], default="authed")
    sp = cmd("bad-jid", "invalid JIDs in to=, a forged from=, a bad stream to=", 10)
    sp = cmd("preauth", "a stanza before authentication", 15)
    sp.add_argument("--stanza", choices=["iq", "message", "presence"], default="iq")
    sp.add_argument("--before-tls", action="store_true",
                    help="send it on the plain stream, before STARTTLS")
    sp = cmd("slow-header", "a stream header that never ends", 90)
    sp.add_argument("--drip", type=float, default=1.0,
                    help="send a space every DRIP seconds to look alive (0: send nothing more)")
    sp.add_argument("--silent", action="store_true", help="send no byte at all after connecting")

    args = p.parse_args()
    common.finish_server_options(args, args.jid)
    wait = getattr(args, "wait", 0)
    if wait and args.timeout < wait + 20:
        args.timeout = wait + 20
    fn = globals()["cmd_" + args.cmd.replace("-", "_")]
    what = f"raw {args.cmd}" + (f" {args.mech}" if getattr(args, "mech", None) else "")
    return common.run_main(what, lambda: fn(args), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
