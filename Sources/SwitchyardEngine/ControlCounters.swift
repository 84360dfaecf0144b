import CDPDK
import Foundation
import SwitchyardCore

/// Counters the control thread copies into the registry: what lives outside the lcores.
///
///     rte_eth_stats_get, rte_eth_xstats_get ──► "port NAME" blocks   (every NIC's own counters)
///     EnginePlugin.refreshCounters()        ──► the plug-ins' blocks (the cluster's gossip blocks)
///
/// `refresh()` runs on the control thread (every 100 ms, and before a control-socket answer), so
/// every exporter reads NIC counters from the same registry as the lcores' counters.
final class ControlCounters {
    private struct PortCounters {
        let port: PortDescription
        let block: CounterBlock
        /// xstat ids in the order of the block's counters after the basic ones.
        let xstatCount: Int
    }

    private static let basic = [
        ("ipackets", "packets the NIC received"), ("opackets", "packets the NIC sent"),
        ("ibytes", "bytes the NIC received"), ("obytes", "bytes the NIC sent"),
        ("imissed", "packets the NIC dropped because the rx queue was full (the engine was too slow)"),
        ("ierrors", "packets the NIC received with errors"), ("oerrors", "packets the NIC failed to send"),
        ("rx_nombuf", "packets the NIC dropped because no mbuf was free"),
    ]

    private var ports: [PortCounters] = []
    private let registry: CounterRegistry
    private var xstats: UnsafeMutablePointer<rte_eth_xstat>
    private var xstatCapacity = 0

    init(registry: CounterRegistry, ports descriptions: [PortDescription]) {
        self.registry = registry
        xstats = .allocate(capacity: 1)
        for port in descriptions {
            let names = Self.xstatNames(port: port.portID)
            xstatCapacity = max(xstatCapacity, names.count)
            let counters = Self.basic.map { CounterDescription(name: $0.0, help: $0.1, severity: .info) }
                + names.map {
                    CounterDescription(name: "xstat " + $0, help: "the NIC's extended statistic \($0)", severity: .info,
                                       metric: .init(name: "xstats", help: "the NIC's extended statistics (rte_eth_xstats)",
                                                     label: ("name", $0)))
                }
            let block = registry.makeBlock(scope: "port \(port.name)", kind: "port", lcore: 0, counters: counters,
                                           labels: [("port", port.name)])
            ports.append(PortCounters(port: port, block: block, xstatCount: names.count))
        }
        xstats.deallocate()
        xstats = .allocate(capacity: max(xstatCapacity, 1))
        refresh()
    }

    deinit { xstats.deallocate() }

    private static func xstatNames(port: UInt16) -> [String] {
        let count = rte_eth_xstats_get_names(port, nil, 0)
        guard count > 0 else { return [] }
        let names = UnsafeMutablePointer<rte_eth_xstat_name>.allocate(capacity: Int(count))
        defer { names.deallocate() }
        let got = rte_eth_xstats_get_names(port, names, UInt32(count))
        guard got > 0 else { return [] }
        return (0..<Int(min(got, count))).map { index in
            withUnsafeBytes(of: names[index].name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
    }

    /// The NIC's link, for `ctl status`.
    static func link(port: UInt16) -> (up: Bool, speedMbps: UInt32, fullDuplex: Bool)? {
        var speed: UInt32 = 0, up = false, duplex = false
        guard sy_port_link(port, &speed, &up, &duplex) == 0 else { return nil }
        return (up, speed, duplex)
    }

    /// Copies the NICs' counters into the registry. Control thread only.
    func refresh() {
        for entry in ports {
            var stats = sy_port_stats()
            if sy_port_stats(entry.port.portID, &stats) == 0 {
                let values = [stats.ipackets, stats.opackets, stats.ibytes, stats.obytes, stats.imissed,
                              stats.ierrors, stats.oerrors, stats.rx_nombuf]
                for (index, value) in values.enumerated() { entry.block.set(index, value) }
            }
            if entry.xstatCount > 0 {
                let got = Int(rte_eth_xstats_get(entry.port.portID, xstats, UInt32(entry.xstatCount)))
                if got > 0 {
                    for index in 0..<min(got, entry.xstatCount) {
                        entry.block.set(Self.basic.count + index, xstats[index].value)
                    }
                }
            }
        }
    }
}
