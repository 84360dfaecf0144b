import Foundation
import SwitchyardCluster
import SwitchyardEngine

/// What a reload may change in the plug-in's sections, and what it may not (the engine's own keys:
/// SwitchyardEngine/EngineConfiguration+LiveChanges.swift).
///
///     live:   cluster.services (VIPs, backends, weights, health_check), cluster.lookup_table_size,
///             cluster.listen (this host's listeners from the file; `ctl listen` ones stay),
///             cluster.hosts (hosts join and leave; ClusterPlugin+Membership.swift) with their gossip members
///     fixed:  cluster.host, the address and mac of a host that stays, this host's entry,
///             cluster.tunnel, cluster.connections, cluster.gossip (but the members of hosts that
///             join or leave), bgp
extension ClusterPlugin {
    public static func refusal(from old: any PluginSettings, to new: any PluginSettings) -> String? {
        guard let old = old as? ClusterPluginSettings, let new = new as? ClusterPluginSettings else { return nil }
        guard (old.cluster == nil) == (new.cluster == nil) else {
            return "a `cluster:` section can be changed by a reload, but not added or removed"
        }
        return nil
    }

    public static func fixedDifferences(from oldSettings: any PluginSettings, to newSettings: any PluginSettings) -> [String] {
        guard let oldSettings = oldSettings as? ClusterPluginSettings, let new = newSettings as? ClusterPluginSettings else { return [] }
        let old = oldSettings
        var problems: [String] = []
        func check(_ key: String, _ old: String, _ now: String) {
            if old != now { problems.append("\(key): '\(old)' -> '\(now)' cannot change while the engine runs (restart it)") }
        }
        switch (old.cluster, new.cluster) {
        case (nil, nil): break
        case (nil, _): problems.append("cluster: a `cluster:` section cannot be added while the engine runs (restart it)")
        case (_, nil): problems.append("cluster: the `cluster:` section cannot be removed while the engine runs (restart it)")
        case (let old?, let now?):
            check("cluster.host", String(old.localHostID), String(now.localHostID))
            // Hosts may join and leave; one that stays keeps its address (and this host its entry).
            for host in old.hosts {
                guard let same = now.host(id: host.id) else {
                    if host.id == old.localHostID { problems.append("cluster.hosts: this host (id \(host.id)) cannot be removed from its own configuration") }
                    continue
                }
                check("cluster.hosts (host \(host.id))", Self.hostText(host), Self.hostText(same))
            }
            check("cluster.tunnel", "\(old.tunnel.kind) \(old.tunnel.port) \(old.tunnel.vni)",
                  "\(now.tunnel.kind) \(now.tunnel.port) \(now.tunnel.vni)")
            check("cluster.connections", Self.connectionsText(old.connections), Self.connectionsText(now.connections))
            check("cluster.gossip", Self.gossipText(old.gossip), Self.gossipText(now.gossip))
            if let before = old.gossip, let after = now.gossip {
                for member in before.members {
                    guard let same = after.member(host: member.hostID) else { continue }
                    check("cluster.gossip.members (host \(member.hostID))", "\(member.address):\(member.port)", "\(same.address):\(same.port)")
                }
            }
            if old.gossip?.key != now.gossip?.key {
                problems.append("cluster.gossip.key: the shared key cannot change while the engine runs (restart it)")
            }
        }
        // Where the section sits in the file is no change (a reload that adds a host moves it down).
        func placeless(_ settings: BgpSettings?) -> BgpSettings? {
            guard var settings else { return nil }
            settings.line = 0
            for index in settings.peers.indices { settings.peers[index].line = 0 }
            return settings
        }
        if placeless(oldSettings.bgp) != placeless(new.bgp) {
            problems.append("bgp: the `bgp:` section cannot change while the engine runs (restart it)")
        }
        return problems
    }

    public static func liveChanges(from oldSettings: any PluginSettings, to newSettings: any PluginSettings) -> [String] {
        guard let oldSettings = oldSettings as? ClusterPluginSettings, let new = newSettings as? ClusterPluginSettings else { return [] }
        var changes: [String] = []
        if let old = oldSettings.cluster, let now = new.cluster {
            let before = Dictionary(old.services.map { ($0.name, Self.serviceText($0)) }, uniquingKeysWith: { a, _ in a })
            let after = Dictionary(now.services.map { ($0.name, Self.serviceText($0)) }, uniquingKeysWith: { a, _ in a })
            for name in after.keys.sorted() where before[name] == nil { changes.append("service '\(name)' added") }
            for name in before.keys.sorted() where after[name] == nil { changes.append("service '\(name)' removed") }
            for name in after.keys.sorted() where before[name] != nil && before[name] != after[name] {
                changes.append("service '\(name)': \(before[name]!) -> \(after[name]!)")
            }
            let hostsBefore = Set(old.hosts.map(\.id)).subtracting(old.departingHosts), hostsAfter = Set(now.hosts.map(\.id)).subtracting(now.departingHosts)
            for id in hostsAfter.subtracting(hostsBefore).sorted() { changes.append("host \(id) joins") }
            for id in hostsBefore.subtracting(hostsAfter).sorted() { changes.append("host \(id) leaves (drains: its flows stay served, new flows go elsewhere)") }
            if old.lookupTableSize != now.lookupTableSize {
                changes.append("cluster.lookup_table_size \(old.lookupTableSize) -> \(now.lookupTableSize)")
            }
            let listenText = { (c: ClusterConfiguration) in
                c.listen.map { "\($0.service) \($0.address):\($0.port) weight \($0.weight)" }.joined(separator: ", ")
            }
            if listenText(old) != listenText(now) {
                changes.append("cluster.listen: [\(listenText(old))] -> [\(listenText(now))]")
            }
        }
        return changes
    }

    private static func hostText(_ host: HostSettings) -> String {
        "\(host.address)\(host.mac.map { " mac \($0)" } ?? "")"
    }

    private static func connectionsText(_ c: ConnectionSettings) -> String {
        "capacity \(c.capacity), embryonic_share \(c.embryonicShare), timeouts \(c.synTimeout)/\(c.tcpTimeout)/\(c.finTimeout)/\(c.udpTimeout)"
    }

    private static func gossipText(_ g: GossipSettings?) -> String {
        guard let g else { return "none" }
        return "bind \(g.bindAddress):\(g.bindPort), "
            + "multicast \(g.multicast.map { "\($0)" } ?? "none"), "
            + "timers \(g.heartbeatMilliseconds)/\(g.peerTimeoutMilliseconds)/\(g.digestIntervalMilliseconds)" + ", replicate \(g.replicate.rawValue)"
    }

    private static func serviceText(_ s: ServiceSettings) -> String {
        "\(s.transport) \(s.vip):\(s.port) backends [" + s.backends.map {
            "host \($0.hostID) \($0.address):\($0.port) weight \($0.weight)"
        }.joined(separator: ", ") + "]" + (s.healthCheck.map { h in
            " health_check \(h.kind.rawValue) every \(h.intervalMilliseconds) ms, timeout \(h.timeoutMilliseconds) ms, rise \(h.rise), fall \(h.fall)"
                + (h.kind == .http ? ", GET \(h.path) = \(h.status)" : "") + (h.port.map { ", port \($0)" } ?? "")
        } ?? "")
    }
}
