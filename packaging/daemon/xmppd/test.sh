# xmppd's hooks for packaging/tests/install-test (see packaging/daemon/turnd/test.sh for
# what the test provides and calls). The package serves "localhost" (enabled, with a
# self-signed certificate, by its first install); the test's accounts live there.

XMPP_DOMAIN=localhost

# An administrator's edits, in the conffiles: an administrator in xmppd.toml, and in
# /etc/default/xmppd a second STARTTLS port the probe also tries, so the test sees that
# the environment file reaches the daemon.
edit_config() {
    sed -i "s/^#admins = .*/admins = [\"$TEST_USER@$XMPP_DOMAIN\"]/" "$ROOT/etc/rtc/xmppd.toml"
    grep -qx "admins = \[\"$TEST_USER@$XMPP_DOMAIN\"\]" "$ROOT/etc/rtc/xmppd.toml" || return 1
    cat >>"$ROOT/etc/default/xmppd" <<'END'
# install test: a second client port
XMPPD_C2S_PORTS='[5222, 15222]'
END
}

config_kept() {
    grep -qx "admins = \[\"$TEST_USER@$XMPP_DOMAIN\"\]" "$ROOT/etc/rtc/xmppd.toml" &&
        grep -qx "XMPPD_C2S_PORTS='\[5222, 15222\]'" "$ROOT/etc/default/xmppd"
}

# stream_features PORT: opens an XMPP client stream to localhost on PORT (bash's
# /dev/tcp) and prints what the server sends up to the end of <stream:features>.
stream_features() {
    in_net timeout 10 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
        printf "%s" "<?xml version=\"1.0\"?><stream:stream to=\"$2\" version=\"1.0\" xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">" >&3
        out=
        while IFS= read -r -d ">" -t 5 chunk <&3; do
            out+="$chunk>"
            case $out in *"</stream:features>"*) break ;; esac
        done
        printf "%s\n" "$out"' probe "$1" "$XMPP_DOMAIN"
}

# An XMPP stream header on 5222 (and on the port /etc/default/xmppd adds): the server
# opens its stream for localhost and offers STARTTLS in <stream:features>.
probe() {
    local port out
    for port in 5222 15222; do
        out=$(stream_features "$port") || { echo "port $port: no answer" >&2; return 1; }
        grep -q '<stream:stream' <<<"$out" && grep -q '</stream:features>' <<<"$out" &&
            grep -q "<starttls xmlns=['\"]urn:ietf:params:xml:ns:xmpp-tls['\"]" <<<"$out" ||
            { echo "port $port: $out" >&2; return 1; }
    done
}

# `rtc-admin xmpp adduser` as root, the password on stdin.
add_user() {
    printf '%s\n' "$TEST_PASSWORD" | in_root rtc-admin xmpp adduser "$TEST_USER@$XMPP_DOMAIN" >/dev/null
}

# rtc-admin xmpp has no account list: its `about` counts the accounts in the database
# (the daemon is stopped here; check_user logs in once it runs again).
user_kept() {
    in_root rtc-admin xmpp about | grep -q '^database: .*(1 accounts\?)$'
}

# sendxmpp JID PASSWORD: go-sendxmpp (an independent XMPP client) logs in over STARTTLS,
# checking the certificate against the one the package made, and sends a message to the
# account itself.
sendxmpp() {
    local home=$TEST_TMP/sendxmpp-home
    mkdir -p "$home"
    echo "install test" | in_net env HOME="$home" SSL_CERT_FILE="$ROOT/etc/rtc/certs/localhost.crt" \
        timeout 30 go-sendxmpp -u "$1" -p "$2" -j 127.0.0.1:5222 --timeout 10 "$1" 2>&1
}

check_user() {
    local out
    out=$(sendxmpp "$TEST_USER@$XMPP_DOMAIN" "$TEST_PASSWORD") || { printf '%s\n' "$out" >&2; return 1; }
    ! sendxmpp "$TEST_USER@$XMPP_DOMAIN" wrong-password >/dev/null
}
