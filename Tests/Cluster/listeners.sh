#!/usr/bin/env bash
# Listener registration in the namespace cluster (issue 11 item 1; Tests/Cluster/README.md,
# section "listeners.sh"): run.sh's topology and four gossiping hosts, but b4, the server behind
# host 4, is not in the file's `web` backends. While long connections run:
#
#   1. new connections spread over b1:b2:b3 = 1:1:1 (b4 takes none);
#   2. `switchyard ctl listen web 198.18.104.10:8080 --weight 2` on host 4, while short connections
#      open and close: every host reaches the same directory generation (ctl backends), and new
#      connections spread 1:1:1:2; `ctl preview` of the file equivalent (b4 in cluster.listen),
#      asked before, is compared with what the registration moved (Tests/Cluster/README.md,
#      "Preview checks");
#   3. `switchyard ctl unlisten web 198.18.104.10:8080` on host 4 while long connections to b4 run:
#      new connections spread 1:1:1:0 again, and the long ones to b4 complete (a withdrawn backend
#      keeps its connections).
#
# Every connection (long ones across both changes, short ones of every spread) must complete byte
# for byte. The last line is `connections=N completed=N broken=N`.
#
#   Tests/Cluster/listeners.sh [--binary PATH] [--keep-logs DIR]
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

B4=198.18.104.10:8080

# listeners_render HOST FILE: run.sh's host configuration (gossip, weights 1:1:1:1) without b4.
listeners_render() {
    render "$1" 1,1,1,1 yes "$2"
    sed -i '/address: 198.18.104.10, port: 8080/d' "$2"
    ! grep -q "address: 198.18.104.10, port: 8080" "$2" || die "listeners_render: b4 is still in host $1's configuration"
    "$BINARY" validate "$2" >"$2.validate.txt" 2>&1 || { cat "$2.validate.txt"; die "host $1's configuration is rejected"; }
}

# on_host H ARGS...: `switchyard ctl ARGS` against host H, its output in $WORK/ctl-hH-ARG1.txt.
on_host() {
    local h=$1
    shift
    "$BINARY" ctl --socket "$WORK/h$h.sock" "$@" >"$WORK/ctl-h$h-$1.txt" 2>&1 ||
        fail "ctl $* on host $h failed: $(cat "$WORK/ctl-h$h-$1.txt")"
    say "host $h: ctl $*: $(head -n 1 "$WORK/ctl-h$h-$1.txt")"
}

# same_generation WANT [SECONDS]: every host's `ctl backends` ends with the same generation line,
# which holds WANT (host:version), within SECONDS (default 3).
same_generation() {
    local want=$1 lines
    for _ in $(seq $(( ${2:-3} * 10 ))); do
        lines=$(for h in 1 2 3 4; do "$BINARY" ctl --socket "$WORK/h$h.sock" backends | tail -n 1; done | sort -u)
        if [ "$(printf '%s\n' "$lines" | wc -l)" -eq 1 ] && printf '%s' "$lines" | grep -q "$want"; then
            say "every host: $lines"
            return 0
        fi
        sleep 0.1
    done
    fail "the hosts do not agree on the directory generation ($want): $lines"
}

# tables_published WANT [SECONDS]: every host has logged `listeners: tables republished, generation
# ...WANT...`: its lcores use the new tables. (`ctl backends` shows the generation a host has
# received; the tables are rebuilt and published by its control thread after that, which takes a
# moment in a debug build: a spread measured before then counts the old table's picks.)
tables_published() {
    local want=$1 h log missing
    for _ in $(seq $(( ${2:-10} * 10 ))); do
        missing=""
        for h in 1 2 3 4; do
            log="$WORK/h$h.${HOST_RUN[$h]}.log"
            grep -q "listeners: tables republished, generation .*$want" "$log" 2>/dev/null || missing+=" $h"
        done
        [ -z "$missing" ] && { say "every host: tables of generation $want published"; return 0; }
        sleep 0.1
    done
    fail "host(s)$missing did not publish the tables of generation $want"
}

build_topology
start_router_bird
start_servers
for h in 1 2 3 4; do listeners_render "$h" "$WORK/h$h.yaml"; done
GOSSIP_RUNS=yes
T=$(now)
for h in 1 2 3 4; do start_host "$h" "$WORK/h$h.yaml"; done
# Host 4 has no backend of its own yet: BGP's rule (backends: local) keeps it out of the route.
expect_route "hosts 1-3 started (host 4 has no local backend: not announced)" "$T" "$JOIN_BOUND" 1 2 3
warm_up

say "scenario L1: b4 is not a backend yet"
long_start long-register 40
sleep 2
spread spread-before "scenario L1, before the registration" b1=1,b2=1,b3=1,b4=0

say "scenario L2: host 4 registers b4 (weight 2) while $LONG_COUNT long connections run and short ones open and close"
# The preview of the registration on host 4: the file equivalent of `ctl listen` is its running
# file with b4 in `cluster.listen` (a preview takes this host's listeners from FILE's
# cluster.listen and keeps those of `ctl listen`; docs/operations.md, "Preview").
sed "s|^  connections:$|  listen:\n    - { service: web, address: ${B4%:*}, port: ${B4#*:}, weight: 2 }\n  connections:|" \
    "$WORK/h4.yaml" >"$WORK/h4.listen.yaml"
grep -q "service: web, address: ${B4%:*}" "$WORK/h4.listen.yaml" || die "could not write host 4's file with b4 in cluster.listen"
# The spread's 2000 closed connections keep their entries fin (10 s) seconds, and preview.py
# counts those that ended up to fin + 3 s before the preview as closing during the change: let
# them go first, so that the table holds the long connections and the churn, not a spread
# expiring mid-change.
sleep 15
preview_before register 4 "$WORK/h4.listen.yaml"
churn_begin churn-register 400
T=$(now)
on_host 4 listen web "$B4" --weight 2
same_generation "4:1"
tables_published "4:1"
# What the registration moved, on host 4: its preview of the file it runs (b4 is in it by ctl now).
preview_after register "$WORK/h4.yaml"
churn_end churn-register "scenario L2, short connections while b4 is registered"
# Seeds 002/003: the processor that listens is now a target, and the routing stack learns it.
expect_route "b4 registered: host 4 has a local backend, announces" "$T" "$JOIN_BOUND" 1 2 3 4
spread spread-registered "scenario L2, b4 registered at weight 2" b1=1,b2=1,b3=1,b4=2
preview_flows register spread-registered spread-before
long_wait long-register
check_connections long-register "scenario L2, long connections across the registration of b4" --stall "$STALL"

say "scenario L3: host 4 withdraws b4 while long connections to it run"
long_start long-withdraw 20
sleep 4
T=$(now)
on_host 4 unlisten web "$B4"
same_generation "4:2"
tables_published "4:2"
expect_route "b4 withdrawn: host 4 has no healthy local backend, withdraws" "$T" "$LEAVE_BOUND" 1 2 3
on_host 4 backends
grep -q "198.18.104.10:8080 .* withdrawn" "$WORK/ctl-h4-backends.txt" ||
    fail "ctl backends on host 4 does not show b4 withdrawn: $(cat "$WORK/ctl-h4-backends.txt")"
spread spread-withdrawn "scenario L3, b4 withdrawn" b1=1,b2=1,b3=1,b4=0
long_wait long-withdraw
check_connections long-withdraw "scenario L3, long connections to b4 across its withdrawal" --stall "$STALL" --min-backend b4=10
# Once its connections are gone (closed entries stay cluster.connections.timeouts.fin, 10 s), host 4
# removes b4 for good: a third version.
same_generation "4:3" 20
stop_hosts 1 2 3 4

for json in "$WORK"/h*.json; do
    # peer-loop: a SYN in the milliseconds in which two hosts disagree (docs/gossip.md, "While
    # hosts disagree") is dropped and retransmitted by the client; printed, allowed.
    "$PY" "$HERE/check.py" drops --label "host $(basename "$json" .json)" --json "$json" --allow 'stage owner:peer-loop' ||
        fail "host $(basename "$json" .json) dropped packets"
done
[ "$FAILED" -eq 0 ] || diagnose
"$PY" "$HERE/check.py" totals "$TOTALS"
if [ "$FAILED" -ne 0 ]; then exit 1; fi
exit 0
