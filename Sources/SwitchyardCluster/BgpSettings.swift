import Foundation
import SwitchyardConfig

/// The `bgp:` section: the BIRD 2 speaker the engine runs to announce its VIPs (docs/bgp.md).
///
///     bgp:
///       local_as: 65001                 this host's AS (1-4294967295)
///       router_id: 198.18.2.11          IPv4; BGP identifier of this host's speaker
///       next_hop: 198.18.0.11           IPv4 the router sends VIP traffic to (default: cluster host address)
///       source: 198.18.2.11             optional: local address of the sessions
///       peers:                          the routers (1 or more)
///         - { address: 198.18.2.1, as: 65000 }
///       hold_time: 9  keepalive_time: 3 seconds (hold 3-65535, keepalive 1-hold/3)
///       bfd: { interval_ms: 100, multiplier: 3 }   optional; off when absent
///       drain_seconds: 5                wait between the withdrawal and the stop of a graceful shutdown
///       vips: [198.19.0.1]              optional: default every IPv4 VIP of cluster.services
///       backends: local                 local | cluster: which backends keep a VIP announced
///       bird: /usr/sbin/bird  birdc: /usr/sbin/birdc  run_dir: /run/switchyard/bgp-NAME
public struct BgpSettings: Sendable, Equatable {
    public var localAS: UInt32
    public var routerID: IPAddress
    public var nextHop: IPAddress
    public var source: IPAddress?
    public var peers: [BgpPeer]
    public var holdTime: Int = 9
    public var keepaliveTime: Int = 3
    public var bfd: BfdSettings?
    public var drainSeconds: Double = 5
    /// The VIPs this host announces (IPv4, each the VIP of at least one service), in file order.
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
        let nextHop: IPAddress
        if let value = map.optional("next_hop") {
            nextHop = try ipv4(value)
        } else if let cluster {
            guard cluster.localHost.address.isIPv4 else {
                throw map.error("this host's cluster address is IPv6: give an IPv4 next_hop", key: "next_hop")
            }
            nextHop = cluster.localHost.address
        } else {
            nextHop = routerID // the cluster section has errors of its own; this value is never used
        }
        let source = try map.optional("source").map(ipv4)
        var peers: [BgpPeer] = []
        let peerValues = try map.required("peers").list()
        if peerValues.isEmpty { throw map.error("at least one peer is needed", key: "peers") }
        for (index, item) in peerValues.enumerated() {
            let peer = try item.within("bgp peer #\(index + 1)").map()
            let address = try ipv4(peer.required("address"))
            let asNumber = UInt32(try peer.int("as", in: asRange))
            try peer.finish()
            if peers.contains(where: { $0.address == address }) {
                throw peer.error("peer \(address) is given twice", key: "address")
            }
            peers.append(BgpPeer(address: address, asNumber: asNumber, line: peer.line))
        }
        var settings = BgpSettings(localAS: localAS, routerID: routerID, nextHop: nextHop, source: source, peers: peers,
                                   vips: [], line: map.line)
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
                guard vip.isIPv4 else { throw item.error("\(vip): only IPv4 VIPs are announced (docs/bgp.md)") }
                if let cluster, !cluster.services.contains(where: { $0.vip == vip }) {
                    throw item.error("\(vip) is not the VIP of any service in cluster.services (VIPs: "
                        + Set(cluster.services.map(\.vip.description)).sorted().joined(separator: ", ") + ")")
                }
                guard !settings.vips.contains(vip) else { throw item.error("\(vip) is given twice") }
                settings.vips.append(vip)
            }
            if settings.vips.isEmpty { throw map.error("list at least one VIP, or leave the key out", key: "vips") }
        } else if let cluster {
            for service in cluster.services where service.vip.isIPv4 && !settings.vips.contains(service.vip) {
                settings.vips.append(service.vip)
            }
            if settings.vips.isEmpty {
                throw map.error("cluster.services has no IPv4 VIP to announce (only IPv4 VIPs are announced)")
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

    private static func ipv4(_ value: ConfigValue) throws -> IPAddress {
        let text = try value.string()
        guard let address = IPAddress(text) else { throw value.error("'\(text)' is not an IP address") }
        guard address.isIPv4 else { throw value.error("'\(text)' is not an IPv4 address") }
        return address
    }

    private static func absolutePath(_ map: ConfigMap, _ key: String, default fallback: String) throws -> String {
        guard let value = map.optional(key) else { return fallback }
        let path = try value.string()
        guard path.hasPrefix("/") else { throw value.error("must be an absolute path") }
        return path
    }
}
