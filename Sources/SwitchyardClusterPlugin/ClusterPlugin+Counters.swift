import Foundation
import SwitchyardCore
import SwitchyardEngine
import SwitchyardGossip

/// The cluster plug-in's counter blocks (`cluster`, `bgp`), in the engine's registry.
enum ClusterCounters {
    /// The BGP speaker (`bgp:` section; docs/bgp.md), kept by the control thread.
    static let bgp = [
        CounterDescription(name: "speaker-starts", help: "times BIRD was started (the first start and every restart)", severity: .info),
        CounterDescription(name: "speaker-exits", help: "times BIRD exited or could not be started while the engine ran", severity: .info),
        CounterDescription(name: "configure-runs", help: "birdc configure runs (one per change of the announced set)", severity: .info),
        CounterDescription(name: "configure-failures", help: "birdc configure runs that failed or timed out (retried with backoff)", severity: .info),
        CounterDescription(name: "announcements", help: "times a VIP went from withdrawn to announced by the rule", severity: .info),
        CounterDescription(name: "withdrawals", help: "times a VIP went from announced to withdrawn by the rule", severity: .info),
        CounterDescription(name: "vips-announced", help: "VIPs in BIRD's configuration now", severity: .info, kind: .gauge),
        CounterDescription(name: "speaker-up", help: "1 while BIRD runs, else 0", severity: .info, kind: .gauge),
    ]

    static let cluster = [
        CounterDescription(name: "flows-opened", help: "opened events from the lcores (new connections owned here)", severity: .info),
        CounterDescription(name: "flows-closed", help: "closed events (FIN, RST or idle timeout; expired flows included)", severity: .info),
        CounterDescription(name: "flows-expired", help: "connections removed by the idle-timeout scan", severity: .info),
        CounterDescription(name: "connections", help: "entries in the connection table now", severity: .info, kind: .gauge),
        CounterDescription(name: "events-refused", help: "events the full events ring refused", severity: .info),
        CounterDescription(name: "inserts-refused", help: "new connections the full table refused", severity: .info),
        CounterDescription(name: "capacity", help: "entries the connection table can hold", severity: .info, kind: .gauge,
                           metric: .init(name: "connection_capacity")),
        CounterDescription(name: "embryonic", help: "entries that have seen only a SYN", severity: .info, kind: .gauge),
    ]

}

/// Gossip counters the control thread copies into the engine's registry (moved from the engine's
/// ControlCounters with the cluster):
///
///     GossipNode.counters() ──► "gossip" block, "gossip peer N" blocks,
///                               switchyard_gossip_propagation_seconds histogram
///
/// `refresh()` runs on the control thread (every 100 ms, and before a control-socket answer), so
/// every exporter reads gossip counters from the same registry as the lcores' counters.
final class GossipCounterExport {
    private let registry: CounterRegistry
    private let gossip: GossipNode
    private var gossipBlock: CounterBlock?
    private var gossipNames: [String] = []
    private var peerBlocks: [Int: CounterBlock] = [:]
    private var lagBlock: CounterBlock?

    init(registry: CounterRegistry, gossip: GossipNode) {
        self.registry = registry
        self.gossip = gossip
        lagBlock = registry.makeHistogram(
            scope: "gossip propagation", name: "switchyard_gossip_propagation_seconds",
            help: "delay from a peer's flow batch (its timestamp) to its receipt here",
            bounds: LagHistogram.boundsMicros.map { Double($0) / 1e6 }, scale: 1e6)
    }

    /// Copies the gossip's counters into the registry. Control thread only.
    func refresh() {
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
