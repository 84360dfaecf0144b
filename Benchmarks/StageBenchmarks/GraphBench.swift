import CDPDK
import Foundation
import SwitchyardCore
import SwitchyardClusterPlugin
import SwitchyardEngine
import SwitchyardPcap
import SwitchyardStages

/// The engine's own graph walk (`LcoreGraph.run` and its sends), on one lcore's graph of the
/// throughput pipeline (Throughput/pipeline.yaml, its `wire` port replaced by `net_null1`), built
/// by `LcoreGraphDriver` as the engine builds it:
///
///     [refill 32 mbufs] ─► classify ─vip─► owner ─local──► translate ─► to-backends ─► tx net_null
///                                                 └─remote─► encap ─► to-peers ─────► tx net_null
///
/// Each burst is 32 packets of 32 flows, three quarters owned here, so the walk takes both
/// paths: the whole vector on (classify: all `vip`) and per-packet grouping (owner: `local` and
/// `remote`). net_null frees what it is sent, so each burst first takes 32 mbufs from the pool and
/// copies the frames in (no malloc, no ARC: it is inside the measured loop and must read 0 too).
/// The EAL is started here, with the configuration's arguments (each benchmark runs in a process
/// of its own).
struct GraphBench {
    let driver: Unmanaged<LcoreGraphDriver>
    let mbufs: MbufVector
    let frames: UnsafeMutableRawPointer
    let frameLength: Int
    let count: Int

    static func make() throws -> GraphBench {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        var text = try String(contentsOf: here.appendingPathComponent("../Throughput/pipeline.yaml"), encoding: .utf8)
        for (from, to) in [("device: net_pcap0,TRAFFIC,infinite_rx=1", "device: net_null1"), ("hugepages: auto", "hugepages: off"),
                           ("memory_mb: 3072", "memory_mb: 256"), ("mbufs: MBUFS", "mbufs: 8191"), ("QUEUES", "1"),
                           ("LCORES", "  - { id: 1, cpu: 0, idle: busy, poll: [ { port: wire, queue: 0, to: classify } ] }")] {
            guard text.contains(from) else { fatalError("Throughput/pipeline.yaml has no '\(from)'") }
            text = text.replacingOccurrences(of: from, with: to)
        }
        let configuration = try EngineConfiguration.parse(text, file: "Throughput/pipeline.yaml (graph-walk)",
                                                          stages: builtinStages, plugins: standardPlugins)
        try EAL.initialize(EAL.plan(for: configuration, overrides: ["--log-level=error", "--no-telemetry"]).arguments)
        guard sy_thread_ensure_lcore() == 0 else { fatalError("no lcore id for the benchmark thread") }
        let driver = try LcoreGraphDriver(configuration: configuration)
        let count = 32
        let list = PacketBuilder().flowMix(count: count, flows: count, tcpFlags: 0x10)
        let frameLength = list[0].count
        let frames = UnsafeMutableRawPointer.allocate(byteCount: count * frameLength, alignment: 64)
        for (index, frame) in list.enumerated() {
            precondition(frame.count == frameLength)
            frame.withUnsafeBytes { (frames + index * frameLength).copyMemory(from: $0.baseAddress!, byteCount: frameLength) }
        }
        let bench = GraphBench(driver: Unmanaged.passRetained(driver), mbufs: .allocate(capacity: maximumBurstSize),
                               frames: frames, frameLength: frameLength, count: count)
        bench.runOnce() // entries created for the flows owned here
        return bench
    }

    /// One burst: 32 fresh mbufs with the frames, then the engine's walk.
    @inline(__always)
    func runOnce() {
        let pool = driver._withUnsafeGuaranteedRef { $0.mempool }
        guard sy_pktmbuf_alloc_bulk(pool, mbufs, UInt32(count)) == 0 else { fatalError("graph-walk: the pool is empty") }
        for index in 0..<count {
            let mbuf = mbufs[index].unsafelyUnwrapped
            let data = sy_pktmbuf_append(mbuf, UInt16(frameLength)).unsafelyUnwrapped
            UnsafeMutableRawPointer(data).copyMemory(from: frames + index * frameLength, byteCount: frameLength)
        }
        driver._withUnsafeGuaranteedRef { $0.run(mbufs, count: count) }
    }

    func destroy() {
        let leaked = driver.takeRetainedValue().close()
        precondition(leaked == 0, "graph-walk: \(leaked) mbufs not back in the pool")
        mbufs.deallocate()
        frames.deallocate()
    }
}
