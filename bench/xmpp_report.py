#!/usr/bin/env python3
"""Accounts, result merging and reporting for bench/xmpp.sh (Prosody vs xmppd on loopback).

Subcommands:

  users PREFIX COUNT OUT
        OUT: one `localpart password` line per user PREFIX000001..; every user's password is
        password_of(user), distinct per user.
  prosody-accounts DATA_DIR DOMAIN USERS ITERATIONS
        Prosody's internal storage for those users, as `prosodyctl register` writes it with
        mod_auth_internal_hashed: DATA_DIR/<domain, dots as %2e>/accounts/<user>.dat with a
        random salt and SCRAM-SHA-1 StoredKey/ServerKey at ITERATIONS (PBKDF2 in parallel).
  xmppd-users DOMAIN USERS OUT
        OUT: `jid<TAB>password` lines, the input of a bulk user hook for xmppd.
  combine MODE FILE...
        Merge the JSON results of xmpp_load.py processes; print key=value lines for the shell:
        ok, failed, rate, p50_ms, p99_ms, max_ms, sent, received, lost, client_cpu_pct, err.
  report CSV
        Medians per server, scenario and level, xmppd/prosody ratios, the highest message rate
        each server delivered without loss and with p99 under 50 ms, and memory per client.

Standard library only.
"""

import csv
import hashlib
import hmac
import json
import os
import statistics
import sys
import uuid
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor


def name_of(prefix, i):
    return f"{prefix}{i:06d}"


def password_of(user):
    return "pw-" + hashlib.sha256(("xmpp-bench:" + user).encode()).hexdigest()[:12]


def cmd_users(args):
    prefix, count, out = args[0], int(args[1]), args[2]
    with open(out, "w") as f:
        for i in range(1, count + 1):
            u = name_of(prefix, i)
            f.write(f"{u} {password_of(u)}\n")


def read_users(path):
    with open(path) as f:
        return [tuple(line.split()) for line in f if line.strip()]


def prosody_encode(s):
    # Prosody's datamanager: every byte that is not an ASCII letter or digit becomes %xx.
    return "".join(c if c.isascii() and c.isalnum() else "%%%02x" % ord(c) for c in s)


def _scram_sha1(item):
    user, password, iters = item
    salt = str(uuid.uuid4())
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), iters)
    client_key = hmac.new(salted, b"Client Key", "sha1").digest()
    stored = hashlib.sha1(client_key).hexdigest()
    server = hmac.new(salted, b"Server Key", "sha1").hexdigest()
    return user, salt, stored, server


def cmd_prosody_accounts(args):
    data, domain, users, iters = args[0], args[1], args[2], int(args[3])
    d = os.path.join(data, prosody_encode(domain), "accounts")
    os.makedirs(d, exist_ok=True)
    items = [(u, p, iters) for u, p in read_users(users)]
    with ProcessPoolExecutor() as ex:
        for user, salt, stored, server in ex.map(_scram_sha1, items, chunksize=64):
            with open(os.path.join(d, prosody_encode(user) + ".dat"), "w") as f:
                f.write("return {\n"
                        f'\t["iteration_count"] = {iters};\n'
                        f'\t["server_key"] = "{server}";\n'
                        f'\t["stored_key"] = "{stored}";\n'
                        f'\t["salt"] = "{salt}";\n'
                        "};\n")


def cmd_xmppd_users(args):
    domain, users, out = args[0], args[1], args[2]
    with open(out, "w") as f:
        for u, p in read_users(users):
            f.write(f"{u}@{domain}\t{p}\n")


def pct(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def cmd_combine(args):
    mode, files = args[0], args[1:]
    res = []
    for f in files:
        try:
            with open(f) as fh:
                res.append(json.load(fh))
        except (OSError, ValueError):
            res.append(None)
    missing = sum(1 for r in res if r is None)
    res = [r for r in res if r is not None]
    lat = sorted(x for r in res for x in r.get("lat_ms", []))
    ok = sum(r.get("ok", 0) for r in res)
    failed = sum(r.get("failed", 0) for r in res)
    errs = defaultdict(int)
    for r in res:
        for k, v in r.get("errors", {}).items():
            errs[k] += v
    cpu_pct = max((100 * r["cpu_s"] / r["wall_s"] for r in res if r.get("wall_s")), default=0)
    out = {"ok": ok, "failed": failed, "missing": missing, "client_cpu_pct": f"{cpu_pct:.0f}",
           "p50_ms": f"{pct(lat, 0.5):.2f}", "p99_ms": f"{pct(lat, 0.99):.2f}",
           "max_ms": f"{(lat[-1] if lat else 0):.2f}"}
    if mode == "logins":
        wall = max((r["wall_s"] for r in res), default=0)
        out["rate"] = f"{(ok / wall if wall else 0):.1f}"
        out["sent"] = out["received"] = out["lost"] = ""
    elif mode == "msgs":
        sent = sum(r.get("sent", 0) for r in res)
        recv = sum(r.get("received", 0) for r in res)
        # Sustained delivery: received inside each process's sending window (after 1 s).
        rate = sum(r.get("in_window", 0) / r["window_s"] for r in res if r.get("window_s"))
        out.update(sent=sent, received=recv, lost=max(0, sent - recv), rate=f"{rate:.1f}")
        if any(r.get("login_failed") for r in res):
            out["failed"] = max(1, failed)
    else:
        wall = max((r["wall_s"] for r in res), default=0)
        out["rate"] = f"{(ok / wall if wall else 0):.1f}"
        out["sent"] = out["received"] = out["lost"] = ""
    err = "; ".join(f"{k} x{v}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])[:2])
    out["err"] = "'" + err.replace("'", "") + "'"
    for k, v in out.items():
        print(f"{k}={v}")


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(rows, key):
    vals = [num(r[key]) for r in rows if num(r.get(key)) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, nd=1):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{nd}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def cmd_report(args):
    with open(args[0]) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print("no results")
        return
    groups = defaultdict(list)
    for r in rows:
        groups[(r["scenario"], int(float(r["level"])), r["server"])].append(r)
    servers = sorted({r["server"] for r in rows}, key=lambda s: (s != "prosody", s))
    both = "prosody" in servers and "xmppd" in servers

    def table(scn, title, cols, level_name):
        levels = sorted({lv for (s, lv, _) in groups if s == scn})
        if not levels:
            return
        print(f"\n{title}")
        head = f"  {level_name:>8} {'server':<8} " + " ".join(f"{c[0]:>10}" for c in cols) + "   ok runs"
        print(head)
        for lv in levels:
            meds = {}
            for sv in servers:
                g = groups.get((scn, lv, sv))
                if not g:
                    continue
                m = {c[1]: med(g, c[1]) for c in cols}
                meds[sv] = m
                oks = sum(1 for r in g if r["ok_run"] == "1")
                print(f"  {lv:>8} {sv:<8} " + " ".join(f"{fmt(m[c[1]]):>10}" for c in cols) + f"   {oks}/{len(g)}")
            if both and "prosody" in meds and "xmppd" in meds:
                print(f"  {lv:>8} {'ratio':<8} " + " ".join(
                    f"{ratio(meds['xmppd'][c[1]], meds['prosody'][c[1]]):>10}" for c in cols))

    table("login", "Logins (TCP + STARTTLS + SCRAM + bind, then </stream>): medians over repetitions",
          [("logins/s", "rate"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("cpu ms/op", "cpu_ms_per_op"),
           ("rss MB", "rss_mb"), ("client%", "client_cpu_pct")], "in flight")
    table("msg", "Chat messages between online pairs (offered rate = level): medians over repetitions",
          [("deliv/s", "rate"), ("lost", "lost"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
           ("cpu ms/kmsg", "cpu_ms_per_op"), ("rss MB", "rss_mb"), ("client%", "client_cpu_pct")], "msgs/s")
    table("mem", "Memory with clients online (TLS, bound, available)",
          [("online", "ok"), ("base MB", "rss_base_mb"), ("rss MB", "rss_mb"), ("KB/client", "kb_per_client"),
           ("fill/s", "rate"), ("client%", "client_cpu_pct")], "clients")

    # Message capacity: highest offered rate with no loss and p99 < 50 ms in every repetition.
    caps = {}
    for sv in servers:
        best = None
        for (scn, lv, s), g in groups.items():
            if scn != "msg" or s != sv:
                continue
            if all(r["ok_run"] == "1" and num(r["lost"]) == 0 and (num(r["p99_ms"]) or 1e9) < 50 for r in g):
                best = lv if best is None or lv > best else best
        caps[sv] = best
    if any(v is not None for v in caps.values()):
        print("\nMessage rate delivered without loss and with p99 < 50 ms in every repetition:")
        for sv in servers:
            print(f"  {sv:<8} {caps[sv] if caps[sv] is not None else 'none of the levels'}")
        if both and caps.get("prosody") and caps.get("xmppd"):
            print(f"  xmppd/prosody {caps['xmppd'] / caps['prosody']:.2f} (target 10)")
    if both:
        print("\nRatios are xmppd/prosody: above 1 for logins/s and deliv/s means xmppd did more; "
              "below 1 for latency, CPU and memory means xmppd needed less.")


def main():
    cmds = {"users": cmd_users, "prosody-accounts": cmd_prosody_accounts,
            "xmppd-users": cmd_xmppd_users, "combine": cmd_combine, "report": cmd_report}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    cmds[sys.argv[1]](sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
