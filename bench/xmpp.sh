#!/usr/bin/env bash
# bench/xmpp.sh: Debian's Prosody against xmppd, side by side on 127.0.0.1, with the same
# accounts and the same load from bench/xmpp_load.py (asyncio, raw XMPP, CLIENT_PROCS processes).
#
#   bash bench/xmpp.sh             the benchmark (A/B alternating, REPS repetitions):
#     login  TCP + STARTTLS + SCRAM + bind + </stream>, as fast as possible, at each
#            in-flight level of LOGIN_LEVELS; equal PBKDF2 iteration count on both servers
#     msg    PAIRS pairs of online clients send chat messages to each other at each rate of
#            MSG_RATES (offered, messages/s in all): delivered/s, loss, p50/p99 latency
#     mem    MEM_CLIENTS clients online (TLS, bound, available): server RSS per client
#   SKIP_XMPPD=1 bash bench/xmpp.sh   Prosody alone
#
# Raw rows go to bench/results/xmpp-<date>.csv; bench/xmpp_report.py prints the summary.
# See bench/README.md.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

REPS=${REPS:-3}
DURATION_S=${DURATION_S:-10}                    # timed part of a login or msg run
LOGIN_LEVELS=${LOGIN_LEVELS-"8 32"}             # logins in flight (all client processes); empty skips
LOGIN_USERS=${LOGIN_USERS:-1000}                # distinct accounts the login runs cycle through
MSG_RATES=${MSG_RATES-"1000 2000 4000 8000"}    # offered messages/s in all; empty skips
PAIRS=${PAIRS:-100}                             # online pairs exchanging messages
BODY_LEN=${BODY_LEN:-64}                        # message body bytes
MEM_CLIENTS=${MEM_CLIENTS:-3000}                # clients held online by a mem run; 0 skips
FILL_CONCURRENCY=${FILL_CONCURRENCY:-32}        # logins in flight per process while filling
CLIENT_PROCS=${CLIENT_PROCS:-2}                 # load client processes (Python saturates first)
SCRAM_ITERATIONS=${SCRAM_ITERATIONS:-10000}     # PBKDF2 iterations of every account, both servers
MECH=${MECH:-SCRAM-SHA-1}                       # Prosody's hashed storage only has SCRAM-SHA-1
SERVERS=${SERVERS:-"prosody xmppd"}
SKIP_XMPPD=${SKIP_XMPPD:-0}
PROSODY_NAGLE=${PROSODY_NAGLE:-0}               # 1: Prosody's default (Nagle on); see README
LOG_LEVEL=${LOG_LEVEL:-info}                    # both servers
PORT=${PORT:-45822}                             # c2s (STARTTLS)
DTLS_PORT=${DTLS_PORT:-45823}                   # c2s direct TLS (listening only)
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_LOGS=${KEEP_LOGS:-0}
XMPPD_EXTRA_TOML=${XMPPD_EXTRA_TOML:-}          # more lines for xmppd.toml
XMPPD_USERS_CMD=${XMPPD_USERS_CMD:-}            # bulk hook: CMD CONFIG_DIR FILE (jid<TAB>password lines)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/rtc-target}
XMPPD_BIN=${XMPPD_BIN:-$CARGO_TARGET_DIR/release/xmppd}
RTC_ADMIN_BIN=${RTC_ADMIN_BIN:-$CARGO_TARGET_DIR/release/rtc-admin}
PROSODY_BIN=${PROSODY_BIN:-prosody}
PY=${PY:-python3}
RESULTS=${RESULTS:-$HERE/results}
CSV=${CSV:-$RESULTS/xmpp-$(date +%Y%m%d-%H%M%S).csv}

DOMAIN=bench.test
MUC=conference.$DOMAIN
IP=127.0.0.1
CLK_TCK=$(getconf CLK_TCK)
LOAD=$HERE/xmpp_load.py
REPORT=$HERE/xmpp_report.py

die() { echo "xmpp.sh: $*" >&2; exit 1; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

WORK=$(mktemp -d /tmp/xmpp-bench.XXXXXX)
declare -a TRACKED=()

stop_pid() { # pid of a child of ours: TERM, up to 10 s grace, then KILL; then forget it
    local pid=$1 i p keep=()
    for p in "${TRACKED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    TRACKED=("${keep[@]}")
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
    local pid
    for pid in "${TRACKED[@]}"; do stop_pid "$pid"; done
    if [[ $KEEP_LOGS == 1 ]]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites --------------------------------------------------------------------------

posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"; }
posint REPS "$REPS"
posint DURATION_S "$DURATION_S"
posint CLIENT_PROCS "$CLIENT_PROCS"
posint PAIRS "$PAIRS"
posint SCRAM_ITERATIONS "$SCRAM_ITERATIONS"
posint LOGIN_USERS "$LOGIN_USERS"
[[ $MEM_CLIENTS =~ ^[0-9]+$ ]] || die "MEM_CLIENTS must be a number"
for v in $LOGIN_LEVELS $MSG_RATES; do posint "level '$v'" "$v"; done
for v in $LOGIN_LEVELS; do ((v >= CLIENT_PROCS)) || die "login level $v is below CLIENT_PROCS"; done
((SCRAM_ITERATIONS >= 4096)) || die "SCRAM_ITERATIONS must be at least 4096 (RFC 7677, and Prosody's minimum)"
[[ $MECH == SCRAM-SHA-1 || $MECH == SCRAM-SHA-256 ]] || die "MECH must be SCRAM-SHA-1 or SCRAM-SHA-256"
[[ $SKIP_XMPPD == 1 ]] && SERVERS=${SERVERS//xmppd/}
SERVERS=$(echo $SERVERS)
[[ -n $SERVERS ]] || die "no server left to run"
for s in $SERVERS; do [[ $s == prosody || $s == xmppd ]] || die "unknown server '$s'"; done
[[ " $SERVERS " == *" prosody "* && $MECH != SCRAM-SHA-1 ]] &&
    die "Prosody's internal_hashed storage offers SCRAM-SHA-1 only: keep MECH=SCRAM-SHA-1"
for t in "$PY" ss openssl; do command -v "$t" >/dev/null || die "$t is needed"; done
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY must be Python 3.11 or later"
if [[ " $SERVERS " == *" prosody "* ]] && ! command -v "$PROSODY_BIN" >/dev/null; then
    log "installing prosody"
    DEBIAN_FRONTEND=noninteractive apt-get install -y prosody >&2 || die "apt-get install prosody failed"
    # The package starts its own service on 5222; it is not ours and would compete for CPU.
    service prosody stop >/dev/null 2>&1 || true
fi
pgrep -x prosody >/dev/null 2>&1 || pgrep -f '/usr/bin/prosody' >/dev/null 2>&1 &&
    log "WARNING: other prosody processes run on this host; their load may skew results"
port_busy() { [[ -n $(ss -Hltn "sport = :$1") ]]; }
for p in "$PORT" "$DTLS_PORT"; do port_busy "$p" && die "port $p is in use; set PORT/DTLS_PORT"; done

if [[ " $SERVERS " == *" xmppd "* ]]; then
    if [[ $SKIP_BUILD != 1 ]]; then
        log "building xmppd and rtc-admin (release)"
        (cd "$ROOT" && cargo build --release -p xmppd -p rtc-admin >&2) || die "cargo build failed"
    fi
    [[ -x $XMPPD_BIN ]] || die "no xmppd binary at $XMPPD_BIN (SKIP_XMPPD=1 runs Prosody alone)"
    [[ -n $XMPPD_USERS_CMD || -x $RTC_ADMIN_BIN ]] || die "no rtc-admin binary at $RTC_ADMIN_BIN"
fi

# Every online client is a socket on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) > MEM_CLIENTS + 200)) || die "open files limit $(ulimit -n) is too low for MEM_CLIENTS=$MEM_CLIENTS"

# --- accounts, certificate ------------------------------------------------------------------

max_of() { local m=0 v; for v in "$@"; do ((v > m)) && m=$v; done; echo "$m"; }
N_USERS=$(max_of "$LOGIN_USERS" $((2 * PAIRS)) "$MEM_CLIENTS" 100)
USERS=$WORK/users.txt
"$PY" "$REPORT" users u "$N_USERS" "$USERS"

CERT=$WORK/cert.pem
KEY=$WORK/key.pem
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$KEY" -out "$CERT" -days 2 -subj "/CN=$DOMAIN" \
    -addext "subjectAltName=DNS:$DOMAIN,DNS:$MUC" >/dev/null 2>&1 || die "openssl could not make a certificate"

PROSODY_TEMPLATE=$WORK/prosody-data
if [[ " $SERVERS " == *" prosody "* ]]; then
    log "creating $N_USERS Prosody accounts (SCRAM-SHA-1, $SCRAM_ITERATIONS iterations)"
    "$PY" "$REPORT" prosody-accounts "$PROSODY_TEMPLATE" "$DOMAIN" "$USERS" "$SCRAM_ITERATIONS" ||
        die "could not write the Prosody accounts"
fi

write_xmppd_config() { # dir
    local dir=$1
    mkdir -p "$dir/vhosts-available" "$dir/vhosts-enabled"
    cat >"$dir/xmppd.toml" <<EOF
# Written by bench/xmpp.sh
admins = ["admin@$DOMAIN"]
db-url = "xmppd.sqlite"
scram-iterations = $SCRAM_ITERATIONS
c2s-ports = [$PORT]
c2s-direct-tls-ports = [$DTLS_PORT]
interfaces = ["$IP"]
vhosts-available = "vhosts-available"
vhosts-enabled = "vhosts-enabled"
prometheus = false
$XMPPD_EXTRA_TOML
EOF
    cat >"$dir/vhosts-available/$DOMAIN.toml" <<EOF
domain = "$DOMAIN"
certificate = "$CERT"
key = "$KEY"

[[component]]
domain = "$MUC"
type = "muc"
EOF
    ln -sf "../vhosts-available/$DOMAIN.toml" "$dir/vhosts-enabled/$DOMAIN.toml"
}

XMPPD_TEMPLATE=$WORK/xmppd-template
if [[ " $SERVERS " == *" xmppd "* ]]; then
    write_xmppd_config "$XMPPD_TEMPLATE"
    if [[ -n $XMPPD_USERS_CMD ]]; then
        log "creating $N_USERS xmppd accounts with $XMPPD_USERS_CMD"
        "$PY" "$REPORT" xmppd-users "$DOMAIN" "$USERS" "$WORK/xmppd-users.tsv"
        $XMPPD_USERS_CMD "$XMPPD_TEMPLATE" "$WORK/xmppd-users.tsv" >&2 || die "$XMPPD_USERS_CMD failed"
    else
        log "creating $N_USERS xmppd accounts with rtc-admin xmpp adduser (one process each)"
        while read -r u p; do
            printf '%s\n' "$p" | "$RTC_ADMIN_BIN" --config-dir "$XMPPD_TEMPLATE" xmpp adduser "$u@$DOMAIN" \
                >/dev/null || die "rtc-admin xmpp adduser $u@$DOMAIN failed"
        done <"$USERS"
    fi
fi

# --- servers --------------------------------------------------------------------------------

write_prosody_config() { # dir
    local dir=$1 net=""
    ((PROSODY_NAGLE)) || net='network_settings = { nagle = false }'
    cat >"$dir/prosody.cfg.lua" <<EOF
-- Written by bench/xmpp.sh: Debian's default module set, less what needs the network or a
-- daemon (s2s, dialback, invites, register, admin_shell, posix) and less mod_limits (its
-- 10 kB/s per client would throttle the message runs; xmppd's limits are off too).
run_as_root = true
prosody_user = "$(id -un)"
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { { levels = { min = "$LOG_LEVEL" }, to = "file", filename = "$dir/server.log" } }
interfaces = { "$IP" }
c2s_ports = { $PORT }
c2s_direct_tls_ports = { $DTLS_PORT }
s2s_ports = { }
modules_disabled = { "s2s", "s2s_auth_certs" }
modules_enabled = {
    "disco"; "roster"; "saslauth"; "tls"; "blocklist"; "bookmarks"; "carbons"; "pep";
    "private"; "smacks"; "vcard4"; "vcard_legacy"; "csi_simple"; "ping"; "time"; "uptime";
    "version"; "admin_adhoc";
}
c2s_require_encryption = true
authentication = "internal_hashed"
default_iteration_count = $SCRAM_ITERATIONS
storage = "internal"
$net
admins = { "admin@$DOMAIN" }

VirtualHost "$DOMAIN"
    ssl = { certificate = "$CERT"; key = "$KEY" }

Component "$MUC" "muc"
    ssl = { certificate = "$CERT"; key = "$KEY" }
EOF
}

SERVER_PID=
start_server() { # server rundir
    local server=$1 dir=$2 i
    case $server in
    prosody)
        write_prosody_config "$dir"
        cp -a "$PROSODY_TEMPLATE" "$dir/data"
        "$PROSODY_BIN" --config "$dir/prosody.cfg.lua" -F >"$dir/stdout.log" 2>&1 &
        ;;
    xmppd)
        cp -a "$XMPPD_TEMPLATE/." "$dir/"
        # xmppd refuses unknown XMPPD_* variables (strict overrides): the bench's own
        # settings must not reach it.
        env -u XMPPD_EXTRA_TOML -u XMPPD_USERS_CMD -u XMPPD_BIN XMPPD_LOG_LEVEL="$LOG_LEVEL" \
            "$XMPPD_BIN" --config "$dir/xmppd.toml" >"$dir/server.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    TRACKED+=("$SERVER_PID")
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$dir"/*.log >&2; die "$server exited at start"; }
        port_busy "$PORT" && break
        sleep 0.1
    done
    ((i < 150)) || { tail -20 "$dir"/*.log >&2; die "$server did not listen on $IP:$PORT within 15 s"; }
    sleep 0.5
}

stop_server() {
    local i
    stop_pid "$SERVER_PID"
    for ((i = 0; i < 100; i++)); do
        port_busy "$PORT" || port_busy "$DTLS_PORT" || return 0
        sleep 0.1
    done
    die "port $PORT still in use after the server stopped"
}

cpu_ticks() { # pid -> utime+stime in clock ticks
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- clients --------------------------------------------------------------------------------

# load DIR NAME MODE ARGS...: CLIENT_PROCS xmpp_load.py processes, part k of the users each;
# waits for them; results in DIR/NAME.K.json.
load() {
    local dir=$1 name=$2 mode=$3 k limit
    shift 3
    local -a pids=()
    limit=$((DURATION_S + 120))
    for ((k = 0; k < CLIENT_PROCS; k++)); do
        timeout -k 5 "$limit" "$PY" "$LOAD" "$mode" --host "$IP" --port "$PORT" --domain "$DOMAIN" \
            --cafile "$CERT" --mech "$MECH" --users "$USERS" --part "$k" --parts "$CLIENT_PROCS" \
            --out "$dir/$name.$k.json" "$@" >"$dir/$name.$k.log" 2>&1 &
        pids+=($!)
    done
    for k in "${pids[@]}"; do wait "$k" || true; done
}

combine() { # mode files... -> sets ok failed rate p50_ms p99_ms max_ms sent received lost client_cpu_pct err missing
    eval "$("$PY" "$REPORT" combine "$@")"
}

HEADER=date,server,scenario,level,rep,client_procs,ok,failed,rate,p50_ms,p99_ms,max_ms,sent,received,lost,cpu_s,cpu_ms_per_op,client_cpu_pct,rss_mb,rss_base_mb,kb_per_client,ok_run
RUN=0
csv_row() { echo "$(date -Iseconds),$*" >>"$CSV"; }

login_run() { # server level rep
    local server=$1 level=$2 rep=$3 dir="$WORK/run$((++RUN))"
    mkdir -p "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID per=$((level / CLIENT_PROCS)) users_per=$((LOGIN_USERS / CLIENT_PROCS))
    # The load processes first log each of their users in once, untimed (see xmpp_load.py),
    # so the CPU window is taken from their own timed phase: approximated by sampling the
    # server's CPU once the warm-up logins are over (they print nothing; wait for the JSON).
    local c0 c1 t0 t1
    c0=$(cpu_ticks "$pid")
    t0=$EPOCHREALTIME
    load "$dir" login logins --concurrency "$per" --count "$users_per" --duration "$DURATION_S"
    t1=$EPOCHREALTIME
    c1=$(cpu_ticks "$pid")
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (log: $dir)"
    local rss
    rss=$(rss_kb "$pid")
    stop_server
    local ok failed rate p50_ms p99_ms max_ms sent received lost client_cpu_pct err missing
    combine logins "$dir"/login.*.json
    # CPU over the whole client run includes the warm-up logins: per op, count them too.
    local row cpu_s per_op good=1
    row=$(awk -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" -v ok="$ok" -v w="$users_per" -v p="$CLIENT_PROCS" 'BEGIN {
        c = (c1 - c0) / hz; n = ok + w * p; printf "%.2f,%.3f", c, (n > 0 ? 1000 * c / n : 0) }')
    IFS=, read -r cpu_s per_op <<<"$row"
    ((failed == 0 && missing == 0 && ok > 0)) || good=0
    csv_row "$server,login,$level,$rep,$CLIENT_PROCS,$ok,$failed,$rate,$p50_ms,$p99_ms,$max_ms,,,,$cpu_s,$per_op,$client_cpu_pct,$(awk -v r="$rss" 'BEGIN{printf "%.1f", r/1024}'),,,$good"
    log "$(printf '%-7s login %3d in flight rep %d: %6d ok, %d failed, %7s/s, p50 %s ms, p99 %s ms, cpu %ss (%s ms/login), client %s%%%s' \
        "$server" "$level" "$rep" "$ok" "$failed" "$rate" "$p50_ms" "$p99_ms" "$cpu_s" "$per_op" "$client_cpu_pct" \
        "$([[ $good == 1 ]] || echo " FAILED ($err)")")"
}

msg_run() { # server offered-rate rep
    local server=$1 offered=$2 rep=$3 dir="$WORK/run$((++RUN))"
    mkdir -p "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID per c0 c1
    per=$(awk -v r="$offered" -v p="$CLIENT_PROCS" 'BEGIN { printf "%.3f", r / p }')
    c0=$(cpu_ticks "$pid")
    load "$dir" msg msgs --count $((2 * PAIRS / CLIENT_PROCS)) --rate "$per" --duration "$DURATION_S" \
        --body-len "$BODY_LEN" --concurrency 16
    c1=$(cpu_ticks "$pid")
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (log: $dir)"
    local rss
    rss=$(rss_kb "$pid")
    stop_server
    local ok failed rate p50_ms p99_ms max_ms sent received lost client_cpu_pct err missing
    combine msgs "$dir"/msg.*.json
    local row cpu_s per_k good=1
    row=$(awk -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" -v n="$received" 'BEGIN {
        c = (c1 - c0) / hz; printf "%.2f,%.1f", c, (n > 0 ? 1e6 * c / n : 0) }')
    IFS=, read -r cpu_s per_k <<<"$row"
    ((failed == 0 && missing == 0 && lost == 0)) || good=0
    csv_row "$server,msg,$offered,$rep,$CLIENT_PROCS,$ok,$failed,$rate,$p50_ms,$p99_ms,$max_ms,$sent,$received,$lost,$cpu_s,$per_k,$client_cpu_pct,$(awk -v r="$rss" 'BEGIN{printf "%.1f", r/1024}'),,,$good"
    log "$(printf '%-7s msg %6d/s rep %d: %7s/s delivered, %d/%d received, p50 %s ms, p99 %s ms, max %s ms, cpu %ss (%s ms/kmsg), client %s%%%s' \
        "$server" "$offered" "$rep" "$rate" "$received" "$sent" "$p50_ms" "$p99_ms" "$max_ms" "$cpu_s" "$per_k" "$client_cpu_pct" \
        "$([[ $good == 1 ]] || echo " FAILED (lost $lost${err:+, $err})")")"
}

mem_run() { # server rep
    local server=$1 rep=$2 dir="$WORK/run$((++RUN))"
    mkdir -p "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID base rss k i ready n nfail
    # Warm-up: a few logins (TLS, modules, storage paths), then the baseline.
    DURATION_S=2 load "$dir" warm logins --concurrency 2 --count 20 --duration 2
    sleep 1
    base=$(rss_kb "$pid")
    local -a pids=()
    local t0=$EPOCHREALTIME t1
    for ((k = 0; k < CLIENT_PROCS; k++)); do
        timeout -k 5 600 "$PY" "$LOAD" hold --host "$IP" --port "$PORT" --domain "$DOMAIN" \
            --cafile "$CERT" --mech "$MECH" --users "$USERS" --part "$k" --parts "$CLIENT_PROCS" \
            --count $(((MEM_CLIENTS + CLIENT_PROCS - 1 - k) / CLIENT_PROCS)) \
            --concurrency "$FILL_CONCURRENCY" --duration 590 --out "$dir/hold.$k.json" \
            </dev/null >"$dir/hold.$k.log" 2>&1 &
        pids+=($!)
        TRACKED+=($!)
    done
    n=0
    nfail=0
    for ((i = 0; i < 3000; i++)); do
        ready=$(cat "$dir"/hold.*.log 2>/dev/null | grep -c '^READY' || true)
        ((ready == CLIENT_PROCS)) && break
        for k in "${pids[@]}"; do kill -0 "$k" 2>/dev/null || break 2; done
        sleep 0.2
    done
    t1=$EPOCHREALTIME
    read -r n nfail < <(cat "$dir"/hold.*.log | awk '/^READY/ { n += $2; f += $3 } END { print n + 0, f + 0 }')
    sleep 2
    rss=$(rss_kb "$pid")
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (log: $dir)"
    for k in "${pids[@]}"; do stop_pid "$k"; done
    stop_server
    local good=1 fill kb client_cpu=""
    ((n == MEM_CLIENTS && nfail == 0)) || good=0
    fill=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b > a ? n / (b - a) : 0) }')
    kb=$(awk -v r="$rss" -v b="$base" -v n="$n" 'BEGIN { printf "%.2f", (n > 0 ? (r - b) / n : 0) }')
    csv_row "$server,mem,$MEM_CLIENTS,$rep,$CLIENT_PROCS,$n,$nfail,$fill,,,,,,,,,$client_cpu,$(awk -v r="$rss" 'BEGIN{printf "%.1f", r/1024}'),$(awk -v r="$base" 'BEGIN{printf "%.1f", r/1024}'),$kb,$good"
    log "$(printf '%-7s mem %d clients rep %d: %d online (%d failed), RSS %d -> %d kB = %s kB/client, filled at %s/s%s' \
        "$server" "$MEM_CLIENTS" "$rep" "$n" "$nfail" "$base" "$rss" "$kb" "$fill" "$([[ $good == 1 ]] || echo ' FAILED')")"
}

# --- benchmark ------------------------------------------------------------------------------

mkdir -p "$RESULTS"
[[ -e $RESULTS/.gitignore ]] || printf '*\n!.gitignore\n' >"$RESULTS/.gitignore"
echo "$HEADER" >"$CSV"

log "xmpp bench: servers [$SERVERS], login levels [$LOGIN_LEVELS], msg rates [$MSG_RATES] over $PAIRS pairs, mem $MEM_CLIENTS clients, ${DURATION_S}s per step, reps $REPS, $CLIENT_PROCS client procs, $MECH at $SCRAM_ITERATIONS iterations"
[[ " $SERVERS " == *" prosody "* ]] && log "prosody: $(dpkg-query -W -f '${Version}' prosody 2>/dev/null || echo '?'), nagle $([[ $PROSODY_NAGLE == 1 ]] && echo on || echo off), log $LOG_LEVEL"
[[ " $SERVERS " == *" xmppd "* ]] && log "xmppd: $XMPPD_BIN"

for level in $LOGIN_LEVELS; do
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do login_run "$server" "$level" "$rep"; done
    done
done
for rate in $MSG_RATES; do
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do msg_run "$server" "$rate" "$rep"; done
    done
done
if ((MEM_CLIENTS > 0)); then
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do mem_run "$server" "$rep"; done
    done
fi

"$PY" "$REPORT" report "$CSV"
echo
echo "raw results: $CSV"
