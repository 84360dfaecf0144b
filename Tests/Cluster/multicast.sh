#!/usr/bin/env bash
# The cluster test with multicast gossip (Tests/Cluster/README.md, "Multicast gossip"): the same
# namespaces, router and hosts as run.sh, but the hosts' heartbeats, flow batches and digests go
# to one IPv4 multicast group on the gossip segment (bridge brg) instead of to each member.
#
#   Tests/Cluster/multicast.sh [--binary PATH] [--keep-logs DIR] [--snooping off|querier]
#
#   --binary PATH       use this switchyard instead of building one (`swift build -c release`)
#   --keep-logs DIR     copy every log (hosts, servers, clients, configurations) to DIR at the end
#   --snooping MODE     off (default): brg forwards multicast to every port (multicast_snooping 0);
#                       querier: brg keeps IGMP snooping on and is the segment's IGMP querier
#                       (mcast_querier 1), so it forwards the group only to ports that joined it
#
# Hosts 1-3 run (weights b1:b2:b3 = 1:2:1). Checked: 2000 new connections follow the weights; 120
# long connections survive host 1 being frozen, killed and restarted (its flows come back by the
# full sync); 2000 more after the restart; and from every host's final gossip counters, that every
# heartbeat, flow batch and digest went to the group once (multicast-sent) and that the flow
# batches of the peers arrived through it (multicast-received, received-flows), none by unicast.
# Takes about 70 s. The last line is `connections=N completed=N broken=N`.
# Exit status: 0 every check passed; 1 a check failed; 2 the test could not run (setup).
set -Eeuo pipefail

# SIGINT and SIGTERM unblocked first (signals.sh says why).
source "$(dirname "$0")/signals.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINARY=""
KEEP_LOGS=""
GOSSIP_MODE=on
SNOOPING=off
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    --snooping) SNOOPING=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--keep-logs DIR] [--snooping off|querier]" >&2; exit 2 ;;
    esac
done
case "$SNOOPING" in off | querier) ;; *) echo "--snooping must be off or querier" >&2; exit 2 ;; esac

# shellcheck source=lib.sh
source "$HERE/lib.sh"

# The gossip line of lib.sh plus the group: every host sends to 239.18.2.1:7946 out of its gossip
# address (multicast.interface defaults to `bind`, which defaults to the member address) and joins
# it there. TTL 1: the group stays on the segment.
GROUP=239.18.2.1
GOSSIP_LINE="${GOSSIP_LINE% \}}, multicast: { group: $GROUP } }"
GOSSIP_RUNS=yes

build_topology
if [ "$SNOOPING" = off ]; then
    ip -n "${P}router" link set brg type bridge mcast_snooping 0
    say "gossip segment brg: IGMP snooping off (multicast goes to every port)"
else
    ip -n "${P}router" link set brg type bridge mcast_snooping 1 mcast_querier 1 mcast_query_interval 1000
    say "gossip segment brg: IGMP snooping on, brg is the querier (the group goes to the ports that joined it)"
fi
start_router_bird
start_servers
for h in 1 2 3; do render "$h" 1,2,1,0 yes "$WORK/h$h.yaml"; done
grep -q "multicast: { group: $GROUP }" "$WORK/h1.yaml" || die "the rendered configuration has no multicast group"
"$BINARY" validate "$WORK/h1.yaml" >"$WORK/validate.txt" 2>&1 || { cat "$WORK/validate.txt"; die "switchyard rejects the multicast gossip configuration"; }
T0=$(now)
for h in 1 2 3; do start_host "$h" "$WORK/h$h.yaml"; done
expect_route "hosts 1 2 3 started (from the first start)" "$T0" "$JOIN_BOUND" 1 2 3
warm_up

# Every host has joined the group on its gossip interface, and has two UDP sockets on port 7946:
# the unicast one (198.18.2.1N) and the group's.
for h in 1 2 3; do
    ip -n "${P}h$h" maddress show dev gs0 | grep -Eq "inet +$GROUP( |$)" || fail "host $h has not joined $GROUP on gs0"
    sockets=$(ip netns exec "${P}h$h" ss -Hlun "sport = :7946" | wc -l)
    [ "$sockets" -eq 2 ] || fail "host $h has $sockets UDP sockets on port 7946, expected 2 (unicast and group)"
done
[ "$SNOOPING" = off ] || bridge -n "${P}router" mdb show dev brg | sed 's/^/    /'
say "gossip: every host listens on 198.18.2.1N:7946 and $GROUP:7946 (joined on gs0)"

say "multicast: 2000 new connections follow the weights b1:b2:b3 = 1:2:1"
spread mc-spread "multicast, hosts 1 2 3" b1=1,b2=2,b3=1,b4=0

say "multicast: host 1 is killed and restarted under $LONG_COUNT long connections"
long_start mc-long 30
sleep 5
freeze_host 1
expect_route "host 1 frozen: BFD drops it (failure)" "$FROZEN_AT" "$FAIL_BOUND" 2 3
kill_host 1
sleep 3
start_host 1 "$WORK/h1.yaml"
expect_route "host 1 restarted: rejoin" "${STARTED_AT[1]}" "$JOIN_BOUND" 1 2 3
announced_after_sync 1
spread mc-spread-h1-back "multicast, new connections after host 1 restarted" b1=1,b2=2,b3=1,b4=0
long_wait mc-long
check_connections mc-long "multicast, long connections across the restart of host 1" --stall "$STALL" \
    --stall-exempt-host 1 --exempt-stall "$RESTART_STALL"
stop_hosts 1 2 3

# ── Verdict ─────────────────────────────────────────────────────────────────────────────────────
# The restarted host 1 took its flows back by the full sync (unicast), and every host's
# broadcasts went to the group: multicast-sent = sent-heartbeat + sent-flows + sent-digest.
counters --label "host 1 after its restart" --json "$WORK/h1.2.json" --expect "stage owner:hit>0" \
    --expect "gossip:full-syncs-completed>0"
for json in "$WORK/h1.2.json" "$WORK/h2.1.json" "$WORK/h3.1.json"; do
    "$PY" "$HERE/check.py" multicast --label "host $(basename "$json" .json)" --json "$json" ||
        fail "host $(basename "$json" .json): gossip did not go by multicast"
done
for ns in client s1 s2 s3; do
    errors=$(ip netns exec "$P$ns" nstat -saz TcpInCsumErrors 2>/dev/null | awk '/TcpInCsumErrors/ { print $2 }')
    [ "${errors:-0}" -eq 0 ] || fail "$ns received $errors TCP segments with a bad checksum"
done
say "what each host dropped (final counters of every run that was stopped, not killed):"
# As in run.sh (scenario 3): the restarted host 1's uplink may take, in the af_packet PMD's start
# window, at most one retransmission per long connection b1 served, dropped as backend-source-on-uplink.
B1_LONG=$("$PY" -c 'import json, sys
print(sum(1 for line in open(sys.argv[1]) if (record := json.loads(line))["event"] == "start" and record["id"].startswith("mc-long-")))' \
    "$WORK/server-b1.jsonl")
for json in "$WORK/h1.2.json" "$WORK/h2.1.json" "$WORK/h3.1.json"; do
    allow=()
    [ "$(basename "$json")" = h1.2.json ] && allow=(--allow "stage classify:backend-source-on-uplink<=$B1_LONG")
    "$PY" "$HERE/check.py" drops --label "host $(basename "$json" .json)" --json "$json" "${allow[@]}" ||
        fail "host $(basename "$json" .json) dropped packets"
done
say "how long each change of the router's route took (BGP):"
for entry in "${TIMINGS[@]}"; do printf '  %-72s %s s\n' "${entry%|*}" "${entry##*|}"; done | tee "$WORK/timings.txt"
[ "$FAILED" -eq 0 ] || diagnose
"$PY" "$HERE/check.py" totals "$TOTALS"
if [ "$FAILED" -ne 0 ]; then exit 1; fi
exit 0
