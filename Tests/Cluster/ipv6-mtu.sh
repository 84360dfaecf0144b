#!/usr/bin/env bash
# IPv6, MTU and fragments end to end (issue 17), in network namespaces it creates and removes itself
# (Tests/Cluster/README.md, "ipv6-mtu.sh": topology, phases, what each one asserts).
#
#   Tests/Cluster/ipv6-mtu.sh [--binary PATH] [--keep-logs DIR]
#
# Three Switchyard hosts on an IPv6 underlay (VXLAN with IPv6 outer headers, a jumbo segment),
# gossiping over IPv6, behind a Linux router that spreads an IPv6 VIP over them by ECMP as they
# announce it over BGP (IPv6 sessions, BIRD 2) and an IPv4 VIP by a static ECMP route with IPv6 next
# hops; a client next to the router (MTU 1500) and one behind a
# hop whose link to the router has MTU 1400. Phases: full-size packets encapsulated over the jumbo
# segment without any ICMP; downloads and uploads through the 1400 hop with MSS clamping, then with
# the kernels' path MTU discovery (the router's ICMP errors translated to the right backend);
# UDP datagrams larger than the MTU, fragmented by the client's kernel and by this test in
# reverse and shuffled order, whole at the backend of their flow; then, without jumbo frames and
# over GUE, encapsulate's own ICMP errors teaching the client the path MTU. Every payload is compared byte
# for byte. The last line is `transfers=N completed=N datagrams=N whole=N broken=N`.
# Needs root, iproute2, ethtool, curl, python3 and BIRD 2. Exit status: 0 every check passed; 1 a
# check failed; 2 the test could not run (setup).
set -Eeuo pipefail

# SIGINT and SIGTERM unblocked first (signals.sh says why).
source "$(dirname "$0")/signals.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINARY=""
KEEP_LOGS=""
GOSSIP_MODE=on
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--keep-logs DIR]" >&2; exit 2 ;;
    esac
done

# shellcheck source=lib.sh
source "$HERE/lib.sh"

HOSTS="1 2 3"
VIP6=fd00:19::1
VIP4=198.19.0.1
CLAMP=1340                  # services on port 81: 1340 + 20 (TCP) + 40 (IPv6) = 1400, the hop's MTU
SIZE=$((2 << 20))           # bytes per download or upload
PER_GROUP=3                 # transfers per (client, VIP family, direction)
ROUTER_MAC=02:00:00:00:00:01
NEAR_ROUTER_MAC=02:00:00:00:01:01
MTUPY() { "$PY" "$HERE/mtu.py" "$@"; }

# ns_add6 NAME [off]: a namespace with IPv6 (no DAD, no router solicitations); with `off`, IPv6 is
# off by default on the interfaces created in it later (the hosts: their af_packet ports).
ns_add6() {
    ip netns add "$P$1"
    NAMESPACES+=("$P$1")
    ip -n "$P$1" link set lo up
    ip netns exec "$P$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0
    if [ "${2:-}" = off ]; then ip netns exec "$P$1" sysctl -qw net.ipv6.conf.default.disable_ipv6=1; fi
}

mtu() { ip -n "$P$1" link set dev "$2" mtu "$3"; }

build_topology6() {
    say "building the topology (namespaces ${P}*)"
    ns_add6 router; ns_add6 near; ns_add6 hop; ns_add6 far
    for h in $HOSTS; do ns_add6 "h$h" off; ns_add6 "s$h"; done
    ip netns exec "${P}router" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1 \
        net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0 net.ipv4.conf.all.rp_filter=0
    ip netns exec "${P}hop" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
    # The hosts' segment (jumbo): a bridge in the router namespace, MTU 9000 on every port.
    ip -n "${P}router" link add br0 address "$ROUTER_MAC" mtu 9000 type bridge
    ip -n "${P}router" link set br0 up
    ip -n "${P}router" address add fd00::1/64 dev br0
    ip -n "${P}router" address add 198.18.0.1/24 dev br0
    # The gossip segment (IPv6 only).
    ip -n "${P}router" link add brg address 02:00:00:00:02:01 type bridge
    ip -n "${P}router" link set brg up
    ip -n "${P}router" address add fd00:2::1/64 dev brg
    # The near client: straight to the router, MTU 1500.
    veth near eth0 02:00:00:00:01:02 router n0 "$NEAR_ROUTER_MAC"
    ip -n "${P}near" address add fd00:1::2/64 dev eth0
    ip -n "${P}near" address add 198.18.1.2/24 dev eth0
    ip -n "${P}near" route add default via 198.18.1.1
    ip -n "${P}near" -6 route add default via fd00:1::1
    ip -n "${P}router" address add fd00:1::1/64 dev n0
    ip -n "${P}router" address add 198.18.1.1/24 dev n0
    # The far client: behind the hop; the hop's link to the router has MTU 1400.
    veth far eth0 02:00:00:00:03:02 hop a0 02:00:00:00:03:01
    ip -n "${P}far" address add fd00:3::2/64 dev eth0
    ip -n "${P}far" address add 198.18.3.2/24 dev eth0
    ip -n "${P}far" route add default via 198.18.3.1
    ip -n "${P}far" -6 route add default via fd00:3::1
    ip -n "${P}hop" address add fd00:3::1/64 dev a0
    ip -n "${P}hop" address add 198.18.3.1/24 dev a0
    veth hop b0 02:00:00:00:04:02 router f0 02:00:00:00:04:01
    mtu hop b0 1400; mtu router f0 1400
    ip -n "${P}hop" address add fd00:4::2/64 dev b0
    ip -n "${P}hop" address add 198.18.4.2/24 dev b0
    ip -n "${P}hop" route add default via 198.18.4.1
    ip -n "${P}hop" -6 route add default via fd00:4::1
    ip -n "${P}router" address add fd00:4::1/64 dev f0
    ip -n "${P}router" address add 198.18.4.1/24 dev f0
    ip -n "${P}router" route add 198.18.3.0/24 via 198.18.4.2
    ip -n "${P}router" -6 route add fd00:3::/64 via fd00:4::2
    ip netns exec "${P}far" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
    ip netns exec "${P}near" sysctl -qw net.ipv4.ip_local_port_range="10000 65000"
    local nexthops4=""
    for h in $HOSTS; do
        # Uplink: up0 (DPDK net_af_packet, no address, IPv6 off) in hN, its peer uN a port of br0.
        veth "h$h" up0 "02:00:00:00:00:1$h" router "u$h" "02:00:00:00:0f:1$h"
        mtu "h$h" up0 9000; mtu router "u$h" 9000
        ip -n "${P}router" link set "u$h" master br0
        bridge -n "${P}router" link set dev "u$h" flood off
        bridge -n "${P}router" fdb add "02:00:00:00:00:1$h" dev "u$h" master static
        # Gossip: gs0 (kernel, IPv6) in hN, its peer gN a port of brg.
        veth "h$h" gs0 "02:00:00:00:02:1$h" router "g$h" "02:00:00:00:0e:1$h"
        ip -n "${P}router" link set "g$h" master brg
        ip netns exec "${P}h$h" sysctl -qw net.ipv6.conf.gs0.disable_ipv6=0 net.ipv6.conf.gs0.accept_dad=0
        ip -n "${P}h$h" address add "fd00:2::1$h/64" dev gs0
        # Backends: bk0 (DPDK net_af_packet) in hN, eth0 in sN; MTU 9000 (a reassembled datagram
        # passes whole). The server's gateway is the host's address, its MAC bk0's (static).
        veth "h$h" bk0 "02:00:00:00:1$h:01" "s$h" eth0 "02:00:00:00:1$h:10"
        mtu "h$h" bk0 9000; mtu "s$h" eth0 9000
        ip -n "${P}s$h" address add "198.18.10$h.10/24" dev eth0
        ip -n "${P}s$h" address add "fd00:10$h::10/64" dev eth0
        ip -n "${P}s$h" neigh add "198.18.0.1$h" lladdr "02:00:00:00:1$h:01" dev eth0 nud permanent
        ip -n "${P}s$h" route add default via "198.18.0.1$h" dev eth0 onlink
        ip -n "${P}s$h" neigh add "fd00::1$h" lladdr "02:00:00:00:1$h:01" dev eth0 nud permanent
        ip -n "${P}s$h" -6 route add default via "fd00::1$h" dev eth0 onlink
        nexthops4+=" nexthop via inet6 fd00::1$h dev br0"
    done
    # The IPv6 VIP comes from BGP (start_router_bird6). The IPv4 VIP: one static multipath route over
    # the hosts' IPv6 addresses (RFC 5549), since the hosts have no IPv4 uplink address to announce
    # it with. The router resolves the hosts' addresses by neighbour discovery, which classify answers.
    ip -n "${P}router" route add "$VIP4/32" $nexthops4
}

# render6 HOST FILE [ENCAP_MTU] [NEIGHBOURS] [TUNNEL]: host HOST's configuration: encapsulate's mtu
# (4000 unless given); NEIGHBOURS `static` (default: every IPv6 next hop a static neighbour of the
# forward stages, `resolve: false`) or `nd` (the IPv6 next hops are resolved by neighbour
# solicitations from the host's address, `source_ipv6`; the IPv4 ones stay static); TUNNEL the
# `cluster.tunnel` (default VXLAN, port 4789, VNI 42).
render6() {
    local h=$1 file=$2 encap_mtu=${3:-4000} tunnel=${5:-"{ kind: vxlan, port: 4789, vni: 42 }"} members="" resolve="resolve: false" six_b="" six_u="" backends6="" backends6c="" backends4="" backends4c="" udp6="" udp4="" n
    for n in $HOSTS; do
        members+="{ host: $n, address: \"fd00:2::1$n\" }, "
        backends6+="        - { host: $n, address: \"fd00:10$n::10\", port: 8080 }"$'\n'
        backends6c+="        - { host: $n, address: \"fd00:10$n::10\", port: 8081 }"$'\n'
        udp6+="        - { host: $n, address: \"fd00:10$n::10\", port: 9000 }"$'\n'
        backends4+="        - { host: $n, address: 198.18.10$n.10, port: 8080 }"$'\n'
        backends4c+="        - { host: $n, address: 198.18.10$n.10, port: 8081 }"$'\n'
        udp4+="        - { host: $n, address: 198.18.10$n.10, port: 9000 }"$'\n'
        six_u+="      - { address: \"fd00::1$n\", mac: \"02:00:00:00:00:1$n\" }"$'\n'
    done
    if [ "${4:-static}" = nd ]; then
        resolve="source_ipv6: \"fd00::1$h\""
        six_u=""
    else
        six_b="      - { address: \"fd00:10$h::10\", mac: \"02:00:00:00:1$h:10\" }"$'\n'
        six_u="      - { address: \"fd00::1\", mac: \"$ROUTER_MAC\" }"$'\n'"$six_u"
    fi
    cat >"$file" <<YAML
# Host $h of ipv6-mtu.sh (Tests/Cluster/README.md). IPv6 underlay (VXLAN, outer IPv6), jumbo uplink.
#
#  uplink rx (up0) ─► classify ─vip─► fragments ─► clamp-in ─► owner ─local──► translate-in ─► to-backends ─► port:backends
#                        │                                           └─remote─► encap ─► to-uplink ─► port:uplink
#                        ├─tunnel─► decap ─► classify-tunnel ─vip─► fragments
#                        └─answer─► port:uplink   (ND and ARP for this host's address)
#  backends rx (bk0) ─► classify-backends ─reply─► clamp-out ─► translate-out ─► to-uplink ─► port:uplink
eal:
  hugepages: off
  memory_mb: 256
  control_cpu: 0
mempool:
  data_room: 4224              # 4096-byte af_packet frames (framesz) + 128 headroom
burst_size: 64                 # the default
ports:
  # No port \`mtu\`: net_af_packet reports max_rx_pktlen 1518, so it accepts none above 1500; it
  # receives and sends any frame that fits its 4096-byte ring frames (framesz), and the jumbo MTU
  # (9000) is the veths'.
  - name: uplink
    device: net_af_packet0,iface=up0,framesz=4096
    promiscuous: false
  - name: backends
    device: net_af_packet1,iface=bk0,framesz=4096
    promiscuous: false
stages:
  - name: classify
    kind: classify
    fragments: vip
    next: { vip: fragments, reply: drop, tunnel: decap, answer: port:uplink, local: drop, other: drop }
  - name: decap
    kind: decapsulate
    next: { inner: classify-tunnel }
  - name: classify-tunnel
    kind: classify
    input: tunnel
    fragments: vip
    next: { vip: fragments, reply: drop, tunnel: drop, answer: drop, local: drop, other: drop }
  - name: fragments
    kind: fragments
    next: { flow: clamp-in }
  - name: clamp-in
    kind: mss-clamp
    next: { out: owner }
  - name: owner
    kind: ownership-lookup
    next: { local: translate-in, remote: encap }
  - name: translate-in
    kind: tuple-translate
    next: { out: to-backends }
  - name: to-backends
    kind: forward
    port: backends
    $resolve
    neighbors:
      - { address: 198.18.10$h.10, mac: "02:00:00:00:1$h:10" }
$six_b    next: { out: port:backends, resolve: port:backends }
  - name: encap
    kind: encapsulate
    mtu: $encap_mtu
    next: { out: to-uplink, too-big: to-uplink }
  - name: classify-backends
    kind: classify
    side: backends
    next: { vip: drop, reply: clamp-out, tunnel: drop, answer: port:backends, local: drop, other: drop }
  - name: clamp-out
    kind: mss-clamp
    next: { out: translate-out }
  - name: translate-out
    kind: tuple-translate
    next: { out: to-uplink }
  - name: to-uplink
    kind: forward
    port: uplink
    $resolve
    routes:
      - { prefix: "fd00::/64" }                   # the hosts' segment: peers directly
      - { prefix: "::/0", via: "fd00::1" }        # IPv6 clients: through the router
      - { prefix: 0.0.0.0/0, via: 198.18.0.1 }    # IPv4 clients: through the router
    neighbors:
      - { address: 198.18.0.1, mac: "$ROUTER_MAC" }
$six_u    next: { out: port:uplink, resolve: port:uplink }
lcores:
  - id: 1
    cpu: $CPU
    idle: backoff
    idle_sleep_us: 200
    poll:
      - { port: uplink, queue: 0, to: classify }
      - { port: backends, queue: 0, to: classify-backends }
cluster:
  host: $h
  hosts:
    - { id: 1, address: "fd00::11" }
    - { id: 2, address: "fd00::12" }
    - { id: 3, address: "fd00::13" }
  tunnel: $tunnel
  services:
    - name: web6
      vip: "$VIP6"
      protocol: tcp
      port: 80
      backends:
$backends6    - name: web6-clamp
      vip: "$VIP6"
      protocol: tcp
      port: 81
      mss_clamp: $CLAMP
      backends:
$backends6c    - name: udp6
      vip: "$VIP6"
      protocol: udp
      port: 9000
      backends:
$udp6    - name: web4
      vip: $VIP4
      protocol: tcp
      port: 80
      backends:
$backends4    - name: web4-clamp
      vip: $VIP4
      protocol: tcp
      port: 81
      mss_clamp: $CLAMP
      backends:
$backends4c    - name: udp4
      vip: $VIP4
      protocol: udp
      port: 9000
      backends:
$udp4  connections:
    capacity: 65536
  gossip: { key: "$GOSSIP_KEY", heartbeat_ms: 100, peer_timeout_ms: 1000, members: [${members%, }] }
bgp:                           # announces the IPv6 VIP (next_hop6: the cluster address) over an IPv6 session
  local_as: 65001
  router_id: 198.18.2.1$h
  peers: [{ address: "fd00:2::1", as: 65000 }]
  hold_time: 3
  drain_seconds: 1
  run_dir: $WORK/bird-h$h
YAML
}

# The router's BIRD: one IPv6 BGP session per host over brg, the IPv6 VIP into the kernel as one
# multipath route over the hosts that announce it.
start_router_bird6() {
    cat >"$WORK/router-bird.conf" <<BIRD
router id 198.18.2.1;
log "$WORK/router-bird.log" all;
protocol device { scan time 10; }
protocol kernel {
    ipv6 { import none; export all; };
    merge paths on limit 16;
}
template bgp switchyard_host {
    local fd00:2::1 as 65000;
    hold time 3; keepalive time 1;
    connect delay time 1; connect retry time 2; error wait time 1, 10;
    ipv6 { import where net = $VIP6/128; export none; };
}
BIRD
    for h in $HOSTS; do echo "protocol bgp h$h from switchyard_host { neighbor fd00:2::1$h as 65001; }" >>"$WORK/router-bird.conf"; done
    ip netns exec "${P}router" bird -f -c "$WORK/router-bird.conf" -s "$WORK/router-bird.ctl" >"$WORK/router-bird.out" 2>&1 &
    ALL_PIDS+=($!)
    for _ in $(seq 50); do [ -S "$WORK/router-bird.ctl" ] && break; sleep 0.1; done
    [ -S "$WORK/router-bird.ctl" ] || { cat "$WORK/router-bird.out"; die "the router's BIRD did not start"; }
}

# route6_hosts: the hosts in the router's route to the IPv6 VIP now, as BGP put it there ("1 2 3").
route6_hosts() {
    ip -n "${P}router" -6 route show "$VIP6" | grep -o 'via fd00::1[1-3]' | sed 's/via fd00::1//' | sort | tr '\n' ' ' | sed 's/ $//'
}

# expect_route6 EVENT: waits (JOIN_BOUND) until every host announces the IPv6 VIP (BGP, the router's table).
expect_route6() {
    local since
    since=$(now)
    while [ "$(route6_hosts)" != "$HOSTS" ]; do
        if awk -v a="$since" -v b="$(now)" -v l="$JOIN_BOUND" 'BEGIN { exit !(b - a > l) }'; then
            fail "$1: the router's route to $VIP6 is over host(s) '$(route6_hosts)', expected '$HOSTS'"
            birdc -s "$WORK/router-bird.ctl" show protocols | sed 's/^/    /' || true
            return 0
        fi
        sleep 0.05
    done
    say "router (BGP): $VIP6 via hosts $HOSTS, $(awk -v a="$since" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }') s after: $1"
}

start_servers6() {
    for h in $HOSTS; do
        ip netns exec "${P}s$h" "$PY" "$HERE/mtu.py" serve --backend "b$h" --log "$WORK/server-b$h.jsonl" \
            >"$WORK/s$h.out" 2>"$WORK/s$h.err" &
        ALL_PIDS+=($!)
    done
    for h in $HOSTS; do
        for _ in $(seq 100); do grep -q ready "$WORK/s$h.out" 2>/dev/null && break; sleep 0.1; done
        grep -q ready "$WORK/s$h.out" || { cat "$WORK/s$h.err"; die "server b$h did not start"; }
    done
}

# icmp NS: the namespace's ICMP error counters (absolute): "frag-needed-out too-big-out unreach-in too-big-in".
icmp() {
    ip netns exec "$P$1" nstat -saz IcmpOutDestUnreachs Icmp6OutPktTooBigs IcmpInDestUnreachs Icmp6InPktTooBigs 2>/dev/null |
        awk '/IcmpOutDestUnreachs/ { a = $2 } /Icmp6OutPktTooBigs/ { b = $2 } /IcmpInDestUnreachs/ { c = $2 } /Icmp6InPktTooBigs/ { d = $2 }
             END { printf "%d %d %d %d\n", a, b, c, d }'
}

# pmtu_cached S CLIENT: the path MTU server namespace sS has learnt for CLIENT (empty: none).
pmtu_cached() { ip -n "${P}s$1" route get "$2" 2>/dev/null | grep -o 'mtu [0-9]*' | awk '{ print $2 }' || true; }

# transfers CLIENT_NS LABEL PORT: PER_GROUP downloads to each VIP at once, then PER_GROUP uploads
# to each at once. Downloads first: an upload through the 1400 hop teaches the client the path MTU
# to the VIP, and a connection opened after that announces the smaller MSS, so a download would
# never need the router's ICMP error.
transfers() {
    local ns=$1 label=$2 port=$3 status=0 files=() mode vip prefix
    for mode in download upload; do
        local pids=()
        for vip in "$VIP6" "$VIP4"; do
            prefix="$label-$([ "$vip" = "$VIP6" ] && echo v6 || echo v4)-$mode"
            ip netns exec "$P$ns" "$PY" "$HERE/mtu.py" transfer --host "$vip" --port "$port" --prefix "$prefix" \
                --count "$PER_GROUP" --size "$SIZE" --mode "$mode" --out "$WORK/$prefix.jsonl" >"$WORK/$prefix.log" 2>&1 &
            pids+=($!); ALL_PIDS+=($!)
            files+=("$WORK/$prefix.jsonl")
        done
        for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    done
    [ "$status" -eq 0 ] || fail "$label: a client driver failed: $(cat "$WORK/$label"-*.log | tail -n 5)"
    MTUPY check --results "${files[@]}" --servers "$WORK/server-b*.jsonl" --label "$label" --totals "$TOTALS" ||
        fail "$label: transfers broken"
}

# live STAGE COUNTER: the counter summed over the running hosts (`ctl stats --json --all`).
live() {
    local h total=0 value
    for h in $HOSTS; do
        "$BINARY" ctl --socket "$WORK/h$h.sock" stats --json --all >"$WORK/stats-h$h.json" 2>/dev/null || { echo -1; return 0; }
        value=$("$PY" -c '
import json, sys
def walk(node):
    if isinstance(node, dict):
        if node.get("scope") == "stage " + sys.argv[1] and isinstance(node.get("counters"), dict):
            yield node["counters"].get(sys.argv[2], 0)
        else:
            for child in node.values(): yield from walk(child)
    elif isinstance(node, list):
        for child in node: yield from walk(child)
print(sum(v if isinstance(v, int) else v.get("value", 0) for v in walk(json.load(open(sys.argv[3])))))' "$1" "$2" "$WORK/stats-h$h.json")
        total=$((total + value))
    done
    echo "$total"
}

# ── Run ────────────────────────────────────────────────────────────────────────────────────────
build_topology6
start_router_bird6
start_servers6
for h in $HOSTS; do render6 "$h" "$WORK/h$h.yaml"; done
"$BINARY" validate "$WORK/h1.yaml" >"$WORK/validate.txt" 2>&1 || { cat "$WORK/validate.txt"; die "switchyard validate rejects the host configuration"; }
for h in $HOSTS; do start_host "$h" "$WORK/h$h.yaml"; done

# Gossip over IPv6: every host's socket on [fd00:2::1N]:7946, and each synchronised with its peers.
for h in $HOSTS; do
    [ -n "$(ip netns exec "${P}h$h" ss -Hlun "sport = :7946" | grep 'fd00:2::1')" ] ||
        fail "host $h: no gossip socket on [fd00:2::1$h]:7946"
    for _ in $(seq 100); do grep -q "gossip: synchronised" "$WORK/h$h.1.log" && break; sleep 0.1; done
    grep -q "gossip: synchronised" "$WORK/h$h.1.log" || fail "host $h: gossip over IPv6 never synchronised"
done
say "gossip: every host listens on [fd00:2::1N]:7946 and is synchronised"
expect_route6 "hosts 1 2 3 started"
grep -q "bgp: announce $VIP6" "$WORK/h1.1.log" || fail "host 1 did not log the announcement of $VIP6"

warm() {
    for _ in $(seq 40); do
        ip netns exec "${P}near" curl -s -o /dev/null --max-time 2 "$1/data?id=warmup-$RANDOM&size=16" && return 0
        sleep 0.5
    done
    die "no answer from $1 after 20 s"
}
warm "http://[$VIP6]"
warm "http://$VIP4"
say "both VIPs answer"

say "phase 1: full-size packets from the near client (MTU 1500) over the jumbo segment: no ICMP"
read -r _ _ near_unreach0 near_toobig0 <<<"$(icmp near)"
E0=$(live encap encapsulated)
transfers near jumbo 80
E1=$(live encap encapsulated)
say "  the hosts encapsulated $((E1 - E0)) packets of these transfers to their owners"
[ $((E1 - E0)) -gt 0 ] || fail "phase 1: no packet was encapsulated: no transfer crossed the underlay"
read -r _ _ near_unreach1 near_toobig1 <<<"$(icmp near)"
if [ "$near_unreach1" -ne "$near_unreach0" ] || [ "$near_toobig1" -ne "$near_toobig0" ]; then
    fail "phase 1: the near client received ICMP errors (unreachable $((near_unreach1 - near_unreach0)), too-big $((near_toobig1 - near_toobig0)))"
else
    say "  the near client received no ICMP error"
fi

say "phase 2: through the MTU 1400 hop with MSS clamping ($CLAMP, port 81): no ICMP needed"
read -r r_frag0 r_big0 _ _ <<<"$(icmp router)"
read -r h_frag0 h_big0 _ _ <<<"$(icmp hop)"
transfers far clamp 81
E2=$(live encap encapsulated)
say "  the hosts encapsulated $((E2 - E1)) packets of these transfers to their owners"
[ $((E2 - E1)) -gt 0 ] || fail "phase 2: no packet was encapsulated: no transfer crossed the underlay"
read -r r_frag1 r_big1 _ _ <<<"$(icmp router)"
read -r h_frag1 h_big1 _ _ <<<"$(icmp hop)"
if [ $((r_frag1 - r_frag0 + r_big1 - r_big0 + h_frag1 - h_frag0 + h_big1 - h_big0)) -ne 0 ]; then
    fail "phase 2: ICMP errors were sent (router: frag-needed $((r_frag1 - r_frag0)), too-big $((r_big1 - r_big0)); hop: $((h_frag1 - h_frag0)), $((h_big1 - h_big0)))"
else
    say "  neither the router nor the hop sent an ICMP error"
fi
for h in $HOSTS; do
    for client in 198.18.3.2 fd00:3::2; do
        [ -z "$(pmtu_cached "$h" "$client")" ] || fail "phase 2: server b$h has a path MTU cached for $client"
    done
done

say "phase 3: through the MTU 1400 hop with path MTU discovery (port 80)"
transfers far pmtu 80
E3=$(live encap encapsulated)
say "  the hosts encapsulated $((E3 - E2)) packets of these transfers to their owners"
[ $((E3 - E2)) -gt 0 ] || fail "phase 3: no packet was encapsulated: no transfer crossed the underlay"
read -r r_frag2 r_big2 _ _ <<<"$(icmp router)"
say "  the router sent $((r_frag2 - r_frag1)) ICMP frag-needed and $((r_big2 - r_big1)) ICMPv6 packet-too-big to the VIPs"
[ $((r_frag2 - r_frag1)) -gt 0 ] || fail "phase 3: the router sent no ICMP frag-needed (IPv4 downloads never hit the 1400 link?)"
[ $((r_big2 - r_big1)) -gt 0 ] || fail "phase 3: the router sent no ICMPv6 packet-too-big"
# Each server that answered a far download learnt the path MTU from the translated error.
for family in v6 v4; do
    client=$([ $family = v6 ] && echo fd00:3::2 || echo 198.18.3.2)
    for b in $(cat "$WORK/server-b"*.jsonl | grep "\"id\": \"pmtu-$family-download" | grep -o '"backend": "b[0-9]"' | grep -o 'b[0-9]' | sort -u); do
        cached=$(pmtu_cached "${b#b}" "$client")
        if [ "$cached" = 1400 ]; then say "  server $b: path MTU 1400 to $client (learnt from the translated ICMP error)"
        else fail "phase 3: server $b served a download to $client but has path MTU '${cached:-none}' for it, not 1400"; fi
    done
done

say "phase 4: UDP datagrams of 3000 bytes (MTU 1500): fragmented by the kernel, and sent in reverse and shuffled order"
udp_files=()
for vip in "$VIP6" "$VIP4"; do
    family=$([ "$vip" = "$VIP6" ] && echo v6 || echo v4)
    for order in kernel reverse middle; do
        prefix="udp-$family-$order"
        ip netns exec "${P}near" "$PY" "$HERE/mtu.py" udp --target "$vip" --port 9000 --prefix "$prefix" --count 8 \
            --size 3000 --order "$order" --ifname eth0 --dst-mac "$NEAR_ROUTER_MAC" --out "$WORK/$prefix.jsonl" \
            >"$WORK/$prefix.log" 2>&1 || fail "the UDP client $prefix failed: $(tail -n 3 "$WORK/$prefix.log")"
        udp_files+=("$WORK/$prefix.jsonl")
    done
done
sleep 1
MTUPY check --results "${udp_files[@]}" --servers "$WORK/server-b*.jsonl" --label "phase 4, fragmented datagrams" \
    --totals "$TOTALS" || fail "phase 4: datagrams lost, cut or at the wrong backend"

# ── Stop and read the counters ───────────────────────────────────────────────────────────────────
stop_hosts $HOSTS
sum() {  # sum STAGE COUNTER [RUN]: over the hosts' final counters (of run RUN, default 1)
    "$PY" -c '
import json, sys
print(sum(b["counters"].get(sys.argv[2], 0) for path in sys.argv[3:] for b in json.load(open(path))
          if b["scope"] == "stage " + sys.argv[1]))' "$1" "$2" "$WORK"/h[0-9]."${3:-1}".json
}
say "final counters (all hosts): encap encapsulated $(sum encap encapsulated), too-big $(sum encap too-big); translate-in icmp-error $(sum translate-in icmp-error); mss-clamp clamped $(sum clamp-in clamped) SYNs, $(sum clamp-out clamped) SYN-ACKs"
[ "$(sum encap too-big)" -eq 0 ] || fail "the jumbo underlay: encapsulate found packets too big for its mtu 4000"
[ "$(sum translate-in icmp-error)" -gt 0 ] || fail "no ICMP error was translated to a backend"
[ "$(sum clamp-in clamped)" -gt 0 ] && [ "$(sum clamp-out clamped)" -gt 0 ] || fail "mss-clamp clamped no SYN or no SYN-ACK"
# IPv6 fragments reach the engine as fragments (the af_packet socket reassembles IPv4 ones): the
# reordered ones were held until their first fragment came, and none timed out.
say "fragments stage (all hosts): $(sum fragments first-fragments) first, $(sum fragments later-fragments) later, $(sum fragments held) held, $(sum fragments released) released, $(sum fragments hold-timeout) timed out"
[ "$(sum fragments held)" -gt 0 ] || fail "no IPv6 fragment was held: the reordered fragments never reached the fragments stage out of order"
[ "$(sum fragments hold-timeout)" -eq 0 ] && [ "$(sum fragments hold-full)" -eq 0 ] || fail "fragments were dropped by the fragments stage"
# Gossip over IPv6 carried the flows: each host applied opens from its peers, and heard from and
# synchronised with each peer (final counters of run 1).
for h in $HOSTS; do
    line=$(MTUPY gossip --json "$WORK/h$h.1.json" --peers 2)
    say "  gossip, host $h: ${line#* }"
    [ "${line%% *}" = ok ] || fail "host $h: gossip over IPv6 carried no flows or missed a peer"
done
# The router resolved every host's IPv6 address by neighbour discovery, answered by classify.
for h in $HOSTS; do
    state=$(ip -n "${P}router" -6 neigh show "fd00::1$h" dev br0 | awk '{ print $NF }')
    case "$state" in REACHABLE|STALE|DELAY|PROBE) ;; *) fail "the router has no neighbour entry for host $h (fd00::1$h): '$state'" ;; esac
done
say "router: neighbour entries for fd00::11-13 (learnt by ND, answered by the hosts' classify: $(sum classify answered-nd) answers)"

# ── Phase 5: no jumbo frames; encapsulate's own ICMP errors teach the clients the path MTU ──────
say "phase 5: underlay MTU 1500 (encapsulate mtu 1500), GUE: full-size uploads from the near client get ICMP errors from the host that encapsulates;"
say "  the hosts' forward stages now resolve their IPv6 next hops (router, peers, servers) by neighbour discovery"
ip -n "${P}router" link set dev br0 mtu 1500
for h in $HOSTS; do mtu "h$h" up0 1500; mtu router "u$h" 1500; render6 "$h" "$WORK/h$h.small.yaml" 1500 nd "{ kind: gue }"; done
for h in $HOSTS; do start_host "$h" "$WORK/h$h.small.yaml"; done
for h in $HOSTS; do
    for _ in $(seq 100); do grep -q "gossip: synchronised" "$WORK/h$h.2.log" && break; sleep 0.1; done
done
expect_route6 "hosts 1 2 3 restarted"
warm "http://[$VIP6]"
read -r _ _ near_unreach2 near_toobig2 <<<"$(icmp near)"
PER_GROUP=6 transfers near small 80
read -r _ _ near_unreach3 near_toobig3 <<<"$(icmp near)"
say "  the near client received $((near_unreach3 - near_unreach2)) ICMP frag-needed and $((near_toobig3 - near_toobig2)) ICMPv6 packet-too-big"
for vip in "$VIP6" "$VIP4"; do
    cached=$(ip -n "${P}near" route get "$vip" | grep -o 'mtu [0-9]*' | awk '{ print $2 }' || true)
    if [ "$cached" = 1448 ]; then say "  near client: path MTU 1448 to $vip (1500 less the 52 bytes of IPv6 GUE)"
    else fail "phase 5: the near client's path MTU to $vip is '${cached:-none}', not 1448"; fi
done
stop_hosts $HOSTS
say "final counters (all hosts, phase 5): encap encapsulated $(sum encap encapsulated 2), icmp-too-big $(sum encap icmp-too-big 2)"
[ "$(sum encap icmp-too-big 2)" -gt 0 ] || fail "phase 5: encapsulate sent no ICMP error"
say "  neighbour discovery (phase 5, all hosts): to-uplink sent $(sum to-uplink nd-request 2) and to-backends $(sum to-backends nd-request 2) solicitations; classify learnt $(sum classify neighbor-learned 2) and classify-backends $(sum classify-backends neighbor-learned 2) neighbours"
[ "$(sum to-uplink nd-request 2)" -gt 0 ] && [ "$(sum to-backends nd-request 2)" -gt 0 ] || fail "phase 5: the forward stages sent no neighbour solicitation"

say "what each host dropped (stage drops, tx failures; the IPv6 multicast of the segments, such as MLD reports, goes to classify's \`other\`):"
for json in "$WORK"/h[0-9].*.json; do MTUPY drops --label "host $(basename "$json" .json)" --json "$json"; done
for ns in near far s1 s2 s3; do
    errors=$(ip netns exec "$P$ns" nstat -saz TcpInCsumErrors Udp6InCsumErrors UdpInCsumErrors 2>/dev/null | awk '{ n += $2 } END { print n + 0 }')
    [ "${errors:-0}" -eq 0 ] || fail "$ns received $errors TCP/UDP segments with a bad checksum"
done
[ "$FAILED" -eq 0 ] || diagnose
MTUPY totals "$TOTALS"
if [ "$FAILED" -ne 0 ]; then exit 1; fi
exit 0
