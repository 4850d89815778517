# sipd's hooks for packaging/tests/install-test (see packaging/daemon/turnd/test.sh for
# what the test provides and calls).

# An administrator's edits, in the conffiles: the domain in sipd.toml, and in
# /etc/default/sipd MD5 offered first (for phones that answer only the first challenge,
# as SIPp and sipsak do) and a Server header the probe looks for, so the test sees that
# the environment file reaches the daemon.
edit_config() {
    sed -i "s/^domain = .*/domain = [\"$TEST_DOMAIN\"]/" "$ROOT/etc/rtc/sipd.toml"
    cat >>"$ROOT/etc/default/sipd" <<'END'
# install test: MD5 first for SIPp, a recognisable Server header
SIPD_AUTH_ALGORITHMS='["MD5", "SHA-256"]'
SIPD_SERVER_HEADER=sipd-pkgtest
END
}

config_kept() {
    grep -qx "domain = \[\"$TEST_DOMAIN\"\]" "$ROOT/etc/rtc/sipd.toml" &&
        grep -qx 'SIPD_SERVER_HEADER=sipd-pkgtest' "$ROOT/etc/default/sipd"
}

# A SIP OPTIONS to the server itself, from sipsak: 200 OK with the Server header of
# /etc/default/sipd.
probe() {
    local out
    out=$(in_net timeout 20 sipsak -vv -s sip:127.0.0.1 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
    grep -q '^SIP/2.0 200' <<<"$out" && grep -qi '^Server: sipd-pkgtest' <<<"$out" ||
        { printf '%s\n' "$out" >&2; return 1; }
}

add_user() {
    in_root rtc-admin sip add "$TEST_USER" "$TEST_PASSWORD"
}

user_kept() {
    in_root rtc-admin sip show | grep -qF "$TEST_USER@$TEST_DOMAIN"
}

# REGISTER with digest authentication as that user, from SIPp with the repository's
# scenario; the binding is then in the database for rtc-admin. The same with a wrong
# password is refused.
check_user() {
    local out
    printf 'SEQUENTIAL\n%s;%s;%s\n' "$TEST_USER" "$TEST_PASSWORD" "$TEST_DOMAIN" >"$TEST_TMP/sip-user.csv"
    printf 'SEQUENTIAL\n%s;wrong-password;%s\n' "$TEST_USER" "$TEST_DOMAIN" >"$TEST_TMP/sip-bad.csv"
    sipp_register() {
        (cd "$TEST_TMP" && in_net timeout 30 sipp -sf "$REPO/tests/sipp/register_auth_only.xml" \
            -inf "$1" -i 127.0.0.1 -p "$2" -t u1 -m 1 -nostdin -default_behaviors all,-bye \
            -recv_timeout 5000 -timeout 20s 127.0.0.1:5060 2>&1)
    }
    out=$(sipp_register sip-user.csv 15060) || { printf '%s\n' "$out" >&2; return 1; }
    out=$(in_root rtc-admin sip ul show "$TEST_USER") || return 1
    grep -qF "sip:$TEST_USER@127.0.0.1:15060" <<<"$out" || { printf '%s\n' "$out" >&2; return 1; }
    ! sipp_register sip-bad.csv 15061 >/dev/null
}
