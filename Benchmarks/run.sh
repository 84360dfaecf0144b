#!/usr/bin/env bash
# Runs the hot-path benchmarks, then checks them against the pinned thresholds in Thresholds/.
# Exits non-zero if a benchmark fails to build or run, or if any pinned count moved (either way).
#
#   Benchmarks/run.sh                    # everything
#   Benchmarks/run.sh --filter mac-swap  # extra arguments go to both commands
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
