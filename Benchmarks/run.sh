#!/usr/bin/env bash
# Runs the hot-path benchmarks, then checks them against the pinned thresholds in Thresholds/,
# then counts instructions per packet of the pipeline under callgrind (instructions.sh, about 40 s).
# Exits non-zero if a benchmark fails to build or run, if any pinned count moved (either way), or
# if an instruction count is more than 3 % above Thresholds/instructions.txt.
#
#   Benchmarks/run.sh                    # everything
#   Benchmarks/run.sh --filter mac-swap  # extra arguments go to both benchmark commands (not to instructions.sh)
#
# DPDK's EAL (started with --no-huge) wants root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: warning: not root; the DPDK EAL may refuse to start" >&2
fi

echo "== benchmarks"
swift package --disable-sandbox benchmark --no-progress "$@"

echo "== thresholds check (Thresholds/*.p90.json)"
if ! swift package --disable-sandbox benchmark thresholds check --no-progress "$@"; then
    echo "run.sh: FAILED: a pinned count (mallocs, swift_retain or swift_release calls) moved; see above" >&2
    exit 1
fi
echo "run.sh: thresholds check passed"

echo "== instructions per packet (instructions.sh, Thresholds/instructions.txt)"
if ! ./instructions.sh; then
    echo "run.sh: FAILED: instructions per packet above Thresholds/instructions.txt (or the count did not run); see above" >&2
    exit 1
fi
