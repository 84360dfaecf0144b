#!/usr/bin/env bash
# Instructions per packet of the throughput pipeline (Throughput/pipeline.yaml), per stage and in
# all, counted by valgrind's callgrind over a fixed sequence of bursts (Tools/InstructionCount/main.swift):
# repeatable where wall-clock figures are not. Compares them with Thresholds/instructions.txt.
#
#   Benchmarks/instructions.sh            # measure, print, check (non-zero exit on a regression)
#   Benchmarks/instructions.sh --update   # measure, print, rewrite Thresholds/instructions.txt
#   CALLGRIND_OUT=/tmp/cg.out Benchmarks/instructions.sh   # also keep callgrind's file (callgrind_annotate it)
#
# Prints one line per stage kind, one for the engine's own work (graph walk, tx, frees), one for
# the pipeline (the sum), each per packet that entered the pipeline:
#   instructions_per_packet stage=classify value=523.5
#   ...
#   instructions_per_packet stage=pipeline value=1262.4
# A value more than TOLERANCE_PERCENT (3) above its threshold fails the check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
TOLERANCE_PERCENT=${TOLERANCE_PERCENT:-3}
THRESHOLDS=Thresholds/instructions.txt
update=false
case "${1:-}" in
    --update) update=true ;;
    "") ;;
    *) echo "usage: instructions.sh [--update]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/switchyard-instructions.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

swift build -c release --product InstructionCount >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
# valgrind 3.19 cannot read the DWARF 5 the Swift toolchain writes: run a copy without debug
# information (the symbol table stays, and with it the function names callgrind needs).
strip --strip-debug -o "$WORK/InstructionCount" "$(swift build -c release --show-bin-path)/InstructionCount"

# Only the measured bursts are counted: collection is on inside measuredBurst and off elsewhere.
valgrind --tool=callgrind --toggle-collect='*measuredBurst*' --callgrind-out-file="$WORK/callgrind.out" \
    "$WORK/InstructionCount" >"$WORK/run.txt" 2>"$WORK/valgrind.txt" \
    || { cat "$WORK/valgrind.txt" "$WORK/run.txt" >&2; exit 1; }
if [[ -n "${CALLGRIND_OUT:-}" ]]; then cp "$WORK/callgrind.out" "$CALLGRIND_OUT"; fi
packets=$(sed -n 's/^measured_bursts=[0-9]* measured_packets=\([0-9]*\).*/\1/p' "$WORK/run.txt")
[[ -n "$packets" && "$packets" -gt 0 ]] || { echo "instructions.sh: no measured packets" >&2; cat "$WORK/run.txt" >&2; exit 1; }

# Inclusive instructions of each stage's process (its protocol witness: what the runner calls).
callgrind_annotate --inclusive=yes --threshold=100 "$WORK/callgrind.out" 2>/dev/null \
    | swift demangle --simplified >"$WORK/inclusive.txt"
total=$(sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' "$WORK/inclusive.txt" | tr -d ,)
[[ -n "$total" && "$total" -gt 0 ]] || { echo "instructions.sh: callgrind collected nothing" >&2; exit 1; }
stage_ir() { # type name in the stage modules → inclusive Ir of its process (0 when absent)
    awk -v t="in conformance $1 " 'index($0, "protocol witness for Stage.process(_:_:) " t) { gsub(",", "", $1); s += $1 } END { print s + 0 }' \
        "$WORK/inclusive.txt"
}
declare -a names values
sum=0
for pair in classify:Classify ownership-lookup:OwnershipLookup tuple-translate:TupleTranslate \
            encapsulate:Encapsulate forward:Forward; do
    ir=$(stage_ir "${pair#*:}")
    names+=("${pair%%:*}"); values+=("$ir"); sum=$((sum + ir))
done
names+=(engine pipeline); values+=("$((total - sum))" "$total")

declare -A measured
for i in "${!names[@]}"; do
    value=$(awk -v v="${values[$i]}" -v n="$packets" 'BEGIN { printf "%.1f", v / n }')
    measured[${names[$i]}]=$value
    echo "instructions_per_packet stage=${names[$i]} value=$value"
done

if $update; then
    {
        echo "# Instructions per packet (Benchmarks/instructions.sh --update). instructions.sh fails when a"
        echo "# measured value is more than ${TOLERANCE_PERCENT} % above the value here."
        for name in "${names[@]}"; do echo "$name ${measured[$name]}"; done
    } >"$THRESHOLDS"
    echo "instructions.sh: wrote $THRESHOLDS"
    exit 0
fi

status=0
while read -r name pinned; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    value=${measured[$name]:-}
    if [[ -z "$value" ]]; then echo "instructions.sh: FAILED: no measurement for '$name'" >&2; status=1; continue; fi
    verdict=$(awk -v v="$value" -v p="$pinned" -v t="$TOLERANCE_PERCENT" \
        'BEGIN { if (v > p * (1 + t / 100)) print "regression"; else if (v < p * (1 - t / 100)) print "improvement"; else print "ok" }')
    case $verdict in
        regression) echo "instructions.sh: FAILED: $name $value instructions per packet, pinned $pinned (+${TOLERANCE_PERCENT} % allowed)" >&2; status=1 ;;
        improvement) echo "instructions.sh: note: $name $value, more than ${TOLERANCE_PERCENT} % below the pinned $pinned: run --update" ;;
    esac
done <"$THRESHOLDS"
[[ $status -eq 0 ]] && echo "instructions.sh: within ${TOLERANCE_PERCENT} % of $THRESHOLDS"
exit $status
