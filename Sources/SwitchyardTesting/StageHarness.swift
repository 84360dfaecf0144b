import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardEngine

/// The EAL of a test or benchmark process: started once, without hugepages or devices.
public enum TestEAL {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var started = false
    nonisolated(unsafe) private static var poolSerial = 0

    /// Starts the EAL on first use (idempotent, thread-safe).
    public static func start() {
        lock.withLock {
            guard !started else { return }
            let args = ["switchyard-tests", "--no-huge", "-m", "512", "--no-shconf", "--file-prefix=sytest-\(getpid())",
                        "--no-pci", "--lcores=0@0", "--log-level=error", "--no-telemetry"]
            do {
                try EAL.initialize(args)
            } catch {
                fatalError("cannot start the EAL for tests: \(error)")
            }
            started = true
            atexit { EAL.cleanup() } // leaves no runtime directory behind
        }
    }

    /// A number unique in this process (names of DPDK objects).
    public static func nextSerial() -> Int {
        lock.withLock {
            poolSerial += 1
            return poolSerial
        }
    }

    /// A fresh mempool of `size` mbufs (unique name), for one harness.
    public static func makePool(size: Int = 1023) -> OpaquePointer {
        start()
        let name = "sytest_pool\(nextSerial())"
        guard let pool = sy_pktmbuf_pool_create(name, UInt32(size), 0, 2176, 0) else {
            fatalError("cannot create test mempool: \(String(cString: sy_strerror(sy_errno())))")
        }
        return pool
    }
}

/// A stage on a test bench, like SwiftNIO's EmbeddedChannel: push crafted packets through the
/// real stage (built by its descriptor, run through the same dynamic dispatch the engine uses),
/// read them back per disposition, read counters, and `finish()` to prove nothing was lost.
///
///     push([frames]) ──► mbufs ──► stage.run(burst) ──► dispositions ──► output(.out) / output(.drop)
///                                                   └─► counters      ──► counter(.truncated)
public final class StageHarness<S: Stage> {
    public let pool: OpaquePointer
    private let runner: StageRunner
    private let counters: UnsafeMutablePointer<UInt64>
    private let counterCount: Int
    private var outputs: [[[UInt8]]]
    private var outputMetas: [[sy_meta]]
    public private(set) var pushed = 0
    /// Packets the stage left without a valid disposition (freed; `finish()` fails on them).
    public private(set) var withoutDisposition = 0
    public let burstSize: Int
    /// Packets a holding stage freed when it was torn down (`finish()`), each counted by the stage.
    public private(set) var releasedAtTeardown = 0
    private var tornDown = false
    /// The cluster runtime built from `cluster:` (nil without one); share it to chain stages.
    public let cluster: ClusterRuntime?
    /// Runs on every packet before the stage (for example an earlier stage that fills metadata).
    private let prepare: ((Packet) -> Void)?

    /// Builds the stage from YAML parameters, exactly as the configuration file would give them.
    /// `cluster` is the YAML of a `cluster:` section; `sharedCluster` reuses another harness's runtime.
    public init(parameters yaml: String = "{}", burstSize: Int = 32, ports: [PortDescription] = [],
                cluster clusterYAML: String? = nil, sharedCluster: ClusterRuntime? = nil,
                prepare: ((Packet) -> Void)? = nil) throws
    {
        self.burstSize = burstSize
        self.prepare = prepare
        pool = TestEAL.makePool()
        let descriptor = S.descriptor
        if let sharedCluster {
            cluster = sharedCluster
        } else if let clusterYAML {
            let settings = try ClusterConfiguration.parse(sectionBody: clusterYAML, file: "<test cluster>")
            cluster = try ClusterRuntime(configuration: settings, name: "sytest\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        } else {
            cluster = nil
        }
        let map = try ConfigDocument.parse(yaml, file: "<test parameters>")
        let parameters = try descriptor.parseParameters(
            map, StageParameterContext(instanceName: "test", portNames: ports.map(\.name), cluster: cluster?.configuration))
        try map.finish()
        counterCount = descriptor.counters.count
        counters = .allocate(capacity: max(counterCount, 1))
        counters.initialize(repeating: 0, count: max(counterCount, 1))
        runner = try descriptor.makeRunner(
            parameters, StageContext(instanceName: "test", lcoreID: 0, socketID: 0, burstSize: burstSize, ports: ports,
                                     cluster: cluster),
            counters)
        outputs = Array(repeating: [], count: descriptor.dispositions.count)
        outputMetas = Array(repeating: [], count: descriptor.dispositions.count)
    }

    deinit {
        if !tornDown { _ = runner.releaseAll() }
        counters.deallocate()
        rte_mempool_free(pool)
    }

    /// Runs `frames` through the stage in bursts of `burstSize`.
    public func push(_ frames: [[UInt8]]) {
        var start = 0
        while start < frames.count {
            let chunk = Array(frames[start..<min(start + burstSize, frames.count)])
            runBurst(chunk)
            start += chunk.count
        }
    }

    private func runBurst(_ frames: [[UInt8]]) {
        // Tests run on threads DPDK does not know; shared tables (rte_hash) need an lcore id.
        guard sy_thread_ensure_lcore() == 0 else { fatalError("no free lcore id for a test thread") }
        // Room for maximumBurstSize, as the engine's vectors: a holding stage may append packets.
        let mbufs = MbufVector.allocate(capacity: maximumBurstSize)
        let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: maximumBurstSize)
        defer {
            mbufs.deallocate()
            dispositions.deallocate()
        }
        dispositions.initialize(repeating: 0xff, count: frames.count)
        for (index, frame) in frames.enumerated() {
            guard let mbuf = sy_pktmbuf_alloc(pool), let data = sy_pktmbuf_append(mbuf, UInt16(frame.count)) else {
                fatalError("test mempool exhausted or frame too large (\(frame.count) bytes)")
            }
            frame.withUnsafeBytes { UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
            sy_mbuf_meta(mbuf).initialize(to: sy_meta()) // as a fresh rx: no metadata yet
            mbufs[index] = mbuf
            prepare?(Packet(mbuf))
        }
        let count = runner.run(PacketBurst(mbufs: mbufs, count: frames.count), dispositions: dispositions)
        pushed += frames.count
        for index in 0..<count {
            let disposition = Int(dispositions[index])
            let mbuf = mbufs[index]!
            guard disposition < outputs.count else {
                withoutDisposition += 1
                sy_pktmbuf_free(mbuf)
                continue
            }
            var bytes = [UInt8](repeating: 0, count: Int(sy_mbuf_pkt_len(mbuf)))
            if !bytes.isEmpty { _ = sy_pktmbuf_read(mbuf, 0, UInt32(bytes.count), &bytes) }
            outputs[disposition].append(bytes)
            outputMetas[disposition].append(sy_mbuf_meta(mbuf).pointee)
            sy_pktmbuf_free(mbuf)
        }
    }

    /// The packets given `disposition`, in the order they were pushed, as bytes after the stage ran.
    public func output(_ disposition: S.Disposition) -> [[UInt8]] { outputs[Int(disposition.rawValue)] }

    /// The packet metadata (sy_meta) of each packet given `disposition`, as the stage left it.
    public func outputMeta(_ disposition: S.Disposition) -> [sy_meta] { outputMetas[Int(disposition.rawValue)] }

    public func counter(_ counter: S.Counter) -> UInt64 { sy_counter_read(counters + counter.index) }

    /// Every disposition's packet count, by name.
    public var dispositionCounts: [String: Int] {
        Dictionary(uniqueKeysWithValues: zip(S.descriptor.dispositions, outputs.map(\.count)))
    }

    public struct ConservationError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Packets held by a holding stage now: pushed but given no disposition yet.
    public var held: Int { pushed - outputs.reduce(0) { $0 + $1.count } - withoutDisposition }

    /// Proves conservation: every pushed packet got exactly one disposition (or, held by a holding
    /// stage, was freed and counted under a drop reason when `finish` tore the stage down), every
    /// drop is explained by a drop-reason counter, and every mbuf is back in the pool.
    public func finish() throws {
        if !tornDown {
            tornDown = true
            releasedAtTeardown = runner.releaseAll()
        }
        guard withoutDisposition == 0 else {
            throw ConservationError(description: "\(withoutDisposition) packets were given no disposition by \(S.kind)")
        }
        let given = outputs.reduce(0) { $0 + $1.count }
        guard given + releasedAtTeardown == pushed else {
            throw ConservationError(description: "\(pushed) packets pushed but \(given) got a disposition")
        }
        let descriptor = S.descriptor
        let dropReasons = descriptor.counters.enumerated().filter { $0.element.severity == .drop }
            .reduce(UInt64(0)) { $0 + sy_counter_read(counters + $1.offset) }
        guard dropReasons == UInt64(outputs[0].count + releasedAtTeardown) else {
            throw ConservationError(description: "\(outputs[0].count) packets dropped and \(releasedAtTeardown) freed at teardown but drop-reason counters sum to \(dropReasons)")
        }
        let available = Int(sy_mempool_avail(pool)), size = Int(sy_mempool_size(pool))
        guard available == size else {
            throw ConservationError(description: "\(size - available) mbufs not returned to the pool")
        }
    }
}
