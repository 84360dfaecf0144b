#!/usr/bin/env bash
# What watching a running engine costs: the whole pipeline's rate (one lcore, 4 thousand flows,
# Benchmarks/Throughput/pipeline.yaml) in three conditions, alternating, in one run:
#
#   plain      nobody watches (the metrics endpoint and control socket are open, idle)
#   watched    a Prometheus-style scrape of /metrics every second and `switchyard ctl stats --watch 1`
#   capture    a capture armed at classify's output with a BPF filter that matches nothing
#
#   Benchmarks/observability.sh          # ROUNDS=3 SECONDS_PER_RUN=8 WARMUP=2 by default; about 4 minutes
#
# Prints each run, the medians, and last:
#   plain_mpps=X watched_mpps=Y watched_ratio=Y/X capture_mpps=Z capture_ratio=Z/X
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
WARMUP=${WARMUP:-2}
PORT=${PORT:-19469}
WORK=$(mktemp -d /tmp/switchyard-observability.XXXXXX)
WATCHERS=()
stop_watchers() {
    for pid in "${WATCHERS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${WATCHERS[@]}"; do wait "$pid" 2>/dev/null || true; done
    WATCHERS=()
}
trap 'stop_watchers; rm -rf "$WORK"' EXIT

swift build -c release --product switchyard >/dev/null
BIN=$(swift build -c release --show-bin-path)/switchyard
"$BIN" generate --output "$WORK/flows-4k.pcap" --count 4096 --flows 4096 --tcp-flags ack >/dev/null
sed -e "s|TRAFFIC|rx_pcap=$WORK/flows-4k.pcap|" -e "s|QUEUES|1|g" -e "s|MBUFS|32767|" \
    Benchmarks/Throughput/pipeline.yaml \
    | awk '{ if ($0 == "LCORES") print "  - { id: 1, cpu: 1, idle: busy, poll: [ { port: wire, queue: 0, to: classify } ] }"; else print }' \
    > "$WORK/observed.yaml"
printf 'name: observed\nmetrics: { listen: 127.0.0.1:%s }\ncontrol: { socket: %s/ctl.sock }\n' "$PORT" "$WORK" \
    | cat - "$WORK/observed.yaml" > "$WORK/engine.yaml"

# Observers run on the control thread's CPU (eal.control_cpu, 0), as an operator's tools would with
# the lcores' CPUs isolated: on a 2-CPU machine an unpinned curl or ctl process would otherwise be
# scheduled on the lcore's CPU and measure the scheduler, not the engine.
observer() { taskset -c 0 "$@"; }

wait_for_socket() {
    for _ in $(seq 1 100); do
        "$BIN" ctl --socket "$WORK/ctl.sock" status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "observability.sh: the engine's control socket did not answer" >&2
    return 1
}

run() { # condition → steady-state Mpps
    local condition=$1
    "$BIN" run --config "$WORK/engine.yaml" --duration "$SECONDS_PER_RUN" --warmup "$WARMUP" \
        >"$WORK/$condition.out" 2>"$WORK/$condition.log" &
    local engine=$!
    wait_for_socket
    case $condition in
    watched)
        (while true; do observer curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics"; sleep 1; done) &
        WATCHERS+=($!)
        observer "$BIN" ctl --socket "$WORK/ctl.sock" stats --watch 1 >/dev/null 2>&1 &
        WATCHERS+=($!)
        ;;
    capture)
        # Port 9 (discard) carries none of the generated traffic: the filter runs on every packet
        # and copies nothing.
        observer "$BIN" ctl --socket "$WORK/ctl.sock" capture --at classify --filter "udp port 9" \
            --seconds $((SECONDS_PER_RUN + 5)) --output "$WORK/none.pcapng" >"$WORK/capture.txt" 2>&1 &
        WATCHERS+=($!)
        ;;
    esac
    wait "$engine"
    stop_watchers
    sed -n 's/^steady state .*: \([0-9.]*\) Mpps over.*/\1/p' "$WORK/$condition.out"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print v[int((NR + 1) / 2)] }'; }
declare -a PLAIN WATCHED CAPTURE
for ((round = 1; round <= ROUNDS; round++)); do
    p=$(run plain); PLAIN+=("$p"); echo "round $round: plain    $p Mpps"
    w=$(run watched); WATCHED+=("$w"); echo "round $round: watched  $w Mpps (scrape every 1 s, ctl stats --watch 1)"
    c=$(run capture); CAPTURE+=("$c"); echo "round $round: capture  $c Mpps (armed at classify, filter matches nothing)"
done
pm=$(printf '%s\n' "${PLAIN[@]}" | median)
wm=$(printf '%s\n' "${WATCHED[@]}" | median)
cm=$(printf '%s\n' "${CAPTURE[@]}" | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
echo "medians over $ROUNDS rounds ($(nproc) CPUs, $([ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" = "0" ] && echo no-huge || echo hugepages)):"
echo "plain_mpps=$pm watched_mpps=$wm watched_ratio=$(ratio "$wm" "$pm") capture_mpps=$cm capture_ratio=$(ratio "$cm" "$pm")"
