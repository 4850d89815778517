#!/usr/bin/env bash
# bench/turn.sh: coturn (Debian's turnserver) against turnd, side by side on 127.0.0.1.
#
# Two scenarios, each run A/B alternating (coturn, turnd, coturn, turnd, ...) with a fresh
# server process per run and the same settings on both sides:
#   load   turnutils_peer (UDP echo) + turnutils_uclient over channels, one load level per
#          entry of LEVELS; records delivered packets/s, loss, RTT, server CPU per 100k
#          relayed packets and server memory.
#   alloc  a burst of allocations (uclient -O: allocate, refresh, permission, channel bind,
#          then exit without releasing), measuring allocations/s and memory per held
#          allocation.
# Raw rows go to bench/results/turn-<date>.csv; bench/turn_report.py prints the summary.
# See bench/README.md for the knobs and how to read the output.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and printf use a '.' decimal point

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

REPS=${REPS:-3}
LEVELS=${LEVELS-"10 50 100 200"}  # uclient -m per level; CLIENTS:INTERVAL_MS sets -z too
INTERVAL_MS=${INTERVAL_MS:-5}      # uclient -z: per-client packet interval
DURATION_S=${DURATION_S:-20}       # per-client sending time; -n = DURATION_S*1000/-z
MSG_LEN=${MSG_LEN:-172}            # uclient -l: RTP-like payload
CLIENT_PROCS=${CLIENT_PROCS:-1}    # parallel uclient processes sharing -m
ALLOCS=${ALLOCS:-1000}             # allocations per alloc run (0: skip the scenario)
ALLOC_PROCS=${ALLOC_PROCS:-2}      # parallel uclient -O processes sharing ALLOCS
SERVERS=${SERVERS:-"coturn turnd"}
RELAY_THREADS=${RELAY_THREADS:-2}
PORT=${PORT:-34478}                # TURN listening port (not 3478: keep off any system coturn)
PEER_PORT=${PEER_PORT:-34480}      # turnutils_peer echo port
MIN_PORT=${MIN_PORT:-61000}        # relay range, above the kernel's ephemeral range
MAX_PORT=${MAX_PORT:-64999}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_LOGS=${KEEP_LOGS:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/rtc-target}
TURND_BIN=${TURND_BIN:-$CARGO_TARGET_DIR/release/turnd}
RESULTS=${RESULTS:-$HERE/results}
CSV=${CSV:-$RESULTS/turn-$(date +%Y%m%d-%H%M%S).csv}
STOPPING_S=10 # uclient waits this long for stragglers when packets were lost

REALM=bench
USER_NAME=bench
USER_PASS=bench
IP=127.0.0.1
CLK_TCK=$(getconf CLK_TCK)

die() { echo "turn.sh: $*" >&2; exit 1; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- cleanup: everything this script starts is tracked by pid and stopped on exit -----------

WORK=$(mktemp -d /tmp/turn-bench.XXXXXX)
declare -a TRACKED=()

stop_pid() { # pid of a child of ours: TERM, up to 5 s grace, then KILL; then forget it
    local pid=$1 i p keep=()
    for p in "${TRACKED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    TRACKED=("${keep[@]}") # a reaped pid may be reused: never signal it again
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid f
    # uclient runs: their `timeout` wrapper's pid is in *.pid; TERM is passed on to uclient.
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

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
[[ $CLIENT_PROCS =~ ^[1-9][0-9]*$ ]] || die "CLIENT_PROCS must be a positive integer"
[[ $ALLOC_PROCS =~ ^[1-9][0-9]*$ ]] || die "ALLOC_PROCS must be a positive integer"
[[ $ALLOCS =~ ^[0-9]+$ ]] || die "ALLOCS must be a number"
[[ $DURATION_S =~ ^[1-9][0-9]*$ ]] || die "DURATION_S must be a positive integer"
((DURATION_S >= 10)) || log "WARNING: DURATION_S < 10 leaves under 5 s with every client sending; rates get rough"
# uclient allocates up to twice per client (a probe, then the real one).
((2 * ALLOCS <= MAX_PORT - MIN_PORT + 1)) || die "2*ALLOCS ($ALLOCS) exceeds the relay port range"
for s in $SERVERS; do [[ $s == coturn || $s == turnd ]] || die "unknown server '$s'"; done
command -v python3 >/dev/null || die "python3 is needed for bench/turn_report.py"
command -v ss >/dev/null || die "ss (iproute2) is needed"

if ! command -v turnserver >/dev/null || ! command -v turnutils_uclient >/dev/null; then
    log "installing coturn"
    DEBIAN_FRONTEND=noninteractive apt-get install -y coturn >&2 || die "apt-get install coturn failed"
fi
# The package may start its own service on 3478. We never use that port, but a busy system
# turnserver would skew the numbers: stop it through the service manager if it runs.
if ss -Hlunp 'sport = :3478' 2>/dev/null | grep -q '"turnserver"'; then
    log "a packaged coturn holds port 3478; stopping the coturn service"
    service coturn stop >&2 2>/dev/null || systemctl stop coturn >&2 2>/dev/null ||
        log "WARNING: could not stop the coturn service; its load may skew results"
fi
for p in "$PORT" "$PEER_PORT"; do
    if [[ -n $(ss -Hlun "sport = :$p") ]]; then
        die "UDP port $p is in use; set PORT/PEER_PORT to free ports"
    fi
done

if [[ $SKIP_BUILD != 1 ]] && [[ " $SERVERS " == *" turnd "* ]]; then
    log "building turnd (release)"
    (cd "$ROOT" && cargo build --release -p turnd >&2) || die "cargo build failed"
fi
[[ -x $TURND_BIN ]] || die "no turnd binary at $TURND_BIN"

# Each uclient client and every server relay socket is a file descriptor.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

TIME_BIN=
[[ -x /usr/bin/time ]] && TIME_BIN=/usr/bin/time # for uclient's own CPU use (saturation check)

# --- servers --------------------------------------------------------------------------------

write_turnd_config() { # file
    cat >"$1" <<EOF
# Mirrors the coturn command line in start_server.
listening-port = $PORT
listening-ip = ["$IP"]
relay-ip = ["$IP"]
min-port = $MIN_PORT
max-port = $MAX_PORT
realm = "$REALM"
user = ["$USER_NAME:$USER_PASS"]
lt-cred-mech = true
no-tls = true
no-dtls = true
allow-loopback-peers = true
relay-threads = $RELAY_THREADS
unauthenticated-rate = 0
log-level = "info"
EOF
}

SERVER_PID=
start_server() { # server rundir
    local server=$1 dir=$2 i
    case $server in
    coturn)
        turnserver -n --no-cli --log-file stdout --simple-log --pidfile "$dir/coturn.pid" \
            --listening-ip "$IP" --relay-ip "$IP" --listening-port "$PORT" \
            --min-port "$MIN_PORT" --max-port "$MAX_PORT" \
            --realm "$REALM" --user "$USER_NAME:$USER_PASS" --lt-cred-mech \
            --allow-loopback-peers --no-tls --no-dtls --relay-threads "$RELAY_THREADS" \
            >"$dir/server.log" 2>&1 &
        ;;
    turnd)
        write_turnd_config "$dir/turnd.toml"
        # turnd reads TURND_* variables as config overrides: keep ours out of its environment.
        env -u TURND_BIN "$TURND_BIN" --config "$dir/turnd.toml" >"$dir/server.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    TRACKED+=("$SERVER_PID")
    # Ready when our process owns the UDP listener.
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -5 "$dir/server.log" >&2; die "$server exited at start"; }
        ss -Hlunp "sport = :$PORT" 2>/dev/null | grep -q "pid=$SERVER_PID," && break
        sleep 0.1
    done
    ((i < 100)) || die "$server did not listen on $IP:$PORT within 10 s"
    sleep 0.5 # let relay threads settle
}

PEER_PID=
start_peer() { # rundir
    turnutils_peer -L "$IP" -p "$PEER_PORT" >"$1/peer.log" 2>&1 &
    PEER_PID=$!
    TRACKED+=("$PEER_PID")
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -n $(ss -Hlun "sport = :$PEER_PORT") ]] && return 0
        sleep 0.1
    done
    die "turnutils_peer did not listen on $IP:$PEER_PORT"
}

cpu_ticks() { # pid -> utime+stime in clock ticks
    local s
    s=$(<"/proc/$1/stat")
    s=${s##*) } # the command name may contain spaces; fields restart after ')'
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}

mem_kb() { # pid -> "VmHWM VmRSS" in kB
    awk '/^VmHWM:/ { h = $2 } /^VmRSS:/ { r = $2 } END { print h, r }' "/proc/$1/status"
}

relay_sockets() { # pid -> UDP sockets it holds in the relay range (= allocations held)
    ss -Hanup "( sport >= :$MIN_PORT and sport <= :$MAX_PORT )" 2>/dev/null |
        grep -c "pid=$1," || true
}

# --- clients --------------------------------------------------------------------------------

stamp() { # prefix every line with the wall-clock time it arrived (uclient flushes per line)
    local line
    while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}

run_uclient() { # outfile timeout_s uclient-args...
    local out=$1 t=$2
    shift 2
    {
        echo UCLIENT_START
        if [[ -n $TIME_BIN ]]; then
            timeout -k 3 "$t" "$TIME_BIN" -f 'UCLIENT_CPU %U %S %e' turnutils_uclient "$@" 2>&1 &
        else
            timeout -k 3 "$t" turnutils_uclient "$@" 2>&1 &
        fi
        echo $! >"$out.pid"
        wait $! && rc=0 || rc=$?
        rm -f "$out.pid" # only running uclients are listed for cleanup
        echo "UCLIENT_EXIT $rc"
    } | stamp >"$out"
}

split() { # total parts -> the share of each part, one per line
    local total=$1 parts=$2 i
    for ((i = 0; i < parts; i++)); do
        echo $((total / parts + (i < total % parts ? 1 : 0)))
    done
}

# --- scenarios ------------------------------------------------------------------------------

HEADER=date,server,scenario,level,rep,clients,interval_ms,msg_len,client_procs,offered_pps,sent,recv,lost,lost_pct,rtt_ms,delivered_pps,uclient_pps,client_cpu_pct,wall_s,cpu_s,cpu_per_100k,vmhwm_kb,vmrss_kb,allocs,allocs_held,allocs_per_s,rss_base_kb,rss_per_alloc_kb,cpu_ms_per_alloc,retries_437,ok
mkdir -p "$RESULTS"
[[ -e $RESULTS/.gitignore ]] || printf '*\n!.gitignore\n' >"$RESULTS/.gitignore"
echo "$HEADER" >"$CSV"
RUN=0

load_run() { # server level clients interval_ms rep
    local server=$1 level=$2 clients=$3 z=$4 rep=$5
    local dir="$WORK/run$((++RUN))" n=$((DURATION_S * 1000 / z)) i m f
    mkdir -p "$dir"
    ((n >= 1)) || die "DURATION_S too short for -z $z"
    start_peer "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID t0 t1 c0 c1 hwm rss pids=()
    # Bound each run: connect phase, 6 s start stagger, sending, uclient's straggler wait.
    local limit=$((DURATION_S + 6 + STOPPING_S + clients / 10 + 30))
    c0=$(cpu_ticks "$pid")
    t0=$EPOCHREALTIME
    i=0
    while read -r m; do
        ((m > 0)) || continue
        # (the file name is set here: expansions of a `&` command happen in the child)
        f="$dir/uclient.$i.out"
        i=$((i + 1))
        run_uclient "$f" "$limit" -c -l "$MSG_LEN" -z "$z" -m "$m" -n "$n" \
            -u "$USER_NAME" -w "$USER_PASS" -e "$IP" -r "$PEER_PORT" -p "$PORT" "$IP" &
        pids+=($!)
    done < <(split "$clients" "$CLIENT_PROCS")
    for p in "${pids[@]}"; do wait "$p" || true; done
    t1=$EPOCHREALTIME
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (log: $dir/server.log)"
    c1=$(cpu_ticks "$pid")
    read -r hwm rss < <(mem_kb "$pid")
    stop_pid "$pid"
    stop_pid "$PEER_PID"

    local parsed
    parsed=$(python3 "$HERE/turn_report.py" load "$DURATION_S" "$dir"/uclient.*.out)
    local sent recv lost lost_pct rtt_ms delivered_pps uclient_pps client_cpu_pct ok
    eval "$parsed" # key=value pairs of numbers, produced by our own helper
    local cpu_s wall_s per100k offered
    cpu_s=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
    wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    # Every message a client gets back crossed the server twice (client->peer, peer->client).
    per100k=$(awk -v c="$cpu_s" -v s="$sent" -v r="$recv" \
        'BEGIN { printf "%.4f", ((s + r) > 0 ? c / ((s + r) / 100000) : 0) }')
    offered=$((clients * 1000 / z))
    echo "$(date -Iseconds),$server,load,$level,$rep,$clients,$z,$MSG_LEN,$CLIENT_PROCS,$offered,$sent,$recv,$lost,$lost_pct,$rtt_ms,$delivered_pps,$uclient_pps,$client_cpu_pct,$wall_s,$cpu_s,$per100k,$hwm,$rss,,,,,,,,$ok" >>"$CSV"
    log "$(printf '%-6s level %-8s rep %d: offered %6d pps delivered %6s pps loss %7s%% rtt %6s ms cpu %6ss (%s s/100k) hwm %6d kB%s' \
        "$server" "$level" "$rep" "$offered" "$delivered_pps" "$lost_pct" "$rtt_ms" "$cpu_s" \
        "$per100k" "$hwm" "$([[ $ok == 1 ]] || echo ' INCOMPLETE')")"
}

alloc_run() { # server rep
    local server=$1 rep=$2
    local dir="$WORK/run$((++RUN))" i m f
    mkdir -p "$dir"
    start_server "$server" "$dir"
    local pid=$SERVER_PID c0 c1 base hwm rss held pids=() ok
    read -r _ base < <(mem_kb "$pid")
    c0=$(cpu_ticks "$pid")
    i=0
    while read -r m; do
        ((m > 0)) || continue
        # -O: connect every client back to back (allocate, refresh, then fire a permission and
        # a channel bind) and exit without deallocating, so the server keeps every allocation
        # until it expires.
        f="$dir/alloc.$i.out"
        i=$((i + 1))
        run_uclient "$f" $((ALLOCS / 10 + 60)) -c -O -n 1 -m "$m" \
            -u "$USER_NAME" -w "$USER_PASS" -e "$IP" -r "$PEER_PORT" -p "$PORT" "$IP" &
        pids+=($!)
    done < <(split "$ALLOCS" "$ALLOC_PROCS")
    for p in "${pids[@]}"; do wait "$p" || true; done
    sleep 1 # late refreshes and permissions
    kill -0 "$pid" 2>/dev/null || die "$server died during the allocation run"
    c1=$(cpu_ticks "$pid")
    read -r hwm rss < <(mem_kb "$pid")
    # uclient makes a probe allocation per client besides the real one, and retries after a
    # 437: count what the server really holds instead of trusting ALLOCS.
    held=$(relay_sockets "$pid")
    stop_pid "$pid"
    local parsed wall_s busy_s retries
    parsed=$(python3 "$HERE/turn_report.py" alloc "$dir"/alloc.*.out)
    eval "$parsed" # wall_s busy_s retries ok, numbers from our own helper
    ((held >= ALLOCS)) || ok=0
    local row cpu_s aps per_alloc cpu_ms
    row=$(awk -v w="$busy_s" -v h="$held" -v base="$base" -v rss="$rss" \
        -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" 'BEGIN {
            cpu = (c1 - c0) / hz
            printf "%.2f,%.0f,%.2f,%.3f", cpu, (w > 0 ? h / w : 0),
                (h > 0 ? (rss - base) / h : 0), (h > 0 ? 1000 * cpu / h : 0) }')
    IFS=, read -r cpu_s aps per_alloc cpu_ms <<<"$row"
    echo "$(date -Iseconds),$server,alloc,$ALLOCS,$rep,$ALLOCS,,,$ALLOC_PROCS,,,,,,,,,,$wall_s,$cpu_s,,$hwm,$rss,$ALLOCS,$held,$aps,$base,$per_alloc,$cpu_ms,$retries,$ok" >>"$CSV"
    log "$(printf '%-6s alloc rep %d: %d clients in %ss (%ss without %d uclient 437 sleeps): %d allocations held, %s/s, %s kB/alloc%s' \
        "$server" "$rep" "$ALLOCS" "$wall_s" "$busy_s" "$retries" "$held" "$aps" "$per_alloc" \
        "$([[ $ok == 1 ]] || echo ' INCOMPLETE')")"
}

log "turn bench: servers [$SERVERS], levels [$LEVELS], -z ${INTERVAL_MS}ms, ${DURATION_S}s/client, -l $MSG_LEN, reps $REPS, client procs $CLIENT_PROCS, allocs $ALLOCS"
log "coturn $(turnserver --version 2>/dev/null | head -1 || true); turnd $TURND_BIN"

for level in $LEVELS; do
    clients=${level%%:*}
    z=$INTERVAL_MS
    [[ $level == *:* ]] && z=${level#*:}
    [[ $clients =~ ^[1-9][0-9]*$ && $z =~ ^[1-9][0-9]*$ ]] || die "bad level '$level' (CLIENTS or CLIENTS:INTERVAL_MS)"
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do load_run "$server" "$level" "$clients" "$z" "$rep"; done
    done
done

if ((ALLOCS > 0)); then
    for ((rep = 1; rep <= REPS; rep++)); do
        for server in $SERVERS; do alloc_run "$server" "$rep"; done
    done
fi

python3 "$HERE/turn_report.py" report "$CSV"
echo
echo "raw results: $CSV"
