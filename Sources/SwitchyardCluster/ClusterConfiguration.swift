import SwitchyardConfig

/// The `cluster:` section of the configuration file: who the hosts are, which VIPs and services the
/// cluster answers for, which bypass tuples (backends) serve them, how hosts tunnel to each other,
/// and how the connection table is sized. Stages of the single-IP-image pipeline read it; it is
/// validated with the rest of the file. See docs/configuration.md, section "cluster".
///
///     cluster:
///       host: 1                      this host's id
///       hosts:    [{id, address, mac}]
///       tunnel:   {kind: vxlan | gue, port, vni}
///       services: [{name, vip, protocol, port, backends: [{host, address, port, weight}]}]
///       connections: {capacity, embryonic_share, timeouts}
///       egress:   [{address, resources: [prefix], destinations: [prefix], ports: {HOST: "LOW-HIGH"}}]
public struct ClusterConfiguration: Sendable {
    public var localHostID: Int
    public var hosts: [HostSettings]
    public var tunnel: TunnelSettings
    public var services: [ServiceSettings]
    public var connections: ConnectionSettings
    /// Entries of the Maglev lookup table of each service (a prime).
    public var lookupTableSize: Int
    /// The `gossip:` key: connection ownership shared with the other hosts (docs/gossip.md).
    public var gossip: GossipSettings?
    /// The `egress:` key: outbound connections of the resources, from the cluster's address.
    public var egress: [EgressSettings] = []
    /// Not errors, but worth a look (`file:line:col: context: key 'K': message`), printed by
    /// `switchyard validate` and `run`: egress port ranges smaller than `EgressSettings.smallRange`.
    public var warnings: [String] = []
    /// Hosts a reload removed from `hosts` while they still owned flows here: the engine keeps
    /// them in `hosts` (tunnels and gossip still reach them) and lists their ids here until they
    /// own none (docs/gossip.md, "Hosts join and leave"). Never read from the file.
    public var departingHosts: [Int] = []

    public var localHost: HostSettings { hosts.first { $0.id == localHostID }! }
    /// The address family of the underlay (4 or 6): every host of a cluster has one of this family,
    /// so tunnels between hosts all carry IPv4 or all carry IPv6 outer headers.
    public var underlayFamily: UInt8 { localHost.address.family }
    public func host(id: Int) -> HostSettings? { hosts.first { $0.id == id } }
}

public struct HostSettings: Sendable {
    /// 1...4095: carried in packet metadata, connection entries and gossip.
    public var id: Int
    /// The host's uplink address: tunnels to it go there, the engine answers ARP/ND for it.
    public var address: IPAddress
    /// The inner Ethernet destination of VXLAN packets sent to this host (a kernel VXLAN device's
    /// MAC); nil keeps the frame's own destination.
    public var mac: MACAddress?
    public var line: Int
}

public enum TunnelKind: String, Sendable {
    /// RFC 7348: outer UDP (default port 4789), 8-byte header with a VNI, the inner Ethernet frame.
    case vxlan
    /// Generic UDP Encapsulation, variant 0 (default port 6080): 4-byte header, the inner IP packet.
    case gue
}

public struct TunnelSettings: Sendable {
    public var kind: TunnelKind = .vxlan
    public var port: UInt16 = 4789
    /// VXLAN network identifier (24 bits).
    public var vni: UInt32 = 1
}

public enum TransportProtocol: String, Sendable {
    case tcp, udp
    public var number: UInt8 { self == .tcp ? 6 : 17 }
}

public struct ServiceSettings: Sendable {
    public var name: String
    public var vip: IPAddress
    public var transport: TransportProtocol
    public var port: UInt16
    public var backends: [BackendSettings]
    public var line: Int
    /// `mss_clamp`: the largest TCP MSS a SYN or SYN-ACK of this service may announce (an
    /// `mss-clamp` stage lowers larger ones); nil: not clamped.
    public var mssClamp: Int? = nil
}

extension ServiceSettings {
    /// Allowed `mss_clamp` values: from the IPv4 minimum MSS (RFC 879) to a 9000-byte jumbo MTU.
    public static let mssClampRange = 536...9000
}

/// A bypass tuple: a private address and port of a resource on one host.
public struct BackendSettings: Sendable {
    public var hostID: Int
    public var address: IPAddress
    public var port: UInt16
    /// Relative share of new flows; 0 drains the backend (established flows stay).
    public var weight: Int
    public var line: Int
}

public struct ConnectionSettings: Sendable {
    /// Entries of the connection table (rounded up by DPDK to its bucket layout).
    public var capacity: Int = 1 << 20
    /// At most this share of the capacity may hold flows that have only sent a SYN; past it, new
    /// SYNs are translated by consistent hashing without an entry, so a SYN flood cannot crowd
    /// established connections out.
    public var embryonicShare: Double = 0.25
    public var synTimeout: Double = 5
    public var tcpTimeout: Double = 300
    public var finTimeout: Double = 10
    public var udpTimeout: Double = 60
}

/// One egress address (docs/configuration.md, `cluster.egress`): which resources may open
/// connections to which destinations with it as their source, and which source ports each host
/// allocates from. Any host knows the owner of a reply from its destination port alone.
public struct EgressSettings: Sendable {
    /// Ranges smaller than this are warned about: the range is the most connections this host can
    /// hold open to one destination (address, port) through this address.
    public static let smallRange = 1024

    public struct Prefix: Sendable, Equatable {
        public var address: IPAddress
        public var length: Int
        public init(address: IPAddress, length: Int) { self.address = address; self.length = length }
        public func contains(_ other: IPAddress) -> Bool { other.matches(prefix: address, length: length) }
        public var description: String { "\(address)/\(length)" }
    }

    public struct PortRange: Sendable {
        public var hostID: Int
        public var low: UInt16
        public var high: UInt16
        public var line: Int
        public var count: Int { Int(high) - Int(low) + 1 }
    }

    public var address: IPAddress
    public var resources: [Prefix]
    public var destinations: [Prefix]
    /// One range per host of the cluster, disjoint.
    public var ranges: [PortRange]
    public var line: Int

    public func range(host: Int) -> PortRange? { ranges.first { $0.hostID == host } }
}

// MARK: - Parsing

extension ClusterConfiguration {
    /// Parses and checks the `cluster:` section; every error names the key and the line.
    public static func parse(_ value: ConfigValue) throws -> ClusterConfiguration {
        let map = try value.within("cluster").map()
        let hostValue = try map.required("host")
        let localHostID = try hostValue.int(in: 1...4095)

        var hosts: [HostSettings] = []
        for (index, item) in try map.list("hosts").enumerated() {
            let host = try parseHost(item.within("host #\(index + 1)"))
            if let previous = hosts.first(where: { $0.id == host.id }) {
                throw item.error("host id \(host.id) is used twice (also on line \(previous.line))")
            }
            if let previous = hosts.first(where: { $0.address == host.address }) {
                throw item.error("address \(host.address) is used by two hosts (also on line \(previous.line))")
            }
            if let first = hosts.first, first.address.family != host.address.family {
                throw try item.within("host #\(index + 1)").map().error("host \(host.id) is IPv\(host.address.family) but host \(first.id) (line \(first.line)) is IPv\(first.address.family): all hosts of a cluster share one underlay family", key: "address")
            }
            hosts.append(host)
        }
        guard hosts.contains(where: { $0.id == localHostID }) else {
            throw hostValue.error("host \(localHostID) is not in `hosts` (ids: \(hosts.map { String($0.id) }.joined(separator: ", ")))")
        }

        var tunnel = TunnelSettings()
        if let tunnelValue = map.optional("tunnel") {
            let tunnelMap = try tunnelValue.within("cluster tunnel").map()
            tunnel.kind = TunnelKind(rawValue: try tunnelMap.choice("kind", ["vxlan", "gue"], default: "vxlan"))!
            tunnel.port = UInt16(try tunnelMap.int("port", default: tunnel.kind == .vxlan ? 4789 : 6080, in: 1...65535))
            if tunnel.kind == .vxlan {
                tunnel.vni = UInt32(try tunnelMap.int("vni", default: 1, in: 0...0xff_ffff))
            } else if tunnelMap.has("vni") {
                throw tunnelMap.error("only VXLAN has a VNI", key: "vni")
            }
            try tunnelMap.finish()
        }

        let tableSize = try map.int("lookup_table_size", default: 65537, in: 7...1_000_003)
        if !isPrime(tableSize) {
            throw map.error("\(tableSize) is not a prime (Maglev tables need one, for example 65537 or 655373)",
                            key: "lookup_table_size")
        }

        var services: [ServiceSettings] = []
        for (index, item) in try map.list("services").enumerated() {
            let label = (try? item.map().optional("name")?.string()).flatMap { $0 }.map { "service '\($0)'" }
                ?? "service #\(index + 1)"
            let service = try parseService(item.within(label), hosts: hosts)
            if let previous = services.first(where: { $0.name == service.name }) {
                throw item.error("service name '\(service.name)' is used twice (also on line \(previous.line))")
            }
            if let previous = services.first(where: {
                $0.vip == service.vip && $0.transport == service.transport && $0.port == service.port
            }) {
                throw item.error("\(service.vip) \(service.transport.rawValue) port \(service.port) is already service '\(previous.name)'")
            }
            if let host = hosts.first(where: { $0.address == service.vip }) {
                throw item.error("VIP \(service.vip) is the address of host \(host.id)")
            }
            for backend in service.backends {
                for other in services {
                    if other.transport == service.transport,
                       other.backends.contains(where: { $0.address == backend.address && $0.port == backend.port })
                    {
                        throw item.error("backend \(backend.address) port \(backend.port) also serves '\(other.name)': replies could not be translated back to one VIP")
                    }
                }
            }
            services.append(service)
        }

        var connections = ConnectionSettings()
        if let connectionsValue = map.optional("connections") {
            let c = try connectionsValue.within("cluster connections").map()
            connections.capacity = try c.int("capacity", default: connections.capacity, in: 1024...(1 << 28))
            connections.embryonicShare = try c.double("embryonic_share", default: 0.25, in: 0.01...1)
            if let timeoutsValue = c.optional("timeouts") {
                let t = try timeoutsValue.within("cluster connections timeouts").map()
                connections.synTimeout = try t.double("syn", default: connections.synTimeout, in: 0.1...86400)
                connections.tcpTimeout = try t.double("tcp", default: connections.tcpTimeout, in: 0.1...864000)
                connections.finTimeout = try t.double("fin", default: connections.finTimeout, in: 0.1...86400)
                connections.udpTimeout = try t.double("udp", default: connections.udpTimeout, in: 0.1...864000)
                try t.finish()
            }
            try c.finish()
        }
        let gossip = try map.optional("gossip").map { try GossipSettings.parse($0, hosts: hosts, localHostID: localHostID) }
        var warnings: [String] = []
        var egress: [EgressSettings] = []
        for (index, item) in try map.list("egress").enumerated() {
            let entry = try parseEgress(item.within("cluster egress #\(index + 1)"), hosts: hosts, services: services,
                                        earlier: egress, warnings: &warnings)
            egress.append(entry)
        }
        try map.finish()
        var configuration = ClusterConfiguration(localHostID: localHostID, hosts: hosts, tunnel: tunnel, services: services,
                                                 connections: connections, lookupTableSize: tableSize, gossip: gossip)
        configuration.egress = egress
        configuration.warnings = warnings
        return configuration
    }

    /// One `cluster.egress` item. Errors name the item (`cluster egress #N`), the key and the line.
    private static func parseEgress(_ value: ConfigValue, hosts: [HostSettings], services: [ServiceSettings],
                                    earlier: [EgressSettings], warnings: inout [String]) throws -> EgressSettings
    {
        let map = try value.map()
        let addressValue = try map.required("address")
        let address = try parseAddress(addressValue)
        if let host = hosts.first(where: { $0.address == address }) {
            throw addressValue.error("\(address) is the address of host \(host.id): an egress address is a VIP or an address of its own")
        }
        if let previous = earlier.first(where: { $0.address == address }) {
            throw addressValue.error("\(address) is already an egress address (line \(previous.line))")
        }
        func prefixes(_ key: String) throws -> [EgressSettings.Prefix] {
            let list = try map.list(key)
            guard !list.isEmpty else { throw map.error("at least one prefix is needed", key: key) }
            return try list.map { item in
                let text = try item.string()
                let parts = text.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 2, let prefix = IPAddress(String(parts[0])) else {
                    throw item.error("'\(text)' is not a prefix (like 198.18.100.0/24 or fd00::/8)")
                }
                let bits = prefix.family == 4 ? 32 : 128
                guard let length = Int(parts[1]), (0...bits).contains(length) else {
                    throw item.error("'\(parts[1])' is not a prefix length for IPv\(prefix.family) (0...\(bits))")
                }
                guard prefix.family == address.family else {
                    throw item.error("\(text) is IPv\(prefix.family) but the egress address is IPv\(address.family): translation keeps the family")
                }
                return EgressSettings.Prefix(address: prefix, length: length)
            }
        }
        let resources = try prefixes("resources")
        // Resources are the backends' side: a prefix holding a VIP or a host address would let
        // the uplink's own traffic leave as the egress address.
        for (prefix, item) in zip(resources, try map.list("resources")) {
            if let host = hosts.first(where: { prefix.contains($0.address) }) {
                throw item.error("\(prefix.description) holds host \(host.id)'s address \(host.address): resources are addresses on the backends' side")
            }
            if let service = services.first(where: { prefix.contains($0.vip) }) {
                throw item.error("\(prefix.description) holds the VIP \(service.vip) of '\(service.name)': resources are addresses on the backends' side")
            }
        }
        let destinations = try prefixes("destinations")

        let portsValue = try map.required("ports")
        let portsMap = try portsValue.within(value.context).map()
        var ranges: [EgressSettings.PortRange] = []
        for key in portsMap.keys {
            let rangeValue = try portsMap.required(key)
            guard let hostID = Int(key), hosts.contains(where: { $0.id == hostID }) else {
                throw rangeValue.error("'\(key)' is not a host id of cluster.hosts", key: "ports")
            }
            let text = try rangeValue.string()
            let bounds = text.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count == 2, let low = Int(bounds[0]), let high = Int(bounds[1]),
                  (1...65535).contains(low), (1...65535).contains(high), low <= high
            else {
                throw rangeValue.error("'\(text)' is not a port range LOW-HIGH (1 <= LOW <= HIGH <= 65535)", key: "ports")
            }
            let range = EgressSettings.PortRange(hostID: hostID, low: UInt16(low), high: UInt16(high), line: rangeValue.line)
            if let other = ranges.first(where: { Int($0.low) <= high && low <= Int($0.high) }) {
                throw rangeValue.error("host \(hostID)'s ports \(text) overlap host \(other.hostID)'s \(other.low)-\(other.high) (line \(other.line)): the owner of a reply is known from its port alone", key: "ports")
            }
            for service in services where service.vip == address && (low...high).contains(Int(service.port)) {
                throw rangeValue.error("\(text) holds port \(service.port) of service '\(service.name)' on the same address", key: "ports")
            }
            if range.count < EgressSettings.smallRange {
                let error = rangeValue.error("host \(hostID) has \(range.count) ports (\(text)): at most \(range.count) connections to one destination at a time, fewer than \(EgressSettings.smallRange)", key: "ports")
                warnings.append("warning: " + error.description)
            }
            ranges.append(range)
        }
        for host in hosts where !ranges.contains(where: { $0.hostID == host.id }) {
            throw portsValue.error("host \(host.id) has no port range: every host needs its own (\"\(host.id)\": \"LOW-HIGH\")")
        }
        try map.finish()
        return EgressSettings(address: address, resources: resources, destinations: destinations, ranges: ranges,
                              line: map.line)
    }

    private static func parseHost(_ value: ConfigValue) throws -> HostSettings {
        let map = try value.map()
        let id = try map.int("id", in: 1...4095)
        let address = try parseAddress(map.required("address"))
        var mac: MACAddress?
        if let macValue = map.optional("mac") {
            guard let parsed = MACAddress(try macValue.string()) else {
                throw macValue.error("'\(try macValue.string())' is not a MAC address (like 02:00:00:00:00:01)")
            }
            mac = parsed
        }
        try map.finish()
        return HostSettings(id: id, address: address, mac: mac, line: map.line)
    }

    private static func parseService(_ value: ConfigValue, hosts: [HostSettings]) throws -> ServiceSettings {
        let map = try value.map()
        let name = try map.string("name")
        let vip = try parseAddress(map.required("vip"))
        let transport = TransportProtocol(rawValue: try map.choice("protocol", ["tcp", "udp"], default: "tcp"))!
        let port = UInt16(try map.int("port", in: 1...65535))
        var mssClamp: Int?
        if map.has("mss_clamp") {
            mssClamp = try map.int("mss_clamp", in: ServiceSettings.mssClampRange)
            guard transport == .tcp else {
                throw map.error("applies to TCP services only (this one is protocol: udp)", key: "mss_clamp")
            }
        }
        var backends: [BackendSettings] = []
        let list = try map.list("backends")
        guard !list.isEmpty else { throw map.error("a service needs at least one backend", key: "backends") }
        for (index, item) in list.enumerated() {
            let b = try item.within("service '\(name)' backend #\(index + 1)").map()
            let hostValue = try b.required("host")
            let hostID = try hostValue.int(in: 1...4095)
            guard hosts.contains(where: { $0.id == hostID }) else {
                throw hostValue.error("host \(hostID) is not in cluster.hosts")
            }
            let address = try parseAddress(b.required("address"))
            guard address.family == vip.family else {
                throw b.error("the VIP is IPv\(vip.family) but this backend is IPv\(address.family): translation keeps the family", key: "address")
            }
            let backendPort = UInt16(try b.int("port", default: Int(port), in: 1...65535))
            let weight = try b.int("weight", default: 1, in: 0...65535)
            if backends.contains(where: { $0.address == address && $0.port == backendPort }) {
                throw b.error("backend \(address) port \(backendPort) is listed twice", key: "address")
            }
            try b.finish()
            backends.append(BackendSettings(hostID: hostID, address: address, port: backendPort, weight: weight, line: b.line))
        }
        try map.finish()
        return ServiceSettings(name: name, vip: vip, transport: transport, port: port, backends: backends, line: map.line,
                               mssClamp: mssClamp)
    }

    /// Parses the body of a `cluster:` section given on its own (tests, benchmarks, tools): the
    /// same checks as in a configuration file, errors naming `file` and the line in `body`.
    public static func parse(sectionBody body: String, file: String) throws -> ClusterConfiguration {
        let text = "cluster:\n" + body.split(separator: "\n", omittingEmptySubsequences: false)
            .map { "  " + $0 }.joined(separator: "\n")
        let document = try ConfigDocument.parse(text, file: file)
        let configuration = try parse(try document.required("cluster"))
        try document.finish()
        return configuration
    }

    /// An IPv4 or IPv6 address value.
    public static func parseAddress(_ value: ConfigValue) throws -> IPAddress {
        let text = try value.string()
        guard let address = IPAddress(text) else { throw value.error("'\(text)' is not an IPv4 or IPv6 address") }
        return address
    }

    static func isPrime(_ n: Int) -> Bool {
        guard n >= 2 else { return false }
        var divisor = 2
        while divisor * divisor <= n {
            if n % divisor == 0 { return false }
            divisor += 1
        }
        return true
    }
}
