import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardStages
import SwitchyardTesting

/// A chain of stages of the single-IP-image pipeline over one burst, built once outside the
/// measured region, run as the engine runs them: one `StageRunner.run` per stage per burst.
///
///     [reset] ─► stage 1 ─► stage 2 ─► ... ─► dispositions of the last stage
///
/// Stages that change packets for good (encapsulate adds 50 bytes, decapsulate removes them)
/// measure with `reset: true`: every burst first restores each mbuf's data offset, length, bytes
/// and metadata from a snapshot taken after `prepare`. The `reset` benchmark measures that step
/// alone, so it can be subtracted.
///
/// All packets of a burst take the same path in these benchmarks (the configuration makes them),
/// so chaining runners is what the engine's graph does with them.
struct ChainBench {
    let runners: UnsafeMutablePointer<Unmanaged<StageRunner>>
    let runnerCount: Int
    let pool: OpaquePointer
    let mbufs: MbufVector
    let count: Int
    let dispositions: UnsafeMutablePointer<UInt8>
    let counters: UnsafeMutablePointer<UInt64>
    /// Snapshot for `reset`: per packet data offset, length, 128 bytes of data, the metadata.
    let snapshot: UnsafeMutableRawPointer?
    let cluster: Unmanaged<ClusterRuntime>

    static let snapshotStride = 8 + 128 + MemoryLayout<sy_meta>.stride

    /// Host 1 of a two-host cluster. `remote: false`: every backend is on host 1; `true`: on host 2.
    static func clusterYAML(remote: Bool, localHost: Int = 1, ipv6Underlay: Bool = false) -> String {
        let backendHost = remote ? 2 : 1
        let (host1, host2) = ipv6Underlay ? ("\"fd00:18::11\"", "\"fd00:18::12\"") : ("198.18.0.11", "198.18.0.12")
        return """
            host: \(localHost)
            hosts:
              - { id: 1, address: \(host1) }
              - { id: 2, address: \(host2) }
            tunnel: { kind: vxlan, vni: 1 }
            services:
              - name: web
                vip: 198.19.0.1
                protocol: tcp
                port: 80
                backends:
                  - { host: \(backendHost), address: 198.18.100.10, port: 8080 }
                  - { host: \(backendHost), address: 198.18.100.11, port: 8080 }
              - name: dns
                vip: 198.19.0.1
                protocol: udp
                port: 53
                backends:
                  - { host: \(backendHost), address: 198.18.100.10, port: 5353 }
                  - { host: \(backendHost), address: 198.18.100.11, port: 5353 }
            connections: { capacity: 65536 }
            """
    }

    /// Builds `before` and `stages` (kind, YAML parameters) on a cluster from `clusterYAML`, fills
    /// `count` mbufs with 64-byte TCP (ACK) and UDP packets of `count` flows to the VIP (or with
    /// `frames`), runs them once
    /// through `before` (not measured: it prepares the metadata, e.g. classify), then `adjust` on each
    /// packet, then one burst through `stages` (first touch; connection entries created).
    static func make(before: [(kind: String, parameters: String)] = [], stages: [(kind: String, parameters: String)],
                     cluster clusterYAML: String, reset: Bool = false, count: Int = 32,
                     ports: [PortDescription] = benchPorts, frames custom: [[UInt8]]? = nil,
                     adjust: (Packet) -> Void = { _ in }) throws -> ChainBench
    {
        TestEAL.start()
        guard sy_thread_ensure_lcore() == 0 else { fatalError("no lcore id for the benchmark thread") }
        let pool = TestEAL.makePool(size: 1023)
        let settings = try ClusterConfiguration.parse(sectionBody: clusterYAML, file: "<benchmark cluster>")
        let cluster = try ClusterRuntime(configuration: settings, name: "sybench\(TestEAL.nextSerial())", socket: 0,
                                         qsbr: nil)
        let frames = custom ?? PacketBuilder().flowMix(count: count, flows: count, tcpFlags: 0x10)
        // Room for maximumBurstSize, as the engine's vectors (a holding stage may append packets).
        let mbufs = MbufVector.allocate(capacity: maximumBurstSize)
        for (index, frame) in frames.enumerated() {
            guard let mbuf = sy_pktmbuf_alloc(pool), let data = sy_pktmbuf_append(mbuf, UInt16(frame.count)) else {
                fatalError("benchmark mempool exhausted")
            }
            frame.withUnsafeBytes { UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
            sy_mbuf_meta(mbuf).initialize(to: sy_meta())
            mbufs[index] = mbuf
        }
        if !before.isEmpty {
            let preparation = try make(runners: before, settings: settings, cluster: cluster, ports: ports, count: count)
            let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: count)
            for index in 0..<before.count {
                preparation.runners[index]._withUnsafeGuaranteedRef {
                    $0.run(PacketBurst(mbufs: mbufs, count: count), dispositions: dispositions)
                }
                preparation.runners[index].release()
            }
            dispositions.deallocate()
            preparation.runners.deallocate()
            preparation.counters.deallocate()
        }
        for index in 0..<count { adjust(Packet(mbufs[index]!)) }
        var snapshot: UnsafeMutableRawPointer?
        if reset {
            let memory = UnsafeMutableRawPointer.allocate(byteCount: count * snapshotStride, alignment: 64)
            for index in 0..<count {
                let mbuf = mbufs[index]!
                let entry = memory + index * snapshotStride
                entry.storeBytes(of: UInt32(sy_mbuf_headroom(mbuf)), as: UInt32.self)
                entry.storeBytes(of: UInt32(sy_mbuf_data_len(mbuf)), toByteOffset: 4, as: UInt32.self)
                (entry + 8).copyMemory(from: sy_mbuf_data(mbuf), byteCount: min(128, Int(sy_mbuf_data_len(mbuf))))
                (entry + 136).copyMemory(from: sy_mbuf_meta(mbuf), byteCount: MemoryLayout<sy_meta>.stride)
            }
            snapshot = memory
        }

        let (runners, counters) = try make(runners: stages, settings: settings, cluster: cluster, ports: ports,
                                           count: count)
        let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: maximumBurstSize)
        dispositions.initialize(repeating: 0xff, count: maximumBurstSize)
        let bench = ChainBench(runners: runners, runnerCount: stages.count, pool: pool, mbufs: mbufs, count: count,
                               dispositions: dispositions, counters: counters, snapshot: snapshot,
                               cluster: Unmanaged.passRetained(cluster))
        bench.runOnce()
        return bench
    }

    /// Runners for `stages`, each with 64 counter slots.
    private static func make(runners stages: [(kind: String, parameters: String)], settings: ClusterConfiguration,
                             cluster: ClusterRuntime, ports: [PortDescription], count: Int) throws
        -> (runners: UnsafeMutablePointer<Unmanaged<StageRunner>>, counters: UnsafeMutablePointer<UInt64>)
    {
        let runners = UnsafeMutablePointer<Unmanaged<StageRunner>>.allocate(capacity: stages.count)
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 64 * stages.count)
        counters.initialize(repeating: 0, count: 64 * stages.count)
        for (index, stage) in stages.enumerated() {
            guard let descriptor = builtinStages.first(where: { $0.kind == stage.kind }) else {
                fatalError("no stage kind \(stage.kind)")
            }
            let map = try ConfigDocument.parse(stage.parameters, file: "<benchmark \(stage.kind)>")
            let parameters = try descriptor.parseParameters(
                map, StageParameterContext(instanceName: stage.kind, portNames: ports.map(\.name), cluster: settings))
            try map.finish()
            let runner = try descriptor.makeRunner(
                parameters,
                StageContext(instanceName: stage.kind, lcoreID: 0, socketID: 0, burstSize: count, ports: ports,
                             cluster: cluster),
                counters + 64 * index)
            runners[index] = Unmanaged.passRetained(runner)
        }
        return (runners, counters)
    }

    static let benchPorts = [PortDescription(name: "wire", portID: 0, mac: (2, 0x70, 0x63, 0x61, 0x70, 0), socketID: 0)]

    /// Restores every packet as it was after `prepare` (only with `reset: true`).
    @inline(__always)
    func restore() {
        guard let snapshot else { return }
        for index in 0..<count {
            let mbuf = mbufs[index].unsafelyUnwrapped
            let entry = snapshot + index * Self.snapshotStride
            let headroom = Int(entry.load(as: UInt32.self))
            let length = Int(entry.load(fromByteOffset: 4, as: UInt32.self))
            let now = Int(sy_mbuf_headroom(mbuf))
            if now < headroom {
                _ = sy_pktmbuf_adj(mbuf, UInt16(headroom - now))
            } else if now > headroom {
                _ = sy_pktmbuf_prepend(mbuf, UInt16(now - headroom))
            }
            _ = sy_pktmbuf_set_length(mbuf, UInt16(length))
            UnsafeMutableRawPointer(sy_mbuf_data(mbuf)).copyMemory(from: entry + 8, byteCount: min(128, length))
            UnsafeMutableRawPointer(sy_mbuf_meta(mbuf)).copyMemory(from: entry + 136, byteCount: MemoryLayout<sy_meta>.stride)
        }
    }

    /// One burst: restore (when asked), then every stage in order.
    @inline(__always)
    func runOnce() {
        restore()
        let burst = PacketBurst(mbufs: mbufs, count: count)
        for index in 0..<runnerCount {
            runners[index]._withUnsafeGuaranteedRef { $0.run(burst, dispositions: dispositions) }
        }
    }

    /// The packets' dispositions after the last stage are all `expected` (checked in setup, not measured).
    func check(allGo expected: UInt8, _ what: String) {
        for index in 0..<count where dispositions[index] != expected {
            fatalError("\(what): packet \(index) got disposition \(dispositions[index]), expected \(expected)")
        }
    }

    func destroy() {
        for index in 0..<count { sy_pktmbuf_free(mbufs[index]) }
        mbufs.deallocate()
        dispositions.deallocate()
        counters.deallocate()
        snapshot?.deallocate()
        for index in 0..<runnerCount { runners[index].release() }
        runners.deallocate()
        rte_mempool_free(pool)
        cluster.release()
    }
}

