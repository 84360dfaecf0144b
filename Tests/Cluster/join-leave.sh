#!/usr/bin/env bash
# Hosts join and leave the running cluster by `switchyard ctl reload`, no peer restarting
# (docs/gossip.md, "Hosts join and leave"), with `ctl preview` asked before each change, while long
# downloads run and short connections keep opening and closing. Topology, router and checks are
# those of run.sh (lib.sh, Tests/Cluster/README.md).
#
#   Tests/Cluster/join-leave.sh [--binary PATH] [--keep-logs DIR]
#
#   1. hosts 1-3 run, each file listing hosts 1-3 only (gossip on)
#   2. host 4 joins: hosts 1-3 reload a file listing hosts 1-4 (b4 weight 0); host 4 starts, takes
#      the whole ownership state, then announces the VIP
#   3. b4 gets weight 1: `ctl preview` on host 1, then every host reloads
#   4. host 3 leaves: `ctl drain` on host 3, `ctl preview`, hosts 1, 2 and 4 reload a file without
#      host 3 and b3; host 3 is departing there while it owns connections, serves them to their
#      end, and is dropped once it owns none
#
# For 3 and 4, the preview asked before the change is compared with what the change did
# (lib.sh preview_after, preview.py; Tests/Cluster/README.md, "Preview checks"): the connections
# it left held by their entry, within those that opened or closed during the change, and the
# spread of new connections after it.
#
# Needs what run.sh needs. The last line is `connections=N completed=N broken=N`. Exit status: 0
# every check passed; 1 a check failed; 2 the test could not run (setup).
set -Eeuo pipefail

# SIGINT and SIGTERM unblocked first (signals.sh says why).
source "$(dirname "$0")/signals.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINARY=""
KEEP_LOGS=""
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--keep-logs DIR]" >&2; exit 2 ;;
    esac
done

# shellcheck source=lib.sh
source "$HERE/lib.sh"
GOSSIP_RUNS=yes

# render_members HOST WEIGHTS MEMBERS FILE [BACKENDS]: render's file, with only the hosts MEMBERS
# ("1 2 3") in cluster.hosts, the services and gossip.members.
render_members() {
    local host=$1 weights=$2 members=" $3 " file=$4 h
    render "$host" "$weights" yes "$file" "${5:-local}"
    for h in 1 2 3 4; do
        [[ "$members" == *" $h "* ]] && continue
        sed -i -e "/- { id: $h, address: 198.18.0.1$h }/d" -e "/- { host: $h, address: 198.18.10$h.10, /d" \
            -e "s/, {host: $h, address: 198.18.2.1$h}//" -e "s/{host: $h, address: 198.18.2.1$h}, //" "$file"
    done
}

# reload H FILE EXPECT: `ctl reload` on host H; its reply must contain EXPECT.
reload() {
    "$BINARY" ctl --socket "$WORK/h$1.sock" reload "$2" >"$WORK/reload-h$1-$(basename "$2" .yaml).txt" 2>&1 ||
        fail "ctl reload $2 on host $1: $(cat "$WORK/reload-h$1-$(basename "$2" .yaml).txt")"
    grep -q "$3" "$WORK/reload-h$1-$(basename "$2" .yaml).txt" || fail "ctl reload on host $1 did not say '$3'"
}

# preview LABEL H FILE: `ctl preview FILE --json` on host H, its service web printed and kept in
# $WORK/preview-LABEL.json; PREVIEW_HELD and PREVIEW_PICKS are its held-by-entry and pick-change
# counts (backend).
preview() {
    PREVIEW_CONNECTIONS=0 PREVIEW_PICKS=-1 PREVIEW_HELD=-2 PREVIEW_SHARE=0
    preview_before "$1" "$2" "$3"   # lib.sh: also the start of the change's window (preview_after)
    [ -s "$WORK/preview-$1.json" ] || return 0
    read -r PREVIEW_CONNECTIONS PREVIEW_PICKS PREVIEW_HELD PREVIEW_SHARE < <("$PY" -c '
import json, sys
web = [s for s in json.load(open(sys.argv[1]))["services"] if s["service"] == "web"][0]
print(web["connections"], web["pick_changes"]["backend"], web["held_by_entry"]["backend"], "%.4f" % web["new_flows"]["backend_moved"])
' "$WORK/preview-$1.json")
    say "preview ($1, on host $2): $PREVIEW_CONNECTIONS live connections, $PREVIEW_PICKS change pick, $PREVIEW_HELD held by their entry; new flows moving: $PREVIEW_SHARE"
}

build_topology
start_router_bird
start_servers

# ── 1. hosts 1-3 ────────────────────────────────────────────────────────────────────────────────
for h in 1 2 3; do render_members "$h" 1,1,1,0 "1 2 3" "$WORK/h$h.three.yaml"; done
T=$(now)
for h in 1 2 3; do start_host "$h" "$WORK/h$h.three.yaml"; done
expect_route "hosts 1 2 3 started" "$T" "$JOIN_BOUND" 1 2 3
warm_up
long_start long 90
sleep 2

# ── 2. host 4 joins ─────────────────────────────────────────────────────────────────────────────
say "host 4 joins: hosts 1-3 reload a file that lists it (b4 weight 0), then it starts"
# Host 4 announces the VIP as soon as it runs (bgp.backends: cluster: b4 has weight 0 at first), in
# every file it gets (a reload may not change its `bgp:` section).
scope() { [ "$1" = 4 ] && echo cluster || echo local; }
for h in 1 2 3 4; do
    render_members "$h" 1,1,1,0 "1 2 3 4" "$WORK/h$h.four.yaml" "$(scope "$h")"
    render_members "$h" 1,1,1,1 "1 2 3 4" "$WORK/h$h.weighted.yaml" "$(scope "$h")"
done
churn_begin churn-join 400
for h in 1 2 3; do reload "$h" "$WORK/h$h.four.yaml" "host 4 joins"; done
T=$(now)
start_host 4 "$WORK/h4.four.yaml"
announced_after_sync 4
grep -q "gossip: synchronised.*: complete" "$WORK/h4.1.log" || fail "host 4 started with a partial table: $(grep 'gossip: synchronised' "$WORK/h4.1.log")"
expect_route "host 4 joined (reload of 1-3, then its start)" "$T" "$JOIN_BOUND" 1 2 3 4
churn_end churn-join "short connections while host 4 joins"

# ── 3. b4 takes new flows ───────────────────────────────────────────────────────────────────────
preview weight 1 "$WORK/h1.weighted.yaml"
[ "$PREVIEW_CONNECTIONS" -gt 0 ] || fail "preview: no live connection seen (gossip should show every host's)"
# (held may exceed picks by a few: adding b4 at weight 0 already changed some picks, so a connection
# opened before host 4 joined may be held by its entry already; docs/operations.md, "Preview".)
[ "$PREVIEW_PICKS" -gt 0 ] && [ "$PREVIEW_HELD" -ge "$PREVIEW_PICKS" ] ||
    fail "preview: $PREVIEW_PICKS connections change pick, $PREVIEW_HELD held: b4 takes a quarter of the hash space, some must"
churn_begin churn-weight 400
for h in 1 2 3 4; do reload "$h" "$WORK/h$h.weighted.yaml" "service 'web'"; done
# What the reloads moved, on host 1 again: its preview of the file it now runs (lib.sh, preview.py).
preview_after weight "$WORK/h1.weighted.yaml"
churn_end churn-weight "short connections while b4 gets weight 1"
spread spread-four "new connections once b4 has weight 1" b1=1,b2=1,b3=1,b4=1
preview_flows weight spread-four

# ── 4. host 3 leaves ────────────────────────────────────────────────────────────────────────────
say "host 3 leaves: drained from BGP, then hosts 1, 2 and 4 reload a file without it"
for h in 1 2 4; do render_members "$h" 1,1,0,1 "1 2 4" "$WORK/h$h.left.yaml" "$(scope "$h")"; done
T=$(now)
ctl 3 drain
expect_route "host 3 drained (ctl drain)" "$T" "$LEAVE_BOUND" 1 2 4
preview leave 1 "$WORK/h1.left.yaml"
churn_begin churn-leave 400
for h in 1 2 4; do reload "$h" "$WORK/h$h.left.yaml" "host 3 leaves"; done
preview_after leave "$WORK/h1.left.yaml"
DEPARTING=0
for h in 1 2 4; do
    "$BINARY" ctl --socket "$WORK/h$h.sock" status >"$WORK/status-h$h-left.txt"
    grep -q "departing host(s) 3" "$WORK/status-h$h-left.txt" && DEPARTING=$((DEPARTING + 1))
done
say "host 3 departing on $DEPARTING of hosts 1, 2, 4 (it owns connections there)"
[ "$DEPARTING" -eq 3 ] || fail "host 3 is departing on $DEPARTING of hosts 1, 2, 4, not all three (does it still own long connections?)"
churn_end churn-leave "short connections while host 3 leaves"
# The client reuses source ports: a new connection on the 5-tuple of one that ended less than
# cluster.connections.timeouts.fin (10 s) ago finds its closing entry and follows it, to b3 too.
# Those are not new flows: wait until every short connection to b3 has expired everywhere.
sleep 12
spread spread-three "new connections once host 3 left" b1=1,b2=1,b3=0,b4=1
preview_flows leave spread-three spread-four
long_wait long
check_connections long "long connections across host 4's join, b4's weight and host 3's leave" --stall "$STALL"
# Host 3's connections are over: within fin timeout (10 s), expiry and a second, the others drop it.
for h in 1 2 4; do
    log="$WORK/h$h.${HOST_RUN[$h]}.log"
    for _ in $(seq 300); do grep -q "host(s) 3 drained: no flow left, removed" "$log" && break; sleep 0.1; done
    grep -q "host(s) 3 drained: no flow left, removed" "$log" || fail "host $h still holds host 3 as departing 30 s after its connections ended"
done
stop_hosts 1 2 3 4
for h in 1 2 3 4; do
    [ "${HOST_RUN[$h]}" = 1 ] || fail "host $h was started ${HOST_RUN[$h]} times: a peer restarted"
done

# ── Verdict ─────────────────────────────────────────────────────────────────────────────────────
# While the hosts reload one after another, their tables disagree for a moment: a new connection's
# SYN that one host sends to the owner its new table picks may reach a host whose table is still
# the old one, which drops it as `peer-loop` (never sent on again); the client sends its SYN again
# a second later, when every host has reloaded. Those drops are the only ones allowed, and counted.
say "what each host dropped (final counters; peer-loop drops are the reload window's):"
for json in "$WORK"/h*.json; do
    "$PY" - "$json" <<'PY' || fail "host $(basename "$json" .json) dropped packets other than peer-loop"
import json, sys
drops, loops = [], 0
for block in json.load(open(sys.argv[1])):
    counters = block["counters"]
    if block["scope"].startswith("stage ") and counters.get("drop", 0):
        loops += counters.get("peer-loop", 0)
        if counters["drop"] > counters.get("peer-loop", 0):
            reasons = {name: value for name, value in counters.items()
                       if value and name not in block["dispositions"] and name != "in"}
            drops.append(f"{block['scope']} drop={counters['drop']} ({reasons})")
    for name in ("tx-full", "ring-full", "shutdown-flushed"):
        if counters.get(name, 0):
            drops.append(f"{block['scope']} {name}={counters[name]}")
print(f"  host {sys.argv[1].rsplit('/', 1)[-1][:-5]}: peer-loop {loops}" + ("; " + "; ".join(drops) if drops else ", nothing else dropped"))
sys.exit(1 if drops else 0)
PY
done
for entry in "${TIMINGS[@]}"; do printf '  %-72s %s s\n' "${entry%|*}" "${entry##*|}"; done
[ "$FAILED" -eq 0 ] || diagnose
"$PY" "$HERE/check.py" totals "$TOTALS"
[ "$FAILED" -eq 0 ] || exit 1
exit 0
