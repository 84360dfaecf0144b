#!/usr/bin/env bash
# Health checks in the namespace cluster (issue 11 item 2; Tests/Cluster/README.md, section
# "health.sh"): run.sh's topology and four gossiping hosts, weights 1:1:1:1, and `web` with an
# HTTP health check (every 500 ms, fall 3, rise 2) that each host runs against its own server
# over a management link (hN mg0 198.18.20N.1 <-> sN mg1 198.18.20N.10: `check_address`). While
# long connections run, b3's server process is killed:
#
#   - host 3's check finds b3 down within fall x interval (plus a timeout), every host shows b3
#     down with the same directory generation, and host 3 leaves the router's route (no healthy
#     local backend);
#   - new connections spread 1:1:0:1; the long connections b3 served break because their server is
#     gone (counted apart), every other one completes intact;
#   - `ctl preview` on host 1 of its file with b3 at weight 0, asked before the kill, is compared
#     with what the withdrawal moved and with the new connections' spread (Tests/Cluster/README.md,
#     "Preview checks");
#   - b3's server starts again: up after `rise` checks (active everywhere), host 3 back in the route,
#     new connections spread 1:1:1:1.
#
# The last line is `connections=N completed=N broken=N` (connections of the killed server left out).
#
#   Tests/Cluster/health.sh [--binary PATH] [--keep-logs DIR]
#
# Exit status: 0 every check passed; 1 a check failed; 2 the test could not run (setup).
set -Eeuo pipefail

# SIGINT and SIGTERM unblocked first (signals.sh says why).
source "$(dirname "$0")/signals.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINARY=""
KEEP_LOGS=""
GOSSIP_MODE=on
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--keep-logs DIR]" >&2; exit 2 ;;
    esac
done

# Parameters, clean-up, binary, configurations, topology, processes and checks (run.sh's).
# shellcheck source=lib.sh
source "$HERE/lib.sh"

B3=198.18.103.10:8080
# A loaded 2-core machine and a Python server: a healthy answer can take a few hundred ms (a
# 150 ms timeout made healthy backends flap in a run), so the timeout is generous.
CHECK="{ kind: http, path: \"/data?id=health-check&size=1\", status: 200, interval_ms: 500, timeout_ms: 450, rise: 2, fall: 3 }"
DETECT_BOUND=3.0            # fall x interval = 1.5 s, plus a timeout and the control tick

# health_render HOST FILE: run.sh's host configuration (gossip, 1:1:1:1) with a check_address for
# every backend and the health check on `web`.
health_render() {
    render "$1" 1,1,1,1 yes "$2"
    sed -i -E 's/address: 198\.18\.10([1-4])\.10, port: 8080, weight: 1 \}/address: 198.18.10\1.10, port: 8080, weight: 1, check_address: 198.18.20\1.10 }/' "$2"
    sed -i "s|^  connections:$|      health_check: ${CHECK//&/\\&}\n  connections:|" "$2"
    [ "$(grep -c 'check_address: 198.18.20' "$2")" -eq 4 ] && grep -q "health_check:" "$2" ||
        die "health_render: host.yaml.in changed"
    "$BINARY" validate "$2" >"$2.validate.txt" 2>&1 || { cat "$2.validate.txt"; die "host $1's configuration is rejected"; }
}

# management_links: hN mg0 198.18.20N.1/24 <-> sN mg1 198.18.20N.10/24 (kernel on both ends).
management_links() {
    for h in 1 2 3 4; do
        veth "h$h" mg0 "02:00:00:00:2$h:01" "s$h" mg1 "02:00:00:00:2$h:10"
        ip -n "${P}h$h" address add "198.18.20$h.1/24" dev mg0
        ip -n "${P}s$h" address add "198.18.20$h.10/24" dev mg1
    done
}

# server_start H: the server of bH on every address of sN (its bypass tuple and its management
# address), so that a kill takes both down.
server_start() {
    local h=$1
    : >"$WORK/s$h.out"
    ip netns exec "${P}s$h" "$PY" "$HERE/server.py" --listen "0.0.0.0:8080" --backend "b$h" \
        --log "$WORK/server-b$h.jsonl" >>"$WORK/s$h.out" 2>>"$WORK/s$h.err" &
    SERVER_PID[$h]=$!
    ALL_PIDS+=($!)
    for _ in $(seq 100); do grep -q ready "$WORK/s$h.out" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$WORK/s$h.out" || { cat "$WORK/s$h.err"; die "server b$h did not start"; }
}

# b3_state STATE: host 3's `ctl backends` shows b3 in STATE (active, down); prints the seconds it took.
b3_state() {
    local want=$1 start=$2
    for _ in $(seq 100); do
        if "$BINARY" ctl --socket "$WORK/h3.sock" backends >"$WORK/ctl-h3-backends.txt" 2>&1 &&
            grep -q "198.18.103.10:8080 .* $want " "$WORK/ctl-h3-backends.txt"; then
            awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# everywhere STATE: every host's `ctl backends` shows b3 in STATE and ends with the same
# generation line (the same sets, so the same tables), within 3 s.
everywhere() {
    local want=$1 lines states
    for _ in $(seq 30); do
        lines=$(for h in 1 2 3 4; do "$BINARY" ctl --socket "$WORK/h$h.sock" backends | tail -n 1; done | sort -u)
        states=$(for h in 1 2 3 4; do "$BINARY" ctl --socket "$WORK/h$h.sock" backends | grep "198.18.103.10:8080" | awk '{ print $7 }'; done | sort -u)
        if [ "$(printf '%s\n' "$lines" | wc -l)" -eq 1 ] && [ "$states" = "$want" ]; then
            say "every host: b3 $want, $lines"
            return 0
        fi
        sleep 0.1
    done
    fail "the hosts do not agree that b3 is $want: states $(echo $states), generations $(echo "$lines" | tr '\n' '|')"
}

build_topology
management_links
start_router_bird
for h in 1 2 3 4; do server_start "$h"; done
for h in 1 2 3 4; do health_render "$h" "$WORK/h$h.yaml"; done
GOSSIP_RUNS=yes
T=$(now)
for h in 1 2 3 4; do start_host "$h" "$WORK/h$h.yaml"; done
expect_route "hosts 1-4 started" "$T" "$JOIN_BOUND" 1 2 3 4
warm_up
sleep 2
"$BINARY" ctl --socket "$WORK/h3.sock" backends >"$WORK/ctl-h3-backends.txt"
grep -q "198.18.103.10:8080 .* active .* up " "$WORK/ctl-h3-backends.txt" ||
    fail "host 3 does not check b3 as up: $(cat "$WORK/ctl-h3-backends.txt")"
everywhere active
spread spread-healthy "health, every backend up" b1=1,b2=1,b3=1,b4=1

say "scenario H1: b3's server is killed under $LONG_COUNT long connections"
long_start long-kill 30
# The preview of the withdrawal on host 1: its file equivalent is host 1's file with b3 at weight 0
# (a backend down everywhere has weight 0 in every host's directory; docs/operations.md, "Preview").
sed 's/address: 198.18.103.10, port: 8080, weight: 1,/address: 198.18.103.10, port: 8080, weight: 0,/' \
    "$WORK/h1.yaml" >"$WORK/h1.b3-down.yaml"
grep -q "address: 198.18.103.10, port: 8080, weight: 0," "$WORK/h1.b3-down.yaml" || die "could not write host 1's file with b3 at weight 0"
# The spread's 2000 closed connections keep their entries fin (10 s) seconds, and preview.py
# counts those that ended up to fin + 3 s before the preview as closing during the change: let
# them go first.
sleep 15
preview_before down 1 "$WORK/h1.b3-down.yaml"
T=$(now)
kill -KILL "${SERVER_PID[3]}"
wait "${SERVER_PID[3]}" 2>/dev/null || true
if took=$(b3_state down "$T"); then
    say "b3 down on host 3 $took s after its server was killed (bound $DETECT_BOUND s): $(grep 198.18.103.10 "$WORK/ctl-h3-backends.txt" | sed 's/  */ /g')"
    awk -v t="$took" -v b="$DETECT_BOUND" 'BEGIN { exit !(t <= b) }' || fail "b3 was found down after $took s, more than $DETECT_BOUND s"
    TIMINGS+=("b3's server killed: down by its health check|$took")
else
    fail "host 3 never marked b3 down: $(cat "$WORK/ctl-h3-backends.txt")"
fi
everywhere down
# What the withdrawal moved, on host 1: its preview of the file it runs (b3 down: weight 0 there).
# The long connections of b3's killed server close with it: counted as closed during the change.
preview_after down "$WORK/h1.yaml" --killed-backend b3
expect_route "b3 down: host 3 has no healthy local backend, withdraws" "$T" "$(awk -v a="$DETECT_BOUND" -v b="$LEAVE_BOUND" 'BEGIN { print a + b }')" 1 2 4
spread spread-b3-down "health, b3 down" b1=1,b2=1,b3=0,b4=1
preview_flows down spread-b3-down spread-healthy
long_wait long-kill
check_connections long-kill "health, long connections while b3's server was killed" --stall "$STALL" --killed-backend b3

say "scenario H2: b3's server starts again"
T=$(now)
server_start 3
if took=$(b3_state active "$T"); then
    say "b3 up again on host 3 $took s after its server started"
else
    fail "host 3 never marked b3 up again: $(cat "$WORK/ctl-h3-backends.txt")"
fi
everywhere active
expect_route "b3 up: host 3 announces again" "$T" "$JOIN_BOUND" 1 2 3 4
spread spread-b3-back "health, b3 back" b1=1,b2=1,b3=1,b4=1
stop_hosts 1 2 3 4

for json in "$WORK"/h*.json; do
    # peer-loop: a SYN in the milliseconds in which two hosts disagree (docs/gossip.md); allowed.
    "$PY" "$HERE/check.py" drops --label "host $(basename "$json" .json)" --json "$json" --allow 'stage owner:peer-loop' ||
        fail "host $(basename "$json" .json) dropped packets"
done
say "timings:"
for entry in "${TIMINGS[@]}"; do printf '  %-72s %s s\n' "${entry%|*}" "${entry##*|}"; done
[ "$FAILED" -eq 0 ] || diagnose
"$PY" "$HERE/check.py" totals "$TOTALS"
if [ "$FAILED" -ne 0 ]; then exit 1; fi
exit 0
