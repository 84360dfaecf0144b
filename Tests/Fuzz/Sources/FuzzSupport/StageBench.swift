import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardTesting

/// One stage instance under the fuzzer, built as the engine builds it (descriptor, YAML
/// parameters, the one dynamic dispatch per burst), with the conservation checks of every run:
///
///     run(packet) ─► runner.run(burst of 1) ─► exactly one disposition, in range
///                                          └─► drop  ⇔ exactly one drop-reason counter went up by 1
///                                              sent  ⇔ no drop-reason counter moved
///                                              no counter ever goes down
///     in = sum of dispositions (totals kept here, checked by checkTotals())
public final class StageBench<S: Stage> {
    public let name: String
    let runner: StageRunner
    let counters: UnsafeMutablePointer<UInt64>
    let counterCount: Int
    let dropCounters: [Int]
    var before: [UInt64]
    let mbufs = MbufVector.allocate(capacity: 1)
    let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    /// Packets given to the stage, and per disposition how many it gave.
    public private(set) var pushed: UInt64 = 0
    public private(set) var given: [UInt64]

    /// `parameters`: the stage's YAML keys, as the configuration file gives them.
    public init(_ name: String, parameters yaml: String = "{}", ports: [PortDescription], cluster: ClusterRuntime?) {
        self.name = name
        let descriptor = S.descriptor
        do {
            let map = try ConfigDocument.parse(yaml, file: "<fuzz \(name)>")
            let parameters = try descriptor.parseParameters(
                map, StageParameterContext(instanceName: name, portNames: ports.map(\.name), cluster: cluster?.configuration))
            try map.finish()
            counterCount = descriptor.counters.count
            counters = .allocate(capacity: max(counterCount, 1))
            counters.initialize(repeating: 0, count: max(counterCount, 1))
            runner = try descriptor.makeRunner(
                parameters, StageContext(instanceName: name, lcoreID: 0, socketID: 0, burstSize: 32, ports: ports,
                                         cluster: cluster),
                counters)
        } catch {
            fatalError("cannot build stage \(name): \(error)")
        }
        dropCounters = descriptor.counters.indices.filter { descriptor.counters[$0].severity == .drop }
        before = Array(repeating: 0, count: counterCount)
        given = Array(repeating: 0, count: descriptor.dispositions.count)
    }

    public func counter(_ counter: S.Counter) -> UInt64 { sy_counter_read(counters + counter.index) }

    /// Runs the stage on one packet and checks the disposition and the counters.
    public func run(_ mbuf: OpaquePointer) -> S.Disposition {
        for index in 0..<counterCount { before[index] = sy_counter_read(counters + index) }
        mbufs[0] = mbuf
        dispositions[0] = 0xff
        runner.run(PacketBurst(mbufs: mbufs, count: 1), dispositions: dispositions)
        pushed += 1
        guard let disposition = S.Disposition(rawValue: dispositions[0]) else {
            violated("\(name): no valid disposition (\(dispositions[0]))")
        }
        given[Int(disposition.rawValue)] += 1
        var dropDelta: UInt64 = 0
        for index in 0..<counterCount {
            let now = sy_counter_read(counters + index)
            guard now >= before[index] else { violated("\(name): counter \(S.descriptor.counters[index].name) went down") }
            if dropCounters.contains(index) { dropDelta += now - before[index] }
        }
        let dropped = disposition.rawValue == 0
        if dropDelta != (dropped ? 1 : 0) {
            violated("\(name): disposition \(disposition.name) but the drop-reason counters went up by \(dropDelta)")
        }
        return disposition
    }

    /// in = sum of dispositions, and the drops equal the sum of the drop-reason counters.
    public func checkTotals() {
        if given.reduce(0, +) != pushed { violated("\(name): \(pushed) packets in, \(given.reduce(0, +)) dispositions") }
        let reasons = dropCounters.reduce(UInt64(0)) { $0 + sy_counter_read(counters + $1) }
        if reasons != given[0] { violated("\(name): \(given[0]) drops, drop-reason counters sum to \(reasons)") }
    }
}
