#!/usr/bin/env bash
# listeners.sh with `gossip.replicate: exceptions` on every host (docs/gossip.md, "Replicating
# exceptions only"; Tests/Cluster/README.md, "listeners-exceptions.sh"): the same scenarios
# (b4 registered, then withdrawn, while long connections run), but each host announces only the
# connections that the current tables do not send to it. Across each change, the long
# connections whose pick moved reach their owner through its exception announcements (and
# daisy chaining until they arrive); every connection must complete byte for byte. Afterwards,
# from every host's counters: `opens-implied` > 0 (opens not sent) on every host, and
# `exceptions-announced` > 0 on at least one (a change moved some of its flows).
#
#   Tests/Cluster/listeners-exceptions.sh [--binary PATH] [--keep-logs DIR]
#
# Exit status: listeners.sh's (0 passed, 1 a check failed, 2 setup), or 1 when a counter check fails.
set -Eeuo pipefail

# SIGINT and SIGTERM unblocked first (signals.sh says why).
source "$(dirname "$0")/signals.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ARGS=()
LOGS=""
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) ARGS+=(--binary "$2"); shift 2 ;;
    --keep-logs) LOGS=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--keep-logs DIR]" >&2; exit 2 ;;
    esac
done
KEEP=${LOGS:-$(mktemp -d /tmp/sy-listeners-exceptions.XXXXXX)}
mkdir -p "$KEEP"
status=0
GOSSIP_REPLICATE=exceptions "$HERE/listeners.sh" "${ARGS[@]}" --keep-logs "$KEEP" >"$KEEP/listeners.out" 2>&1 || status=$?
verdict=$(tail -n 1 "$KEEP/listeners.out")
head -n -1 "$KEEP/listeners.out"
grep -q "replicate: exceptions" "$KEEP/h1.yaml" || { echo "FAIL: the hosts did not run with replicate: exceptions"; status=1; }
python3 - "$KEEP" <<'PY' || status=1
import glob, json, os, sys
def total(value, name):
    if isinstance(value, dict):
        return sum((v if k == name and isinstance(v, (int, float)) else total(v, name)) for k, v in value.items())
    if isinstance(value, list):
        return sum(total(v, name) for v in value)
    return 0
failed = False
announced = 0
for path in sorted(glob.glob(os.path.join(sys.argv[1], "h[1-4].*.json")) or glob.glob(os.path.join(sys.argv[1], "h[1-4]*.json"))):
    text = open(path).read()
    try:
        last = json.loads(text)
    except ValueError:  # one object per line: the last
        lines = [l for l in text.splitlines() if l.strip()]
        if not lines:
            continue
        last = json.loads(lines[-1])
    implied, sent = total(last, "opens-implied"), total(last, "opens-sent")
    moved = total(last, "exceptions-announced")
    announced += moved
    print(f"{os.path.basename(path)}: opens-implied {implied}, opens-sent {sent}, exceptions-announced {moved}, "
          f"exceptions-withdrawn {total(last, 'exceptions-withdrawn')}, table-rescans {total(last, 'table-rescans')}")
    if implied == 0:
        print(f"FAIL: {path}: no open was implied by the tables"); failed = True
if announced == 0:
    print("FAIL: no host announced an exception"); failed = True
sys.exit(1 if failed else 0)
PY
[ -z "$LOGS" ] && rm -rf "$KEEP"
echo "$verdict"
exit "$status"
