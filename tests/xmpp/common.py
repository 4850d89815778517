"""Shared pieces of the XMPP test scripts: command-line options, TLS settings, the hard
timeout and the way a script reports its result.

Every script prints `PASS <what>` and exits 0 on success; on failure it prints
`FAIL <what>: <reason>` to stderr and exits 1. A usage error exits 2. A check that the
server cannot take part in (a -PLUS mechanism it does not offer, with --if-offered) prints
`SKIP <what>: <reason>` and exits 0.
"""

import argparse
import os
import signal
import ssl
import sys

EXIT_FAIL = 1
EXIT_USAGE = 2


class Failure(Exception):
    """A check failed: the message says what was expected and what came."""


def fail(msg):
    raise Failure(msg)


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def domain_of(jid):
    bare = jid.split("/", 1)[0]
    return bare.split("@", 1)[1] if "@" in bare else bare


def local_of(jid):
    bare = jid.split("/", 1)[0]
    return bare.split("@", 1)[0] if "@" in bare else ""


def add_server_options(p):
    """Where the server is and how to trust it: independent of the JIDs' domain."""
    g = p.add_argument_group("server")
    g.add_argument("--host", default=None,
                   help="address to connect to (default: the first JID's domain)")
    g.add_argument("--port", type=int, default=None,
                   help="port (default 5222, or 5223 with --direct-tls)")
    g.add_argument("--direct-tls", action="store_true",
                   help="TLS from the first byte (XEP-0368) instead of STARTTLS")
    g.add_argument("--cafile", default=None,
                   help="PEM file of the CA (or the self-signed certificate) to trust")
    g.add_argument("--insecure", action="store_true",
                   help="do not verify the server certificate at all")
    g.add_argument("--tls-max", choices=["1.2", "1.3"], default=None,
                   help="highest TLS version to offer (1.2 for tls-unique channel binding)")
    g.add_argument("--timeout", type=float, default=30.0,
                   help="hard limit for the whole script, seconds (default 30)")
    g.add_argument("-v", "--verbose", action="store_true", help="log the XML exchanged")


def add_account_options(p, count, extra=""):
    """--jid/--password, --jid2/--password2, ... for COUNT accounts."""
    g = p.add_argument_group("accounts" + (f" ({extra})" if extra else ""))
    for i in range(1, count + 1):
        sfx = "" if i == 1 else str(i)
        g.add_argument(f"--jid{sfx}", required=True, help=f"bare JID of user {i}")
        g.add_argument(f"--password{sfx}", required=True, help=f"password of user {i}")


def finish_server_options(args, jid):
    """Fill in the defaults that depend on the JID; check the TLS options."""
    if args.cafile and args.insecure:
        raise SystemExit("--cafile and --insecure exclude each other")
    if args.cafile and not os.path.isfile(args.cafile):
        raise SystemExit(f"--cafile {args.cafile}: no such file")
    if args.host is None:
        args.host = domain_of(jid)
    if args.port is None:
        args.port = 5223 if args.direct_tls else 5222
    args.domain = domain_of(jid)
    return args


def ssl_context(args, server_hostname_check=True):
    """A client TLS context honouring --cafile, --insecure and --tls-max."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = server_hostname_check
        ctx.verify_mode = ssl.CERT_REQUIRED
        if args.cafile:
            ctx.load_verify_locations(cafile=args.cafile)
        else:
            ctx.load_default_certs()
    if args.tls_max == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def arm_alarm(seconds, what):
    """Last-resort hard timeout: whatever hangs, the process ends."""
    def on_alarm(_sig, _frame):
        sys.stderr.write(f"FAIL {what}: hard timeout of {seconds:.0f} s reached\n")
        sys.stderr.flush()
        os._exit(EXIT_FAIL)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(seconds + 0.999)))


def run_main(what, fn, timeout):
    """Runs fn() under the hard timeout and turns its outcome into the exit code."""
    arm_alarm(timeout + 5, what)
    try:
        result = fn()
    except Failure as e:
        sys.stderr.write(f"FAIL {what}: {e}\n")
        return EXIT_FAIL
    except Skip as e:
        print(f"SKIP {what}: {e}")
        return 0
    except KeyboardInterrupt:
        raise
    except Exception as e:  # an unexpected exception is a failure too, with its type
        sys.stderr.write(f"FAIL {what}: {type(e).__name__}: {e}\n")
        if os.environ.get("XMPP_TEST_TRACEBACK"):
            import traceback
            traceback.print_exc()
        return EXIT_FAIL
    finally:
        signal.alarm(0)
    print(f"PASS {what}" + (f": {result}" if result else ""))
    return 0


class Skip(Exception):
    """The server does not offer what this check needs, and the caller allowed that."""


def new_parser(description):
    return argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
