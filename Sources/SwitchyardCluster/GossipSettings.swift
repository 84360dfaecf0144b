import Foundation
import SwitchyardConfig

/// The `gossip:` key of the cluster section: how the hosts of a cluster tell each other which
/// connections they own (seed 004). See docs/gossip.md.
///
///     cluster:
///       gossip:
///         key: 5f0c…(64+ hex digits)     or  key_file: /etc/switchyard/gossip.key
///         port: 7946                      UDP port of every member (default)
///         members:                        optional: gossip addresses that differ from cluster.hosts
///           - { host: 2, address: 10.0.0.2, port: 7946 }      (IPv4 or IPv6, one family for all)
///         bind: 10.0.0.1                  optional: local address (default: this host's member address)
///         multicast: { group: 239.1.1.1, port: 7946, interface: 10.0.0.1, ttl: 1, loop: false }
///         heartbeat_ms: 200  peer_timeout_ms: 1000  digest_interval_ms: 1000
///         max_messages_per_poll: 65536  receive_budget_ms: 5  replay_window: 1024
///         down_retention_ms: 300000  sync_pages_per_poll: 256  max_clock_skew_ms: 60000
///         replicate: all                  or exceptions: only flows the Maglev tables do not imply
///
/// The members are all IPv4 or all IPv6 (one socket of that family; the multicast group too).
/// Without `multicast`, every message goes to each member by unicast. With it, heartbeats, flow
/// batches and digests go to the group; sync requests and responses always go by unicast.
public struct GossipSettings: Sendable {
    /// The shared secret of the HMAC-SHA256 that authenticates every message (at least 32 bytes).
    public var key: [UInt8]
    /// One entry per host of `cluster.hosts`, in the same order: where its gossip comes from.
    public var members: [GossipMember]
    /// The local address and port the unicast socket binds (messages leave from it).
    public var bindAddress: IPAddress
    public var bindPort: UInt16
    public var multicast: GossipMulticast?
    public var heartbeatMilliseconds: Int = 200
    /// A peer silent for this long is down.
    public var peerTimeoutMilliseconds: Int = 1000
    public var digestIntervalMilliseconds: Int = 1000
    /// Datagrams read per `poll` at most; a poll reads until the socket is empty otherwise.
    public var maxMessagesPerPoll: Int = 65536
    /// Time one `poll` may spend reading datagrams: a gossip flood cannot hold the control thread.
    public var receiveBudgetMilliseconds: Int = 5
    /// Sequence numbers remembered per sender (replay protection), a multiple of 64.
    public var replayWindow: Int = 1024
    /// How long the flows of a down peer are kept before they are deleted.
    public var downRetentionMilliseconds: Int = 300_000
    /// Sync response pages sent per `poll` (all requesters together).
    public var syncPagesPerPoll: Int = 256
    /// Messages whose sender incarnation lies further in the future than this are dropped.
    public var maxClockSkewMilliseconds: Int = 60_000
    /// Testing only: drop this share of received datagrams before any check (injected loss, counted
    /// as `dropped-injected-loss`). 0 in production.
    public var testReceiveLoss: Double = 0
    /// Which of this host's flows go to its peers (docs/gossip.md, "Scale"): every one, or only the
    /// exceptions, whose owner is not the host the current Maglev tables pick.
    public var replicate: GossipReplication = .all

    public func member(host id: Int) -> GossipMember? { members.first { $0.hostID == id } }
}

/// `cluster.gossip.replicate`: what an owner announces and what its digest and sync cover.
///
///     all         every flow it owns (every host holds every host's flows)
///     exceptions  only the flows whose owner is not the host of the current Maglev pick: a peer
///                 without an entry sends the others to the pick's host, which owns them anyway
public enum GossipReplication: String, Sendable, CaseIterable {
    case all
    case exceptions
}

/// Where one host's gossip comes from and goes to.
public struct GossipMember: Sendable, Equatable {
    public var hostID: Int
    public var address: IPAddress
    public var port: UInt16

    public init(hostID: Int, address: IPAddress, port: UInt16) {
        self.hostID = hostID
        self.address = address
        self.port = port
    }
}

public struct GossipMulticast: Sendable, Equatable {
    public var group: IPAddress
    public var port: UInt16
    /// The address of the local interface that joins the group and sends to it.
    public var interface: IPAddress
    public var ttl: Int = 1
    /// Deliver the group's datagrams to other sockets of this machine (several engines on one
    /// host, tests). A node always ignores its own messages.
    public var loop: Bool = false

    public init(group: IPAddress, port: UInt16, interface: IPAddress, ttl: Int = 1, loop: Bool = false) {
        self.group = group
        self.port = port
        self.interface = interface
        self.ttl = ttl
        self.loop = loop
    }
}

extension GossipSettings {
    /// Parses `cluster.gossip`; every error names the key and its line.
    public static func parse(_ value: ConfigValue, hosts: [HostSettings], localHostID: Int) throws -> GossipSettings {
        let map = try value.within("cluster gossip").map()
        let key = try parseKey(map)
        let port = UInt16(try map.int("port", default: 7946, in: 1...65535))

        var overrides: [Int: GossipMember] = [:]
        for (index, item) in try map.list("members").enumerated() {
            let m = try item.within("cluster gossip member #\(index + 1)").map()
            let hostValue = try m.required("host")
            let id = try hostValue.int(in: 1...4095)
            guard hosts.contains(where: { $0.id == id }) else { throw hostValue.error("host \(id) is not in cluster.hosts") }
            if overrides[id] != nil { throw hostValue.error("host \(id) has two gossip members") }
            let address = try unicast(m.required("address"))
            let memberPort = UInt16(try m.int("port", default: Int(port), in: 1...65535))
            try m.finish()
            overrides[id] = GossipMember(hostID: id, address: address, port: memberPort)
        }
        let members = hosts.map { overrides[$0.id] ?? GossipMember(hostID: $0.id, address: $0.address, port: port) }
        // One socket of one family carries the gossip: every member is IPv4, or every member IPv6.
        if let first = members.first, let other = members.first(where: { $0.address.family != first.address.family }) {
            throw map.error("gossip runs over one address family: host \(first.hostID) has the gossip address \(first.address), host \(other.hostID) has \(other.address); give every host an address of the same family under `members`",
                            key: "members")
        }
        if let member = members.first(where: { !$0.address.isIPv4 && $0.address.bytes[0] == 0xfe && $0.address.bytes[1] & 0xc0 == 0x80 }) {
            throw map.error("host \(member.hostID)'s gossip address \(member.address) is link-local (fe80::/10), which needs an interface: give a global or unique local address under `members`",
                            key: "members")
        }
        for (i, a) in members.enumerated() {
            if let b = members[(i + 1)...].first(where: { $0.address == a.address && $0.port == a.port }) {
                throw map.error("hosts \(a.hostID) and \(b.hostID) have the same gossip address \(a.address) port \(a.port)",
                                key: "members")
            }
        }
        let local = members.first { $0.hostID == localHostID }!
        let bindAddress = try map.optional("bind").map { value in
            let address = try unicast(value)
            guard address.family == local.address.family else {
                throw value.error("\(address) is not of the gossip members' family (this host's member address is \(local.address))")
            }
            return address
        } ?? local.address

        var multicast: GossipMulticast?
        if let multicastValue = map.optional("multicast") {
            let m = try multicastValue.within("cluster gossip multicast").map()
            let groupValue = try m.required("group")
            let group: IPAddress
            if bindAddress.isIPv4 {
                group = try ipv4(groupValue)
                guard UInt8(truncatingIfNeeded: group.high) & 0xf0 == 0xe0 else {
                    throw groupValue.error("\(group) is not an IPv4 multicast address (224.0.0.0/4)")
                }
            } else {
                group = try unicast(groupValue)
                guard !group.isIPv4, group.bytes[0] == 0xff else {
                    throw groupValue.error("\(group) is not an IPv6 multicast address (ff00::/8): the members are IPv6")
                }
            }
            let interface = try m.optional("interface").map { value in
                let address = try unicast(value)
                guard address.family == bindAddress.family else {
                    throw value.error("\(address) is not of the gossip members' family")
                }
                return address
            } ?? bindAddress
            multicast = GossipMulticast(group: group, port: UInt16(try m.int("port", default: Int(port), in: 1...65535)),
                                        interface: interface, ttl: try m.int("ttl", default: 1, in: 1...255),
                                        loop: try m.bool("loop", default: false))
            try m.finish()
        }

        var settings = GossipSettings(key: key, members: members, bindAddress: bindAddress, bindPort: local.port,
                                      multicast: multicast)
        settings.heartbeatMilliseconds = try map.int("heartbeat_ms", default: 200, in: 10...60_000)
        let timeoutValue = map.optional("peer_timeout_ms")
        settings.peerTimeoutMilliseconds = try timeoutValue?.int(in: 20...3_600_000) ?? max(1000, 5 * settings.heartbeatMilliseconds)
        if settings.peerTimeoutMilliseconds < 2 * settings.heartbeatMilliseconds {
            throw map.error("\(settings.peerTimeoutMilliseconds) ms is less than two heartbeats (\(2 * settings.heartbeatMilliseconds) ms): peers would flap",
                            key: "peer_timeout_ms")
        }
        settings.digestIntervalMilliseconds = try map.int("digest_interval_ms", default: 1000, in: 10...3_600_000)
        settings.maxMessagesPerPoll = try map.int("max_messages_per_poll", default: 65536, in: 1...1_000_000)
        settings.receiveBudgetMilliseconds = try map.int("receive_budget_ms", default: 5, in: 1...1000)
        let windowValue = map.optional("replay_window")
        settings.replayWindow = try windowValue?.int(in: 64...65536) ?? 1024
        if settings.replayWindow % 64 != 0 {
            throw map.error("\(settings.replayWindow) is not a multiple of 64", key: "replay_window")
        }
        settings.downRetentionMilliseconds = try map.int("down_retention_ms", default: 300_000, in: 0...86_400_000)
        settings.syncPagesPerPoll = try map.int("sync_pages_per_poll", default: 256, in: 1...4096)
        settings.maxClockSkewMilliseconds = try map.int("max_clock_skew_ms", default: 60_000, in: 1...86_400_000)
        settings.testReceiveLoss = try map.double("test_receive_loss", default: 0, in: 0...0.9)
        settings.replicate = GossipReplication(rawValue: try map.choice("replicate", GossipReplication.allCases.map(\.rawValue),
                                                                        default: "all"))!
        try map.finish()
        return settings
    }

    /// `key` (hex, at least 64 digits) or `key_file` (a file holding the same), exactly one.
    private static func parseKey(_ map: ConfigMap) throws -> [UInt8] {
        let keyValue = map.optional("key")
        let fileValue = map.optional("key_file")
        switch (keyValue, fileValue) {
        case (nil, nil):
            throw map.error("gossip needs a shared key: `key` (hex) or `key_file` (a file holding it)", key: "key")
        case (.some, .some):
            throw map.error("give either `key` or `key_file`, not both", key: "key_file")
        case (let value?, nil):
            let text = try value.string()
            guard let key = hexKey(text) else {
                throw value.error("expected at least 64 hex digits (32 bytes), an even number of them (`openssl rand -hex 32`)")
            }
            return key
        case (nil, let value?):
            let path = try value.string()
            guard let contents = FileManager.default.contents(atPath: path),
                  let text = String(data: contents, encoding: .utf8)
            else { throw value.error("cannot read \(path)") }
            guard let key = hexKey(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw value.error("\(path) does not hold a key of at least 64 hex digits (32 bytes)")
            }
            return key
        }
    }

    static func hexKey(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count >= 64, digits.count % 2 == 0 else { return nil }
        var key: [UInt8] = []
        key.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = hexDigit(digits[index]), let low = hexDigit(digits[index + 1]) else { return nil }
            key.append(high << 4 | low)
            index += 2
        }
        return key
    }

    private static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        case 0x41...0x46: c - 0x41 + 10
        default: nil
        }
    }

    /// An IPv4 or IPv6 address.
    private static func unicast(_ value: ConfigValue) throws -> IPAddress {
        try ClusterConfiguration.parseAddress(value)
    }

    private static func ipv4(_ value: ConfigValue) throws -> IPAddress {
        let address = try ClusterConfiguration.parseAddress(value)
        guard address.isIPv4 else { throw value.error("gossip runs over IPv4: give an IPv4 address") }
        return address
    }
}
