import ARCCounter
import CDPDK
import Benchmark
import CounterStage
import DropStage
import MacSwapStage
import SwitchyardCore
import SwitchyardPcap

/// Bursts per measured iteration: every metric is the total over 1,000 bursts of 32 packets
/// (the text output divides the `*` metrics by 1,000, so it reads per burst).
private let scaling = BenchmarkScalingFactor.kilo

/// ARC traffic of the measured loop, counted by ARCCounter on the benchmark thread only.
/// (The package's own .retainCount/.releaseCount crash Swift 6.3 on Linux: see ARCCounter.h.)
let retainCalls = BenchmarkMetric.custom("swift_retain calls")
let releaseCalls = BenchmarkMetric.custom("swift_release calls")

/// Pinned metrics, checked by `swift package benchmark thresholds check` against the p90 values in
/// Thresholds/StageBenchmarks.<name>.p90.json, with no tolerance either way.
private let pinned: [BenchmarkMetric] = [.mallocCountTotal, retainCalls, releaseCalls]
private let exact = BenchmarkThresholds(absolute: [.p90: 0])

private let metrics: [BenchmarkMetric] = [
    .wallClock, .throughput, .mallocCountTotal, .freeCountTotal, retainCalls, releaseCalls,
    // Left out on purpose:
    // .cpuTotal: the package reads it from /proc inside its malloc window, which adds 16 to 18 mallocs
    //   to every iteration (and its 10 ms resolution reads 0 for a 1,000-burst iteration anyway).
    // .instructions: perf_event counters are "not supported" on this VM (`perf stat -e instructions true`).
    // .retainCount, .releaseCount, .objectAllocCount: crash on Linux with Swift 6.3 (see ARCCounter.h).
]

/// What a benchmark measures: one burst through a stage (BurstBench) or a chain (ChainBench).
protocol MeasuredBurst {
    func runOnce()
    func destroy()
    /// The last packet's disposition after a burst (kept alive so the work is not optimised away).
    var lastDisposition: UInt8 { get }
}

extension BurstBench: MeasuredBurst {
    var lastDisposition: UInt8 { dispositions[count - 1] }
}

extension ChainBench: MeasuredBurst {
    var lastDisposition: UInt8 { dispositions[count - 1] }
}

extension GraphBench: MeasuredBurst {
    /// The pool's free count: the packets of each burst went out and came back.
    var lastDisposition: UInt8 { UInt8(truncatingIfNeeded: driver._withUnsafeGuaranteedRef { sy_mempool_avail($0.mempool) }) }
}

/// Holds one benchmark's fixture between its setup and teardown hooks (each benchmark runs in a
/// process of its own, but the closures are registered for all of them).
final class Slot<Bench: MeasuredBurst> {
    var bench: Bench?
}

/// Registers one benchmark that runs `make()`'s burst `scaledIterations` times per measurement,
/// exactly as the engine calls it. `check` runs once after setup, outside the measured region.
private func burstBenchmark<Bench: MeasuredBurst>(_ name: String, check: @escaping (Bench) -> Void = { _ in },
                                                  _ make: @escaping () throws -> Bench)
{
    let slot = Slot<Bench>()
    Benchmark(
        name,
        configuration: .init(
            metrics: metrics,
            timeUnits: .nanoseconds,
            warmupIterations: 10,
            scalingFactor: scaling,
            maxDuration: .seconds(1),
            maxIterations: 2_000,
            thresholds: Dictionary(uniqueKeysWithValues: pinned.map { ($0, exact) }),
            setup: {
                precondition(arc_counter_ready() == 1, "ARCCounter did not find the Swift runtime's functions")
                let bench = try make()
                check(bench)
                slot.bench = bench
            },
            teardown: {
                slot.bench?.destroy()
                slot.bench = nil
            })
    ) { benchmark in
        // Outside the measured loop: one load of a struct of pointers, and the iteration range.
        let bench = slot.bench.unsafelyUnwrapped
        let iterations = benchmark.scaledIterations
        // The measured region is the loop and nothing else: the explicit start and stop keep the
        // fixture load above and the custom-metric bookkeeping below out of the package's window.
        benchmark.startMeasurement()
        arc_counter_start()
        for _ in iterations {
            bench.runOnce()
        }
        arc_counter_stop()
        benchmark.stopMeasurement()
        blackHole(bench.lastDisposition)
        benchmark.measurement(retainCalls, Int(arc_counter_retains()))
        benchmark.measurement(releaseCalls, Int(arc_counter_releases()))
    }
}

/// A chain benchmark whose packets must all end with `disposition` (checked once in setup).
private func chainBenchmark(_ name: String, expect disposition: UInt8?, _ make: @escaping () throws -> ChainBench) {
    burstBenchmark(name, check: { bench in if let disposition { bench.check(allGo: disposition, name) } }, make)
}

final class GossipSlot {
    var bench: GossipBench?
}

/// The forward stage toward the backends, the peer and the VIP (every next hop static).
private let forwardParameters = """
    port: wire
    neighbors:
      - { address: 198.18.100.10, mac: "02:00:00:00:10:10" }
      - { address: 198.18.100.11, mac: "02:00:00:00:10:11" }
      - { address: 198.18.0.12, mac: "02:00:00:00:00:12" }
      - { address: 198.19.0.1, mac: "02:00:00:00:19:01" }
    """

let benchmarks: @Sendable () -> Void = {
    // The stages, as the engine runs them (one dynamic dispatch per burst through StageRunner).
    burstBenchmark("mac-swap") { try BurstBench.make(MacSwap.self) }
    burstBenchmark("counter") { try BurstBench.make(PacketCounter.self) }
    // drop's process() only writes dispositions and a counter; the engine frees the packets after it,
    // outside the stage, so the same mbufs can go through it again and again.
    burstBenchmark("drop") { try BurstBench.make(Drop.self) }

    // The capture tap at one edge (CaptureBench.swift): off (an empty slot), and armed with a filter
    // that matches nothing. Compare with mac-swap.
    burstBenchmark("capture-off") { try CaptureBench.make(filter: nil) }
    burstBenchmark("capture-on-filter-none") { try CaptureBench.make(filter: "udp port 1") }
    burstBenchmark("capture-on-filter-none-drop") { try CaptureBench.make(Drop.self, filter: "udp port 1") }

    // The single-IP-image stages, over 32 packets of 32 flows (TCP ACK and UDP, 64 bytes on the wire)
    // to the VIP. Earlier stages run once in setup (`before`) to fill the metadata; only `stages` is measured.
    let local = ChainBench.clusterYAML(remote: false), remote = ChainBench.clusterYAML(remote: true)
    chainBenchmark("classify", expect: 1) {
        try ChainBench.make(stages: [("classify", "{}")], cluster: local)
    }
    chainBenchmark("ownership-lookup", expect: 1) {
        try ChainBench.make(before: [("classify", "{}")], stages: [("ownership-lookup", "{}")], cluster: local)
    }
    chainBenchmark("tuple-translate", expect: 1) {
        try ChainBench.make(before: [("classify", "{}"), ("ownership-lookup", "{}")],
                            stages: [("tuple-translate", "{}")], cluster: local)
    }
    chainBenchmark("forward", expect: 1) {
        try ChainBench.make(stages: [("forward", forwardParameters)], cluster: local)
    }
    // Encapsulation grows every packet: each burst first restores the packets (`reset`, measured alone below).
    chainBenchmark("encapsulate+reset", expect: 1) {
        try ChainBench.make(before: [("classify", "{}"), ("ownership-lookup", "{}")], stages: [("encapsulate", "{}")],
                            cluster: remote, reset: true)
    }
    // Decapsulation: VXLAN from the peer host (198.18.0.12) around the same 64-byte packets.
    chainBenchmark("decapsulate+reset", expect: 1) {
        let inner = PacketBuilder().flowMix(count: 32, flows: 32, tcpFlags: 0x10)
        let tunnelled = inner.map {
            Frames.vxlan(outerSource: [198, 18, 0, 12], outerDestination: [198, 18, 0, 11], vni: 1, inner: $0)
        }
        return try ChainBench.make(before: [("classify", "{}")], stages: [("decapsulate", "{}")], cluster: local,
                                   reset: true, frames: tunnelled)
    }
    // The same over an IPv6 underlay (hosts fd00:18::11 and ::12): 70-byte outer headers and the
    // outer UDP checksum over every packet, as RFC 8200 requires.
    let remote6 = ChainBench.clusterYAML(remote: true, ipv6Underlay: true)
    chainBenchmark("encapsulate-ipv6+reset", expect: 1) {
        try ChainBench.make(before: [("classify", "{}"), ("ownership-lookup", "{}")], stages: [("encapsulate", "{}")],
                            cluster: remote6, reset: true)
    }
    chainBenchmark("decapsulate-ipv6+reset", expect: 1) {
        let inner = PacketBuilder().flowMix(count: 32, flows: 32, tcpFlags: 0x10)
        let peer: [UInt8] = [0xfd, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12]
        let here: [UInt8] = [0xfd, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]
        let tunnelled = inner.map {
            Frames.vxlan(outerSource: peer, outerDestination: here, vni: 1, inner: $0, udpChecksum: .computed)
        }
        return try ChainBench.make(before: [("classify", "{}")], stages: [("decapsulate", "{}")],
                                   cluster: ChainBench.clusterYAML(remote: false, ipv6Underlay: true),
                                   reset: true, frames: tunnelled)
    }
    // fragments: 8 UDP datagrams to the VIP, each cut into 4 IPv4 fragments, in order (per burst:
    // 8 first fragments learned, 24 later ones given their flow; nothing held).
    chainBenchmark("fragments", expect: 1) {
        var frames: [[UInt8]] = []
        for datagram in 0..<8 {
            let client: [UInt8] = [198, 18, 1, UInt8(datagram + 1)]
            let udp = Frames.udpDatagram(source: client, destination: [198, 19, 0, 1],
                                         sourcePort: UInt16(40000 + datagram), destinationPort: 53,
                                         payload: [UInt8](repeating: 7, count: 88), checksum: .computed)
            for piece in 0..<4 {
                frames.append(Frames.ipFrame(Frames.ipv4Packet(
                    source: client, destination: [198, 19, 0, 1], protocol: 17,
                    payload: Array(udp[piece * 24..<(piece + 1) * 24]),
                    fields: .init(identification: UInt16(datagram), moreFragments: piece < 3,
                                  fragmentOffset: UInt16(piece * 3)))))
            }
        }
        return try ChainBench.make(before: [("classify", "fragments: vip")], stages: [("fragments", "{}")],
                                   cluster: local, frames: frames)
    }
    // The same stage over whole packets (its cost on unfragmented traffic: one flag test each).
    chainBenchmark("fragments-whole", expect: 1) {
        try ChainBench.make(before: [("classify", "fragments: vip")], stages: [("fragments", "{}")], cluster: local)
    }
    // mss-clamp: 32 SYNs (32 flows) to web, whose service has mss_clamp: 1200, each with an MSS
    // option of 1460 that is lowered (restored before each burst: subtract `reset`).
    chainBenchmark("mss-clamp+reset", expect: 1) {
        let clamped = ChainBench.clusterYAML(remote: false)
            .replacingOccurrences(of: "    port: 80\n", with: "    port: 80\n    mss_clamp: 1200\n")
        let syns = (0..<32).map { flow -> [UInt8] in
            let port = UInt16(20000 + flow)
            // 24-byte header: data offset 6, SYN, an MSS option of 1460 (the TCP checksum is not checked).
            let segment: [UInt8] = [UInt8(port >> 8), UInt8(port & 0xff), 0, 80, 0, 0, 0, 1, 0, 0, 0, 0,
                                    0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 0x05, 0xb4]
            return Frames.ipFrame(Frames.ipv4Packet(source: [198, 18, 1, UInt8(flow + 1)], destination: [198, 19, 0, 1],
                                                    protocol: 6, payload: segment),
                                  link: Frames.Link(source: [2, 0, 0, 0, 0, 1], destination: [2, 0x70, 0x63, 0x61, 0x70, 0]))
        }
        return try ChainBench.make(before: [("classify", "{}")], stages: [("mss-clamp", "{}")], cluster: clamped,
                                   reset: true, frames: syns)
    }
    // Outbound connections (cluster.egress): 32 UDP flows of a resource to a server outside, whose
    // entries the first burst opened (so this is the established path: the outbound tuple's hash,
    // one probe's lookup, the rewrite); the packets are restored before each burst.
    let egress = ChainBench.clusterYAML(remote: false) + """

        egress:
          - address: 198.19.0.1
            resources: [198.18.100.0/24]
            destinations: [203.0.113.0/24]
            ports: { 1: "20000-29999", 2: "30000-39999" }
        """
    chainBenchmark("egress-translate+reset", expect: 1) {
        let frames = (0..<32).map { index in
            Frames.ipv4UDP(source: [198, 18, 100, 10], destination: [203, 0, 113, 5], sourcePort: UInt16(40000 + index),
                           destinationPort: 7000, payload: [UInt8](repeating: 0, count: 18))
        }
        return try ChainBench.make(before: [("classify", "{ side: backends }")], stages: [("egress-translate", "{}")],
                                   cluster: egress, reset: true, frames: frames)
    }
    // Replies to ports of host 2's range, on host 1: steered to host 2 by the port alone (unchanged).
    chainBenchmark("egress-return-remote", expect: 2) {
        let frames = (0..<32).map { index in
            Frames.ipv4UDP(source: [203, 0, 113, 5], destination: [198, 19, 0, 1], sourcePort: 7000,
                           destinationPort: UInt16(30000 + index), payload: [UInt8](repeating: 0, count: 18))
        }
        return try ChainBench.make(before: [("classify", "{}")], stages: [("egress-return", "{}")], cluster: egress,
                                   frames: frames)
    }
    chainBenchmark("reset", expect: nil) {
        try ChainBench.make(stages: [], cluster: local, reset: true)
    }
    // The whole path of a packet through one lcore, restored before each burst (subtract `reset`):
    // owned here: classify → ownership-lookup → tuple-translate → forward;
    // owned by the peer: classify → ownership-lookup → encapsulate → forward.
    chainBenchmark("pipeline-local+reset", expect: 1) {
        try ChainBench.make(stages: [("classify", "{}"), ("ownership-lookup", "{}"), ("tuple-translate", "{}"),
                                     ("forward", forwardParameters)], cluster: local, reset: true)
    }
    chainBenchmark("pipeline-remote+reset", expect: 1) {
        try ChainBench.make(stages: [("classify", "{}"), ("ownership-lookup", "{}"), ("encapsulate", "{}"),
                                     ("forward", forwardParameters)], cluster: remote, reset: true)
    }

    // The engine's graph walk (LcoreGraph.run and send) over the throughput pipeline: whole-burst
    // hand-on and per-packet grouping, tx to net_null. Pins 0 mallocs, retains and releases.
    burstBenchmark("graph-walk") { try GraphBench.make() }

    // Gossip between two nodes on loopback: 1,000 flows opened then closed per iteration (events/s of
    // one control thread sending and one applying), and one flow at a time (propagation latency:
    // the percentiles are the latency from an event handed to poll to the entry in the peer's table).
    let thousand = GossipSlot(), single = GossipSlot()
    Benchmark("gossip-1000-flows-open-and-close",
              configuration: .init(metrics: [.wallClock, .throughput], timeUnits: .microseconds, warmupIterations: 3,
                                   maxDuration: .seconds(2), maxIterations: 200,
                                   setup: { thousand.bench = try GossipBench(flows: 1000) },
                                   teardown: { thousand.bench = nil })) { benchmark in
        let bench = thousand.bench!
        for _ in benchmark.scaledIterations {
            bench.propagate(bench.opened[...], expected: 1000)
            bench.propagate(bench.closed[...], expected: 0)
        }
    }
    Benchmark("gossip-one-flow-latency",
              configuration: .init(metrics: [.wallClock], timeUnits: .microseconds, warmupIterations: 10,
                                   maxDuration: .seconds(2), maxIterations: 2000,
                                   setup: { single.bench = try GossipBench(flows: 1) },
                                   teardown: { single.bench = nil })) { benchmark in
        let bench = single.bench!
        benchmark.startMeasurement()
        bench.propagate(bench.opened[...], expected: 1)
        benchmark.stopMeasurement()
        bench.propagate(bench.closed[...], expected: 0)
    }

    // Meter checks: the harness alone must read zero, and one of each per burst must read exactly
    // 1,000 per iteration. If the malloc interposer or ARCCounter stop counting, these fail.
    burstBenchmark("meter-idle") { BurstBench.make(runner: IdleRunner()) }
    burstBenchmark("meter-one-of-each") { BurstBench.make(runner: OneOfEachRunner()) }
}
