#!/usr/bin/env bash
# Outbound connections from the single IP (cluster.egress), end to end in the namespace cluster
# (Tests/Cluster/README.md, section "egress.sh": topology addition, scenarios, what each asserts).
#
#   Tests/Cluster/egress.sh [--binary PATH] [--keep-logs DIR] [--drain-host H] [--kill-host H] [--no-restart]
#
#   --binary PATH    use this switchyard instead of building one (`swift build -c release`)
#   --keep-logs DIR  copy every log (hosts, external server, clients, configurations) to DIR at the end
#   --drain-host H   the host drained in scenario 2 (default 2)
#   --kill-host H    the host killed in scenario 3 (default 3; not the drained one)
#   --no-restart     scenario 3 leaves the killed host dead (default: it starts again 3 s after)
#
# The resources behind the four hosts (the servers' namespaces sN) open TCP connections and UDP
# exchanges to a server in a namespace beyond the router (ext, 198.18.3.2:9000); they leave as the
# VIP 198.19.0.1 with a source port of their host's range, and the router's BGP ECMP spreads the
# replies over every host, which send them to the owner of the port. Needs what run.sh needs. The last line is
# `outbound connections=N completed=N broken=N broken_own_host=M`.
# Exit status: 0 every check passed; 1 a check failed; 2 the test could not run (setup).
set -Eeuo pipefail

# SIGINT and SIGTERM unblocked first (signals.sh says why).
source "$(dirname "$0")/signals.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINARY=""
KEEP_LOGS=""
GOSSIP_MODE=on
DRAIN_HOST=2
KILL_HOST=3
RESTART=yes
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    --drain-host) DRAIN_HOST=$2; shift 2 ;;
    --kill-host) KILL_HOST=$2; shift 2 ;;
    --no-restart) RESTART=no; shift ;;
    *) echo "usage: $0 [--binary PATH] [--keep-logs DIR] [--drain-host H] [--kill-host H] [--no-restart]" >&2; exit 2 ;;
    esac
done
case "$DRAIN_HOST$KILL_HOST" in
[1-4][1-4]) [ "$DRAIN_HOST" != "$KILL_HOST" ] || { echo "--drain-host and --kill-host must differ" >&2; exit 2; } ;;
*) echo "--drain-host and --kill-host are 1, 2, 3 or 4" >&2; exit 2 ;;
esac

# Parameters, clean-up, binary, configurations, topology, processes and checks (run.sh's).
# shellcheck source=lib.sh
source "$HERE/lib.sh"

# ── Parameters of this script ──────────────────────────────────────────────────────────────────
OUTSIDE=198.18.3.2          # the external server, beyond the router (ns ext)
OUTSIDE_URL="http://$OUTSIDE:9000"
RANGES="1=20000-29999,2=30000-39999,3=40000-49999,4=50000-59999"   # cluster.egress ports per host
SHORT_COUNT=100             # short outbound connections per resource and check (4 KiB up, 4 KiB back)
UDP_COUNT=100               # UDP exchanges per resource and check (1000 bytes up, the same back)
EGRESS_LONG_COUNT=12        # long outbound connections per resource and scenario ...
EGRESS_LONG_SIZE=65536      # ... of this many bytes up, and back in chunks 0.5 s apart
KILLED_SPEED_TIME=20        # scenario 3: curl gives up after this many seconds without data (6 with --no-restart)
RESTART_AFTER=3             # scenario 3: the killed host starts again this many seconds after the kill
EGRESS_TOTALS=$WORK/egress-totals
ALL_HOSTS="1 2 3 4"

# egress_render HOST FILE: run.sh's host configuration (render, weights 1:1:1:1, gossip) with the
# changes docs/configuration.md ("Outbound connections") lists: classify's, classify-tunnel's and
# classify-backends' `other` go to the egress stages, the three stages, and `cluster.egress`.
egress_render() {
    local host=$1 file=$2
    render "$host" 1,1,1,1 yes "$file"
    sed -i \
        -e '/tunnel: decap, answer: port:uplink/s/other: drop }/other: egress-in }/' \
        -e '/next: { vip: owner, reply: drop, tunnel: drop, answer: drop,/s/other: drop }/other: egress-in-tunnel }/' \
        -e '/reply: translate-out, tunnel: drop, answer: port:backends/s/other: drop }/other: egress-out }/' \
        "$file"
    "$PY" - "$file" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
stages = """  - name: egress-in              # replies from the router: to the resource here, or to the port's owner
    kind: egress-return
    next: { out: to-backends, remote: encap, pass: drop }
  - name: egress-in-tunnel       # replies a peer sent here (never sent on again)
    kind: egress-return
    next: { out: to-backends, remote: drop, pass: drop }
  - name: egress-out             # the resources' connections to the outside: source -> VIP:port of this host's range
    kind: egress-translate
    next: { out: to-uplink, pass: drop }
"""
egress = """  egress:
    - address: 198.19.0.1
      resources: [198.18.101.0/24, 198.18.102.0/24, 198.18.103.0/24, 198.18.104.0/24]
      destinations: [198.18.3.0/24]
      ports: { 1: "20000-29999", 2: "30000-39999", 3: "40000-49999", 4: "50000-59999" }
"""
assert text.count("\nlcores:\n") == 1 and text.count("\n  connections:\n") == 1
text = text.replace("\nlcores:\n", "\n" + stages + "lcores:\n").replace("\n  connections:\n", "\n" + egress + "  connections:\n")
open(path, "w").write(text)
PY
    [ "$(grep -c 'other: egress-' "$file")" -eq 3 ] || die "egress_render: the classify stages of host.yaml.in changed"
    "$BINARY" validate "$file" >"$file.validate.txt" 2>&1 || { cat "$file.validate.txt"; die "host $host's egress configuration is rejected"; }
}

# outside_add: the external network beyond the router: ns ext, veth x0 (router, 198.18.3.1) -
# eth0 (ext, 198.18.3.2), and the server that records the source of every connection.
outside_add() {
    ns_add ext
    veth ext eth0 02:00:00:00:03:02 router x0 02:00:00:00:03:01
    ip -n "${P}router" address add 198.18.3.1/24 dev x0
    ip -n "${P}ext" address add "$OUTSIDE/24" dev eth0
    ip -n "${P}ext" route add default via 198.18.3.1
    ip netns exec "${P}ext" "$PY" "$HERE/server.py" --listen "$OUTSIDE:9000" --backend ext --udp \
        --log "$WORK/server-ext.jsonl" >"$WORK/ext.out" 2>"$WORK/ext.err" &
    ALL_PIDS+=($!)
    for _ in $(seq 100); do grep -q ready "$WORK/ext.out" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$WORK/ext.out" || { cat "$WORK/ext.err"; die "the external server did not start"; }
    say "external server: $OUTSIDE:9000 (TCP and UDP) in ns ext, beyond the router (198.18.3.1)"
}

# resources MODE PREFIX HOSTS COUNT [clients.py arguments]: from the resource behind each host of
# HOSTS ("1 2 3 4"), COUNT echo connections to the external server, all at once, in the background
# (pids in RESOURCE_PIDS). Request ids PREFIX-hH-I, results in WORK/PREFIX-hH.jsonl.
RESOURCE_PIDS=()
resources() {
    local mode=$1 prefix=$2 hosts=$3 count=$4
    shift 4
    RESOURCE_PIDS=()
    for h in $hosts; do
        ip netns exec "${P}s$h" "$PY" "$HERE/clients.py" "$mode" --echo --url "$OUTSIDE_URL" --prefix "$prefix-h$h" \
            --count "$count" --out "$WORK/$prefix-h$h.jsonl" --workdir "$WORK/bodies-h$h" "$@" \
            >"$WORK/$prefix-h$h.clients.log" 2>&1 &
        RESOURCE_PIDS+=($!)
        ALL_PIDS+=($!)
    done
}

resources_wait() {
    for pid in "${RESOURCE_PIDS[@]}"; do
        wait "$pid" || fail "a client driver of $1 failed: $(tail -n 3 "$WORK/$1"-h*.clients.log)"
    done
}

# long_resources PREFIX SECONDS [clients.py arguments]: EGRESS_LONG_COUNT slow echoes per resource.
long_resources() {
    local prefix=$1 seconds=$2 chunks
    shift 2
    chunks=$(awk -v s="$seconds" -v d="$LONG_DELAY" 'BEGIN { printf "%d", s / d + 1 }')
    resources long "$prefix" "$ALL_HOSTS" "$EGRESS_LONG_COUNT" --size "$EGRESS_LONG_SIZE" --chunks "$chunks" \
        --delay "$LONG_DELAY" --max-time 60 "$@"
    LONG_PIDS=("${RESOURCE_PIDS[@]}")
    say "$EGRESS_LONG_COUNT long outbound connections from each resource started ($prefix: $EGRESS_LONG_SIZE bytes up, back over $seconds s)"
}

# short_resources PREFIX HOSTS: SHORT_COUNT short echoes from each resource of HOSTS, awaited.
short_resources() {
    resources batch "$1" "$2" "$SHORT_COUNT" --size 4096 --parallel 16 --max-time 30
    resources_wait "$1"
}

# udp_resources PREFIX HOSTS: from each resource of HOSTS, UDP_COUNT UDP exchanges (one datagram
# of 1000 bytes and its echo, each from its own source port) with the external server, awaited.
udp_resources() {
    local prefix=$1 pids=()
    for h in $2; do
        ip netns exec "${P}s$h" "$PY" "$HERE/clients.py" udp --url "udp://$OUTSIDE:9000" --prefix "$prefix-h$h" \
            --count "$UDP_COUNT" --size 1000 --out "$WORK/$prefix-h$h.jsonl" >"$WORK/$prefix-h$h.clients.log" 2>&1 &
        pids+=($!)
        ALL_PIDS+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || fail "a UDP client of $prefix failed: $(tail -n 3 "$WORK/$prefix"-h*.clients.log)"; done
}

# routed PREFIX FILE: for every connection of PREFIX the external server has seen, the host the
# router sends its replies to now (`ip route get` of the reply's 5-tuple in the router namespace:
# the kernel's own multipath hash), as lines "ID HOST" in FILE.
routed() {
    local id port via
    : >"$2"
    while read -r id port; do
        via=$(ip -n "${P}router" route get "$VIP" from "$OUTSIDE" iif x0 ipproto tcp sport 9000 dport "$port" |
            grep -o 'via 198\.18\.0\.1[1-4]' | sed 's/via 198\.18\.0\.1//') || true
        echo "$id ${via:-none}" >>"$2"
    done < <("$PY" -c 'import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["event"] == "start" and r["id"].startswith(sys.argv[2] + "-"):
        print(r["id"], r["port"])' "$WORK/server-ext.jsonl" "$1")
    say "router: replies of $(wc -l <"$2") connections of $1 go to host(s): $(awk '{ print $2 }' "$2" | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep=", " }')"
}

# check_egress PREFIX LABEL [check.py egress options]
check_egress() {
    local prefix=$1 label=$2
    shift 2
    "$PY" "$HERE/check.py" egress --label "$label" --results "$WORK/$prefix-h*.jsonl" --server "$WORK/server-ext.jsonl" \
        --address "$VIP" --ranges "$RANGES" --totals "$EGRESS_TOTALS" "$@" || fail "$label"
}

# ── Set-up: run.sh's topology and router, the outside, four hosts with cluster.egress ─────────
say "switchyard: $BINARY"
build_topology
outside_add
start_router_bird
start_servers
for h in $ALL_HOSTS; do egress_render "$h" "$WORK/h$h.yaml"; done
T0=$(now)
for h in $ALL_HOSTS; do start_host "$h" "$WORK/h$h.yaml"; done
expect_route "hosts 1-4 started (from the first start)" "$T0" "$JOIN_BOUND" 1 2 3 4
warm_up
GOSSIP_RUNS=yes

say "scenario 1: outbound connections from every resource, all hosts in the ECMP set"
long_resources e1long 8
short_resources e1short "$ALL_HOSTS"
udp_resources e1udp "$ALL_HOSTS"
RESOURCE_PIDS=("${LONG_PIDS[@]}"); resources_wait e1long
check_egress e1short "scenario 1, short outbound connections"
check_egress e1udp "scenario 1, UDP exchanges"
check_egress e1long "scenario 1, long outbound connections" --stall "$STALL"

say "scenario 2: host $DRAIN_HOST is drained (ctl drain) under outbound connections"
REST=$(echo $ALL_HOSTS | tr ' ' '\n' | grep -v "^$DRAIN_HOST$" | tr '\n' ' ' | sed 's/ $//')
long_resources e2long 12
sleep 3
routed e2long "$WORK/e2long.routed"
T=$(now); ctl "$DRAIN_HOST" drain
expect_route "host $DRAIN_HOST drained (ctl drain): withdraw" "$T" "$LEAVE_BOUND" $REST
short_resources e2short "$ALL_HOSTS"
udp_resources e2udp "$ALL_HOSTS"
RESOURCE_PIDS=("${LONG_PIDS[@]}"); resources_wait e2long
check_egress e2short "scenario 2, short outbound connections while host $DRAIN_HOST is drained"
check_egress e2udp "scenario 2, UDP exchanges while host $DRAIN_HOST is drained"
check_egress e2long "scenario 2, long outbound connections across the drain of host $DRAIN_HOST" --stall "$STALL" \
    --routed "$WORK/e2long.routed" --event-host "$DRAIN_HOST"
T=$(now); ctl "$DRAIN_HOST" undrain
expect_route "host $DRAIN_HOST undrained (ctl undrain): announce" "$T" "$JOIN_BOUND" 1 2 3 4

say "scenario 3: host $KILL_HOST is killed (SIGKILL) under outbound connections$([ "$RESTART" = yes ] && echo ", and started again $RESTART_AFTER s later")"
REST=$(echo $ALL_HOSTS | tr ' ' '\n' | grep -v "^$KILL_HOST$" | tr '\n' ' ' | sed 's/ $//')
[ "$RESTART" = yes ] || KILLED_SPEED_TIME=6
long_resources e3long 12 --speed-time "$KILLED_SPEED_TIME"
sleep 3
routed e3long "$WORK/e3long.routed"
KILLED_AT=$(now); kill_host "$KILL_HOST"
expect_route "host $KILL_HOST killed (SIGKILL): its sessions close" "$KILLED_AT" "$LEAVE_BOUND" $REST
LONG3_PIDS=("${LONG_PIDS[@]}")
resources batch e3short "$REST" "$SHORT_COUNT" --size 4096 --parallel 16 --max-time 30
E3SHORT_PIDS=("${RESOURCE_PIDS[@]}")
udp_resources e3udp "$REST"
if [ "$RESTART" = yes ]; then
    # Like run.sh's scenario 3: the same configuration, empty tables; it announces once its gossip
    # is synchronised, and the full sync gives back its connections, outbound ones included.
    sleep "$(awk -v t="$KILLED_AT" -v n="$(now)" -v d="$RESTART_AFTER" 'BEGIN { s = t + d - n; print (s > 0 ? s : 0) }')"
    start_host "$KILL_HOST" "$WORK/h$KILL_HOST.yaml"
    expect_route "host $KILL_HOST restarted: rejoin" "${STARTED_AT[$KILL_HOST]}" "$JOIN_BOUND" 1 2 3 4
    announced_after_sync "$KILL_HOST"
fi
RESOURCE_PIDS=("${E3SHORT_PIDS[@]}"); resources_wait e3short
RESOURCE_PIDS=("${LONG3_PIDS[@]}"); resources_wait e3long
check_egress e3short "scenario 3, short outbound connections of the other hosts' resources after host $KILL_HOST was killed"
check_egress e3udp "scenario 3, UDP exchanges of the other hosts' resources after host $KILL_HOST was killed"
check_egress e3long "scenario 3, long outbound connections across the kill of host $KILL_HOST" --stall "$STALL" \
    --killed-host "$KILL_HOST" --routed "$WORK/e3long.routed" --event-host "$KILL_HOST"

STOP=$REST
[ "$RESTART" = yes ] && STOP=$ALL_HOSTS
stop_hosts $STOP
# Evidence that ECMP delivered replies to hosts that do not own their port, and that those sent
# them on to the owner, which translated them back to its resource.
for h in $REST; do
    counters --label "host $h" --json "$WORK/h$h.1.json" --expect "stage egress-out:opened>0" \
        --expect "stage egress-in:to-owner>0" --expect "stage egress-in:translated>0" \
        --expect "stage egress-in-tunnel:translated>0" --expect "stage encap:encapsulated>0"
done
if [ "$RESTART" = yes ]; then
    # The restarted host translated its resources' packets of connections opened before the kill
    # (from the entries the gossip gave back: it opened none of its own since).
    counters --label "host $KILL_HOST after its restart" --json "$WORK/h$KILL_HOST.2.json" \
        --expect "stage egress-out:opened==0" --expect "stage egress-out:translated>0"
fi

# ── Verdict ─────────────────────────────────────────────────────────────────────────────────────
for ns in ext s1 s2 s3 s4; do
    for counter in TcpInCsumErrors UdpInCsumErrors; do
        errors=$(ip netns exec "$P$ns" nstat -saz "$counter" 2>/dev/null | awk -v c="$counter" '$1 == c { print $2 }')
        [ "${errors:-0}" -eq 0 ] || fail "$ns counted $errors $counter (TCP segments or UDP datagrams with a bad checksum)"
    done
done
say "what each host dropped (final counters of every run that was stopped, not killed):"
# The restarted host may drop, as no-connection, packets of its connections that arrive before the
# gossip's full sync gave their entries back (TCP sends them again).
for json in "$WORK"/h*.json; do
    allow=()
    [ "$(basename "$json")" = "h$KILL_HOST.2.json" ] && allow=(--allow "stage egress-out:no-connection"
        --allow "stage egress-in:no-connection" --allow "stage egress-in-tunnel:no-connection")
    "$PY" "$HERE/check.py" drops --label "host $(basename "$json" .json)" --json "$json" "${allow[@]}" ||
        fail "host $(basename "$json" .json) dropped packets"
done
say "how long each change of the router's route took (BGP):"
for entry in "${TIMINGS[@]}"; do printf '  %-72s %s s\n' "${entry%|*}" "${entry##*|}"; done | tee "$WORK/timings.txt"
[ "$FAILED" -eq 0 ] || diagnose
"$PY" "$HERE/check.py" egress-totals "$EGRESS_TOTALS"
if [ "$FAILED" -ne 0 ]; then exit 1; fi
exit 0
