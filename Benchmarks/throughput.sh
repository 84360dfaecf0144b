#!/usr/bin/env bash
# Throughput of the whole Switchyard pipeline beside dpdk-testpmd's io forwarding, on the same
# virtual devices (net_pcap with infinite_rx=1 into net_null), in the same run, alternating.
#
#   Benchmarks/throughput.sh                 # ROUNDS=5 SECONDS_PER_RUN=6 PAUSE=2 by default
#
# Every measurement starts after a pause of PAUSE seconds: run back to back, the second of two
# identical runs read 2 to 4 % slower on this VM, which biased whatever came second (two lcores
# after one, the pipeline after testpmd). Five rounds: on this VM the two-lcore figure falls by up to
# 10 % for minutes at a time (both lcores slower, mostly the one on CPU 0 more), and a median of three
# could land in such a spell; the two-lcore line gives each lcore's share of the packets.
#
# Memory: as root, when fewer than HUGEPAGES (default 2048 x 2 MB) hugepages are free, it reserves
# them itself with Hugepages/reserve.sh and gives the machine's previous count back at the end. It
# measures with hugepages, then the same rounds with --no-huge (MODES="hugepages no-huge" by default;
# without hugepages only no-huge runs). Prints one line per measurement, the medians of each mode,
# a `no-huge:`-prefixed copy of the two result lines, a `one-way:` line (testpmd forwarding
# net_pcap → net_null only, see testpmd_io below), and last the two result lines of the first mode
# (hugepages when it ran):
#   one-way: testpmd_io_one_way_mpps=Y ratio_one_way=Z
#   flows_1m_mpps=X testpmd_1m_mpps=Y ratio_1m=Z    (1 million live flows, one lcore; testpmd on the same capture)
#   pipeline_mpps=X testpmd_io_mpps=Y ratio=Z       (4 thousand flows, one lcore)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-6}
WARMUP=${WARMUP:-2}
PAUSE=${PAUSE:-2}
CPUS=$(nproc)
WORK=$(mktemp -d /tmp/switchyard-throughput.XXXXXX)
HUGEPAGES=${HUGEPAGES:-2048}
PAGES_BEFORE=$(cat /proc/sys/vm/nr_hugepages)
RESERVED=no
# testpmd stopped by a signal leaves its EAL runtime directory behind: remove it too. Hugepages this
# script reserved are given back.
finish() {
    rm -rf "$WORK" "/var/run/dpdk/sytp$$"
    if [ "$RESERVED" = yes ]; then Hugepages/reserve.sh --release >/dev/null 2>&1 || true
        [ "$PAGES_BEFORE" -gt 0 ] && Hugepages/reserve.sh "$PAGES_BEFORE" >/dev/null 2>&1 || true; fi
}
trap finish EXIT

free_pages() { awk '/HugePages_Free/ { print $2 }' /proc/meminfo; }
if [ "$(id -u)" -eq 0 ] && [ "$(free_pages)" -lt "$HUGEPAGES" ]; then
    if Hugepages/reserve.sh "$(( $(cat /proc/sys/vm/nr_hugepages) - $(free_pages) + HUGEPAGES ))" >"$WORK/reserve.log" 2>&1; then
        RESERVED=yes
    else
        echo "throughput.sh: could not reserve $HUGEPAGES hugepages (Hugepages/reserve.sh: $(tail -n 1 "$WORK/reserve.log")); measuring --no-huge only" >&2
    fi
fi
MODES=${MODES:-hugepages no-huge}
[ "$(free_pages)" -gt 0 ] || MODES=no-huge

swift build -c release --product switchyard >/dev/null
BIN=$(swift build -c release --show-bin-path)/switchyard

# Traffic: 64-byte frames on the wire (60 + FCS), TCP (ACK: established connections) and UDP to the VIP.
"$BIN" generate --output "$WORK/flows-4k.pcap" --count 4096 --flows 4096 --tcp-flags ack >/dev/null
"$BIN" generate --output "$WORK/flows-4k-b.pcap" --count 4096 --flows 4096 --tcp-flags ack --first-flow 4096 >/dev/null
"$BIN" generate --output "$WORK/flows-1m.pcap" --count 1048576 --flows 1048576 --tcp-flags ack >/dev/null

# A configuration for `lcores` worker lcores, each with its own rx queue (one pcap per queue).
make_config() { # name, lcores, pcap...
    local name=$1 lcores=$2; shift 2
    local traffic="" lcore_lines="" mbufs=32767
    for pcap in "$@"; do traffic+="${traffic:+,}rx_pcap=$pcap"; done
    [[ "$*" == *1m* ]] && mbufs=1310719
    for ((i = 0; i < lcores; i++)); do
        local cpu=$(( (i + 1) % CPUS ))
        lcore_lines+="  - { id: $((i + 1)), cpu: $cpu, idle: busy, poll: [ { port: wire, queue: $i, to: classify } ] }"$'\n'
    done
    sed -e "s|TRAFFIC|$traffic|" -e "s|QUEUES|$lcores|g" -e "s|MBUFS|$mbufs|" \
        Benchmarks/Throughput/pipeline.yaml | awk -v l="$lcore_lines" '{ if ($0 == "LCORES") printf "%s", l; else print }' \
        > "$WORK/$name.yaml"
}
make_config one-4k 1 "$WORK/flows-4k.pcap"
make_config two-4k 2 "$WORK/flows-4k.pcap" "$WORK/flows-4k-b.pcap"
make_config one-1m 1 "$WORK/flows-1m.pcap"

pipeline() { # config → steady-state Mpps
    sleep "$PAUSE"
    sed -e "s/hugepages: auto/hugepages: $([ "$MODE" = no-huge ] && echo off || echo required)/" "$WORK/$1.yaml" >"$WORK/$1.$MODE.yaml"
    "$BIN" run --config "$WORK/$1.$MODE.yaml" --duration "$SECONDS_PER_RUN" --warmup "$WARMUP" 2>"$WORK/$1.log" \
        | tee "$WORK/$1.out" | sed -n 's/^steady state .*: \([0-9.]*\) Mpps over.*/\1/p'
}

# testpmd's io forwarding pairs the two ports and forwards both ways: net_pcap → net_null, and the
# packets net_null's rx makes up → net_pcap (which drops them, as it has no tx_pcap). The figure
# read is port 0's Rx-pps (port 1's is the same). That is the ceiling the issue-14 targets were set
# against. With `one-way`, net_null gets no-rx=1: testpmd forwards net_pcap → net_null only, the
# pipeline's own path, and reads higher (printed beside it, not in the result lines).
testpmd_io() { # capture [one-way] → Mpps of io forwarding from net_pcap (infinite_rx) to net_null, one forwarding lcore
    sleep "$PAUSE"
    local capture=$1 null=net_null0 mbufs=16384 megabytes=1024 mbuf_size=2176
    if [ "${2:-}" = one-way ]; then null=net_null0,no-rx=1; fi
    # The 1M-packet capture is loaded into 1M mbufs: small ones (64-byte frames), more memory.
    if [[ "$capture" == *1m* ]]; then mbufs=1310720 megabytes=2048 mbuf_size=384; fi
    local memory=()
    if [ "$MODE" = no-huge ]; then memory=(--no-huge -m "$megabytes"); fi
    # testpmd runs until timeout stops it (status 124): that is how this measurement ends.
    { timeout -s INT $((SECONDS_PER_RUN + 8)) dpdk-testpmd -l 0,1 "${memory[@]}" --no-pci --file-prefix="sytp$$" \
        --vdev "net_pcap0,rx_pcap=$capture,infinite_rx=1" --vdev "$null" --log-level=error \
        -- --forward-mode=io --nb-cores=1 --total-num-mbufs=$mbufs --mbuf-size=$mbuf_size --stats-period 1 </dev/null 2>/dev/null || true; } \
        | sed -n 's/^ *Rx-pps: *\([0-9]*\).*/\1/p' | awk -v skip="$WARMUP" 'NR > skip && $1 > 0 { print }' \
        | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else printf "%.2f\n", v[int((NR + 1) / 2)] / 1e6 }'
}

# Each lcore's share of the packets a run received (its rx queue's counter, warmup included): a
# two-lcore run that falls short of twice one lcore shows here whether one lcore or both lost speed.
lcore_shares() { # config → "lcore 1 50.1 %, lcore 2 49.9 %"
    sed -n 's/^rx wire\/\([0-9]*\) (rx) *packets *- *\(.*\)$/\1 \2/p' "$WORK/$1.out" \
        | awk '{ q[$1] = $NF; t += $NF } END { for (i = 0; i in q; i++) printf "%slcore %d %.1f %%", (i ? ", " : ""), i + 1, (t ? 100 * q[i] / t : 0) }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print v[int((NR + 1) / 2)] }'; }

declare -A RESULT RESULT_1M RESULT_ONE_WAY
measure() { # MODE: ROUNDS rounds of every measurement, then the medians
    T=() TW=() T1M=() P=() P2=() P1M=()
    for ((round = 1; round <= ROUNDS; round++)); do
        t=$(testpmd_io "$WORK/flows-4k.pcap"); echo "round $round: testpmd io        $t Mpps (4k flows)"
        if [ "$t" = "0" ]; then echo "throughput.sh: testpmd forwarded nothing (see above); round $round's ceiling left out" >&2; else T+=("$t"); fi
        tw=$(testpmd_io "$WORK/flows-4k.pcap" one-way); echo "round $round: testpmd io 1-way  $tw Mpps (4k flows, net_null no-rx=1)"
        if [ "$tw" != "0" ]; then TW+=("$tw"); fi
        p=$(pipeline one-4k); P+=("$p"); echo "round $round: pipeline 1 lcore  $p Mpps (4k flows)"
        p2=$(pipeline two-4k); P2+=("$p2"); echo "round $round: pipeline 2 lcores $p2 Mpps (4k flows; $(lcore_shares two-4k))"
        t1m=$(testpmd_io "$WORK/flows-1m.pcap"); echo "round $round: testpmd io        $t1m Mpps (1M-packet capture)"
        if [ "$t1m" = "0" ]; then echo "throughput.sh: testpmd forwarded nothing from the 1M capture; left out" >&2; else T1M+=("$t1m"); fi
        p1m=$(pipeline one-1m); P1M+=("$p1m"); echo "round $round: pipeline 1 lcore  $p1m Mpps (1M flows)"
    done
    tm=$(printf '%s\n' "${T[@]}" | median)
    twm=$(printf '%s\n' "${TW[@]}" | median)
    pm=$(printf '%s\n' "${P[@]}" | median)
    p2m=$(printf '%s\n' "${P2[@]}" | median)
    p1mm=$(printf '%s\n' "${P1M[@]}" | median)
    t1mm=$(printf '%s\n' "${T1M[@]}" | median)
    hz=$(sed -n 's/.*TSC \([0-9.]*\) GHz.*/\1/p' "$WORK/one-4k.out" | head -1)
    cycles() { awk -v hz="$hz" -v mpps="$1" -v n="$2" 'BEGIN { if (mpps > 0) printf "%.0f", hz * 1000 * n / mpps; else print "-" }'; }
    echo "medians over $ROUNDS rounds ($CPUS CPUs, TSC ${hz} GHz, $MODE):"
    echo "  testpmd io (1 lcore)              $tm Mpps  $(cycles "$tm" 1) cycles/packet  (both ways: the ceiling of the result lines)"
    echo "  testpmd io, one way (1 lcore)     $twm Mpps  $(cycles "$twm" 1) cycles/packet  (net_pcap → net_null only; the pipeline's 4k ratio to it $(awk -v a="$pm" -v b="$twm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'))"
    echo "  pipeline, 4k flows, 1 lcore       $pm Mpps  $(cycles "$pm" 1) cycles/packet"
    echo "  pipeline, 4k flows, 2 lcores      $p2m Mpps  $(cycles "$p2m" 2) cycles/packet per lcore  ($(awk -v a="$p2m" -v b="$pm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')x one lcore)"
    echo "  testpmd io, 1M-packet capture     $t1mm Mpps  $(cycles "$t1mm" 1) cycles/packet"
    echo "  pipeline, 1M flows, 1 lcore       $p1mm Mpps  $(cycles "$p1mm" 1) cycles/packet  (ratio $(awk -v a="$p1mm" -v b="$t1mm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }') to testpmd on the same capture)"
    RESULT_1M[$MODE]="flows_1m_mpps=$p1mm testpmd_1m_mpps=$t1mm ratio_1m=$(awk -v a="$p1mm" -v b="$t1mm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    RESULT_ONE_WAY[$MODE]="testpmd_io_one_way_mpps=$twm ratio_one_way=$(awk -v a="$pm" -v b="$twm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    RESULT[$MODE]="pipeline_mpps=$pm testpmd_io_mpps=$tm ratio=$(awk -v a="$pm" -v b="$tm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
}
for MODE in $MODES; do
    echo "== memory: $MODE"
    measure
done
FIRST=${MODES%% *}
if [ "$FIRST" = hugepages ] && [ -n "${RESULT[no-huge]:-}" ]; then
    echo "no-huge: ${RESULT_1M[no-huge]}"
    echo "no-huge: ${RESULT[no-huge]}"
fi
echo "one-way: ${RESULT_ONE_WAY[$FIRST]}"
echo "${RESULT_1M[$FIRST]}"
echo "${RESULT[$FIRST]}"
