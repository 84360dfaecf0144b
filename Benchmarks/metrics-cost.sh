#!/usr/bin/env bash
# The cost of the Prometheus endpoint: the whole pipeline's steady-state Mpps (one lcore, 4k flows,
# net_pcap with infinite_rx=1 into net_null, Benchmarks/Throughput/pipeline.yaml) with a real
# Prometheus server scraping /metrics every second, against the same run without the endpoint.
# Prometheus runs through both (scraping a closed port in the runs without), so only the engine's
# side differs. The runs alternate; the medians are compared.
#
#   Benchmarks/metrics-cost.sh              # ROUNDS=3 SECONDS_PER_RUN=8 WARMUP=2 by default
#
# Prints one line per run, then: without_mpps=X with_mpps=Y change=Z%
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
WARMUP=${WARMUP:-2}
CPUS=$(nproc)
WORK=$(mktemp -d /tmp/switchyard-metrics-cost.XXXXXX)
PROMETHEUS_PID=""
cleanup() {
    if [ -n "$PROMETHEUS_PID" ]; then kill "$PROMETHEUS_PID" 2>/dev/null || true; wait "$PROMETHEUS_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

swift build -c release --product switchyard >/dev/null
BIN=$(swift build -c release --show-bin-path)/switchyard

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
METRICS_PORT=$(free_port)
PROMETHEUS_PORT=$(free_port)

"$BIN" generate --output "$WORK/flows-4k.pcap" --count 4096 --flows 4096 --tcp-flags ack >/dev/null
sed -e "s|TRAFFIC|rx_pcap=$WORK/flows-4k.pcap|" -e "s|QUEUES|1|g" -e "s|MBUFS|32767|" Benchmarks/Throughput/pipeline.yaml \
    | awk -v l="  - { id: 1, cpu: $((1 % CPUS)), idle: busy, poll: [ { port: wire, queue: 0, to: classify } ] }" \
        '{ if ($0 == "LCORES") print l; else print }' > "$WORK/pipeline.yaml"

cat > "$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: switchyard
    static_configs:
      - targets: ['127.0.0.1:$METRICS_PORT']
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --log.level=error >"$WORK/prometheus.log" 2>&1 &
PROMETHEUS_PID=$!
for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null && break
    sleep 0.5
done
curl -sf "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null || { echo "metrics-cost.sh: Prometheus did not start" >&2; cat "$WORK/prometheus.log" >&2; exit 1; }

run() { # extra switchyard arguments → steady-state Mpps
    "$BIN" run --config "$WORK/pipeline.yaml" --duration "$SECONDS_PER_RUN" --warmup "$WARMUP" "$@" 2>"$WORK/run.log" \
        | sed -n 's/^steady state .*: \([0-9.]*\) Mpps over.*/\1/p'
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print v[int((NR + 1) / 2)] }'; }

declare -a WITHOUT WITH
for ((round = 1; round <= ROUNDS; round++)); do
    a=$(run); WITHOUT+=("$a"); echo "round $round: without the endpoint         $a Mpps"
    b=$(run --metrics-listen "127.0.0.1:$METRICS_PORT"); WITH+=("$b"); echo "round $round: scraped every second          $b Mpps"
done
query() { curl -s "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" --data-urlencode "query=$1" | sed -n 's/.*"value":\[[0-9.]*,"\([^"]*\)"\].*/\1/p'; }
scrapes=$(query 'count_over_time(up{job="switchyard"}[10m])')
successful=$(query 'sum_over_time(up{job="switchyard"}[10m])')
duration=$(query 'avg_over_time((scrape_duration_seconds{job="switchyard"} and up{job="switchyard"} == 1)[10m:1s]) * 1000')
samples=$(query 'max_over_time(scrape_samples_scraped{job="switchyard"}[10m])')
wm=$(printf '%s\n' "${WITHOUT[@]}" | median)
sm=$(printf '%s\n' "${WITH[@]}" | median)
echo "Prometheus: ${successful:-?} successful scrapes of ${scrapes:-?} attempts (the runs without the endpoint refuse them)"
echo "a scrape: ${samples:-?} samples, ${duration:-?} ms on average (Prometheus's scrape_duration_seconds, successful scrapes)"
echo "medians over $ROUNDS rounds ($CPUS CPUs, $([ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" = "0" ] && echo no-huge || echo hugepages)):"
echo "without_mpps=$wm with_mpps=$sm change=$(awk -v a="$sm" -v b="$wm" 'BEGIN { printf "%+.1f", (b > 0 ? (a - b) * 100 / b : 0) }')%"
