#!/usr/bin/env python3
"""Parsing and reporting for bench/turn.sh (coturn vs turnd on loopback).

Three subcommands:

  load DURATION_S FILE...   Sum the results of the parallel turnutils_uclient processes of one
                            run (each FILE is one process's output, every line prefixed with the
                            wall-clock time it was read) and print `key=value` pairs for turn.sh.
  alloc FILE...             The same for the parallel `uclient -O` processes of one allocation
                            run: wall time, and busy time without uclient's 1 s sleeps.
  report CSV                Medians per server and level, turnd/coturn ratios and the highest
                            zero-loss level, from the raw CSV that turn.sh writes.

Only the standard library: the benchmark must run on a bare Debian host with coturn installed.
"""

import csv
import re
import statistics
import sys
from collections import defaultdict

# uclient (coturn 4.x) staggers each session's first packet 1 s + random(0..5 s) after the
# connect phase ends, then sends every -z ms until -n packets are out. All sessions send at
# once only between these two offsets; the delivered rate is measured inside that window.
ALL_STARTED_S = 6.0
FIRST_START_S = 1.0

STATS = re.compile(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
CONNECT = re.compile(r"Total connect time is (\d+)")
LOST = re.compile(r"Total lost packets (\d+)")
RTT = re.compile(r"Average round trip delay ([0-9.]+) ms")
TRANSMIT = re.compile(r"Total transmit time is (\d+)")
CPU = re.compile(r"UCLIENT_CPU ([0-9.]+) ([0-9.]+) ([0-9.]+)")
EXIT = re.compile(r"UCLIENT_EXIT (\d+)")
# uclient answers a 437 (allocation mismatch: its new socket got the port of a probe socket
# whose allocation is still alive) with sleep(1) and a new socket: client time, not server time.
RETRY_437 = "trying allocate again"


def parse_one(path, duration_s):
    """One uclient process: totals, its steady-window receive rate and its own CPU use."""
    start = None
    samples = []  # (wall time, sent, recv) from the once-a-second progress lines
    out = {"sent": 0, "recv": 0, "lost": 0, "rtt": 0.0, "transmit": 0, "cpu_pct": None,
           "exit": None, "final": False}
    with open(path, errors="replace") as f:
        for line in f:
            ts, _, text = line.partition(" ")
            try:
                t = float(ts)
            except ValueError:
                continue
            if m := CONNECT.search(text):
                start = t
            elif "msz=" in text and (m := STATS.search(text)):
                samples.append((t, int(m.group(1)), int(m.group(2))))
            elif m := STATS.search(text):
                # The final totals line (no msz=).
                out["sent"], out["recv"] = int(m.group(1)), int(m.group(2))
                out["final"] = True
                samples.append((t, out["sent"], out["recv"]))
            elif m := LOST.search(text):
                out["lost"] = int(m.group(1))
            elif m := RTT.search(text):
                out["rtt"] = float(m.group(1))
            elif m := TRANSMIT.search(text):
                out["transmit"] = int(m.group(1))
            elif m := CPU.search(text):
                user, system, wall = (float(x) for x in m.groups())
                out["cpu_pct"] = 100.0 * (user + system) / wall if wall > 0 else 0.0
            elif m := EXIT.search(text):
                out["exit"] = int(m.group(1))

    out["rate"] = window_rate(start, samples, duration_s, out["recv"])
    return out


def window_rate(start, samples, duration_s, recv_total):
    """Received packets per second while every session was sending (see ALL_STARTED_S).

    The progress lines come once a second, about on whole seconds after `start`, so the window
    edges get a quarter second of slack.
    """
    if start is not None:
        lo, hi = start + ALL_STARTED_S - 0.25, start + FIRST_START_S + duration_s + 0.25
        inside = [s for s in samples if lo <= s[0] <= hi]
        if len(inside) >= 2 and inside[-1][0] - inside[0][0] >= 1.9:
            (t0, _, r0), (t1, _, r1) = inside[0], inside[-1]
            return (r1 - r0) / (t1 - t0)
    # No such window (DURATION_S under ~8 s): the best one-second step, which can overstate.
    steps = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:]) if b[0] > a[0]]
    if steps:
        return max(steps)
    return recv_total / duration_s if duration_s > 0 else 0.0


def cmd_load(args):
    duration_s = float(args[0])
    runs = [parse_one(p, duration_s) for p in args[1:]]
    sent = sum(r["sent"] for r in runs)
    recv = sum(r["recv"] for r in runs)
    lost = sum(r["lost"] for r in runs)
    rtt = sum(r["rtt"] * r["recv"] for r in runs) / recv if recv else 0.0
    transmit = max((r["transmit"] for r in runs), default=0)
    cpus = [r["cpu_pct"] for r in runs if r["cpu_pct"] is not None]
    ok = all(r["final"] and r["exit"] == 0 for r in runs)
    fields = {
        "sent": sent,
        "recv": recv,
        "lost": lost,
        "lost_pct": f"{100.0 * lost / sent:.3f}" if sent else "100.000",
        "rtt_ms": f"{rtt:.3f}",
        "delivered_pps": f"{sum(r['rate'] for r in runs):.0f}",
        "uclient_pps": f"{recv / transmit:.0f}" if transmit else "0",
        "client_cpu_pct": f"{max(cpus):.0f}" if cpus else "",
        "ok": 1 if ok else 0,
    }
    print(" ".join(f"{k}={v}" for k, v in fields.items()))


def cmd_alloc(args):
    walls, busies, retries, ok = [], [], 0, True
    for path in args:
        start = end = None
        mine = 0
        code = None
        with open(path, errors="replace") as f:
            for line in f:
                ts, _, text = line.partition(" ")
                if "UCLIENT_START" in text:
                    start = float(ts)
                elif m := EXIT.search(text):
                    end, code = float(ts), int(m.group(1))
                elif RETRY_437 in text:
                    mine += 1
        if start is None or end is None:
            ok = False
            continue
        ok = ok and code == 0
        walls.append(end - start)
        busies.append(max(end - start - mine, 0.001))
        retries += mine
    print(f"wall_s={max(walls, default=0):.3f} busy_s={max(busies, default=0):.3f} "
          f"retries={retries} ok={1 if ok and walls else 0}")


def median(rows, key):
    vals = []
    for r in rows:
        try:
            vals.append(float(r[key]))
        except (KeyError, ValueError):
            pass
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def cmd_report(args):
    with open(args[0], newline="") as f:
        rows = list(csv.DictReader(f))
    servers = []
    for r in rows:
        if r["server"] not in servers:
            servers.append(r["server"])
    load = defaultdict(list)
    alloc = defaultdict(list)
    for r in rows:
        if r["scenario"] == "load":
            load[(r["level"], r["server"])].append(r)
        elif r["scenario"] == "alloc":
            alloc[r["server"]].append(r)
    levels = []
    for r in rows:
        if r["scenario"] == "load" and r["level"] not in levels:
            levels.append(r["level"])

    if levels:
        print("\nRelay load (medians over repetitions; pps = packets/s received back by uclient)")
        head = (f"{'level':>8} {'server':>7} {'n':>2} {'offered':>8} {'delivered':>9} {'loss%':>7} "
                f"{'rtt ms':>6} {'cpu s/100k':>10} {'hwm MB':>7} {'rss MB':>7} {'ucl cpu%':>8}")
        print(head)
        print("-" * len(head))
        for lv in levels:
            for s in servers:
                rs = load.get((lv, s), [])
                if not rs:
                    continue
                hwm, rss = median(rs, "vmhwm_kb"), median(rs, "vmrss_kb")
                print(f"{lv:>8} {s:>7} {len(rs):>2} {fmt(median(rs, 'offered_pps')):>8} "
                      f"{fmt(median(rs, 'delivered_pps')):>9} {fmt(median(rs, 'lost_pct'), 3):>7} "
                      f"{fmt(median(rs, 'rtt_ms'), 2):>6} {fmt(median(rs, 'cpu_per_100k'), 3):>10} "
                      f"{fmt(hwm and hwm / 1024, 1):>7} {fmt(rss and rss / 1024, 1):>7} "
                      f"{fmt(median(rs, 'client_cpu_pct')):>8}")
        if "coturn" in servers and "turnd" in servers:
            print("\nturnd/coturn ratios of the medians (delivered: >1 better; cpu, memory: <1 better)")
            print(f"{'level':>8} {'delivered':>9} {'cpu/100k':>9} {'hwm':>6} {'rss':>6}")
            for lv in levels:
                t, c = load.get((lv, "turnd"), []), load.get((lv, "coturn"), [])
                if not t or not c:
                    continue
                print(f"{lv:>8} {ratio(median(t, 'delivered_pps'), median(c, 'delivered_pps')):>9} "
                      f"{ratio(median(t, 'cpu_per_100k'), median(c, 'cpu_per_100k')):>9} "
                      f"{ratio(median(t, 'vmhwm_kb'), median(c, 'vmhwm_kb')):>6} "
                      f"{ratio(median(t, 'vmrss_kb'), median(c, 'vmrss_kb')):>6}")
        print("\nHighest level with zero loss in every repetition (offered pps):")
        for s in servers:
            best = None
            for lv in levels:
                rs = load.get((lv, s), [])
                if rs and all(r["ok"] == "1" and float(r["lost_pct"]) == 0.0 for r in rs):
                    off = median(rs, "offered_pps")
                    if best is None or off > best[1]:
                        best = (lv, off)
            print(f"  {s:>7}: " + (f"level {best[0]} ({fmt(best[1])} pps)" if best else "none"))
        bad = [r for r in rows if r["scenario"] == "load" and r["ok"] != "1"]
        if bad:
            print(f"\nWARNING: {len(bad)} load run(s) incomplete (uclient timed out or failed); "
                  "see the ok column.")
        sat = [r for r in rows if r["scenario"] == "load" and r.get("client_cpu_pct")
               and float(r["client_cpu_pct"]) >= 90]
        if sat:
            print(f"\nNOTE: uclient used >=90% of a core in {len(sat)} run(s): the client, not the "
                  "server, may be the limit there. Rerun with CLIENT_PROCS=2 (or more).")

    if alloc:
        print("\nAllocation burst (uclient -O: allocate, refresh, permission, channel; held)")
        head = (f"{'server':>7} {'n':>2} {'held':>6} {'allocs/s':>9} {'KB/alloc':>9} "
                f"{'base MB':>8} {'held MB':>8} {'cpu ms/alloc':>12} {'437s':>5}")
        print(head)
        print("-" * len(head))
        for s in servers:
            rs = alloc.get(s, [])
            if not rs:
                continue
            base, held = median(rs, "rss_base_kb"), median(rs, "vmrss_kb")
            print(f"{s:>7} {len(rs):>2} {fmt(median(rs, 'allocs_held')):>6} "
                  f"{fmt(median(rs, 'allocs_per_s')):>9} {fmt(median(rs, 'rss_per_alloc_kb'), 1):>9} "
                  f"{fmt(base and base / 1024, 1):>8} {fmt(held and held / 1024, 1):>8} "
                  f"{fmt(median(rs, 'cpu_ms_per_alloc'), 3):>12} {fmt(median(rs, 'retries_437')):>5}")
        t, c = alloc.get("turnd", []), alloc.get("coturn", [])
        if t and c:
            print(f"turnd/coturn: allocs/s {ratio(median(t, 'allocs_per_s'), median(c, 'allocs_per_s'))}"
                  f", KB/alloc {ratio(median(t, 'rss_per_alloc_kb'), median(c, 'rss_per_alloc_kb'))}"
                  f", cpu/alloc {ratio(median(t, 'cpu_ms_per_alloc'), median(c, 'cpu_ms_per_alloc'))}")
        short = [r for r in rows if r["scenario"] == "alloc" and r["ok"] != "1"]
        if short:
            print(f"WARNING: {len(short)} allocation run(s) held fewer allocations than requested "
                  "or uclient failed; see allocs_held and ok.")


def main():
    commands = {"load": cmd_load, "alloc": cmd_alloc, "report": cmd_report}
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
