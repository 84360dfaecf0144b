import Foundation
import SwitchyardConfig

/// The `bgp:` section: the BIRD 2 speaker the engine runs to announce its VIPs (docs/bgp.md).
///
///     bgp:
///       local_as: 65001                 this host's AS (1-4294967295)
///       router_id: 198.18.2.11          IPv4; BGP identifier of this host's speaker
///       next_hop: 198.18.0.11           IPv4 the router sends IPv4 VIP traffic to (default: an IPv4 cluster host address)
///       next_hop6: fd00::11             IPv6 the router sends IPv6 VIP traffic to (default: an IPv6 cluster host address)
///       source: 198.18.2.11             optional: local address of the sessions (the peers' family)
///       peers:                          the routers (1 or more), IPv4 or IPv6 sessions
///         - { address: 198.18.2.1, as: 65000 }
///       hold_time: 9  keepalive_time: 3 seconds (hold 3-65535, keepalive 1-hold/3)
///       bfd: { interval_ms: 100, multiplier: 3 }   optional; off when absent
///       drain_seconds: 5                wait between the withdrawal and the stop of a graceful shutdown
///       vips: [198.19.0.1]              optional: default every VIP of cluster.services whose family has a next hop
///       backends: local                 local | cluster: which backends keep a VIP announced
///       bird: /usr/sbin/bird  birdc: /usr/sbin/birdc  run_dir: /run/switchyard/bgp-NAME
public struct BgpSettings: Sendable, Equatable {
    public var localAS: UInt32
    public var routerID: IPAddress
    /// The next hop of the IPv4 VIPs (nil: none; then no IPv4 VIP is announced).
    public var nextHop: IPAddress?
    /// The next hop of the IPv6 VIPs (nil: none; then no IPv6 VIP is announced).
    public var nextHop6: IPAddress?
    public var source: IPAddress?
    public var peers: [BgpPeer]
    public var holdTime: Int = 9
    public var keepaliveTime: Int = 3
    public var bfd: BfdSettings?
    public var drainSeconds: Double = 5
    /// The VIPs this host announces (each the VIP of at least one service, of a family with a next
    /// hop), in file order.
    public var vips: [IPAddress]
    public var scope: AnnouncementScope = .local
    public var birdPath = "/usr/sbin/bird"
    public var birdcPath = "/usr/sbin/birdc"
    /// Where the generated bird.conf, vips.conf, control socket and log live; nil: /run/switchyard/bgp-NAME.
    public var runDirectory: String?
    public var line: Int

    /// The run directory for an engine named `name`.
    public func runDirectory(name: String) -> String { runDirectory ?? "/run/switchyard/bgp-\(name)" }
}

public struct BgpPeer: Sendable, Equatable {
    public var address: IPAddress
    public var asNumber: UInt32
    public var line: Int
}

/// BFD on every session: the router declares this host dead after `multiplier` missed intervals.
public struct BfdSettings: Sendable, Equatable {
    public var intervalMilliseconds: Int = 100
    public var multiplier: Int = 3

    public init(intervalMilliseconds: Int = 100, multiplier: Int = 3) {
        self.intervalMilliseconds = intervalMilliseconds
        self.multiplier = multiplier
    }
}

/// Which backends count for the announcement rule (`AnnouncementPolicy`).
public enum AnnouncementScope: String, Sendable {
    /// A backend of this host (`backends[].host` is this host) that is healthy.
    case local
    /// Any backend of the service, on any host, that is healthy: a host that only forwards.
    case cluster
}

extension BgpSettings {
    public static let asRange: ClosedRange<Int> = 1...4_294_967_295

    /// Parses the section; `cluster` is the parsed cluster section (nil when absent or invalid;
    /// `hasClusterSection` tells the two apart), against which the VIPs are checked.
    public static func parse(_ value: ConfigValue, cluster: ClusterConfiguration?, hasClusterSection: Bool) throws
        -> BgpSettings
    {
        let map = try value.within("bgp").map()
        guard hasClusterSection else {
            throw map.error("bgp announces the VIPs of cluster.services: it needs a `cluster:` section")
        }
        let localAS = UInt32(try map.int("local_as", in: asRange))
        let routerID = try ipv4(map.required("router_id"))
        // Each family's next hop: given, or this host's cluster (uplink) address when it is of that family.
        let clusterAddress = cluster?.localHost.address
        let nextHop = try map.optional("next_hop").map(ipv4) ?? clusterAddress.flatMap { $0.isIPv4 ? $0 : nil }
        let nextHop6 = try map.optional("next_hop6").map(ipv6) ?? clusterAddress.flatMap { $0.isIPv4 ? nil : $0 }
        let source = try map.optional("source").map(address)
        var peers: [BgpPeer] = []
        let peerValues = try map.required("peers").list()
        if peerValues.isEmpty { throw map.error("at least one peer is needed", key: "peers") }
        for (index, item) in peerValues.enumerated() {
            let peer = try item.within("bgp peer #\(index + 1)").map()
            let addressValue = try peer.required("address")
            let address = try Self.address(addressValue)
            if let source, source.family != address.family {
                throw addressValue.error("\(address) is not of the family of `source` (\(source)): a session's two ends are of one family")
            }
            let asNumber = UInt32(try peer.int("as", in: asRange))
            try peer.finish()
            if peers.contains(where: { $0.address == address }) {
                throw peer.error("peer \(address) is given twice", key: "address")
            }
            peers.append(BgpPeer(address: address, asNumber: asNumber, line: peer.line))
        }
        var settings = BgpSettings(localAS: localAS, routerID: routerID, nextHop: nextHop, nextHop6: nextHop6,
                                   source: source, peers: peers, vips: [], line: map.line)
        settings.holdTime = try map.int("hold_time", default: 9, in: 3...65535)
        settings.keepaliveTime = try map.int("keepalive_time", default: max(1, settings.holdTime / 3),
                                             in: 1...max(1, settings.holdTime / 3))
        if let bfdValue = map.optional("bfd") {
            let bfd = try bfdValue.within("bgp bfd").map()
            settings.bfd = BfdSettings(intervalMilliseconds: try bfd.int("interval_ms", default: 100, in: 10...10_000),
                                       multiplier: try bfd.int("multiplier", default: 3, in: 1...255))
            try bfd.finish()
        }
        settings.drainSeconds = try map.double("drain_seconds", default: 5, in: 0...3600)
        if let vipValues = map.optional("vips") {
            for item in try vipValues.list() {
                let text = try item.string()
                guard let vip = IPAddress(text) else { throw item.error("'\(text)' is not an IP address") }
                // (Without a valid cluster section there is no default next hop; its errors come first.)
                if cluster != nil && vip.isIPv4 && nextHop == nil {
                    throw item.error("\(vip) needs an IPv4 next hop: give `next_hop` (this host's cluster address is IPv6)")
                }
                if cluster != nil && !vip.isIPv4 && nextHop6 == nil {
                    throw item.error("\(vip) needs an IPv6 next hop: give `next_hop6` (this host's cluster address is IPv4)")
                }
                if let cluster, !cluster.services.contains(where: { $0.vip == vip }) {
                    throw item.error("\(vip) is not the VIP of any service in cluster.services (VIPs: "
                        + Set(cluster.services.map(\.vip.description)).sorted().joined(separator: ", ") + ")")
                }
                guard !settings.vips.contains(vip) else { throw item.error("\(vip) is given twice") }
                settings.vips.append(vip)
            }
            if settings.vips.isEmpty { throw map.error("list at least one VIP, or leave the key out", key: "vips") }
        } else if let cluster {
            // Every VIP of a family with a next hop (an IPv4 underlay announces its IPv4 VIPs, and
            // its IPv6 ones too once `next_hop6` is given; an IPv6 underlay the other way round).
            for service in cluster.services where !settings.vips.contains(service.vip)
                && (service.vip.isIPv4 ? nextHop != nil : nextHop6 != nil)
            {
                settings.vips.append(service.vip)
            }
            if settings.vips.isEmpty {
                throw map.error("cluster.services has no VIP of a family with a next hop to announce (IPv4 VIPs need `next_hop`, IPv6 VIPs `next_hop6`, each defaulting to this host's cluster address of that family)")
            }
        }
        settings.scope = AnnouncementScope(rawValue: try map.choice("backends", ["local", "cluster"], default: "local"))!
        settings.birdPath = try absolutePath(map, "bird", default: settings.birdPath)
        settings.birdcPath = try absolutePath(map, "birdc", default: settings.birdcPath)
        if map.has("run_dir") {
            let directory = try absolutePath(map, "run_dir", default: "")
            // BIRD's control socket lives there: a Unix socket path is at most 107 bytes.
            guard directory.utf8.count + "/bird.ctl".utf8.count < 108 else {
                throw map.error("too long: the control socket inside it must stay under 108 bytes", key: "run_dir")
            }
            settings.runDirectory = directory
        }
        try map.finish()
        return settings
    }

    private static func address(_ value: ConfigValue) throws -> IPAddress {
        let text = try value.string()
        guard let address = IPAddress(text) else { throw value.error("'\(text)' is not an IP address") }
        return address
    }

    private static func ipv4(_ value: ConfigValue) throws -> IPAddress {
        let address = try address(value)
        guard address.isIPv4 else { throw value.error("'\(address)' is not an IPv4 address") }
        return address
    }

    private static func ipv6(_ value: ConfigValue) throws -> IPAddress {
        let address = try address(value)
        guard !address.isIPv4 else { throw value.error("'\(address)' is not an IPv6 address") }
        return address
    }

    /// Whether any announced VIP is IPv4 / IPv6 (the channels of every session).
    public var announcesIPv4: Bool { vips.contains { $0.isIPv4 } }
    public var announcesIPv6: Bool { vips.contains { !$0.isIPv4 } }

    private static func absolutePath(_ map: ConfigMap, _ key: String, default fallback: String) throws -> String {
        guard let value = map.optional(key) else { return fallback }
        let path = try value.string()
        guard path.hasPrefix("/") else { throw value.error("must be an absolute path") }
        return path
    }
}
