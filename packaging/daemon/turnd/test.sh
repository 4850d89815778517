# turnd's hooks for packaging/tests/install-test, which sources this file in a subshell
# (working directory: the repository) and calls one function at a time:
#   edit_config   make an administrator's edits to the conffiles (the test network needs)
#   config_kept   those edits are still there (after an upgrade)
#   probe         the running daemon answers a real client, without credentials
#   add_user      rtc-admin, as root and without flags, adds $TEST_USER
#   user_kept     rtc-admin still lists that user (after an upgrade)
#   check_user    a real client authenticates as that user with the running daemon, and
#                 fails with a wrong password
# Available: $ROOT (the installed Debian root), $REPO, $TEST_TMP (a scratch directory),
# in_root CMD... (a command inside that root: chroot, or the booted container),
# in_net CMD... (a host command, such as a test client, in the network namespace the
# daemon serves; $NET_PID is a process in it, for `nsenter --target "$NET_PID" --net`),
# $TEST_DOMAIN, $TEST_USER and $TEST_PASSWORD. Each hook succeeds or fails; the test
# reports which.

# An administrator's edits, in the conffiles: the realm in turnd.toml, and in
# /etc/default/turnd relaying on the test's loopback-only network (which a real server
# refuses by default).
edit_config() {
    sed -i "s/^realm = .*/realm = \"$TEST_DOMAIN\"/" "$ROOT/etc/rtc/turnd.toml"
    cat >>"$ROOT/etc/default/turnd" <<'END'
# install test: relays on the loopback-only test network
TURND_RELAY_IP='["127.0.0.1"]'
TURND_ALLOW_LOOPBACK_PEERS=true
END
}

config_kept() {
    grep -qx "realm = \"$TEST_DOMAIN\"" "$ROOT/etc/rtc/turnd.toml" &&
        grep -qx 'TURND_ALLOW_LOOPBACK_PEERS=true' "$ROOT/etc/default/turnd"
}

# A STUN binding request (RFC 8489) from coturn's client: turnd answers with the
# client's address.
probe() {
    in_net turnutils_stunclient 127.0.0.1 | grep -q 'UDP reflexive addr: 127\.0\.0\.1:'
}

add_user() {
    in_root rtc-admin turn -a -u "$TEST_USER" -p "$TEST_PASSWORD"
}

user_kept() {
    in_root rtc-admin turn -l | grep -qxF "${TEST_USER}[${TEST_DOMAIN}]"
}

# uclient's totals, "SENT RECEIVED LOST" (the last totals line and the loss line).
uclient_totals() {
    local totals lost
    totals=$(grep 'tot_send_msgs=' <<<"$1" | tail -n 1)
    lost=$(grep 'Total lost packets ' <<<"$1" | tail -n 1)
    echo "$(sed -n 's/.*tot_send_msgs=\([0-9]*\).*/\1/p' <<<"$totals")" \
        "$(sed -n 's/.*tot_recv_msgs=\([0-9]*\).*/\1/p' <<<"$totals")" \
        "$(sed -n 's/.*Total lost packets \([0-9]*\).*/\1/p' <<<"$lost")"
}

# TURN allocations as that user (coturn's uclient), relaying to coturn's echo peer and
# back: everything sent comes back. The same with a wrong password relays nothing.
check_user() {
    local peer out sent received lost rc=0
    # In the background: nsenter itself becomes the peer, so $! is the peer's pid.
    nsenter --target "$NET_PID" --net -- turnutils_peer -L 127.0.0.1 -p 3490 >/dev/null 2>&1 &
    peer=$!
    sleep 0.3
    out=$(in_net timeout 20 turnutils_uclient -u "$TEST_USER" -w "$TEST_PASSWORD" \
        -e 127.0.0.1 -r 3490 -n 20 -m 1 -l 120 127.0.0.1 2>&1) || rc=$?
    read -r sent received lost <<<"$(uclient_totals "$out")"
    if [ $rc -ne 0 ] || [ "${sent:-0}" -eq 0 ] || [ "$sent" != "$received" ] || [ "$lost" != 0 ]; then
        rc=1
    else
        out=$(in_net timeout 20 turnutils_uclient -u "$TEST_USER" -w wrong-password \
            -e 127.0.0.1 -r 3490 -n 5 -m 1 -l 120 127.0.0.1 2>&1) || true
        read -r sent received lost <<<"$(uclient_totals "$out")"
        [ "${received:-0}" -eq 0 ] || rc=1
    fi
    kill "$peer" 2>/dev/null || true
    wait "$peer" 2>/dev/null || true
    [ $rc -eq 0 ] || printf '%s\n' "$out" >&2
    return $rc
}
