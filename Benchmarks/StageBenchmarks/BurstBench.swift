import CDPDK
import Foundation
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting

/// What one benchmark needs, built once outside the measured region.
///
/// Trivial fields only (pointers and an `Unmanaged` runner), so reading it in the measured region
/// costs no retain: the benchmark calls the runner exactly as the engine's `LcoreGraph` does,
/// `Unmanaged<StageRunner>._withUnsafeGuaranteedRef { $0.run(burst, dispositions:) }`.
struct BurstBench {
    let runner: Unmanaged<StageRunner>
    let pool: OpaquePointer
    let mbufs: MbufVector
    let count: Int
    let dispositions: UnsafeMutablePointer<UInt8>
    let counters: UnsafeMutablePointer<UInt64>
    let counterCount: Int

    /// Starts the EAL (no hugepages), fills `count` mbufs with `flowMix` frames (60-byte UDP/TCP
    /// over IPv4: the 64-byte class on the wire) and builds stage `S` through its descriptor, as the
    /// engine builds it from a configuration file (parameters: an empty YAML map).
    static func make<S: Stage>(_ stage: S.Type, count: Int = 32) throws -> BurstBench {
        TestEAL.start()
        let pool = TestEAL.makePool(size: 1023)
        let mbufs = MbufVector.allocate(capacity: count)
        for (index, frame) in PacketBuilder().flowMix(count: count, flows: 8).enumerated() {
            guard let mbuf = sy_pktmbuf_alloc(pool), let data = sy_pktmbuf_append(mbuf, UInt16(frame.count)) else {
                fatalError("benchmark mempool exhausted or frame too large (\(frame.count) bytes)")
            }
            frame.withUnsafeBytes {
                UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: frame.count)
            }
            mbufs[index] = mbuf
        }

        let descriptor = S.descriptor
        let map = try ConfigDocument.parse("{}", file: "<benchmark parameters>")
        let parameters = try descriptor.parseParameters(
            map, StageParameterContext(instanceName: "bench", portNames: []))
        try map.finish()
        let counterCount = max(descriptor.counters.count, 1)
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: counterCount)
        counters.initialize(repeating: 0, count: counterCount)
        let runner = try descriptor.makeRunner(
            parameters,
            StageContext(instanceName: "bench", lcoreID: 0, socketID: 0, burstSize: count, ports: []),
            counters)
        return make(runner: runner, pool: pool, mbufs: mbufs, count: count, counters: counters,
                    counterCount: counterCount)
    }

    /// A bench around a hand-made runner (the meter checks), with the same burst of mbufs.
    static func make(runner: StageRunner, count: Int = 32) -> BurstBench {
        TestEAL.start()
        let pool = TestEAL.makePool(size: 1023)
        let mbufs = MbufVector.allocate(capacity: count)
        guard sy_pktmbuf_alloc_bulk(pool, mbufs, UInt32(count)) == 0 else { fatalError("benchmark mempool exhausted") }
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        counters.initialize(to: 0)
        return make(runner: runner, pool: pool, mbufs: mbufs, count: count, counters: counters, counterCount: 1)
    }

    private static func make(runner: StageRunner, pool: OpaquePointer, mbufs: MbufVector, count: Int,
                             counters: UnsafeMutablePointer<UInt64>, counterCount: Int) -> BurstBench
    {
        let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: count)
        dispositions.initialize(repeating: 0xff, count: count)
        let bench = BurstBench(runner: Unmanaged.passRetained(runner), pool: pool, mbufs: mbufs, count: count,
                               dispositions: dispositions, counters: counters, counterCount: counterCount)
        // One burst before anything is measured: lazy metadata, first-touch of the mbufs.
        bench.runOnce()
        return bench
    }

    /// One burst through the stage: the engine's call, nothing more.
    @inline(__always)
    func runOnce() {
        _ = runner._withUnsafeGuaranteedRef {
            $0.run(PacketBurst(mbufs: mbufs, count: count), dispositions: dispositions)
        }
    }

    /// Frees everything `make` made (after the last measured iteration).
    func destroy() {
        for index in 0..<count { sy_pktmbuf_free(mbufs[index]) }
        mbufs.deallocate()
        dispositions.deallocate()
        counters.deallocate()
        rte_mempool_free(pool)
        runner.release()
    }
}

// MARK: - Meter checks

/// Does nothing: a burst that costs only the dynamic dispatch. Must read zero of everything.
final class IdleRunner: StageRunner {
    override func run(_ burst: PacketBurst, dispositions: UnsafeMutablePointer<UInt8>) -> Int { burst.count }
}

/// Exactly one retain, one release, one malloc and one free per burst: proves that the meters count
/// what happens inside `run` (a zero pin on a meter that counts nothing would pass vacuously).
/// Each step is out of line and goes through a global, so the optimiser cannot pair them away.
final class OneOfEachRunner: StageRunner {
    override func run(_ burst: PacketBurst, dispositions: UnsafeMutablePointer<UInt8>) -> Int {
        meterRetain()
        meterRelease()
        meterMalloc()
        meterFree()
        return burst.count
    }
}

final class MeterObject {}
nonisolated(unsafe) let meterObject = Unmanaged.passRetained(MeterObject())
nonisolated(unsafe) var meterMemory: UnsafeMutableRawPointer?

@inline(never) func meterRetain() { _ = meterObject.retain() }
@inline(never) func meterRelease() { meterObject.release() }
@inline(never) func meterMalloc() { meterMemory = malloc(64) }
@inline(never) func meterFree() { free(meterMemory); meterMemory = nil }
