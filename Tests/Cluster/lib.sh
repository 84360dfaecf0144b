# Shared by the namespace cluster scripts (run.sh and the scenario scripts beside it): parameters,
# clean-up, the binary, host configurations, the topology, the router's BIRD, the processes and the
# checks. Source it after setting HERE, ROOT, BINARY, KEEP_LOGS (and GOSSIP_MODE) and parsing the
# script's own options (after `source signals.sh`); it creates WORK, installs the clean-up traps and builds the binary if needed.
# Tests/Cluster/README.md describes the topology and what each helper asserts.

# ── Parameters ────────────────────────────────────────────────────────────────────────────────
LONG_COUNT=120              # concurrent long-lived connections per long scenario
LONG_SIZE=1048576           # bytes per long body ...
LONG_DELAY=0.5              # ... written in chunks, this many seconds apart
SPREAD_COUNT=2000           # new connections per spread check (scenario 2)
SPREAD_TOLERANCE=0.05       # |share - weight share| at most 5 points: 4.5 σ of a 50 % share at 2000
                            # connections (σ = 1.1 points), 5.2 σ of a 25 % one
STALL=5                     # longest silence a connection may see (chunks come every 0.5 s)
RESTART_STALL=30            # ... when its owner host was killed and restarted (scenario 3)
CPU=1                       # every host's lcore (the control threads run on CPU 0)
BFD_INTERVAL_MS=100         # BFD between the router and each host: a silent host is down after
BFD_MULTIPLIER=3            # 3 x 100 ms
DRAIN_SECONDS=2             # bgp.drain_seconds: a stopping host serves this long after its withdrawal
FAIL_BOUND=1.0              # a frozen host must leave the router's route within this many seconds
JOIN_BOUND=15               # a started or undrained host must enter it within this many seconds
LEAVE_BOUND=2.0             # a drained or stopping host must leave it within this many seconds

VIP=198.19.0.1
URL="http://$VIP"
P="syc$$-"                  # namespace prefix: unique per run
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
export PYTHONDONTWRITEBYTECODE=1   # leave no __pycache__ in the source tree
WORK=$(mktemp -d /tmp/switchyard-cluster.XXXXXX)
TOTALS=$WORK/totals
FAILED=0
NAMESPACES=()
declare -A HOST_PID=() HOST_RUN=() SERVER_PID=()
ALL_PIDS=()
TIMINGS=()                  # "event|seconds" of every change of the router's route, printed at the end

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { say "FAILED: $*"; FAILED=1; }
die() { say "ERROR: $*"; diagnose; exit 2; }

# ── Clean-up: every namespace, process and file this run created, whatever happens ────────────
cleanup() {
    local status=$?
    trap - EXIT INT TERM ERR
    for pid in "${ALL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${ALL_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for ns in "${NAMESPACES[@]}"; do
        # Anything still running inside our namespaces was started by this run (curl, servers).
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    wait 2>/dev/null || true
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    for pid in "${ALL_PIDS[@]}"; do rm -rf "/var/run/dpdk/switchyard-$pid"; done
    if [ -n "$KEEP_LOGS" ]; then mkdir -p "$KEEP_LOGS" && cp -r "$WORK"/. "$KEEP_LOGS"/ 2>/dev/null || true; fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'say "ERROR: line $LINENO: \`$BASH_COMMAND\` failed"; exit 2' ERR
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# ── Diagnostics: each host's last counters (non-zero rows) and the tail of its log ──────────────
diagnose() {
    say "diagnostics (counters of each host; a scope's rows that are all zero are left out):"
    for log in "$WORK"/h*.log; do
        [ -f "$log" ] || continue
        echo "  == $(basename "$log" .log): last periodic counter table"
        "$PY" "$HERE/check.py" table "$log" || true
        echo "  == $(basename "$log" .log): last log lines"
        grep -v '^ \|^scope\|^[a-z].*  ' "$log" | tail -n 5 | sed 's/^/    /' || true
    done
}

# ── Preflight and build ────────────────────────────────────────────────────────────────────────
[ "$(id -u)" -eq 0 ] || { echo "run.sh needs root (network namespaces, DPDK)" >&2; exit 2; }
for tool in ip bridge ethtool curl "$PY" bird birdc; do
    command -v "$tool" >/dev/null || { echo "run.sh needs $tool (Debian: iproute2, ethtool, curl, python3, bird2)" >&2; exit 2; }
done
if [ -z "$BINARY" ]; then
    say "building switchyard (release)"
    (cd "$ROOT" && swift build -c release --product switchyard >"$WORK/build.log" 2>&1) ||
        { tail -n 30 "$WORK/build.log"; die "swift build failed"; }
    BINARY="$(cd "$ROOT" && swift build -c release --show-bin-path)/switchyard"
fi
[ -x "$BINARY" ] || die "no switchyard binary at $BINARY"
BINARY=$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")

# ── Configuration files ────────────────────────────────────────────────────────────────────────
GOSSIP_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
GOSSIP_LINE="gossip: { key: \"$GOSSIP_KEY\", heartbeat_ms: 100, peer_timeout_ms: 1000, members: [{host: 1, address: 198.18.2.11}, {host: 2, address: 198.18.2.12}, {host: 3, address: 198.18.2.13}, {host: 4, address: 198.18.2.14}] }"

# render HOST WEIGHTS(w1,w2,w3,w4) GOSSIP(yes|no) FILE [BACKENDS(local|cluster)]
# The host's `bgp:` section (docs/bgp.md) is appended: one session to the router over the gossip
# segment, BFD, next hop = the host's cluster address (its DPDK uplink). BACKENDS is the rule's
# scope: `local` (a host announces while it has a local backend of weight > 0), or `cluster` for
# host 4 in phase A, which has none (b4 weight 0) and only forwards to the owners.
render() {
    local host=$1 gossip_line="# gossip: off" w1 w2 w3 w4
    IFS=, read -r w1 w2 w3 w4 <<<"$2"
    [ "$3" = yes ] && gossip_line=$GOSSIP_LINE
    # GOSSIP_REPLICATE (optional, e.g. exceptions): the gossip's `replicate:` (docs/gossip.md).
    if [ "$3" = yes ] && [ -n "${GOSSIP_REPLICATE:-}" ]; then gossip_line="${gossip_line% \}}, replicate: $GOSSIP_REPLICATE }"; fi
    sed -e "s/@HOST@/$host/g" -e "s/@CPU@/$CPU/" -e "s/@SERVER@/198.18.10$host.10/" \
        -e "s/@SERVER_MAC@/02:00:00:00:1$host:10/" -e "s/@W1@/$w1/" -e "s/@W2@/$w2/" -e "s/@W3@/$w3/" \
        -e "s/@W4@/$w4/" -e "s|@GOSSIP@|$gossip_line|" "$HERE/host.yaml.in" >"$4"
    cat >>"$4" <<YAML
bgp:
  local_as: 65001
  router_id: 198.18.2.1$host
  peers: [{ address: 198.18.2.1, as: 65000 }]
  hold_time: 3
  bfd: { interval_ms: $BFD_INTERVAL_MS, multiplier: $BFD_MULTIPLIER }
  drain_seconds: $DRAIN_SECONDS
  backends: ${5:-local}
  run_dir: $WORK/bird-h$host
YAML
}

# ── Topology ───────────────────────────────────────────────────────────────────────────────────
ns_add() {
    ip netns add "$P$1"
    NAMESPACES+=("$P$1")
    ip -n "$P$1" link set lo up
    ip netns exec "$P$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# veth NS_A IF_A MAC_A NS_B IF_B MAC_B: a veth pair, both ends up, checksum offloads off on both
# (a partial checksum left for the hardware would reach AF_PACKET unfinished; and with rx
# checksumming off, the receiving kernels verify every checksum Switchyard rewrote).
veth() {
    ip link add name "$2" address "$3" netns "$P$1" type veth peer name "$5" address "$6" netns "$P$4"
    for end in "$1 $2" "$4 $5"; do
        set -- $end
        ip netns exec "$P$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null
        ip -n "$P$1" link set "$2" up
    done
}

build_topology() {
    say "building the topology (namespaces ${P}*)"
    ns_add router
    ns_add client
    for h in 1 2 3 4; do ns_add "h$h"; ns_add "s$h"; done
    local R=router
    ip netns exec "${P}router" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    # The hosts' segment: a bridge in the router namespace, one port per host uplink.
    ip -n "$P$R" link add br0 address 02:00:00:00:00:01 type bridge
    ip -n "$P$R" link set br0 up
    ip -n "$P$R" address add 198.18.0.1/24 dev br0
    # The gossip segment (kernel sockets of the hosts' control threads): a second bridge. The BGP
    # sessions and BFD between the router (198.18.2.1) and the hosts' BIRDs run over it too.
    ip -n "$P$R" link add brg address 02:00:00:00:02:01 type bridge
    ip -n "$P$R" link set brg up
    ip -n "$P$R" address add 198.18.2.1/24 dev brg
    # Client.
    veth client eth0 02:00:00:00:01:02 $R c0 02:00:00:00:01:01
    ip -n "${P}client" address add 198.18.1.2/24 dev eth0
    ip -n "${P}client" route add default via 198.18.1.1
    # A wide port range: no client port (so no 5-tuple) is used twice in a run.
    ip netns exec "${P}client" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
    ip -n "$P$R" address add 198.18.1.1/24 dev c0
    for h in 1 2 3 4; do
        # Uplink: up0 (DPDK net_af_packet) in hN, its peer uN a port of br0. Frames for a host's MAC
        # go to its port only (static entry, no flooding of unknown unicast), as on a switch.
        veth "h$h" up0 "02:00:00:00:00:1$h" $R "u$h" "02:00:00:00:0f:1$h"
        ip -n "$P$R" link set "u$h" master br0
        bridge -n "$P$R" link set dev "u$h" flood off
        bridge -n "$P$R" fdb add "02:00:00:00:00:1$h" dev "u$h" master static
        # Gossip: gs0 (kernel) in hN, its peer gN a port of brg.
        veth "h$h" gs0 "02:00:00:00:02:1$h" $R "g$h" "02:00:00:00:0e:1$h"
        ip -n "$P$R" link set "g$h" master brg
        ip -n "${P}h$h" address add "198.18.2.1$h/24" dev gs0
        # Backends: bk0 (DPDK net_af_packet) in hN, its peer eth0 in sN with the server's address.
        # The server's default gateway is the host's uplink address, its MAC the DPDK port's.
        veth "h$h" bk0 "02:00:00:00:1$h:01" "s$h" eth0 "02:00:00:00:1$h:10"
        ip -n "${P}s$h" address add "198.18.10$h.10/24" dev eth0
        ip -n "${P}s$h" neigh add "198.18.0.1$h" lladdr "02:00:00:00:1$h:01" dev eth0 nud permanent
        ip -n "${P}s$h" route add default via "198.18.0.1$h" dev eth0 onlink
    done
}

# ── The router's BGP speaker: BIRD 2, one session per host, multipath into the kernel ──────────
start_router_bird() {
    cat >"$WORK/router-bird.conf" <<BIRD
# The cluster test's router (Tests/Cluster/README.md, docs/bgp.md): learns the VIP from each host
# over BGP and installs one multipath route with every host that announces it.
router id 198.18.2.1;
log "$WORK/router-bird.log" all;
protocol device { scan time 10; }
protocol kernel {
    ipv4 { import none; export all; };
    merge paths on limit 16;           # ECMP: equal BGP routes become one multipath route
}
protocol bfd { interface "brg" { interval $BFD_INTERVAL_MS ms; multiplier $BFD_MULTIPLIER; }; }
template bgp switchyard_host {
    local 198.18.2.1 as 65000;
    hold time 3; keepalive time 1;
    connect delay time 1; connect retry time 2; error wait time 1, 10;
    bfd on;
    ipv4 { import where net = $VIP/32; export none; };
}
protocol bgp h1 from switchyard_host { neighbor 198.18.2.11 as 65001; }
protocol bgp h2 from switchyard_host { neighbor 198.18.2.12 as 65001; }
protocol bgp h3 from switchyard_host { neighbor 198.18.2.13 as 65001; }
protocol bgp h4 from switchyard_host { neighbor 198.18.2.14 as 65001; }
BIRD
    ip netns exec "${P}router" bird -f -c "$WORK/router-bird.conf" -s "$WORK/router-bird.ctl" \
        >"$WORK/router-bird.out" 2>&1 &
    ALL_PIDS+=($!)
    for _ in $(seq 50); do [ -S "$WORK/router-bird.ctl" ] && break; sleep 0.1; done
    [ -S "$WORK/router-bird.ctl" ] || { cat "$WORK/router-bird.out"; die "the router's BIRD did not start"; }
    say "router: BIRD 2 running (BGP AS 65000 with hosts 1-4 in AS 65001, BFD ${BFD_INTERVAL_MS} ms x $BFD_MULTIPLIER, merge paths)"
}

now() { date +%s.%N; }

# route_hosts: the hosts in the router's route to the VIP now, as BGP put it there ("1 2 3").
route_hosts() {
    ip -n "${P}router" route show "$VIP" | grep -o 'via 198\.18\.0\.1[1-4]' | sed 's/via 198\.18\.0\.1//' | sort | tr '\n' ' ' |
        sed 's/ $//'
}

# expect_route EVENT SINCE BOUND H...: waits until the router's route to the VIP is exactly over hosts
# H..., at most BOUND seconds after SINCE (a `now` timestamp); records and prints how long it took.
expect_route() {
    local event=$1 since=$2 bound=$3 elapsed
    shift 3
    while :; do
        elapsed=$(awk -v a="$since" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
        [ "$(route_hosts)" = "$*" ] && break
        if awk -v e="$elapsed" -v b="$bound" 'BEGIN { exit !(e > b) }'; then
            fail "$event: the router's route is over host(s) '$(route_hosts)' after ${elapsed} s, expected '$*' within $bound s"
            birdc -s "$WORK/router-bird.ctl" show protocols | sed 's/^/    /' || true
            TIMINGS+=("$event|timeout")
            return 0
        fi
        sleep 0.01
    done
    TIMINGS+=("$event|$elapsed")
    say "router (BGP): $VIP via host(s) $* — ${elapsed} s after: $event"
}

# ctl H COMMAND: one control-socket command to host H's engine.
ctl() { "$BINARY" ctl --socket "$WORK/h$1.sock" "$2" >"$WORK/ctl-h$1-$2.txt" || fail "ctl $2 on host $1 failed"; }

# freeze_host H: SIGSTOP the engine and its BIRD: the host falls silent as a machine that lost power
# (no BGP notification, no TCP FIN), so only BFD can tell the router. Then SIGKILL the engine.
freeze_host() {
    local h=$1 pids
    pids="${HOST_PID[$h]} $(pgrep -f "bird -f -c $WORK/bird-h$h/bird.conf" | tr '\n' ' ')"
    FROZEN_AT=$(now)
    kill -STOP $pids
    say "host $h frozen (SIGSTOP of the engine and its BIRD: pids $pids)"
}

# ── Processes ──────────────────────────────────────────────────────────────────────────────────
start_servers() {
    for h in 1 2 3 4; do
        ip netns exec "${P}s$h" "$PY" "$HERE/server.py" --listen "198.18.10$h.10:8080" --backend "b$h" \
            --log "$WORK/server-b$h.jsonl" >"$WORK/s$h.out" 2>"$WORK/s$h.err" &
        SERVER_PID[$h]=$!
        ALL_PIDS+=($!)
    done
    for h in 1 2 3 4; do
        for _ in $(seq 100); do grep -q ready "$WORK/s$h.out" 2>/dev/null && break; sleep 0.1; done
        grep -q ready "$WORK/s$h.out" || { cat "$WORK/s$h.err"; die "server b$h did not start"; }
    done
}

# start_host H CONFIG [RELOAD_CONFIG RELOAD_AFTER]: runs switchyard in namespace hH, waits until it polls.
# STARTED_AT[H] is when it was started (the reference of its join time).
declare -A STARTED_AT=()
start_host() {
    local h=$1 config=$2 run=$(( ${HOST_RUN[$1]:-0} + 1 ))
    HOST_RUN[$h]=$run
    local name="h$h.$run" extra=()
    [ $# -ge 4 ] && extra=(--reload-config "$3" --reload-after "$4")
    STARTED_AT[$h]=$(now)
    ip netns exec "${P}h$h" "$BINARY" run --config "$config" --stats-interval 5 --stats-json "$WORK/$name.json" \
        --control-socket "$WORK/h$h.sock" "${extra[@]}" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    HOST_PID[$h]=$!
    ALL_PIDS+=($!)
    for _ in $(seq 300); do
        grep -q "switchyard: running:" "$WORK/$name.log" 2>/dev/null && break
        kill -0 "${HOST_PID[$h]}" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "switchyard: running:" "$WORK/$name.log" || { tail -n 20 "$WORK/$name.log"; die "host $h did not start"; }
    say "host $h running (pid ${HOST_PID[$h]}, run $run)"
}

# stop_host H [signalled]: SIGTERM (unless already sent), then the engine's own checks: exit status 0
# means every mbuf came back. The engine withdraws its VIP, serves DRAIN_SECONDS more, then stops.
# A host that has not stopped 20 s after SIGTERM is killed, and that is a failure.
stop_host() {
    local h=$1 pid=${HOST_PID[$1]} status=0 hung=no
    [ "${2:-}" = signalled ] || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        hung=yes
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || status=$?
    if [ "$hung" = yes ]; then
        fail "host $h (run ${HOST_RUN[$h]}) did not stop within 20 s of SIGTERM: killed"
    elif [ "$status" -ne 0 ]; then
        fail "host $h (run ${HOST_RUN[$h]}) exited with status $status: $(grep -v '^ \|^scope' "$WORK/h$h.${HOST_RUN[$h]}.log" | tail -n 3)"
    fi
    unset "HOST_PID[$h]"
}

# stop_hosts H...: SIGTERM to all at once (they drain in parallel), then stop_host each.
stop_hosts() {
    for h in "$@"; do kill -TERM "${HOST_PID[$h]}" 2>/dev/null || true; done
    for h in "$@"; do stop_host "$h" signalled; done
}

# kill_host H: SIGKILL the engine (a frozen one too); its BIRD dies with it (setpriv --pdeathsig).
kill_host() {
    kill -KILL "${HOST_PID[$1]}" 2>/dev/null || true
    wait "${HOST_PID[$1]}" 2>/dev/null || true
    unset "HOST_PID[$1]"
    for pid in $(pgrep -f "bird -f -c $WORK/bird-h$1/bird.conf"); do kill -KILL "$pid" 2>/dev/null || true; done
    say "host $1 killed (SIGKILL)"
}

# announced_after_sync H: the restarted host announced only once synchronised: in its log the
# gossip's "synchronised" line comes before its first "bgp: announce" line.
announced_after_sync() {
    local log="$WORK/h$1.${HOST_RUN[$1]}.log" synced announced
    synced=$(grep -n "gossip: synchronised" "$log" | head -n 1 | cut -d: -f1)
    announced=$(grep -n "bgp: announce " "$log" | head -n 1 | cut -d: -f1)
    if [ -z "$announced" ]; then fail "host $1 never announced the VIP"; return 0; fi
    if [ "$GOSSIP_RUNS" = yes ] && { [ -z "$synced" ] || [ "$synced" -gt "$announced" ]; }; then
        fail "host $1 announced the VIP before its gossip was synchronised (log lines $synced, $announced)"
    else
        say "host $1: $(sed -n "${announced}p" "$log" | sed 's/^switchyard: //')$([ "$GOSSIP_RUNS" = yes ] && echo " (after: $(sed -n "${synced}p" "$log" | sed 's/^switchyard: //'))")"
    fi
}

# clients MODE PREFIX COUNT [more clients.py arguments]: runs in the client namespace.
clients() {
    local mode=$1 prefix=$2 count=$3
    shift 3
    ip netns exec "${P}client" "$PY" "$HERE/clients.py" "$mode" --url "$URL" --prefix "$prefix" --count "$count" \
        --out "$WORK/$prefix.jsonl" --workdir "$WORK/bodies" "$@"
}

# long PREFIX SECONDS: LONG_COUNT slow downloads in the background (LONG_PID); SECONDS of sending each.
long_start() {
    local chunks
    chunks=$(awk -v s="$2" -v d="$LONG_DELAY" 'BEGIN { printf "%d", s / d + 1 }')
    clients long "$1" "$LONG_COUNT" --size "$LONG_SIZE" --chunks "$chunks" --delay "$LONG_DELAY" --max-time 150 \
        >"$WORK/$1.clients.log" 2>&1 &
    LONG_PID=$!
    ALL_PIDS+=($!)
    say "$LONG_COUNT long connections started ($1: $LONG_SIZE bytes each over ${2} s)"
}

long_wait() {
    wait "$LONG_PID" || fail "the client driver of $1 failed: $(tail -n 5 "$WORK/$1.clients.log")"
}

# check_connections PREFIX LABEL [check.py options]
check_connections() {
    local prefix=$1 label=$2
    shift 2
    "$PY" "$HERE/check.py" connections --label "$label" --results "$WORK/$prefix.jsonl" \
        --servers "$WORK/server-*.jsonl" --totals "$TOTALS" "$@" || fail "$label"
}

# spread PREFIX LABEL WEIGHTS: SPREAD_COUNT new short connections, all intact, spread by WEIGHTS.
spread() {
    local pid status=0
    clients batch "$1" "$SPREAD_COUNT" --parallel 32 --max-time 60 >"$WORK/$1.clients.log" 2>&1 &
    pid=$!
    ALL_PIDS+=($pid)
    wait "$pid" || status=$?   # `wait` (not a foreground command): a signal interrupts it at once
    [ "$status" -eq 0 ] || fail "the client driver of $1 failed: $(tail -n 5 "$WORK/$1.clients.log")"
    check_connections "$1" "$2" --weights "$3" --tolerance "$SPREAD_TOLERANCE"
}

warm_up() {
    for _ in $(seq 40); do
        ip netns exec "${P}client" curl -s -o /dev/null --max-time 2 "$URL/data?id=warmup-$RANDOM&size=16" && return 0
        sleep 0.5
    done
    die "no answer from the VIP $VIP after 20 s"
}

counters() { "$PY" "$HERE/check.py" counters "$@" || fail "counters: $*"; }


# ── Preview against outcome (preview.py; Tests/Cluster/README.md, "Preview checks") ───────────
# A change is bracketed by two previews on the same host: before it, of the change's file (what it
# predicts); right after it, of the file the host now runs (what the change left held by entries).
declare -A PREVIEW_T0=() PREVIEW_ON=()

# preview_before LABEL H FILE: PREVIEW_T0[LABEL] = now, then `ctl preview FILE --json` on host H
# into $WORK/preview-LABEL.json.
preview_before() {
    PREVIEW_T0[$1]=$(now)
    PREVIEW_ON[$1]=$2
    "$BINARY" ctl --socket "$WORK/h$2.sock" preview "$3" --json >"$WORK/preview-$1.json" 2>"$WORK/preview-$1.err" ||
        fail "ctl preview $3 on host $2: $(cat "$WORK/preview-$1.err")"
}

# preview_after LABEL FILE [preview.py moved options]: `ctl preview FILE --json` on preview_before's
# host (FILE: the file it runs now; call it once the change is applied everywhere) into
# $WORK/preview-LABEL.after.json, then preview.py moved:
# prints `preview LABEL: predicted=N moved=M opened_during=K closed_during=C (...)` and fails the
# run unless |N - M| <= K + C (the connections that opened, or whose entries left, in between).
preview_after() {
    local label=$1 file=$2 h=${PREVIEW_ON[$1]} changed
    shift 2
    changed=$(now)   # the change is done: a connection opened from now on gets the new table's pick
    "$BINARY" ctl --socket "$WORK/h$h.sock" preview "$file" --json >"$WORK/preview-$label.after.json" 2>"$WORK/preview-$label.after.err" ||
        { fail "ctl preview $file on host $h: $(cat "$WORK/preview-$label.after.err")"; return 0; }
    "$PY" "$HERE/preview.py" moved --label "$label" --before "$WORK/preview-$label.json" --after "$WORK/preview-$label.after.json" \
        --servers "$WORK/server-*.jsonl" --since "${PREVIEW_T0[$label]}" --changed "$changed" --until "$(now)" "$@" ||
        fail "preview $label: the prediction misses what the change moved by more than the connections that opened or closed meanwhile"
}

# preview_flows LABEL AFTER [BEFORE]: the spread AFTER (a prefix spread ran after the change) against
# the shares preview LABEL predicted; with BEFORE (a spread before the change) the net share moved too.
preview_flows() {
    local before=()
    [ $# -ge 3 ] && before=(--before "$3")
    "$PY" "$HERE/preview.py" flows --label "$1" --preview "$WORK/preview-$1.json" --servers "$WORK/server-*.jsonl" \
        --after "$2" "${before[@]}" --tolerance "$SPREAD_TOLERANCE" ||
        fail "preview $1: new flows spread otherwise than predicted"
}

# churn_begin PREFIX COUNT / churn_end PREFIX LABEL [check.py options]: COUNT short connections
# opening and closing in the background (CHURN_BG_PID), 4 at a time; then wait and check them.
churn_begin() {
    clients batch "$1" "$2" --parallel 4 --max-time 60 >"$WORK/$1.clients.log" 2>&1 &
    CHURN_BG_PID=$!
    ALL_PIDS+=($!)
}
churn_end() {
    local prefix=$1 label=$2 status=0
    shift 2
    wait "$CHURN_BG_PID" || status=$?
    [ "$status" -eq 0 ] || fail "the client driver of $prefix failed: $(tail -n 5 "$WORK/$prefix.clients.log")"
    check_connections "$prefix" "$label" "$@"
}
