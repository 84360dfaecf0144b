#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzzer + address sanitizers, scratch path .build-fuzz at the
# repository root) and runs each for a bounded time, one after the other, from its seed corpus.
#
#   Tests/Fuzz/run.sh --seconds 60         # every target for 60 s (CI: --seconds 35)
#   Tests/Fuzz/run.sh --hours 2            # the long run: 2 hours per target
#   Tests/Fuzz/run.sh --seconds 300 fuzz-gossip fuzz-decapsulate    # only these targets
#   Tests/Fuzz/run.sh --check-corpus       # only replay the seeds once and check every output with tshark
#                                          # (fuzzing runs this check first too)
#   Tests/Fuzz/run.sh --make-corpus        # rewrite Corpus/ from the seeds the targets build
#   Tests/Fuzz/run.sh --no-build --seconds 600 fuzz-gossip   # use the targets built before (no build step)
#
# Per target it prints libFuzzer's last status line (executions, cov:, ft:, corpus) and a summary
#   fuzz-classify-wire: 812345 runs in 60 s, cov: 1234 ft: 4567, corpus 321 inputs, no crash
# and exits non-zero on a crash or an invariant violation, naming the crash file
# (Tests/Fuzz/crashes/<target>/crash-<sha1>; reproduce with `.build-fuzz/release/<target> FILE`).
# New inputs go to .build-fuzz/corpus/<target> (not committed); Corpus/<target> holds the seeds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scratch="$root/.build-fuzz"
targets_all=(fuzz-classify-wire fuzz-classify-tunnel fuzz-decapsulate fuzz-icmp-errors fuzz-neighbors fuzz-gossip)
seconds=60
mode=fuzz
build=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --hours) seconds=$(( $2 * 3600 )); shift 2 ;;
        --check-corpus) mode=check; shift ;;
        --make-corpus) mode=make; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        fuzz-*) targets+=("$1"); shift ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${targets_all[@]}")

build_targets() {
    echo "fuzz: building ${#targets[@]} targets (release, -sanitize=fuzzer,address) in $scratch"
    mkdir -p "$scratch"
    # --sanitize=fuzzer --sanitize=address set up the C targets (-fsanitize=...) and the link (libFuzzer,
    # ASan runtime). But SwiftPM passes them to swiftc as two flags, `-sanitize=fuzzer -sanitize=address`,
    # in the order of a Set (it changes from one swift-build process to the next), and the Swift driver
    # keeps only the last -sanitize= flag for each compile job: every Swift module came out with either
    # ASan or coverage, never both. The one combined flag, which -Xswiftc puts after SwiftPM's own,
    # is the one the driver keeps, for every Swift module of every package in the build.
    # SWIFT_DETERMINISTIC_HASHING fixes that Set order, so that the command lines, and so the build,
    # stay the same from one run to the next (otherwise each run rebuilds the modules whose order flipped).
    if ! (cd "$here" && SWIFT_DETERMINISTIC_HASHING=1 nice -n 5 swift build -c release --sanitize=fuzzer --sanitize=address \
            -Xswiftc -sanitize=fuzzer,address --scratch-path "$scratch" >"$scratch/build.log" 2>&1); then
        grep -v 'Cannot export' "$scratch/build.log" | grep -E 'error' | head -20
        echo "fuzz: the build failed (log $scratch/build.log)" >&2
        exit 1
    fi
    grep -E '^Build' "$scratch/build.log" || true
}
bin="$scratch/release"
[ $build -eq 1 ] && build_targets
for t in "${targets[@]}"; do [ -x "$bin/$t" ] || { echo "fuzz: $t was not built" >&2; exit 1; }; done

# Every Swift module of the engine, the stages and the targets must carry both instrumentations:
# coverage counters (a __sancov_cntrs section) and ASan checks (calls to __asan_*).
uninstrumented=()
for dir in "$bin"/*Stage.build "$bin"/Switchyard*.build "$bin"/FuzzSupport.build "$bin"/fuzz_*.build; do
    [ -d "$dir" ] || continue
    objects=("$dir"/*.o)
    [ -e "${objects[0]}" ] || continue
    module="$(basename "$dir" .build)"
    # (grep reads everything: with -q it would stop early and pipefail would count the SIGPIPE.)
    objdump -h "${objects[@]}" 2>/dev/null | grep '__sancov_cntrs' >/dev/null || uninstrumented+=("$module (no coverage)")
    nm -u "${objects[@]}" 2>/dev/null | grep '__asan_' >/dev/null || uninstrumented+=("$module (no ASan)")
done
if [ ${#uninstrumented[@]} -gt 0 ]; then
    echo "fuzz: the build is not instrumented: ${uninstrumented[*]} (remove $scratch and run again)" >&2
    exit 1
fi

# Leaks are not checked (DPDK's and the Swift runtime's one-time allocations); the Swift
# backtracer is off so that libFuzzer's own crash handling reports and saves the input.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:${ASAN_OPTIONS:-}"
export SWIFT_BACKTRACE="enable=no"

corpus_name() { echo "${1#fuzz-}"; }

if [ "$mode" = make ]; then
    for t in "${targets[@]}"; do
        dir="$here/Corpus/$(corpus_name "$t")"
        rm -rf "$dir"
        SWITCHYARD_GOLDEN_DIR="$root/Tests/Golden/host1" SWITCHYARD_FUZZ_WRITE_SEEDS="$dir" "$bin/$t"
        echo "fuzz: $t: $(ls "$dir" | wc -l) seeds in Corpus/$(corpus_name "$t")"
    done
    exit 0
fi

check_corpus() {
    # Replays every seed once (libFuzzer runs the files it is given), saving what each stage
    # emitted; then tshark (checksums validated) must find no packet malformed, with a bad
    # checksum or an expert error that its input did not already have, and none at all among
    # the packets built from scratch.
    local out t name pairs built new_bad built_bad failed=0
    out="$(mktemp -d)"
    prefs=(-o ip.check_checksum:TRUE -o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE
           -o tcp.analyze_sequence_numbers:FALSE)
    # Frame numbers tshark finds malformed, with a bad checksum or an expert error, into $2.
    bad_frames() {
        tshark -r "$1" "${prefs[@]}" -Y '_ws.malformed || _ws.expert.severity == error' -T fields -e frame.number \
            2>"$2.err" | sort >"$2" || { echo "fuzz: tshark failed on $1: $(grep -v 'Running as' "$2.err")"; return 1; }
    }
    for t in "${targets[@]}"; do
        [ "$t" = fuzz-gossip ] && continue # no packets out
        name="$(corpus_name "$t")"
        SWITCHYARD_FUZZ_OUTPUT="$out" "$bin/$t" -runs=0 "$here/Corpus/$name"/* >"$out/$name.log" 2>&1 || {
            echo "fuzz: $t failed on its seed corpus:"; tail -20 "$out/$name.log"; failed=1; continue; }
        pairs=$(tshark -r "$out/$name-out.pcap" 2>/dev/null | wc -l)
        built=$(tshark -r "$out/$name-built.pcap" 2>/dev/null | wc -l)
        bad_frames "$out/$name-in.pcap" "$out/$name-in.bad" && bad_frames "$out/$name-out.pcap" "$out/$name-out.bad" \
            && bad_frames "$out/$name-built.pcap" "$out/$name-built.bad" || { failed=1; continue; }
        new_bad=$(comm -13 "$out/$name-in.bad" "$out/$name-out.bad" | tr '\n' ' ')
        built_bad=$(tr '\n' ' ' <"$out/$name-built.bad")
        if [ -n "$new_bad$built_bad" ]; then
            echo "fuzz: $t: tshark finds outputs malformed: derived frames [$new_bad] built frames [$built_bad] (pcaps kept in $out)"
            failed=1
        else
            echo "fuzz: $t: $pairs packets passed on and $built built from $(ls "$here/Corpus/$name" | wc -l) seeds: tshark finds none malformed"
        fi
    done
    [ $failed -eq 0 ] && rm -rf "$out"
    return $failed
}

if [ "$mode" = check ]; then
    check_corpus
    exit $?
fi
# Fuzzing starts with the corpus check, so one command (CI's) covers both.
check_corpus || exit 1

failed=0
for t in "${targets[@]}"; do
    name="$(corpus_name "$t")"
    work="$scratch/corpus/$name"
    crashes="$here/crashes/$name"
    mkdir -p "$work" "$crashes"
    log="$scratch/$name.log"
    set +e
    "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=2100 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$work" "$here/Corpus/$name" >"$log" 2>&1
    rc=$?
    set -e
    status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    cov=$(echo "$status" | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
    corp=$(echo "$status" | grep -oE 'corp: [0-9]+' | awk '{print $2}' || true)
    echo "  $status"
    if [ $rc -ne 0 ]; then
        crash=$(grep -oE "Test unit written to .*" "$log" | sed 's/Test unit written to //' | tail -1)
        grep -E 'INVARIANT VIOLATED|ERROR: AddressSanitizer|Fatal error|deadly signal' "$log" | head -3 | sed 's/^/  /'
        echo "fuzz: $t: CRASH after ${runs:-?} runs: ${crash:-see $log} (log $log)"
        failed=1
    elif [ -z "$cov" ] || grep -q 'Is the code instrumented for coverage' "$log"; then
        echo "fuzz: $t: no coverage reached: the build is not instrumented (remove $scratch and run again)"
        failed=1
    else
        echo "fuzz: $t: ${runs:-?} runs in $seconds s, ${cov:-cov: ?}, corpus ${corp:-?} inputs, no crash"
    fi
done
exit $failed
