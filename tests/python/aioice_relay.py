#!/usr/bin/env python3
"""Gathers ICE candidates with aioice through a TURN server and prints the relay candidate.

A second, independent TURN client implementation (besides coturn's turnutils) used by the
turnd integration tests. Exits 0 and prints `relay <address> <port>` when a relay
candidate was gathered, non-zero otherwise.

Usage: aioice_relay.py HOST PORT USERNAME PASSWORD [udp|tcp]
"""

import asyncio
import sys

import aioice


async def gather(host: str, port: int, username: str, password: str, transport: str) -> int:
    conn = aioice.Connection(
        ice_controlling=True,
        turn_server=(host, port),
        turn_username=username,
        turn_password=password,
        turn_transport=transport,
    )
    try:
        await asyncio.wait_for(conn.gather_candidates(), timeout=15)
        # Read the candidates before close(), which forgets them.
        candidates = list(conn.local_candidates)
    finally:
        await conn.close()
    for c in candidates:
        print(f"candidate {c.type} {c.transport} {c.host} {c.port}")
    relays = [c for c in candidates if c.type == "relay"]
    if not relays:
        print("no relay candidate gathered", file=sys.stderr)
        return 1
    for c in relays:
        print(f"relay {c.host} {c.port}")
    return 0


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, username, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    transport = sys.argv[5] if len(sys.argv) == 6 else "udp"
    return asyncio.run(gather(host, port, username, password, transport))


if __name__ == "__main__":
    sys.exit(main())
