import CDPDK
import Foundation
import SwitchyardEngine

/// The cluster's DPDK telemetry commands, beside the engine's (SwitchyardEngine/Telemetry.swift;
/// docs/operations.md, "DPDK telemetry"). They read the counter blocks the plug-in fills:
///
///     /switchyard/connections      the connection table: fill, capacity, embryonic, opened, closed, ...
///     /switchyard/gossip           gossip counters and one dict per peer
extension ClusterPlugin {
    public static let telemetryCommands: [Telemetry.Command] = [
        Telemetry.Command(
            name: "/switchyard/connections",
            help: "Switchyard connection table: connections, capacity, fill, embryonic, flows opened/closed/expired. Takes no parameters",
            callback: { _, _, data in Telemetry.answer(data) { ClusterPlugin.connections($0, $1) } }),
        Telemetry.Command(
            name: "/switchyard/gossip",
            help: "Switchyard gossip: counters, and per peer its state. Takes no parameters",
            callback: { _, _, data in Telemetry.answer(data) { ClusterPlugin.gossip($0, $1) } }),
    ]

    typealias Dict = Telemetry.Dict

    static func connections(_ dict: Dict, _ current: [CounterBlock]) {
        guard let block = current.first(where: { $0.kind == "cluster" }) else {
            dict.add("configured", UInt64(0))
            return
        }
        dict.add("configured", UInt64(1))
        for (index, counter) in block.counters.enumerated() { dict.add(counter.name, block.value(index)) }
        let count = block.value(named: "connections") ?? 0, capacity = block.value(named: "capacity") ?? 0
        dict.add("fill_percent", String(format: "%.4f", capacity == 0 ? 0 : Double(count) * 100 / Double(capacity)))
    }

    static func gossip(_ dict: Dict, _ current: [CounterBlock]) {
        guard let block = current.first(where: { $0.kind == "gossip" }) else {
            dict.add("configured", UInt64(0))
            return
        }
        dict.add("configured", UInt64(1))
        for (name, value) in block.labels where name == "host" { dict.add("host", value) }
        let counters = Dict()
        for (index, counter) in block.counters.enumerated() { counters.add(counter.name, block.value(index)) }
        dict.add("counters", counters)
        let peers = Dict()
        for peer in current.filter({ $0.kind == "gossip-peer" }) {
            let entry = Dict()
            for (name, value) in peer.labels where name == "endpoint" { entry.add(name, value) }
            for (index, counter) in peer.counters.enumerated() { entry.add(counter.name, peer.value(index)) }
            let id = peer.labels.first { $0.0 == "peer" }?.1 ?? peer.scope
            peers.add("peer_\(id)", entry)
        }
        dict.add("peers", peers)
        if let lag = current.first(where: { $0.histogram?.name == "switchyard_gossip_propagation_seconds" }),
           let layout = lag.histogram
        {
            let histogram = Dict()
            for (index, bound) in layout.bounds.enumerated() {
                histogram.add("le_\(Int((bound * 1e6).rounded()))us", lag.value(index))
            }
            histogram.add("le_inf", lag.value(layout.bounds.count))
            histogram.add("sum_us", lag.value(layout.bounds.count + 1))
            histogram.add("count", lag.value(layout.bounds.count + 2))
            dict.add("propagation", histogram)
        }
    }

}
