import Foundation
import SwitchyardEngine
import SwitchyardCluster

/// Hosts join and leave by reload (docs/gossip.md, "Hosts join and leave").
///
///     reload: cluster.hosts + N   ──► N becomes a gossip peer (its sync request is answered with
///                                     the whole table); tunnels to and from it are built
///     reload: cluster.hosts − H   ──► H owns flows here? ─yes─► departing: kept in hosts (tunnels,
///                                     │                         gossip), out of every service's
///                                     │                         table (the file has no backend on it)
///                                     └─no──► removed, with its gossip peer
///     control thread, every second ──► a departing host that owns no flow here any more is removed
///                                      (the running configuration is applied again without it)
extension ClusterPlugin {
    /// `new` with the hosts it removes that still own flows here kept as departing: in `hosts`,
    /// their gossip members kept, their ids in `departingHosts`.
    func keepingDepartingHosts(_ new: ClusterConfiguration) -> ClusterConfiguration {
        guard let running = cluster?.configuration, let gossip else { return new }
        var result = new
        result.departingHosts = []
        let staying = Set(new.hosts.map(\.id))
        let flows = Dictionary(gossip.counters().peers.map { ($0.hostID, $0.flows) }, uniquingKeysWith: { a, _ in a })
        for host in running.hosts where !staying.contains(host.id) && host.id != running.localHostID {
            guard (flows[host.id] ?? 0) > 0 else { continue }
            result.hosts.append(host)
            result.departingHosts.append(host.id)
            if let member = running.gossip?.member(host: host.id), result.gossip?.member(host: host.id) == nil {
                result.gossip?.members.append(member)
            }
        }
        return result
    }

    /// After a reload is applied: gossip's peers follow the hosts (joining ones added, departing
    /// ones marked, removed ones dropped with their remote entries).
    func applyMembership(_ settings: ClusterConfiguration) {
        guard let gossip, let members = settings.gossip?.members else { return }
        let (added, removed) = gossip.updateMembers(members, departing: Set(settings.departingHosts))
        if !added.isEmpty { log("gossip: host(s) \(added.map(String.init).joined(separator: ", ")) joined: their sync requests are answered") }
        if !removed.isEmpty { log("gossip: host(s) \(removed.map(String.init).joined(separator: ", ")) removed") }
        if !settings.departingHosts.isEmpty {
            log("cluster: host(s) \(settings.departingHosts.map(String.init).joined(separator: ", ")) departing: their flows stay served until they close")
        }
    }

    /// Once a second: a departing host that owns no flow here any more leaves for good.
    func tickMembership(now: Date) {
        guard let departing = configuration.cluster?.departingHosts, !departing.isEmpty, let gossip,
              now.timeIntervalSince(lastMembershipCheck) >= 1 else { return }
        lastMembershipCheck = now
        let empty = Set(gossip.departingPeers().filter { $0.flows == 0 }.map(\.hostID))
        guard !empty.isEmpty, var settings = configuration.cluster else { return }
        settings.hosts.removeAll { empty.contains($0.id) }
        settings.departingHosts.removeAll { empty.contains($0) }
        settings.gossip?.members.removeAll { empty.contains($0.hostID) }
        var next = configuration
        next.cluster = settings
        do {
            try engine.applyReload(next)
            log("cluster: host(s) \(empty.sorted().map(String.init).joined(separator: ", ")) drained: no flow left, removed")
        } catch {
            log("cluster: removing drained host(s) \(empty.sorted()): \(error)")
        }
    }
}
