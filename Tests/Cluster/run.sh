#!/usr/bin/env bash
# The end-to-end test of the single IP image, entirely inside network namespaces it creates and
# removes itself (Tests/Cluster/README.md: topology, scenarios, what each one asserts).
#
#   Tests/Cluster/run.sh [--binary PATH] [--keep-logs DIR] [--gossip auto|on|off]
#
#   --binary PATH    use this switchyard instead of building one (`swift build -c release`)
#   --keep-logs DIR  copy every log (hosts, servers, clients, configurations) to DIR at the end
#   --gossip MODE    auto (default): give the hosts `cluster.gossip` when this switchyard accepts it,
#                    and run scenario 4 when their engines then run it (a UDP socket on port 7946);
#                    on: require both; off: never (scenario 4, which needs gossip, is then not run)
#   --drain-without-gossip  run scenario 4 even when the hosts do not gossip (with --gossip off): it
#                    must then fail (connections to the drained backend that reach a host other
#                    than their owner are reset)
#
# Every change of the router's next-hop set comes from BGP: the router namespace runs BIRD 2 with
# BGP multipath and BFD, every host's engine runs its own BIRD (the `bgp:` section, docs/bgp.md).
# Needs root, iproute2 (ip, bridge), ethtool, curl, python3, bird2 (bird, birdc). Uses only
# 198.18.0.0/15 and sends nothing outside its namespaces. The last line is `connections=N completed=N broken=N`.
# Exit status: 0 every check passed; 1 a check failed; 2 the test could not run (setup);
# 3 scenarios 1-3 passed but scenario 4 was not run because this switchyard runs no gossip.
set -Eeuo pipefail

# SIGINT and SIGTERM unblocked first (signals.sh says why).
source "$(dirname "$0")/signals.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINARY=""
KEEP_LOGS=""
GOSSIP_MODE=auto
DRAIN_WITHOUT_GOSSIP=no
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    --gossip) GOSSIP_MODE=$2; shift 2 ;;
    --drain-without-gossip) DRAIN_WITHOUT_GOSSIP=yes; shift ;;
    *) echo "usage: $0 [--binary PATH] [--keep-logs DIR] [--gossip auto|on|off] [--drain-without-gossip]" >&2; exit 2 ;;
    esac
done

# Parameters, clean-up, binary, configurations, topology, processes and checks (shared with the
# other scripts in this folder).
# shellcheck source=lib.sh
source "$HERE/lib.sh"

render 1 1,2,1,0 yes "$WORK/gossip-probe.yaml"
if "$BINARY" validate "$WORK/gossip-probe.yaml" >"$WORK/gossip-probe.txt" 2>&1; then HAVE_GOSSIP=yes; else HAVE_GOSSIP=no; fi
case "$GOSSIP_MODE" in
auto) USE_GOSSIP=$HAVE_GOSSIP ;;
on) [ "$HAVE_GOSSIP" = yes ] || { cat "$WORK/gossip-probe.txt"; die "--gossip on, but this switchyard rejects cluster.gossip"; }
    USE_GOSSIP=yes ;;
off) USE_GOSSIP=no ;;
*) die "--gossip must be auto, on or off" ;;
esac
say "switchyard: $BINARY; cluster.gossip: $([ "$USE_GOSSIP" = yes ] && echo given || echo "not given (accepted by this switchyard: $HAVE_GOSSIP)")"

# ── Phase A: scenarios 1, 2, 3 ─────────────────────────────────────────────────────────────────
build_topology
start_router_bird
start_servers
for h in 1 2 3; do render "$h" 1,2,1,0 "$USE_GOSSIP" "$WORK/h$h.yaml"; done
render 4 1,2,1,0 "$USE_GOSSIP" "$WORK/h4.yaml" cluster
T0=$(now)
for h in 1 2 3; do start_host "$h" "$WORK/h$h.yaml"; done
expect_route "hosts 1 2 3 started (from the first start)" "$T0" "$JOIN_BOUND" 1 2 3
warm_up
# A configuration that parses is not an engine that gossips: the gossip runs when every host has
# its UDP socket bound on the gossip segment (port 7946).
GOSSIP_RUNS=no
if [ "$USE_GOSSIP" = yes ]; then
    GOSSIP_RUNS=yes
    for h in 1 2 3; do
        [ -n "$(ip netns exec "${P}h$h" ss -Hlun "sport = :7946")" ] || GOSSIP_RUNS=no
    done
    if [ "$GOSSIP_RUNS" = yes ]; then
        say "gossip: every host listens on 198.18.2.1N:7946"
    elif [ "$GOSSIP_MODE" = on ]; then
        fail "--gossip on, but the hosts run no gossip (no UDP socket on port 7946): this switchyard parses cluster.gossip but its engine does not run it"
    else
        say "gossip: cluster.gossip is accepted, but no host listens on port 7946: the engine does not run the gossip"
    fi
fi

say "scenario 2: new connections follow the weights b1:b2:b3:b4 = 1:2:1:0 (host 4 not yet running)"
spread spread-start "scenario 2, hosts 1 2 3 in the ECMP set" b1=1,b2=2,b3=1,b4=0

say "scenario 1: $LONG_COUNT long connections while the router's next-hop set changes"
long_start long1 40
sleep 5
T=$(now); ctl 2 drain
expect_route "host 2 drained (ctl drain): withdraw" "$T" "$LEAVE_BOUND" 1 3
spread spread-no-h2 "scenario 2, host 2 removed from the ECMP set" b1=1,b2=2,b3=1,b4=0
T=$(now); ctl 2 undrain
expect_route "host 2 undrained (ctl undrain): announce" "$T" "$JOIN_BOUND" 1 2 3
spread spread-h2-back "scenario 2, host 2 back in the ECMP set" b1=1,b2=2,b3=1,b4=0
start_host 4 "$WORK/h4.yaml"
expect_route "host 4 started: join" "${STARTED_AT[4]}" "$JOIN_BOUND" 1 2 3 4
spread spread-h4 "scenario 2, host 4 joined the ECMP set" b1=1,b2=2,b3=1,b4=0
long_wait long1
check_connections long1 "scenario 1, long connections across ECMP changes" --stall "$STALL"

say "scenario 3: host 1 is killed and restarted under $LONG_COUNT long connections"
long_start long3 30
sleep 5
freeze_host 1
expect_route "host 1 frozen: BFD drops it (failure)" "$FROZEN_AT" "$FAIL_BOUND" 2 3 4
kill_host 1
sleep 3
start_host 1 "$WORK/h1.yaml"
expect_route "host 1 restarted: rejoin" "${STARTED_AT[1]}" "$JOIN_BOUND" 1 2 3 4
announced_after_sync 1
spread spread-h1-back "scenario 3, new connections after host 1 restarted" b1=1,b2=2,b3=1,b4=0
long_wait long3
check_connections long3 "scenario 3, long connections across the restart of host 1" --stall "$STALL" \
    --stall-exempt-host 1 --exempt-stall "$RESTART_STALL"

# A graceful stop: host 4 withdraws at SIGTERM, serves DRAIN_SECONDS more, then exits 0.
T=$(now); kill -TERM "${HOST_PID[4]}"
expect_route "host 4 SIGTERM: withdraw before stopping" "$T" "$LEAVE_BOUND" 1 2 3
stop_host 4 signalled
grep -q "bgp: withdrawn" "$WORK/h4.1.log" || fail "host 4 did not log its withdrawal before stopping"
stop_hosts 1 2 3
# Evidence that the steps did what they claim: host 4 carried traffic of flows it does not own
# (it owns none) after it joined, and the restarted host 1 took its flows back.
counters --label "host 4 after joining" --json "$WORK/h4.1.json" --expect "stage encap:encapsulated>0"
if [ "$GOSSIP_RUNS" = yes ]; then
    # Its own flows come back by the full sync (and a few by adoption, when a packet beats the sync).
    counters --label "host 1 after its restart" --json "$WORK/h1.2.json" --expect "stage owner:hit>0" \
        --expect "stage owner:miss-adopted>=0"
else
    counters --label "host 1 after its restart" --json "$WORK/h1.2.json" --expect "stage owner:miss-adopted>0"
fi

# ── Phase B: scenario 4 (drain with a hot reload; needs gossip) ──────────────────────────────────
# Every host starts with b1:b2:b3:b4 = 1:2:1:1 and reloads, at the same wall-clock moment, a
# configuration where b2 has weight 0. Long connections opened before the drain reach every host
# (ECMP), most of them not their owner; after the reload only the gossiped entries tell those
# hosts where b2's flows live, since the consistent hash now picks b1, b3 or b4 for them.
SCENARIO4=skipped
if [ "$GOSSIP_RUNS" = yes ] || [ "$DRAIN_WITHOUT_GOSSIP" = yes ]; then
    SCENARIO4=run
    [ "$GOSSIP_RUNS" = yes ] || say "scenario 4 WITHOUT gossip (--drain-without-gossip): connections to b2 are expected to break"
    say "scenario 4: backend b2 is drained (weight 0) by a hot reload under $LONG_COUNT long connections"
    for h in 1 2 3 4; do
        render "$h" 1,2,1,1 "$USE_GOSSIP" "$WORK/h$h.yaml"
        render "$h" 1,0,1,1 "$USE_GOSSIP" "$WORK/h$h.drained.yaml"
    done
    DRAIN_AT=$(( $(date +%s) + 24 ))
    T=$(now)
    for h in 1 2 3 4; do start_host "$h" "$WORK/h$h.yaml" "$WORK/h$h.drained.yaml" $(( DRAIN_AT - $(date +%s) )); done
    expect_route "hosts 1-4 started (phase B)" "$T" "$JOIN_BOUND" 1 2 3 4
    warm_up
    long_start long4 32
    sleep 1
    spread spread-before-drain "scenario 4, before the drain" b1=1,b2=2,b3=1,b4=1
    if [ "$(date +%s)" -ge "$DRAIN_AT" ]; then
        fail "scenario 4: the steps before the drain overran the reload time (machine too slow?); its spread check is void"
    fi
    while [ "$(date +%s)" -lt "$DRAIN_AT" ]; do sleep 0.2; done
    for h in 1 2 3 4; do
        for _ in $(seq 100); do grep -q "switchyard: reloaded" "$WORK/h$h.${HOST_RUN[$h]}.log" && break; sleep 0.1; done
        grep -q "switchyard: reloaded" "$WORK/h$h.${HOST_RUN[$h]}.log" || fail "host $h did not reload"
        if [ "$h" = 2 ]; then RELOADED_AT=$(now); fi
    done
    # b2 has weight 0 now: host 2 has no healthy local backend left, so it withdraws the VIP (timed
    # from when this script saw host 2's "reloaded" line, at most 0.1 s after it was written).
    expect_route "b2 drained by reload: host 2 has no healthy local backend, withdraws" "$RELOADED_AT" "$LEAVE_BOUND" 1 3 4
    say "every host reloaded: b2 has weight 0"
    sleep 1
    spread spread-drained "scenario 4, new connections after the drain (none to b2)" b1=1,b2=0,b3=1,b4=1
    long_wait long4
    check_connections long4 "scenario 4, long connections across the drain of b2" --stall "$STALL" --min-backend b2=15
    stop_hosts 1 2 3 4
else
    say "scenario 4: NOT RUN: it needs the ownership gossip (issue 4) running in every host, which this switchyard does not do"
fi

# ── Verdict ─────────────────────────────────────────────────────────────────────────────────────
for ns in client s1 s2 s3 s4; do
    errors=$(ip netns exec "$P$ns" nstat -saz TcpInCsumErrors 2>/dev/null | awk '/TcpInCsumErrors/ { print $2 }')
    [ "${errors:-0}" -eq 0 ] || fail "$ns received $errors TCP segments with a bad checksum"
done
say "what each host dropped (final counters of every run that was stopped, not killed):"
# One exception, on host 1's run after its restart (scenario 3) only: DPDK 22.11's af_packet PMD
# opens up0's socket for every interface and binds it to up0 only after setting up its rings, so
# frames that server b1 sends on bk0 in those milliseconds (retransmissions of its stalled
# connections) land in the uplink's rx and classify drops them as backend-source-on-uplink
# (README "Scenarios", 3). The window is far shorter than TCP's minimum RTO: at most one frame
# per connection b1 served in scenario 3. Nothing of the kind crossed the wire.
B1_LONG3=$("$PY" -c 'import json, sys
print(sum(1 for line in open(sys.argv[1]) if (record := json.loads(line))["event"] == "start" and record["id"].startswith("long3-")))' \
    "$WORK/server-b1.jsonl")
for json in "$WORK"/h*.json; do
    allow=()
    [ "$(basename "$json")" = h1.2.json ] && allow=(--allow "stage classify:backend-source-on-uplink<=$B1_LONG3")
    "$PY" "$HERE/check.py" drops --label "host $(basename "$json" .json)" --json "$json" "${allow[@]}" ||
        fail "host $(basename "$json" .json) dropped packets"
done
say "how long each change of the router's route took (BGP; the bounds: failure $FAIL_BOUND s, leave $LEAVE_BOUND s, join $JOIN_BOUND s):"
for entry in "${TIMINGS[@]}"; do printf '  %-72s %s s\n' "${entry%|*}" "${entry##*|}"; done | tee "$WORK/timings.txt"
[ "$FAILED" -eq 0 ] || diagnose
"$PY" "$HERE/check.py" totals "$TOTALS"
if [ "$FAILED" -ne 0 ]; then exit 1; fi
if [ "$SCENARIO4" = skipped ] && [ "$GOSSIP_MODE" != off ]; then exit 3; fi
exit 0
