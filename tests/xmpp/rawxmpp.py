"""A small blocking XMPP client written for the tests: raw sockets, our own SASL, every byte
under the script's control. Used where a library would hide what is being checked (which
SASL mechanism and channel binding, stream errors after bad input).

TLS goes through memory BIOs so that both TLS stacks share one read/write loop: Python's
`ssl` (certificate and host name checks, tls-unique, tls-server-end-point) and, for the
tls-exporter channel binding (RFC 9266) that `ssl` cannot compute, pyOpenSSL (Debian
package python3-openssl).
"""

import base64
import hashlib
import hmac
import os
import select
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from common import Failure, check, fail

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STREAM_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"  # XEP-0440: the server's channel-binding types
NS_PING = "urn:xmpp:ping"


def q(tag):
    """'{ns}local' -> 'local' for messages."""
    return tag.split("}", 1)[1] if tag.startswith("{") else tag


def to_str(el):
    return ET.tostring(el, encoding="unicode")


class StreamEnded(Exception):
    """The server closed the stream; condition is the stream error's, if it sent one."""

    def __init__(self, condition=None, text=None, how="closed"):
        self.condition, self.text, self.how = condition, text, how
        msg = f"stream {how}"
        if condition:
            msg += f" with stream error <{condition}/>"
        if text:
            msg += f" ({text})"
        super().__init__(msg)


# --- TLS over memory BIOs ------------------------------------------------------------------

class StdTls:
    """Python's ssl module."""

    def __init__(self, args, server_name):
        from common import ssl_context
        self.ctx = ssl_context(args)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = self.ctx.wrap_bio(self.inc, self.out, server_hostname=server_name)

    def step_handshake(self):
        """True when done; False when it wants more input."""
        try:
            self.obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def pending_out(self):
        return self.out.read()

    def feed(self, data):
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()

    def write(self, data):
        self.obj.write(data)

    def read(self):
        """Decrypted bytes, b'' when it wants more input; raises EOFError on close_notify."""
        try:
            return self.obj.read(65536)
        except ssl.SSLWantReadError:
            return b""
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            raise EOFError

    def version(self):
        return self.obj.version()

    def peer_cert_der(self):
        return self.obj.getpeercert(binary_form=True)

    def tls_unique(self):
        return self.obj.get_channel_binding("tls-unique")

    def exporter(self):
        raise Failure("tls-exporter needs pyOpenSSL (python3-openssl): Python's ssl cannot export keying material")


class OpenSslTls:
    """pyOpenSSL: the only way from Python to the TLS exporter (tls-exporter binding)."""

    def __init__(self, args, server_name):
        from OpenSSL import SSL
        self.SSL = SSL
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self.verify = not args.insecure
        if self.verify:
            ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1])
            if args.cafile:
                ctx.load_verify_locations(args.cafile)
            else:
                ctx.set_default_verify_paths()
        else:
            ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        if args.tls_max == "1.2":
            ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_tlsext_host_name(server_name.encode("idna"))
        self.conn.set_connect_state()
        self.server_name = server_name

    def step_handshake(self):
        try:
            self.conn.do_handshake()
        except self.SSL.WantReadError:
            return False
        if self.verify:
            self._check_host_name()
        return True

    def _check_host_name(self):
        from cryptography import x509
        cert = self.conn.get_peer_certificate().to_cryptography()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        want = self.server_name.lower()
        for n in names:
            n = n.lower()
            if n == want or (n.startswith("*.") and "." in want and want.split(".", 1)[1] == n[2:]):
                return
        raise Failure(f"server certificate does not name {self.server_name} (names: {names})")

    def pending_out(self):
        out = b""
        while True:
            try:
                chunk = self.conn.bio_read(65536)
            except self.SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        return out

    def feed(self, data):
        if data:
            self.conn.bio_write(data)
        else:
            self.conn.bio_shutdown()

    def write(self, data):
        self.conn.sendall(data)

    def read(self):
        try:
            return self.conn.recv(65536)
        except self.SSL.WantReadError:
            return b""
        except (self.SSL.ZeroReturnError, self.SSL.SysCallError):
            raise EOFError

    def version(self):
        return self.conn.get_protocol_version_name()

    def peer_cert_der(self):
        from OpenSSL import crypto
        return crypto.dump_certificate(crypto.FILETYPE_ASN1, self.conn.get_peer_certificate())

    def tls_unique(self):
        # The first Finished message of the handshake: the client's, in a full handshake.
        return self.conn.get_finished()

    def exporter(self):
        return self.conn.export_keying_material(b"EXPORTER-Channel-Binding", 32)


def server_end_point(der):
    """RFC 5929 tls-server-end-point: the certificate's hash, SHA-256 for MD5 and SHA-1."""
    from cryptography import x509
    cert = x509.load_der_x509_certificate(der)
    try:
        name = cert.signature_hash_algorithm.name
    except Exception:
        name = "sha256"
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, der).digest()


# --- the connection --------------------------------------------------------------------------

class Conn:
    def __init__(self, args, domain=None, tls_backend="std", connect_timeout=10.0):
        self.args = args
        self.domain = domain or args.domain
        self.tls = None
        self.tls_backend = tls_backend
        self.features = None
        self.stream_attrs = {}
        self.log = args.verbose
        self._parser = None
        self._depth = 0
        self._queue = []
        self._eof = False
        self.received = bytearray()  # everything the server sent (first MiB), for leak checks
        self.sock = socket.create_connection((args.host, args.port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        if args.direct_tls:
            self._start_tls()

    # -- bytes --
    def _sock_send(self, data):
        if data:
            self.sock.sendall(data)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.log:
            print("C:", data.decode(errors="replace")[:2000])
        if self.tls:
            self.tls.write(data)
            self._sock_send(self.tls.pending_out())
        else:
            self._sock_send(data)

    def send_partial(self, data):
        """Like send, but tolerates the server having closed (for floods and bad input)."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            return False

    def _recv_wire(self, deadline):
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            raise TimeoutError
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def _recv_app(self, deadline):
        """Some application bytes, or b'' at end of stream."""
        if not self.tls:
            return self._recv_wire(deadline)
        while True:
            try:
                data = self.tls.read()
            except EOFError:
                return b""
            if data:
                return data
            self._sock_send(self.tls.pending_out())
            wire = self._recv_wire(deadline)
            self.tls.feed(wire)
            if not wire:
                try:
                    return self.tls.read()
                except (EOFError, ssl.SSLError):
                    return b""

    def _start_tls(self):
        if self.tls_backend == "openssl":
            self.tls = OpenSslTls(self.args, self.domain)
        else:
            self.tls = StdTls(self.args, self.domain)
        deadline = time.monotonic() + 10
        try:
            while not self.tls.step_handshake():
                self._sock_send(self.tls.pending_out())
                wire = self._recv_wire(deadline)
                if not wire:
                    fail("server closed the connection during the TLS handshake")
                self.tls.feed(wire)
            self._sock_send(self.tls.pending_out())
        except ssl.SSLCertVerificationError as e:
            fail(f"TLS certificate rejected: {e.verify_message} (use --cafile FILE or --insecure)")
        except TimeoutError:
            fail("TLS handshake timed out")

    # -- XML --
    def _reset_parser(self):
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0

    def open_stream(self, to=None, wait_features=True, timeout=10.0):
        """Sends a stream header, reads the server's header and (by default) its features."""
        self._reset_parser()
        to = to or self.domain
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' "
                  f"to={quoteattr(to)} version='1.0' xml:lang='en'>")
        if wait_features:
            feats = self.next(timeout)
            check(feats.tag == f"{{{NS_STREAM}}}features",
                  f"expected <stream:features>, got {to_str(feats)[:300]}")
            self.features = feats
            return feats
        return None

    def _pump(self, deadline):
        data = self._recv_app(deadline)
        if self.log and data:
            print("S:", data.decode(errors="replace")[:2000])
        if len(self.received) < 1 << 20:
            self.received += data[:(1 << 20) - len(self.received)]
        if not data:
            self._eof = True
            return
        try:
            self._parser.feed(data)
            for ev, el in self._parser.read_events():
                if ev == "start":
                    self._depth += 1
                    if self._depth == 1:
                        check(el.tag == f"{{{NS_STREAM}}}stream",
                              f"server's stream starts with {el.tag}")
                        self.stream_attrs = dict(el.attrib)
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        self._queue.append(el)
                    elif self._depth == 0:
                        self._queue.append("end")
        except ET.ParseError as e:
            fail(f"server sent XML that does not parse: {e}")

    def next(self, timeout=10.0):
        """The next top-level element. Raises StreamEnded on a stream error or a closed
        stream, TimeoutError when nothing came."""
        deadline = time.monotonic() + timeout
        while not self._queue:
            if self._eof:
                raise StreamEnded(how="closed by the server (TCP)")
            self._pump(deadline)
        el = self._queue.pop(0)
        if isinstance(el, str):
            raise StreamEnded(how="closed by the server (</stream:stream>)")
        if el.tag == f"{{{NS_STREAM}}}error":
            cond, text = None, None
            for c in el:
                if c.tag == f"{{{NS_STREAM_ERR}}}text":
                    text = c.text
                elif c.tag.startswith(f"{{{NS_STREAM_ERR}}}"):
                    cond = q(c.tag)
            raise StreamEnded(cond, text, how="ended")
        el.tail = None
        return el

    def wait_closed(self, timeout=5.0):
        """After a stream error: true if the server closes the TCP connection in time."""
        deadline = time.monotonic() + timeout
        try:
            while not self._eof:
                self._pump(deadline)
        except (TimeoutError, Failure):
            return self._eof
        return True

    def close(self, graceful=True):
        try:
            if graceful:
                self.send("</stream:stream>")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # -- negotiation --
    def mechanisms(self):
        m = self.features.find(f"{{{NS_SASL}}}mechanisms") if self.features is not None else None
        return [e.text.strip() for e in m.findall(f"{{{NS_SASL}}}mechanism")] if m is not None else []

    def cb_types(self):
        """XEP-0440 channel-binding types the server listed, or None if it listed none."""
        x = self.features.find(f"{{{NS_SASL_CB}}}sasl-channel-binding") if self.features is not None else None
        if x is None:
            return None
        return [e.get("type") for e in x.findall(f"{{{NS_SASL_CB}}}channel-binding")]

    def starttls(self):
        check(self.features.find(f"{{{NS_TLS}}}starttls") is not None,
              "server does not offer STARTTLS")
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = self.next()
        check(el.tag == f"{{{NS_TLS}}}proceed", f"STARTTLS answered with {to_str(el)[:200]}")
        # Nothing more of the plain stream may be read: the parser is replaced anyway.
        self._start_tls()
        return self.open_stream()

    def negotiate_tls(self):
        """STARTTLS unless the connection already is TLS; returns the features."""
        if self.tls is None:
            return self.starttls()
        return self.features

    def channel_binding(self, cb_type):
        if cb_type == "tls-unique":
            return self.tls.tls_unique()
        if cb_type == "tls-server-end-point":
            return server_end_point(self.tls.peer_cert_der())
        if cb_type == "tls-exporter":
            return self.tls.exporter()
        fail(f"unknown channel binding type {cb_type}")

    def auth(self, mech, user, password, cb_type=None, gs2_flag=None, authzid=None):
        """SASL with MECH; returns ('success', details) or ('failure', condition)."""
        if mech == "PLAIN":
            raw = f"{authzid or ''}\0{user}\0{password}".encode()
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{base64.b64encode(raw).decode()}</auth>")
            el = self.next()
            if el.tag == f"{{{NS_SASL}}}success":
                return "success", "PLAIN"
            return "failure", sasl_condition(el)
        if mech.startswith("SCRAM-"):
            return self._scram(mech, user, password, cb_type, gs2_flag)
        fail(f"mechanism {mech} not implemented by the test client")

    def _scram(self, mech, user, password, cb_type, gs2_flag):
        plus = mech.endswith("-PLUS")
        hname = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256",
                 "SCRAM-SHA-512": "sha512"}[mech[:-5] if plus else mech]
        H = lambda b: hashlib.new(hname, b).digest()
        HMAC = lambda k, b: hmac.new(k, b, hname).digest()
        if plus:
            check(cb_type, "a -PLUS mechanism needs a channel binding type")
            gs2 = f"p={cb_type},,"
            cb_data = self.channel_binding(cb_type)
        else:
            gs2 = f"{gs2_flag or 'n'},,"
            cb_data = b""
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={sasl_name(user)},r={nonce}"
        msg = base64.b64encode((gs2 + first_bare).encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{msg}</auth>")
        el = self.next()
        if el.tag != f"{{{NS_SASL}}}challenge":
            return "failure", sasl_condition(el)
        server_first = base64.b64decode(el.text or "").decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        check(attrs.get("r", "").startswith(nonce), f"server nonce {attrs.get('r')} does not extend ours")
        salt = base64.b64decode(attrs["s"])
        iters = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac(hname, password.encode(), salt, iters)
        client_key = HMAC(salted, b"Client Key")
        stored_key = H(client_key)
        without_proof = f"c={base64.b64encode(gs2.encode() + cb_data).decode()},r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        proof = bytes(a ^ b for a, b in zip(client_key, HMAC(stored_key, auth_message)))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}</response>")
        el = self.next()
        if el.tag == f"{{{NS_SASL}}}challenge":
            # RFC 6120 allows the additional data in a challenge: answered with an empty response.
            data = el.text
            self.send(f"<response xmlns='{NS_SASL}'/>")
            el = self.next()
            if el.tag == f"{{{NS_SASL}}}success" and not (el.text or "").strip():
                el.text = data
        if el.tag != f"{{{NS_SASL}}}success":
            return "failure", sasl_condition(el)
        server_final = base64.b64decode((el.text or "").strip()).decode()
        check(server_final.startswith("v="), f"SCRAM success without server signature: {server_final!r}")
        want = base64.b64encode(HMAC(HMAC(salted, b"Server Key"), auth_message)).decode()
        check(server_final[2:] == want, "server signature is wrong: the server does not know the key")
        return "success", f"{mech}, {iters} iterations" + (f", channel binding {cb_type}" if plus else "")

    def bind(self, resource=None):
        check(self.features.find(f"{{{NS_BIND}}}bind") is not None, "server does not offer resource binding")
        res = f"<resource>{escape(resource)}</resource>" if resource else ""
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>{res}</bind></iq>")
        el = self.next()
        check(el.get("type") == "result" and el.get("id") == "bind1", f"bind answered with {to_str(el)[:300]}")
        jid = el.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid")
        check(jid is not None and jid.text, "bind result without a JID")
        self.jid = jid.text
        # RFC 3921 session: only if the server asks for it (not <optional/>).
        sess = self.features.find(f"{{{NS_SESSION}}}session")
        if sess is not None and sess.find(f"{{{NS_SESSION}}}optional") is None:
            self.send(f"<iq type='set' id='sess1'><session xmlns='{NS_SESSION}'/></iq>")
            el = self.next()
            check(el.get("type") == "result", f"session answered with {to_str(el)[:300]}")
        return self.jid

    def ping_server(self, timeout=10.0, iq_id="ping1"):
        """XEP-0199 ping to our server; returns the answer (result, or an error if the server
        has no ping: any answer shows the session is alive)."""
        self.send(f"<iq type='get' id='{iq_id}' to={quoteattr(self.domain)}><ping xmlns='{NS_PING}'/></iq>")
        deadline = time.monotonic() + timeout
        while True:
            el = self.next(max(0.1, deadline - time.monotonic()))
            if el.tag == f"{{{NS_CLIENT}}}iq" and el.get("id") == iq_id:
                return el


def sasl_condition(el):
    if el.tag == f"{{{NS_SASL}}}failure":
        for c in el:
            if c.tag != f"{{{NS_SASL}}}text":
                return q(c.tag)
        return "failure without condition"
    return f"unexpected {to_str(el)[:200]}"


def sasl_name(user):
    return user.replace("=", "=3D").replace(",", "=2C")


def login(args, jid, password, mech=None, resource=None, tls_backend="std"):
    """Connect, TLS, SASL (MECH or the best SCRAM offered), bind: a ready Conn."""
    from common import local_of, domain_of
    c = Conn(args, domain=domain_of(jid), tls_backend=tls_backend)
    c.open_stream()
    c.negotiate_tls()
    mechs = c.mechanisms()
    if mech is None:
        for m in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
            if m in mechs:
                mech = m
                break
        else:
            fail(f"no usable SASL mechanism offered: {mechs}")
    status, detail = c.auth(mech, local_of(jid), password)
    check(status == "success", f"login as {jid} with {mech} failed: {detail}")
    c.open_stream()
    c.bind(resource)
    return c


def expect_stream_error(conn, allowed, timeout, what):
    """Reads until the stream ends; the stream error must be one of ALLOWED. Returns it."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"{what}: no stream error within {timeout:.0f} s (stanzas seen: {seen[:3]})")
        try:
            el = conn.next(left)
            seen.append(to_str(el)[:200])
        except TimeoutError:
            fail(f"{what}: no stream error within {timeout:.0f} s (stanzas seen: {seen[:3]})")
        except StreamEnded as e:
            if e.condition is None:
                fail(f"{what}: the server {e.how} without a stream error (wanted one of {allowed})")
            check(e.condition in allowed,
                  f"{what}: stream error <{e.condition}/> but wanted one of {allowed}")
            closed = conn.wait_closed(5)
            check(closed, f"{what}: the server sent <{e.condition}/> but did not close the connection")
            return e.condition
