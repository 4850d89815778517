#!/usr/bin/env python3
"""Accounts, SIPp parsing and reporting for bench/sip.sh (Kamailio vs sipd on loopback).

Subcommands:

  subscribers DOMAIN PREFIX COUNT
        SQL (one transaction) inserting users PREFIX000001.. into Kamailio's `subscriber` table:
        password '', ha1 = md5(user:realm:pass), ha1b = md5(user@domain:realm:pass), realm =
        DOMAIN. Every user's password is password_of(user).
  users DOMAIN PREFIX FIRST COUNT PARTS OUT
        SIPp injection files OUT.0.csv .. OUT.<PARTS-1>.csv (SEQUENTIAL, user;password;domain),
        users FIRST..FIRST+COUNT-1 dealt round-robin.
  calls DOMAIN CALLERS CALLEE_PREFIX CALLEES PARTS OUT
        Injection files for uac_auth.xml (caller;password;domain;callee): callers
        u000001..CALLERS, call k goes to callee (k mod CALLEES)+1.
  sipp FILE...
        Sum the final lines of SIPp -trace_stat files (one per SIPp process) and print key=value
        pairs for sip.sh: created, ok, failed, retrans, unexpected, timeouts, resp_ms (mean of
        ResponseTime1 weighted by successful calls).
  report CSV
        Medians per server, scenario and rate, sipd/kamailio ratios, the highest rate with zero
        failures in every repetition, and memory per 10,000 contacts.

Only the standard library: the benchmark runs on a bare Debian host with Kamailio and SIPp.
"""

import csv
import hashlib
import statistics
import sys
from collections import defaultdict

USER_PREFIX = "u"  # registering users and callers
CALLEE_PREFIX = "c"


def name_of(prefix, i):
    return f"{prefix}{i:06d}"


def password_of(user):
    # Distinct per user, so a digest computed for the wrong user fails.
    return "pw-" + hashlib.md5(user.encode()).hexdigest()[:10]


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def cmd_subscribers(args):
    domain, prefix, count = args[0], args[1], int(args[2])
    out = sys.stdout
    out.write("BEGIN;\n")
    for i in range(1, count + 1):
        u = name_of(prefix, i)
        p = password_of(u)
        ha1 = md5(f"{u}:{domain}:{p}")
        ha1b = md5(f"{u}@{domain}:{domain}:{p}")
        out.write("INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
                  f"VALUES ('{u}', '{domain}', '', '{ha1}', '{ha1b}');\n")
    out.write("COMMIT;\n")


def write_parts(out, parts, rows):
    files = [open(f"{out}.{i}.csv", "w") for i in range(parts)]
    for f in files:
        f.write("SEQUENTIAL\n")
    for k, row in enumerate(rows):
        files[k % parts].write(";".join(row) + "\n")
    for f in files:
        f.close()


def cmd_users(args):
    domain, prefix, first, count, parts, out = (args[0], args[1], int(args[2]), int(args[3]),
                                                int(args[4]), args[5])
    rows = []
    for i in range(first, first + count):
        u = name_of(prefix, i)
        rows.append((u, password_of(u), domain))
    write_parts(out, parts, rows)


def cmd_calls(args):
    domain, callers, callee_prefix, callees, parts, out = (args[0], int(args[1]), args[2],
                                                           int(args[3]), int(args[4]), args[5])
    rows = []
    for k in range(callers):
        u = name_of(USER_PREFIX, k + 1)
        rows.append((u, password_of(u), domain, name_of(callee_prefix, k % callees + 1)))
    write_parts(out, parts, rows)


def duration_s(text):
    """SIPp's HH:MM:SS:microseconds (or HH:MM:SS) as seconds."""
    parts = text.strip().split(":")
    try:
        if len(parts) == 4:
            h, m, s, us = (int(x) for x in parts)
            return h * 3600 + m * 60 + s + us / 1e6
        if len(parts) == 3:
            h, m, s = (int(x) for x in parts)
            return h * 3600 + m * 60 + s
    except ValueError:
        pass
    return 0.0


def last_stats(path):
    """The header and last data line of a SIPp -trace_stat file, as a dict (None if empty)."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return None
    if len(lines) < 2:
        return None
    head = lines[0].split(";")
    vals = lines[-1].split(";")
    return dict(zip(head, vals))


def cmd_sipp(args):
    tot = defaultdict(int)
    resp_weighted = 0.0
    files_ok = True
    for path in args:
        st = last_stats(path)
        if st is None:
            files_ok = False
            continue

        def n(key, st=st):
            try:
                return int(float(st.get(key, "0") or 0))
            except ValueError:
                return 0

        tot["created"] += n("TotalCallCreated")
        tot["ok"] += n("SuccessfulCall(C)")
        tot["failed"] += n("FailedCall(C)")
        tot["retrans"] += n("Retransmissions(C)")
        tot["unexpected"] += n("FailedUnexpectedMessage(C)")
        tot["timeouts"] += n("FailedTimeoutOnRecv(C)") + n("FailedMaxUDPRetrans(C)")
        resp_weighted += duration_s(st.get("ResponseTime1(C)", "")) * n("SuccessfulCall(C)")
    resp_ms = 1000.0 * resp_weighted / tot["ok"] if tot["ok"] else 0.0
    fields = dict(tot)
    for k in ("created", "ok", "failed", "retrans", "unexpected", "timeouts"):
        fields.setdefault(k, 0)
    fields["resp_ms"] = f"{resp_ms:.2f}"
    fields["stats_ok"] = 1 if files_ok and args else 0
    print(" ".join(f"{k}={v}" for k, v in fields.items()))


# --- report ----------------------------------------------------------------------------------

def fnum(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(rows, key):
    vals = [x for x in (fnum(r.get(key)) for r in rows) if x is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 100 or digits == 0:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def cmd_report(args):
    with open(args[0]) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print("no runs recorded")
        return
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    groups = defaultdict(list)
    for r in rows:
        groups[(r["scenario"], r["server"], int(r["rate"]))].append(r)

    names = {"reg": "REGISTER with digest (register_auth_only.xml), rate = registrations/s",
             "call": "proxied calls with proxy digest (uac_auth.xml -> uas.xml), rate = calls/s"}
    for scen in ("reg", "call"):
        rates = sorted({k[2] for k in groups if k[0] == scen})
        if not rates:
            continue
        print()
        print(names[scen])
        print(f"{'server':<9} {'rate':>6} {'reps':>4} {'done/s':>8} {'failed':>7} {'retrans':>8} "
              f"{'resp ms':>8} {'cpu s':>7} {'cpu ms/call':>11} {'sipp cpu%':>9} {'ok':>5}")
        for rate in rates:
            for s in servers:
                g = groups.get((scen, s, rate))
                if not g:
                    continue
                oks = sum(1 for r in g if r["ok"] == "1")
                print(f"{s:<9} {rate:>6} {len(g):>4} {fmt(med(g, 'achieved_rate')):>8} "
                      f"{fmt(med(g, 'failed'), 0):>7} {fmt(med(g, 'retrans'), 0):>8} "
                      f"{fmt(med(g, 'resp_ms'), 2):>8} {fmt(med(g, 'cpu_s'), 2):>7} "
                      f"{fmt(med(g, 'cpu_ms_per_call'), 3):>11} "
                      f"{fmt(med(g, 'client_cpu_pct'), 0):>9} {oks:>2}/{len(g):<2}")
        if "sipd" in servers and "kamailio" in servers:
            print(f"  sipd/kamailio: {'rate':>6} {'done/s':>8} {'resp ms':>8} {'cpu ms/call':>11}")
            for rate in rates:
                a = groups.get((scen, "sipd", rate))
                b = groups.get((scen, "kamailio", rate))
                if not a or not b:
                    continue
                print(f"  {'':<14} {rate:>6} {ratio(med(a, 'achieved_rate'), med(b, 'achieved_rate')):>8} "
                      f"{ratio(med(a, 'resp_ms'), med(b, 'resp_ms')):>8} "
                      f"{ratio(med(a, 'cpu_ms_per_call'), med(b, 'cpu_ms_per_call')):>11}")
        best = {}
        for s in servers:
            good = [rate for rate in rates
                    if groups.get((scen, s, rate))
                    and all(r["ok"] == "1" for r in groups[(scen, s, rate)])]
            best[s] = max(good) if good else None
            print(f"  highest rate with zero failures in every repetition, {s}: "
                  f"{best[s] if best[s] is not None else 'none'}"
                  + ("" if best[s] is None or best[s] < max(rates) else " (the highest tried: raise the rates)"))
        if best.get("sipd") and best.get("kamailio"):
            print(f"  sipd/kamailio: {best['sipd'] / best['kamailio']:.2f}")

    mem = defaultdict(list)
    for r in rows:
        if r["scenario"] == "mem":
            mem[r["server"]].append(r)
    if mem:
        print()
        print("memory with registered contacts (register_auth_only.xml, Expires 3600)")
        print(f"{'server':<9} {'reps':>4} {'contacts':>9} {'pss base MB':>11} {'pss MB':>8} "
              f"{'KB/contact':>10} {'MB/10k':>7} {'rss-sum KB/c':>12} {'cpu ms/reg':>10} {'ok':>5}")
        for s in servers:
            g = mem.get(s)
            if not g:
                continue
            kb = med(g, "kb_per_contact")
            base, pss = med(g, "pss_base_kb"), med(g, "pss_kb")
            oks = sum(1 for r in g if r["ok"] == "1")
            print(f"{s:<9} {len(g):>4} {fmt(med(g, 'contacts'), 0):>9} "
                  f"{fmt(base / 1024 if base else None):>11} {fmt(pss / 1024 if pss else None):>8} "
                  f"{fmt(kb, 2):>10} {fmt(kb * 10000 / 1024 if kb is not None else None):>7} "
                  f"{fmt(med(g, 'rss_kb_per_contact'), 2):>12} "
                  f"{fmt(med(g, 'cpu_ms_per_call'), 3):>10} {oks:>2}/{len(g):<2}")
        if mem.get("sipd") and mem.get("kamailio"):
            a, b = mem["sipd"], mem["kamailio"]
            print(f"  sipd/kamailio: KB/contact {ratio(med(a, 'kb_per_contact'), med(b, 'kb_per_contact'))}, "
                  f"base {ratio(med(a, 'pss_base_kb'), med(b, 'pss_base_kb'))}, "
                  f"cpu/reg {ratio(med(a, 'cpu_ms_per_call'), med(b, 'cpu_ms_per_call'))}")


def main():
    cmds = {"subscribers": cmd_subscribers, "users": cmd_users, "calls": cmd_calls,
            "sipp": cmd_sipp, "report": cmd_report}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(cmds)}}} ARGS...")
    cmds[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
