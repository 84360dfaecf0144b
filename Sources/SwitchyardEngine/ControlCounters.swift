import CDPDK
import Foundation
import SwitchyardCore
import SwitchyardGossip

/// Counters the control thread copies into the registry: what lives outside the lcores.
///
///     rte_eth_stats_get, rte_eth_xstats_get ──► "port NAME" blocks   (every NIC's own counters)
///     GossipNode.counters()                 ──► "gossip" block, "gossip peer N" blocks,
///                                               switchyard_gossip_propagation_seconds histogram
///
/// `refresh()` runs on the control thread (every 100 ms, and before a control-socket answer), so
/// every exporter reads NIC and gossip counters from the same registry as the lcores' counters.
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
    private let gossip: GossipNode?
    private var gossipBlock: CounterBlock?
    private var gossipNames: [String] = []
    private var peerBlocks: [Int: CounterBlock] = [:]
    private var lagBlock: CounterBlock?
    private var xstats: UnsafeMutablePointer<rte_eth_xstat>
    private var xstatCapacity = 0

    init(registry: CounterRegistry, ports descriptions: [PortDescription], gossip: GossipNode?) {
        self.registry = registry
        self.gossip = gossip
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
        if gossip != nil {
            lagBlock = registry.makeHistogram(
                scope: "gossip propagation", name: "switchyard_gossip_propagation_seconds",
                help: "delay from a peer's flow batch (its timestamp) to its receipt here",
                bounds: LagHistogram.boundsMicros.map { Double($0) / 1e6 }, scale: 1e6)
        }
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

    /// Copies the NICs' and the gossip's counters into the registry. Control thread only.
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
        refreshGossip()
    }

    private func refreshGossip() {
        guard let gossip else { return }
        let snapshot = gossip.counters()
        if gossipBlock == nil {
            gossipNames = snapshot.values.map(\.name)
            let counters = gossipNames.map { name -> CounterDescription in
                if name.hasPrefix("dropped-") {
                    let reason = String(name.dropFirst("dropped-".count))
                    return CounterDescription(name: name, help: "datagrams dropped: \(reason)", severity: .drop,
                                              metric: .init(name: "dropped_datagrams",
                                                            help: "gossip datagrams dropped before touching state, by reason",
                                                            label: ("reason", reason)))
                }
                for (prefix, metric, help) in [("sent-", "sent_messages", "gossip messages sent, by kind"),
                                               ("received-", "received_messages", "gossip messages accepted, by kind")]
                    where name.hasPrefix(prefix)
                {
                    return CounterDescription(name: name, help: help, severity: .info,
                                              metric: .init(name: metric, help: help,
                                                            label: ("message", String(name.dropFirst(prefix.count)))))
                }
                if name == "receive-buffer-bytes" {
                    return CounterDescription(name: name, help: "the gossip socket's receive buffer (SO_RCVBUF) as the kernel granted it",
                                              severity: .info, kind: .gauge)
                }
                return CounterDescription(name: name, help: "gossip: \(name)", severity: .info)
            } + [
                CounterDescription(name: "map-size", help: "entries in the connection table (local and remote)",
                                   severity: .info, kind: .gauge),
                CounterDescription(name: "owned-flows", help: "flows this host owns, as announced", severity: .info, kind: .gauge),
                CounterDescription(name: "remote-flows", help: "flows held as owned by peers", severity: .info, kind: .gauge),
                CounterDescription(name: "synchronised", help: "1 once this host holds its peers' state", severity: .info,
                                   kind: .gauge),
                CounterDescription(name: "peers-alive", help: "peers heard within the peer timeout", severity: .info,
                                   kind: .gauge),
            ]
            gossipBlock = registry.makeBlock(scope: "gossip", kind: "gossip", lcore: 0, counters: counters,
                                             labels: [("host", String(snapshot.hostID))])
        }
        guard let block = gossipBlock else { return }
        for (index, name) in gossipNames.enumerated() { block.set(index, snapshot.value(name)) }
        let base = gossipNames.count
        block.set(base, UInt64(snapshot.mapSize))
        block.set(base + 1, UInt64(snapshot.ownedFlows))
        block.set(base + 2, UInt64(snapshot.remoteFlows))
        block.set(base + 3, snapshot.synchronised ? 1 : 0)
        block.set(base + 4, UInt64(snapshot.peers.filter(\.alive).count))
        for peer in snapshot.peers {
            let peerBlock = peerBlocks[peer.hostID] ?? {
                let made = registry.makeBlock(
                    scope: "gossip peer \(peer.hostID)", kind: "gossip-peer", lcore: 0, counters: Self.peerCounters,
                    labels: [("peer", String(peer.hostID)), ("endpoint", peer.endpoint)])
                peerBlocks[peer.hostID] = made
                return made
            }()
            peerBlock.set(0, peer.alive ? 1 : 0)
            peerBlock.set(1, peer.synchronised ? 1 : 0)
            peerBlock.set(2, UInt64(peer.flows))
            peerBlock.set(3, UInt64(peer.reportedFlows))
            peerBlock.set(4, peer.messages)
            peerBlock.set(5, UInt64(max(peer.silenceMs ?? 0, 0)))
            peerBlock.set(6, peer.lastLagMicros)
        }
        if let lagBlock {
            let histogram = snapshot.lagHistogram
            for (index, count) in histogram.counts.enumerated() { lagBlock.set(index, count) }
            lagBlock.set(histogram.counts.count, histogram.sumMicros)
            lagBlock.set(histogram.counts.count + 1, histogram.count)
        }
    }

    private static let peerCounters = [
        CounterDescription(name: "alive", help: "1 while the peer is heard within the peer timeout", severity: .info, kind: .gauge),
        CounterDescription(name: "synchronised", help: "1 once the peer says it holds its peers' state", severity: .info,
                           kind: .gauge),
        CounterDescription(name: "flows", help: "flows this host holds as owned by the peer", severity: .info, kind: .gauge),
        CounterDescription(name: "reported-flows", help: "flows the peer says it owns (its last heartbeat)", severity: .info,
                           kind: .gauge),
        CounterDescription(name: "messages", help: "messages accepted from the peer", severity: .info),
        CounterDescription(name: "silence-ms", help: "milliseconds since the peer was last heard", severity: .info,
                           kind: .gauge,
                           metric: .init(name: "silence_seconds", help: "seconds since the peer was last heard", scale: 1e3)),
        CounterDescription(name: "last-lag-us", help: "propagation delay of the peer's last flow batch, microseconds",
                           severity: .info, kind: .gauge,
                           metric: .init(name: "last_lag_seconds", help: "propagation delay of the peer's last flow batch, seconds",
                                         scale: 1e6)),
    ]
}
