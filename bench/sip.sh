#!/usr/bin/env bash
# bench/sip.sh: Debian's Kamailio against sipd, side by side on 127.0.0.1, driven by SIPp with
# the scenarios in tests/sipp/.
#
#   bash bench/sip.sh           the benchmark (A/B alternating, REPS repetitions):
#     reg   REGISTER with digest (register_auth_only.xml) at each rate of REG_RATES
#     call  proxied calls (uac_auth.xml through the proxy to uas.xml) at each rate of CALL_RATES
#     mem   CONTACTS registrations held: memory per contact, CPU per registration
#   bash bench/sip.sh check     every scenario once per transport (udp, tcp, tls) against each
#                               server: a smoke test of the scenarios and of the servers
#
# Both servers get the same users (Kamailio's subscriber table in SQLite), the same domain and
# realm, and a fresh process and database for every run. Raw rows go to
# bench/results/sip-<date>.csv; bench/sip_report.py prints the summary. See bench/README.md.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and printf use a '.' decimal point

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SCEN=$ROOT/tests/sipp
MODE=${1:-bench}

REPS=${REPS:-3}
DURATION_S=${DURATION_S:-10}                    # sending time of one rate step
REG_RATES=${REG_RATES-"200 400 800 1600 3200"}  # registrations/s; empty skips the reg runs
CALL_RATES=${CALL_RATES-"200 400 800 1600 3200"} # calls/s; empty skips the call runs
CONTACTS=${CONTACTS:-10000}                     # contacts held by a mem run; 0 skips it
# Seconds between the last registration and the memory reading: past RFC 3261 Timer J (32 s
# for UDP) no transaction is left in either server, so what is measured is the contacts.
MEM_SETTLE_S=${MEM_SETTLE_S:-40}
FILL_RATE=${FILL_RATE:-250}                     # registrations/s while filling a mem run
WARM=${WARM:-200}                               # registrations before a mem run's baseline
SIPP_PROCS=${SIPP_PROCS:-2}                     # parallel client SIPp processes sharing a rate
UAS_PROCS=${UAS_PROCS:-1}                       # callee SIPp processes (each its own callees)
CALLEES=${CALLEES:-100}                         # callees registered at the UAS processes
CALL_HOLD_MS=${CALL_HOLD_MS:-1000}              # SIPp -d: time between ACK and BYE
TRANSPORT=${TRANSPORT:-udp}                     # udp | tcp for the benchmark runs
SERVERS=${SERVERS:-"kamailio sipd"}
SKIP_SIPD=${SKIP_SIPD:-0}
DB_MODE=${DB_MODE:-1}                           # usrloc db_mode: 1 write-through, 2 write-back
# Kamailio's db_sqlite sets no busy timeout: with write-through, two workers writing at once
# make one fail ("database is locked", a 500 to the client). So one worker with db_mode 1,
# Kamailio's default of 8 with db_mode 2 (one timer process writes). See bench/README.md.
CHILDREN=${CHILDREN:-$([[ $DB_MODE == 1 ]] && echo 1 || echo 8)} # workers per UDP listener
TCP_CHILDREN=${TCP_CHILDREN:-$CHILDREN}         # Kamailio TCP workers (its default: children)
SHM_MB=${SHM_MB:-256}                           # Kamailio -m (its default is 64)
PKG_MB=${PKG_MB:-8}                             # Kamailio -M (its default)
SQLITE_JOURNAL=${SQLITE_JOURNAL:-WAL}           # journal mode of the database file (both servers)
# Ports below the kernel's ephemeral range (32768-60999), where no client socket of this
# or another program can be sitting on them.
PORT=${PORT:-15060}                             # server UDP and TCP
TLS_PORT=${TLS_PORT:-15061}                     # server TLS (check mode)
CLIENT_PORT=${CLIENT_PORT:-15100}               # first client SIPp port
UAS_PORT=${UAS_PORT:-15300}                     # first callee SIPp port
BRIDGE_PORT=${BRIDGE_PORT:-15400}               # TCP->TLS bridge for a SIPp without TLS
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_LOGS=${KEEP_LOGS:-0}
SIPD_USERS=${SIPD_USERS:-sql}                   # sql: subscriber rows; admin: rtc-admin sip add
SIPD_EXTRA_TOML=${SIPD_EXTRA_TOML:-}            # more lines for sipd.toml (or SIPD_<KEY> variables)
SIPD_TLS_TOML=${SIPD_TLS_TOML-'tls-certificate = "@CERT@"
tls-private-key = "@KEY@"'}                     # check mode: sipd's TLS keys; empty skips sipd over TLS
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/rtc-target}
SIPD_BIN=${SIPD_BIN:-$CARGO_TARGET_DIR/release/sipd}
RTC_ADMIN_BIN=${RTC_ADMIN_BIN:-$CARGO_TARGET_DIR/release/rtc-admin}
KAMAILIO_BIN=${KAMAILIO_BIN:-kamailio}
KAM_MODULES=${KAM_MODULES:-/usr/lib/x86_64-linux-gnu/kamailio/modules}
KAM_SQL=${KAM_SQL:-/usr/share/kamailio/db_sqlite}
RESULTS=${RESULTS:-$HERE/results}
CSV=${CSV:-$RESULTS/sip-$(date +%Y%m%d-%H%M%S).csv}

DOMAIN=sip.bench.test # domain and realm
IP=127.0.0.1
CLK_TCK=$(getconf CLK_TCK)

die() { echo "sip.sh: $*" >&2; exit 1; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- cleanup: everything this script starts is tracked by pid and stopped on exit -----------

WORK=$(mktemp -d /tmp/sip-bench.XXXXXX)
declare -a TRACKED=()

stop_pid() { # pid of a child of ours: TERM, up to 10 s grace, then KILL; then forget it
    local pid=$1 i p keep=()
    for p in "${TRACKED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    TRACKED=("${keep[@]}") # a reaped pid may be reused: never signal it again
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid f
    # SIPp runs: their `timeout` wrapper's pid is in *.pid; timeout passes TERM on to SIPp.
    for f in "$WORK"/*/*.pid; do
        [[ -e $f ]] || continue
        pid=$(<"$f")
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == timeout ]] && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${TRACKED[@]}"; do stop_pid "$pid"; done
    if [[ $KEEP_LOGS == 1 ]]; then
        echo "logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites --------------------------------------------------------------------------

posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"; }
posint REPS "$REPS"
posint DURATION_S "$DURATION_S"
posint SIPP_PROCS "$SIPP_PROCS"
posint UAS_PROCS "$UAS_PROCS"
posint CALLEES "$CALLEES"
posint FILL_RATE "$FILL_RATE"
posint CHILDREN "$CHILDREN"
[[ $CONTACTS =~ ^[0-9]+$ ]] || die "CONTACTS must be a number"
[[ $WARM =~ ^[0-9]+$ ]] || die "WARM must be a number"
[[ $CALL_HOLD_MS =~ ^[0-9]+$ ]] || die "CALL_HOLD_MS must be a number"
for r in $REG_RATES $CALL_RATES; do posint "rate '$r'" "$r"; done
[[ $DB_MODE == 1 || $DB_MODE == 2 ]] || die "DB_MODE must be 1 or 2"
case $TRANSPORT in udp) SIPP_T=u1 ;; tcp) SIPP_T=t1 ;; *) die "TRANSPORT must be udp or tcp" ;; esac
[[ $MODE == bench || $MODE == check ]] || die "usage: sip.sh [bench|check]"
[[ $SKIP_SIPD == 1 ]] && SERVERS=${SERVERS//sipd/}
SERVERS=$(echo $SERVERS) # squeeze spaces
[[ -n $SERVERS ]] || die "no server left to run"
for s in $SERVERS; do [[ $s == kamailio || $s == sipd ]] || die "unknown server '$s'"; done
for t in python3 ss sqlite3 openssl; do command -v "$t" >/dev/null || die "$t is needed"; done

need_pkgs=()
command -v sipp >/dev/null || need_pkgs+=(sip-tester)
command -v "$KAMAILIO_BIN" >/dev/null || need_pkgs+=(kamailio)
[[ -e $KAM_MODULES/db_sqlite.so ]] || need_pkgs+=(kamailio-sqlite-modules)
[[ $MODE == check && ! -e $KAM_MODULES/tls.so ]] && need_pkgs+=(kamailio-tls-modules)
if [[ " $SERVERS " == *" kamailio "* ]] && ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >&2 ||
        die "apt-get install ${need_pkgs[*]} failed"
fi
command -v sipp >/dev/null || die "sipp (package sip-tester) is needed"
# The Debian package may run its own kamailio service. We never use its ports and leave it
# alone, but a busy one would skew the numbers.
if pgrep -x kamailio >/dev/null 2>&1; then
    log "WARNING: other kamailio processes run on this host; their load may skew results"
fi
port_busy() { # port -> true if anything listens on it (UDP or TCP)
    [[ -n $(ss -Hlun "sport = :$1") || -n $(ss -Hltn "sport = :$1") ]]
}
for p in "$PORT" "$TLS_PORT"; do port_busy "$p" && die "port $p is in use; set PORT/TLS_PORT to free ports"; done

if [[ " $SERVERS " == *" sipd "* ]]; then
    if [[ $SKIP_BUILD != 1 ]]; then
        log "building sipd and rtc-admin (release)"
        (cd "$ROOT" && cargo build --release -p sipd -p rtc-admin >&2) || die "cargo build failed"
    fi
    [[ -x $SIPD_BIN ]] || die "no sipd binary at $SIPD_BIN (SKIP_SIPD=1 runs Kamailio alone)"
    [[ $SIPD_USERS != admin || -x $RTC_ADMIN_BIN ]] || die "no rtc-admin binary at $RTC_ADMIN_BIN"
fi

# Sockets of TCP runs and SIPp's open calls are file descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SIPP_TLS=0 # does this SIPp speak TLS itself? Debian's build does not (then: a socat bridge)
sipp -h 2>&1 | grep -q -- '-tls_cert' && SIPP_TLS=1
TIME_BIN=
[[ -x /usr/bin/time ]] && TIME_BIN=/usr/bin/time # SIPp's own CPU use (saturation check)

# --- accounts and databases -----------------------------------------------------------------

REPORT=$HERE/sip_report.py
max_of() { local m=0 v; for v in "$@"; do ((v > m)) && m=$v; done; echo "$m"; }

# Users u000001.. register (reg and mem runs) and call (call runs); c000001.. are callees.
if [[ $MODE == check ]]; then
    N_USERS=20
    CALLEES=4
else
    N_USERS=$(max_of $((WARM + CONTACTS)) \
        $(($(max_of $REG_RATES) * DURATION_S)) $(($(max_of $CALL_RATES) * DURATION_S)) 1)
fi

TEMPLATE_DB=$WORK/template.sqlite
make_template_db() {
    log "creating $N_USERS users and $CALLEES callees in an SQLite database (Kamailio schema)"
    {
        cat "$KAM_SQL/standard-create.sql" "$KAM_SQL/auth_db-create.sql" \
            "$KAM_SQL/usrloc-create.sql"
        python3 "$REPORT" subscribers "$DOMAIN" u "$N_USERS"
        python3 "$REPORT" subscribers "$DOMAIN" c "$CALLEES"
        # WAL is a property of the file: both servers open it that way.
        [[ -z $SQLITE_JOURNAL ]] || echo "PRAGMA journal_mode=$SQLITE_JOURNAL;"
    } | sqlite3 "$TEMPLATE_DB" >/dev/null || die "could not create $TEMPLATE_DB"
}
make_template_db

SIPD_TEMPLATE=$WORK/sipd-template

# --- servers --------------------------------------------------------------------------------

WITH_TLS=0
KAM_ONE_TIME_NONCE=0 # check mode: a pass where Kamailio challenges every request
CERT=$WORK/cert.pem
KEY=$WORK/key.pem
if [[ $MODE == check ]]; then
    WITH_TLS=1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$KEY" -out "$CERT" -days 2 \
        -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN,IP:$IP" >/dev/null 2>&1 ||
        die "openssl could not make a certificate"
fi

write_kamailio_config() { # dir
    local dir=$1 db=$1/kamailio.sqlite
    cat >"$dir/kamailio.cfg" <<EOF
#!KAMAILIO
# Written by bench/sip.sh for one run: registrar and stateful proxy for $DOMAIN. Users are
# authenticated with digest (realm $DOMAIN) against the subscriber table, contacts live in
# usrloc (db_mode $DB_MODE), INVITEs are record-routed and relayed statefully.

# --- core: the defaults except for these --------------------------------------------------
log_stderror=yes
children=$CHILDREN
tcp_children=$TCP_CHILDREN
listen=udp:$IP:$PORT
listen=tcp:$IP:$PORT
$( ((WITH_TLS)) && printf 'enable_tls=yes\nlisten=tls:%s:%s\n' "$IP" "$TLS_PORT")
alias="$DOMAIN"
auto_aliases=no
dns=no
rev_dns=no
mpath="$KAM_MODULES/"

loadmodule "db_sqlite.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "sanity.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
$( ((WITH_TLS)) && echo 'loadmodule "tls.so"')

modparam("usrloc", "db_url", "sqlite://$db")
modparam("usrloc", "db_mode", $DB_MODE)
modparam("usrloc", "use_domain", 1)
modparam("auth_db", "db_url", "sqlite://$db")
modparam("auth_db", "use_domain", 1)
modparam("auth_db", "password_column", "ha1")
modparam("auth_db", "load_credentials", "")
$( ((KAM_ONE_TIME_NONCE)) && echo 'modparam("auth", "one_time_nonce", 1) # every request challenged')
$( ((WITH_TLS)) && cat <<TLS
modparam("tls", "certificate", "$CERT")
modparam("tls", "private_key", "$KEY")
modparam("tls", "verify_certificate", 0)
modparam("tls", "require_certificate", 0)
modparam("tls", "tls_method", "TLSv1.2+")
TLS
)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (!sanity_check()) {
        exit; # sanity_check answered
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    # Retransmissions of a request being handled: absorbed (or the last reply resent).
    if (!is_method("ACK")) {
        if (t_precheck_trans()) {
            t_check_trans();
            exit;
        }
        t_check_trans();
    }
    if (has_totag()) {
        route(IN_DIALOG);
    }
    remove_hf("Route"); # no pre-loaded routes for initial requests
    if (is_method("REGISTER")) {
        route(REGISTRAR);
    }
    route(AUTH_CALLER);
    if (!uri==myself) {
        sl_send_reply("403", "Relaying Forbidden");
        exit;
    }
    if (\$rU == \$null) {
        sl_send_reply("484", "Address Incomplete");
        exit;
    }
    if (is_method("INVITE")) {
        record_route();
    }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    route(RELAY);
}

route[RELAY] {
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}

# Requests inside a dialog follow the Route set (our Record-Route); a hop-by-hop ACK for a
# negative reply ends here.
route[IN_DIALOG] {
    if (loose_route()) {
        route(RELAY);
    }
    if (is_method("ACK")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    sl_send_reply("404", "Not Here");
    exit;
}

route[REGISTRAR] {
    if (!uri==myself) {
        sl_send_reply("403", "Not Our Domain");
        exit;
    }
    if (!www_authorize("$DOMAIN", "subscriber")) {
        www_challenge("$DOMAIN", "1"); # qop=auth
        exit;
    }
    if (\$au != \$tU) {
        sl_send_reply("403", "Authentication ID Is Not The AOR");
        exit;
    }
    consume_credentials();
    if (!save("location")) {
        sl_reply_error();
    }
    exit;
}

# Local callers prove who they are; calls from elsewhere to local users need no credentials.
route[AUTH_CALLER] {
    if (!from_uri==myself) {
        return;
    }
    if (!proxy_authorize("$DOMAIN", "subscriber")) {
        proxy_challenge("$DOMAIN", "1"); # qop=auth
        exit;
    }
    if (\$au != \$fU) {
        sl_send_reply("403", "Authentication ID Is Not The Caller");
        exit;
    }
    consume_credentials();
}
EOF
}

write_sipd_config() { # dir
    local dir=$1 listen="\"udp:$IP:$PORT\", \"tcp:$IP:$PORT\""
    ((WITH_TLS)) && [[ -n $SIPD_TLS_TOML ]] && listen+=", \"tls:$IP:$TLS_PORT\""
    {
        echo "# Written by bench/sip.sh for one run."
        echo "domain = [\"$DOMAIN\"]"
        echo "listen = [$listen]"
        echo "db-url = \"sipd.sqlite\""
        echo "prometheus = false"
        echo "# As the Kamailio script: MD5 challenges only, nonces valid 300 s, no flood"
        echo "# protection (every SIPp is one source, 127.0.0.1)."
        echo "auth-algorithms = [\"MD5\"]"
        echo "nonce-expire = 300"
        echo "pike-reqs-density-per-unit = 0"
        [[ -z $SIPD_EXTRA_TOML ]] || printf '%s\n' "$SIPD_EXTRA_TOML"
        if ((WITH_TLS)) && [[ -n $SIPD_TLS_TOML ]]; then
            local t=${SIPD_TLS_TOML//@CERT@/$CERT}
            printf '%s\n' "${t//@KEY@/$KEY}"
        fi
    } >"$dir/sipd.toml"
}

if [[ " $SERVERS " == *" sipd "* && $SIPD_USERS == admin ]]; then
    log "adding the users to sipd's template database with rtc-admin (one process per user)"
    mkdir -p "$SIPD_TEMPLATE"
    write_sipd_config "$SIPD_TEMPLATE"
    python3 "$REPORT" users "$DOMAIN" u 1 "$N_USERS" 1 "$WORK/admin-u"
    python3 "$REPORT" users "$DOMAIN" c 1 "$CALLEES" 1 "$WORK/admin-c"
    tail -q -n +2 "$WORK/admin-u.0.csv" "$WORK/admin-c.0.csv" |
        while IFS=';' read -r u p _; do
            "$RTC_ADMIN_BIN" --config-dir "$SIPD_TEMPLATE" sip add "$u" "$p" >/dev/null ||
                die "rtc-admin sip add $u failed"
        done
fi

SERVER_PID=
start_server() { # server rundir
    local server=$1 dir=$2 i
    case $server in
    kamailio)
        write_kamailio_config "$dir"
        cp "$TEMPLATE_DB" "$dir/kamailio.sqlite"
        mkdir -p "$dir/run"
        # -DD: stay in the foreground (children forked as usual), -E: log to stderr.
        "$KAMAILIO_BIN" -DD -E -f "$dir/kamailio.cfg" -m "$SHM_MB" -M "$PKG_MB" \
            -Y "$dir/run" >"$dir/server.log" 2>&1 &
        ;;
    sipd)
        write_sipd_config "$dir"
        if [[ $SIPD_USERS == admin ]]; then
            cp "$SIPD_TEMPLATE/sipd.sqlite" "$dir/sipd.sqlite"
        else
            cp "$TEMPLATE_DB" "$dir/sipd.sqlite"
        fi
        "$SIPD_BIN" --config "$dir/sipd.toml" >"$dir/server.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    TRACKED+=("$SERVER_PID")
    # Ready when the UDP and TCP listeners are up (a Kamailio child may own them).
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$dir/server.log" >&2; die "$server exited at start"; }
        [[ -n $(ss -Hlun "sport = :$PORT") && -n $(ss -Hltn "sport = :$PORT") ]] &&
            { ((!WITH_TLS)) || [[ $server == sipd && -z $SIPD_TLS_TOML ]] ||
                [[ -n $(ss -Hltn "sport = :$TLS_PORT") ]]; } && break
        sleep 0.1
    done
    ((i < 150)) || { tail -20 "$dir/server.log" >&2; die "$server did not listen on $IP:$PORT within 15 s"; }
    sleep 1 # children and workers settle
}

stop_server() { # waits until the ports are free again for the next run
    local i p comm tree
    tree=$(tree_pids "$SERVER_PID")
    comm=$(cat "/proc/$SERVER_PID/comm" 2>/dev/null || true)
    stop_pid "$SERVER_PID"
    # A Kamailio child can hang on a lock at shutdown (and outlive a killed main process): end
    # whatever is left of the tree, checking the name in case a pid was reused.
    for p in $tree; do
        [[ -n $comm && $(cat "/proc/$p/comm" 2>/dev/null) == "$comm" ]] && kill -KILL "$p" 2>/dev/null
    done
    for ((i = 0; i < 100; i++)); do
        port_busy "$PORT" || port_busy "$TLS_PORT" || return 0
        sleep 0.1
    done
    die "port $PORT still in use after the server stopped"
}

tree_pids() { # pid -> that pid and all its descendants (Kamailio forks its workers)
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            todo = root; out = ""
            while (todo != "") {
                n = split(todo, a, " "); todo = ""
                for (i = 1; i <= n; i++) { out = out " " a[i]; todo = todo " " kids[a[i]] }
                gsub(/^ +| +$/, "", todo)
            }
            print out
        }'
}

cpu_ticks() { # pid -> utime+stime in clock ticks, summed over the process tree
    local p s total=0
    for p in $(tree_pids "$1"); do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) } # the command name may contain spaces; fields restart after ')'
        # shellcheck disable=SC2086
        set -- $s
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

mem_kb() { # pid -> "RSS PSS" in kB summed over the process tree (PSS shares shm out fairly)
    local p
    for p in $(tree_pids "$1"); do cat "/proc/$p/smaps_rollup" 2>/dev/null || true; done |
        awk '/^Rss:/ { r += $2 } /^Pss:/ { p += $2 } END { printf "%d %d\n", r, p }'
}

nprocs() { tree_pids "$1" | wc -w; }

db_contacts() { # dir server -> rows in the location table, or empty if there is none
    local db=$1/$2.sqlite
    sqlite3 -cmd '.timeout 5000' "$db" 'SELECT count(*) FROM location' 2>/dev/null || true
}

# --- clients --------------------------------------------------------------------------------

# sipp_bg NAME LIMIT_S ARGS...: SIPp in the background (cwd: the run directory, where SIPp
# drops its own files), stats in NAME.stat, unexpected messages in NAME.err, exit code in
# NAME.rc, its CPU use in NAME.time. The pid to wait for is appended to BG.
declare -a BG=()
sipp_bg() {
    local name=$1 limit=$2
    shift 2
    (
        cd "$(dirname "$name")"
        if [[ -n $TIME_BIN ]]; then
            timeout -k 3 "$limit" "$TIME_BIN" -f 'SIPP_CPU %U %S %e' -o "$name.time" \
                sipp "$@" -nostdin -trace_stat -stf "$name.stat" -fd 1 \
                -trace_err -error_file "$name.err" >"$name.out" 2>&1 &
        else
            timeout -k 3 "$limit" sipp "$@" -nostdin -trace_stat -stf "$name.stat" -fd 1 \
                -trace_err -error_file "$name.err" >"$name.out" 2>&1 &
        fi
        echo $! >"$name.pid"
        wait $! && rc=0 || rc=$?
        rm -f "$name.pid" # only running SIPps are listed for cleanup
        echo "$rc" >"$name.rc"
    ) &
    BG+=($!)
}

wait_bg() {
    local p
    for p in "${BG[@]}"; do wait "$p" || true; done
    BG=()
}

stop_bg_after() { # SECONDS NAME...: wait that long for the SIPps NAME to end, then stop them
    local deadline n
    deadline=$(awk -v now="$EPOCHREALTIME" -v s="$1" 'BEGIN { printf "%.0f", now + s }')
    shift
    for n in "$@"; do
        while [[ ! -e $n.rc ]] && ((${EPOCHREALTIME%.*} < deadline)); do sleep 0.2; done
        # timeout passes TERM on to its process group (SIPp); the last -fd 1 stats remain
        [[ -e $n.rc || ! -e $n.pid ]] || kill -TERM "$(<"$n.pid")" 2>/dev/null || true
    done
    wait_bg
}

rcs_ok() { # NAME... -> true if every SIPp exited 0
    local n
    for n in "$@"; do [[ -e $n.rc && $(<"$n.rc") == 0 ]] || return 1; done
}

sipp_cpu_pct() { # NAME... -> the busiest SIPp's CPU percentage
    local n
    # (a SIPp ended by its time limit leaves no line)
    for n in "$@"; do cat "$n.time" 2>/dev/null || true; done | awk '/^SIPP_CPU / {
        c = ($4 > 0 ? 100 * ($2 + $3) / $4 : 0); if (c > m) m = c } END { printf "%.0f", m }'
}

split() { # total parts -> the share of each part, one per line
    local total=$1 parts=$2 i
    for ((i = 0; i < parts; i++)); do
        echo $((total / parts + (i < total % parts ? 1 : 0)))
    done
}

common_sipp() { # transport -> SIPp options shared by every SIPp
    # Unexpected messages (a 500, a second 401) abort the call and count as failed; no BYE or
    # CANCEL is sent for an aborted call.
    printf '%s\n' -i "$IP" -t "$1" -default_behaviors all,-bye -max_socket 1000
}

# register_users DIR NAME PREFIX FIRST COUNT PROCS RATE PORT0 TRANSPORT: COUNT users register
# with register_auth_only.xml from PROCS SIPps on ports PORT0.., at RATE in all. Sets REG_NAMES.
declare -a REG_NAMES=()
register_users() {
    local dir=$1 name=$2 prefix=$3 first=$4 count=$5 procs=$6 rate=$7 port0=$8 t=$9
    local i=0 m r limit
    REG_NAMES=()
    python3 "$REPORT" users "$DOMAIN" "$prefix" "$first" "$count" "$procs" "$dir/$name"
    limit=$((count / rate + 60))
    while read -r m && read -r r <&3; do
        ((m > 0)) || { i=$((i + 1)); continue; }
        ((r > 0)) || r=1
        # -l: at most 2 s worth of registrations open; a server slower than that makes the
        # run late (see reg_run).
        sipp_bg "$dir/$name.$i" "$limit" -sf "$SCEN/register_auth_only.xml" \
            -inf "$dir/$name.$i.csv" $(common_sipp "$t") -p $((port0 + i)) \
            -r "$r" -m "$m" -l $((2 * r + 10)) -recv_timeout 5000 -timeout "${limit}s" \
            "$(target "$t")"
        REG_NAMES+=("$dir/$name.$i")
        i=$((i + 1))
    done < <(split "$count" "$procs") 3< <(split "$rate" "$procs")
    wait_bg
}

target() { # transport -> where a client sends
    case $1 in
    l1) if ((SIPP_TLS)); then echo "$IP:$TLS_PORT"; else echo "$IP:$BRIDGE_PORT"; fi ;;
    *) echo "$IP:$PORT" ;;
    esac
}

sipp_totals() { # NAME... -> key=value totals over their stat files
    local n files=()
    for n in "$@"; do files+=("$n.stat"); done
    python3 "$REPORT" sipp "${files[@]}"
}

# --- benchmark runs -------------------------------------------------------------------------

HEADER=date,server,scenario,rate,rep,transport,sipp_procs,calls,ok_calls,failed,retrans,unexpected,timeouts,achieved_rate,resp_ms,wall_s,cpu_s,cpu_ms_per_call,client_cpu_pct,server_procs,rss_kb,pss_kb,rss_base_kb,pss_base_kb,contacts,db_contacts,kb_per_contact,rss_kb_per_contact,uas_failed,ok
RUN=0

csv_row() { echo "$(date -Iseconds),$*" >>"$CSV"; }

reg_run() { # server rate rep
    local server=$1 rate=$2 rep=$3 dir="$WORK/run$((++RUN))"
    mkdir -p "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID n=$((rate * DURATION_S)) c0 c1 t0 t1 rss pss
    c0=$(cpu_ticks "$pid")
    t0=$EPOCHREALTIME
    register_users "$dir" reg u 1 "$n" "$SIPP_PROCS" "$rate" "$CLIENT_PORT" "$SIPP_T"
    t1=$EPOCHREALTIME
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (log: $dir/server.log)"
    c1=$(cpu_ticks "$pid")
    read -r rss pss < <(mem_kb "$pid")
    local procs
    procs=$(nprocs "$pid")
    stop_server
    local created ok failed retrans unexpected timeouts resp_ms stats_ok
    eval "$(sipp_totals "${REG_NAMES[@]}")" # numbers from our own helper
    local row wall_s cpu_s per achieved good=1 ccpu
    row=$(awk -v a="$t0" -v b="$t1" -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" -v ok="$ok" 'BEGIN {
        w = b - a; c = (c1 - c0) / hz
        printf "%.2f,%.2f,%.3f,%.0f", w, c, (ok > 0 ? 1000 * c / ok : 0), (w > 0 ? ok / w : 0) }')
    IFS=, read -r wall_s cpu_s per achieved <<<"$row"
    ccpu=$(sipp_cpu_pct "${REG_NAMES[@]}")
    # Zero failures, every registration done, and on time: no more than 10 % + 2 s late.
    rcs_ok "${REG_NAMES[@]}" && ((stats_ok && failed == 0 && ok == n)) &&
        on_time "$wall_s" 0 || good=0
    csv_row "$server,reg,$rate,$rep,$TRANSPORT,$SIPP_PROCS,$n,$ok,$failed,$retrans,$unexpected,$timeouts,$achieved,$resp_ms,$wall_s,$cpu_s,$per,$ccpu,$procs,$rss,$pss,,,,,,,,$good"
    log "$(printf '%-8s reg  %5d/s rep %d: %6d/%d ok, %d failed, %d retrans, %5s/s done, resp %s ms, cpu %ss (%s ms/reg), sipp %s%%%s' \
        "$server" "$rate" "$rep" "$ok" "$n" "$failed" "$retrans" "$achieved" "$resp_ms" "$cpu_s" "$per" "$ccpu" \
        "$([[ $good == 1 ]] || echo ' FAILED')")"
}

call_run() { # server rate rep
    local server=$1 rate=$2 rep=$3 dir="$WORK/run$((++RUN))"
    mkdir -p "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID n=$((rate * DURATION_S)) j i m r
    # Callees: UAS process j holds callees j+1, j+1+UAS_PROCS, ...; each registers from the
    # port its UAS will listen on, so the contact points there.
    local -a uas_names=() uas_counts=() cal_names=()
    python3 "$REPORT" users "$DOMAIN" c 1 "$CALLEES" "$UAS_PROCS" "$dir/callees"
    for ((j = 0; j < UAS_PROCS; j++)); do
        m=$(($(wc -l <"$dir/callees.$j.csv") - 1))
        sipp_bg "$dir/calleereg.$j" 60 -sf "$SCEN/register_auth_only.xml" \
            -inf "$dir/callees.$j.csv" $(common_sipp "$SIPP_T") -p $((UAS_PORT + j)) \
            -r 200 -m "$m" -recv_timeout 5000 "$IP:$PORT"
    done
    wait_bg
    for ((j = 0; j < UAS_PROCS; j++)); do
        rcs_ok "$dir/calleereg.$j" || die "callee registration failed on $server (see $dir)"
    done
    # Calls: caller k -> callee (k mod CALLEES)+1, so the UAS processes share the calls evenly
    # when CALLEES is a multiple of UAS_PROCS.
    python3 "$REPORT" calls "$DOMAIN" "$n" c "$CALLEES" "$SIPP_PROCS" "$dir/calls"
    local hold_s=$(((CALL_HOLD_MS + 999) / 1000)) limit
    limit=$((DURATION_S + hold_s + 60))
    for ((j = 0; j < UAS_PROCS; j++)); do
        sipp_bg "$dir/uas.$j" $((limit + 10)) -sf "$SCEN/uas.xml" $(common_sipp "$SIPP_T") \
            -p $((UAS_PORT + j)) -recv_timeout $((CALL_HOLD_MS + 10000)) -m "$(uas_share "$n" "$j")"
        uas_names+=("$dir/uas.$j")
    done
    local -a uas_bg=("${BG[@]}")
    BG=()
    sleep 0.5
    local c0 c1 t0 t1 rss pss procs
    c0=$(cpu_ticks "$pid")
    t0=$EPOCHREALTIME
    i=0
    while read -r m && read -r r <&3; do
        ((m > 0)) || { i=$((i + 1)); continue; }
        sipp_bg "$dir/uac.$i" "$limit" -sf "$SCEN/uac_auth.xml" -inf "$dir/calls.$i.csv" \
            $(common_sipp "$SIPP_T") -p $((CLIENT_PORT + i)) -r "$r" -m "$m" -d "$CALL_HOLD_MS" \
            -l $(((hold_s + 2) * r + 10)) -recv_timeout 10000 -timeout "${limit}s" "$IP:$PORT"
        cal_names+=("$dir/uac.$i")
        i=$((i + 1))
    done < <(split "$n" "$SIPP_PROCS") 3< <(split "$rate" "$SIPP_PROCS")
    wait_bg
    t1=$EPOCHREALTIME
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (log: $dir/server.log)"
    c1=$(cpu_ticks "$pid")
    read -r rss pss < <(mem_kb "$pid")
    procs=$(nprocs "$pid")
    # The UAS processes stop by themselves after their share of calls (and 2 s of timewait);
    # after failed calls they wait for calls that never come: stop them.
    BG=("${uas_bg[@]}")
    stop_bg_after $((hold_s + 5)) "${uas_names[@]}"
    stop_server
    local created ok failed retrans unexpected timeouts resp_ms stats_ok uas_failed
    eval "$(sipp_totals "${uas_names[@]}")"
    uas_failed=$failed
    eval "$(sipp_totals "${cal_names[@]}")"
    local row wall_s cpu_s per achieved good=1 ccpu
    # The last call ends CALL_HOLD_MS after it was answered: that tail is not sending time.
    row=$(awk -v a="$t0" -v b="$t1" -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" -v ok="$ok" \
        -v hold="$CALL_HOLD_MS" 'BEGIN {
        w = b - a; c = (c1 - c0) / hz; s = w - hold / 1000
        printf "%.2f,%.2f,%.3f,%.0f", w, c, (ok > 0 ? 1000 * c / ok : 0), (s > 0 ? ok / s : 0) }')
    IFS=, read -r wall_s cpu_s per achieved <<<"$row"
    ccpu=$(sipp_cpu_pct "${cal_names[@]}" "${uas_names[@]}")
    rcs_ok "${cal_names[@]}" && ((stats_ok && failed == 0 && uas_failed == 0 && ok == n)) &&
        on_time "$wall_s" "$CALL_HOLD_MS" || good=0
    csv_row "$server,call,$rate,$rep,$TRANSPORT,$SIPP_PROCS,$n,$ok,$failed,$retrans,$unexpected,$timeouts,$achieved,$resp_ms,$wall_s,$cpu_s,$per,$ccpu,$procs,$rss,$pss,,,,,,,$uas_failed,$good"
    log "$(printf '%-8s call %5d/s rep %d: %6d/%d ok, %d failed (uas %d), %d retrans, %5s/s done, resp %s ms, cpu %ss (%s ms/call), sipp %s%%%s' \
        "$server" "$rate" "$rep" "$ok" "$n" "$failed" "$uas_failed" "$retrans" "$achieved" "$resp_ms" "$cpu_s" "$per" "$ccpu" \
        "$([[ $good == 1 ]] || echo ' FAILED')")"
}

on_time() { # wall_s hold_ms -> true if the clients finished within 10 % + 2 s of schedule
    awk -v w="$1" -v h="$2" -v d="$DURATION_S" 'BEGIN { exit !(w <= 1.1 * d + 2 + h / 1000) }'
}

uas_share() { # calls uas_index -> calls that UAS process gets (callee k+1 is at UAS k mod UAS_PROCS)
    awk -v n="$1" -v j="$2" -v c="$CALLEES" -v u="$UAS_PROCS" 'BEGIN {
        t = 0; for (k = 0; k < n; k++) if ((k % c) % u == j) t++; print t }'
}

mem_run() { # server rep
    local server=$1 rep=$2 dir="$WORK/run$((++RUN))"
    mkdir -p "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID rss0 pss0 rss pss c0 c1 t0 t1 warm_ok=1
    if ((WARM > 0)); then
        register_users "$dir" warm u 1 "$WARM" 1 200 $((CLIENT_PORT + 50)) "$SIPP_T"
        rcs_ok "${REG_NAMES[@]}" || warm_ok=0
    fi
    sleep 1
    read -r rss0 pss0 < <(mem_kb "$pid")
    c0=$(cpu_ticks "$pid")
    t0=$EPOCHREALTIME
    register_users "$dir" fill u $((WARM + 1)) "$CONTACTS" "$SIPP_PROCS" "$FILL_RATE" "$CLIENT_PORT" "$SIPP_T"
    t1=$EPOCHREALTIME
    sleep 2 # late replies, timers, database writes
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (log: $dir/server.log)"
    c1=$(cpu_ticks "$pid")
    sleep "$MEM_SETTLE_S"
    read -r rss pss < <(mem_kb "$pid")
    local procs dbc
    procs=$(nprocs "$pid")
    dbc=$(db_contacts "$dir" "$server")
    stop_server
    local created ok failed retrans unexpected timeouts resp_ms stats_ok
    eval "$(sipp_totals "${REG_NAMES[@]}")"
    local row wall_s cpu_s per achieved kb rkb good=1 ccpu
    row=$(awk -v a="$t0" -v b="$t1" -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" -v ok="$ok" \
        -v n="$CONTACTS" -v p0="$pss0" -v p1="$pss" -v r0="$rss0" -v r1="$rss" 'BEGIN {
        w = b - a; c = (c1 - c0) / hz
        printf "%.2f,%.2f,%.3f,%.0f,%.3f,%.3f", w, c, (ok > 0 ? 1000 * c / ok : 0),
            (w > 0 ? ok / w : 0), (p1 - p0) / n, (r1 - r0) / n }')
    IFS=, read -r wall_s cpu_s per achieved kb rkb <<<"$row"
    ccpu=$(sipp_cpu_pct "${REG_NAMES[@]}")
    rcs_ok "${REG_NAMES[@]}" && ((warm_ok && stats_ok && failed == 0 && ok == CONTACTS)) || good=0
    # With write-through the database holds every contact as soon as it is answered.
    if [[ $DB_MODE == 1 && -n $dbc ]] && ((dbc != WARM + CONTACTS)); then good=0; fi
    csv_row "$server,mem,$FILL_RATE,$rep,$TRANSPORT,$SIPP_PROCS,$CONTACTS,$ok,$failed,$retrans,$unexpected,$timeouts,$achieved,$resp_ms,$wall_s,$cpu_s,$per,$ccpu,$procs,$rss,$pss,$rss0,$pss0,$CONTACTS,$dbc,$kb,$rkb,,$good"
    log "$(printf '%-8s mem  rep %d: %d contacts (db %s), PSS %d -> %d kB = %s kB/contact (RSS sum %s kB/contact), cpu %ss (%s ms/reg)%s' \
        "$server" "$rep" "$ok" "${dbc:-?}" "$pss0" "$pss" "$kb" "$rkb" "$cpu_s" "$per" \
        "$([[ $good == 1 ]] || echo ' FAILED')")"
}

# --- check mode: every scenario once per transport ------------------------------------------

CHECK_FAIL=0
check_one() { # label name -> PASS/FAIL line from the SIPp run NAME
    local label=$1 name=$2 ok=0 failed=0 created retrans unexpected timeouts resp_ms stats_ok
    eval "$(sipp_totals "$name")"
    if rcs_ok "$name" && ((failed == 0 && ok > 0)); then
        printf '  PASS %-44s %d calls\n' "$label" "$ok" >&2
    else
        printf '  FAIL %-44s rc %s, %d ok, %d failed (see %s.*)\n' "$label" \
            "$(cat "$name.rc" 2>/dev/null || echo '?')" "$ok" "$failed" "$name" >&2
        # SIPp runs its error entries together: one per line, the last three.
        sed 's/\(20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]\t\)/\n\1/g' "$name.err" 2>/dev/null |
            grep -v '^$' | tail -3 | cut -c 1-300 | sed 's/^/       /' >&2 || true
        CHECK_FAIL=1
    fi
}

BRIDGE_PID=
start_bridge() { # SIPp without TLS: its TCP connections are carried over TLS by socat
    command -v socat >/dev/null || die "socat is needed to check TLS with a SIPp built without TLS"
    socat "TCP-LISTEN:$BRIDGE_PORT,bind=$IP,reuseaddr,fork" \
        "OPENSSL:$IP:$TLS_PORT,verify=0" 2>"$WORK/bridge.log" &
    BRIDGE_PID=$!
    TRACKED+=("$BRIDGE_PID")
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -n $(ss -Hltn "sport = :$BRIDGE_PORT") ]] && return 0
        sleep 0.1
    done
    die "socat did not listen on $BRIDGE_PORT"
}

check_server() { # server
    local server=$1 t tname dir ut
    for tname in udp tcp tls; do
        case $tname in udp) t=u1 ;; tcp) t=t1 ;; tls) t=l1 ;; esac
        if [[ $tname == tls && $server == sipd && -z $SIPD_TLS_TOML ]]; then
            log "$server over tls: skipped (set SIPD_TLS_TOML to sipd's TLS keys)"
            continue
        fi
        dir="$WORK/check-$server-$tname"
        mkdir -p "$dir"
        start_server "$server" "$dir"
        # A SIPp without TLS talks TCP to the bridge; Via and Contact then say TCP.
        local ct=$t
        if [[ $t == l1 ]] && ((!SIPP_TLS)); then
            ct=t1
            start_bridge
        fi
        local -a tls_opts=()
        [[ $t == l1 ]] && ((SIPP_TLS)) && tls_opts=(-tls_cert "$CERT" -tls_key "$KEY")
        log "$server over $tname$([[ $ct != "$t" ]] && echo ' (SIPp over TCP, socat TLS bridge)')"
        python3 "$REPORT" users "$DOMAIN" u 1 4 1 "$dir/life"
        sipp_bg "$dir/life" 60 -sf "$SCEN/register_auth.xml" -inf "$dir/life.0.csv" \
            $(common_sipp "$ct") "${tls_opts[@]}" -p $((CLIENT_PORT + 1)) -r 10 -m 4 \
            -recv_timeout 5000 "$(target "$t")"
        wait_bg
        check_one "register_auth.xml (4 users)" "$dir/life"
        python3 "$REPORT" users "$DOMAIN" u 5 4 1 "$dir/only"
        sipp_bg "$dir/only" 60 -sf "$SCEN/register_auth_only.xml" -inf "$dir/only.0.csv" \
            $(common_sipp "$ct") "${tls_opts[@]}" -p $((CLIENT_PORT + 2)) -r 10 -m 4 \
            -recv_timeout 5000 "$(target "$t")"
        wait_bg
        check_one "register_auth_only.xml (4 users)" "$dir/only"
        # Calls: the callee leg uses the same transport, except behind the bridge, where the
        # proxy could not reach a TCP-only SIPp over TLS: there the callees are on UDP.
        ut=$ct
        [[ $t == l1 ]] && ((!SIPP_TLS)) && ut=u1
        python3 "$REPORT" users "$DOMAIN" c 1 "$CALLEES" 1 "$dir/callees"
        sipp_bg "$dir/calleereg" 60 -sf "$SCEN/register_auth_only.xml" -inf "$dir/callees.0.csv" \
            $(common_sipp "$ut") "${tls_opts[@]}" -p "$UAS_PORT" -r 10 -m "$CALLEES" \
            -recv_timeout 5000 "$(target "$([[ $ut == u1 ]] && echo u1 || echo "$t")")"
        wait_bg
        check_one "register_auth_only.xml (callees, $ut)" "$dir/calleereg"
        sipp_bg "$dir/uas" 60 -sf "$SCEN/uas.xml" $(common_sipp "$ut") "${tls_opts[@]}" \
            -p "$UAS_PORT" -m 4 -recv_timeout 10000
        local -a uas_bg=("${BG[@]}")
        BG=()
        sleep 0.5
        python3 "$REPORT" calls "$DOMAIN" 4 c "$CALLEES" 1 "$dir/calls"
        sipp_bg "$dir/uac" 60 -sf "$SCEN/uac_auth.xml" -inf "$dir/calls.0.csv" \
            $(common_sipp "$ct") "${tls_opts[@]}" -p $((CLIENT_PORT + 3)) -r 10 -m 4 -d 200 \
            -recv_timeout 10000 "$(target "$t")"
        wait_bg
        check_one "uac_auth.xml (4 calls, callee over $ut)" "$dir/uac"
        BG=("${uas_bg[@]}")
        stop_bg_after 10 "$dir/uas"
        check_one "uas.xml (4 calls)" "$dir/uas"
        [[ -n $BRIDGE_PID ]] && { stop_pid "$BRIDGE_PID"; BRIDGE_PID=; }
        stop_server
    done
    if [[ $server == kamailio ]]; then
        # The branches of register_auth.xml taken when the refresh and the de-REGISTER are
        # challenged again (sipd may choose either way; Kamailio does this with one-time nonces).
        dir="$WORK/check-$server-otn"
        mkdir -p "$dir"
        KAM_ONE_TIME_NONCE=1
        start_server "$server" "$dir"
        KAM_ONE_TIME_NONCE=0
        log "$server over udp, every request challenged (one_time_nonce)"
        python3 "$REPORT" users "$DOMAIN" u 11 4 1 "$dir/life"
        sipp_bg "$dir/life" 60 -sf "$SCEN/register_auth.xml" -inf "$dir/life.0.csv" \
            $(common_sipp u1) -p $((CLIENT_PORT + 1)) -r 10 -m 4 -recv_timeout 5000 "$IP:$PORT"
        wait_bg
        check_one "register_auth.xml (4 users, re-challenged)" "$dir/life"
        stop_server
    fi
}

if [[ $MODE == check ]]; then
    log "scenario check: servers [$SERVERS], SIPp $(sipp -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1)$( ((SIPP_TLS)) || echo ' (no TLS: socat bridge)')"
    for server in $SERVERS; do check_server "$server"; done
    if ((CHECK_FAIL)); then
        log "scenario check: FAILED"
        exit 1
    fi
    log "scenario check: all passed"
    exit 0
fi

# --- benchmark ------------------------------------------------------------------------------

mkdir -p "$RESULTS"
[[ -e $RESULTS/.gitignore ]] || printf '*\n!.gitignore\n' >"$RESULTS/.gitignore"
echo "$HEADER" >"$CSV"

log "sip bench: servers [$SERVERS], $TRANSPORT, reg rates [$REG_RATES], call rates [$CALL_RATES], ${DURATION_S}s per step, reps $REPS, SIPp procs $SIPP_PROCS, contacts $CONTACTS"
log "kamailio: $("$KAMAILIO_BIN" -v 2>/dev/null | head -1), children $CHILDREN, tcp_children $TCP_CHILDREN, shm ${SHM_MB}MB, pkg ${PKG_MB}MB, usrloc db_mode $DB_MODE, sqlite journal ${SQLITE_JOURNAL:-default}"
[[ " $SERVERS " == *" sipd "* ]] && log "sipd: $SIPD_BIN"

for rate in $REG_RATES; do
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do reg_run "$server" "$rate" "$rep"; done
    done
done
for rate in $CALL_RATES; do
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do call_run "$server" "$rate" "$rep"; done
    done
done
if ((CONTACTS > 0)); then
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do mem_run "$server" "$rep"; done
    done
fi

python3 "$REPORT" report "$CSV"
echo
echo "raw results: $CSV"
