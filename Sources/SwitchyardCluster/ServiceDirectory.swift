import CDPDK

/// One service (VIP, protocol, port) as the data plane reads it.
@frozen
public struct ServiceRecord {
    public var vip: IPAddress
    public var protocolNumber: UInt8
    /// Network byte order, as in the packet.
    public var portNetworkOrder: UInt16
    /// The Maglev table: `lookupTableSize` backend indices (global), or nil when every weight is 0.
    public var lookup: UnsafeMutablePointer<UInt32>?
    /// `mss_clamp` (host order), 0 when the service has none.
    public var mssClamp: UInt16 = 0
}

/// One backend (bypass tuple) as the data plane reads it.
@frozen
public struct BackendRecord {
    public var address: IPAddress
    /// Network byte order, as in the packet.
    public var portNetworkOrder: UInt16
    public var hostID: UInt16
    public var service: UInt16
    public var weight: UInt16
}

/// One egress address (`cluster.egress`) as the data plane reads it.
@frozen
public struct EgressRecord {
    public var address: IPAddress
    /// Port (host byte order) → the id of the host that owns it, 0 outside every range: 65536 entries.
    public var owners: UnsafeMutablePointer<UInt16>
    /// This host's range: first port (host byte order) and how many.
    public var localLow: UInt16
    public var localCount: UInt32
}

/// The global address translation map (seeds 000/001) built from `cluster.services`, in raw memory
/// that every lcore reads without locks or reference counting. Immutable once built.
///
///     (VIP, proto, port) ──services──► ServiceRecord ──lookup[hash % size]──► backend index
///                        (servicesByTuple; serviceIndex: the same as a perfect hash, for classify)
///     (backend addr, proto, port) ──backendsByTuple──► BackendRecord (replies: back to the VIP)
///     VIP / host address ──addresses──► what it is (answer ARP/ND/echo, classify as VIP or host)
public final class ServiceDirectory: @unchecked Sendable {
    public let configuration: ClusterConfiguration
    public let serviceCount: Int
    public let backendCount: Int
    public let lookupTableSize: Int
    public let services: UnsafeMutablePointer<ServiceRecord>
    public let backends: UnsafeMutablePointer<BackendRecord>
    /// (VIP, protocol, port) → service index.
    public let servicesByTuple: TupleTable
    /// The same map as a perfect hash sized for the services (classify's common case).
    public let serviceIndex: ServiceIndex
    /// (backend address, protocol, port) → backend index.
    public let backendsByTuple: TupleTable
    /// Address (protocol 0, port 0) → AddressKind raw value | host id << 8 (hosts).
    public let addresses: TupleTable
    /// Host id → the host's uplink address (IPv4, network order) or 0 for unknown ids.
    public let hostAddresses: UnsafeMutablePointer<UInt32>
    public let localHostID: UInt16
    /// The egress addresses (`cluster.egress`), and address (protocol 0, port 0) → their index.
    public let egress: UnsafeMutablePointer<EgressRecord>
    public let egressCount: Int
    public let egressByAddress: TupleTable
    /// The directory this one replaced (listener registration, reload), kept so that a non-SYN
    /// packet without an entry can be handed on to the host the previous table gave its flow to
    /// (daisy chaining, docs/gossip.md). Nil at start, or when the services or the table size
    /// changed. The engine drops the previous one's own `previous` once no lcore reads it.
    public private(set) var previous: ServiceDirectory?
    /// Passive health signals per backend, counted by tuple-translate on the reply path (atomic
    /// adds, rare): [2 × backend] RSTs answering a SYN, [2 × backend + 1] ICMP unreachables from it.
    public let passiveSignals: UnsafeMutablePointer<UInt64>

    /// What an address of the cluster is.
    public enum AddressKind: UInt32 {
        case vip = 0
        case localHost = 1
        case peerHost = 2
    }

    public init(_ configuration: ClusterConfiguration, previous: ServiceDirectory? = nil) {
        self.configuration = configuration
        if let previous, previous.lookupTableSize == configuration.lookupTableSize,
           previous.configuration.services.map({ "\($0.vip) \($0.transport) \($0.port)" })
               == configuration.services.map({ "\($0.vip) \($0.transport) \($0.port)" })
        {
            self.previous = previous
        }
        localHostID = UInt16(configuration.localHostID)
        lookupTableSize = configuration.lookupTableSize
        serviceCount = configuration.services.count
        let allBackends = configuration.services.enumerated().flatMap { index, service in
            service.backends.map { (service: index, backend: $0) }
        }
        backendCount = allBackends.count
        services = .allocate(capacity: max(serviceCount, 1))
        backends = .allocate(capacity: max(backendCount, 1))
        passiveSignals = .allocate(capacity: max(2 * backendCount, 2))
        passiveSignals.initialize(repeating: 0, count: max(2 * backendCount, 2))

        var first = 0
        var serviceKeys: [(IPAddress, UInt8, UInt16, UInt32)] = []
        var addressKeys: [(IPAddress, UInt8, UInt16, UInt32)] = []
        for (index, service) in configuration.services.enumerated() {
            let keys = service.backends.map { $0.address.bytes + [UInt8(service.transport.number), UInt8($0.port >> 8), UInt8($0.port & 0xff)] }
            var lookup: UnsafeMutablePointer<UInt32>?
            if let table = Maglev.populate(keys: keys, weights: service.backends.map(\.weight), size: lookupTableSize) {
                let memory = UnsafeMutablePointer<UInt32>.allocate(capacity: lookupTableSize)
                for slot in 0..<lookupTableSize { memory[slot] = table[slot] + UInt32(first) }
                lookup = memory
            }
            (services + index).initialize(to: ServiceRecord(vip: service.vip, protocolNumber: service.transport.number,
                                                            portNetworkOrder: service.port.bigEndian, lookup: lookup,
                                                            mssClamp: UInt16(service.mssClamp ?? 0)))
            serviceKeys.append((service.vip, service.transport.number, service.port, UInt32(index)))
            addressKeys.append((service.vip, 0, 0, AddressKind.vip.rawValue))
            first += service.backends.count
        }
        var backendKeys: [(IPAddress, UInt8, UInt16, UInt32)] = []
        for (index, entry) in allBackends.enumerated() {
            let protocolNumber = configuration.services[entry.service].transport.number
            (backends + index).initialize(to: BackendRecord(
                address: entry.backend.address, portNetworkOrder: entry.backend.port.bigEndian,
                hostID: UInt16(entry.backend.hostID), service: UInt16(entry.service), weight: UInt16(entry.backend.weight)))
            backendKeys.append((entry.backend.address, protocolNumber, entry.backend.port, UInt32(index)))
        }
        hostAddresses = .allocate(capacity: 4096)
        hostAddresses.initialize(repeating: 0, count: 4096)
        for host in configuration.hosts {
            hostAddresses[host.id] = UInt32(truncatingIfNeeded: host.address.high)
            let kind = host.id == configuration.localHostID ? AddressKind.localHost : AddressKind.peerHost
            addressKeys.append((host.address, 0, 0, kind.rawValue | UInt32(host.id) << 8))
        }
        egressCount = configuration.egress.count
        egress = .allocate(capacity: max(egressCount, 1))
        var egressKeys: [(IPAddress, UInt8, UInt16, UInt32)] = []
        for (index, settings) in configuration.egress.enumerated() {
            let owners = UnsafeMutablePointer<UInt16>.allocate(capacity: 65536)
            owners.initialize(repeating: 0, count: 65536)
            for range in settings.ranges {
                for port in Int(range.low)...Int(range.high) { owners[port] = UInt16(range.hostID) }
            }
            let local = settings.range(host: configuration.localHostID)!
            (egress + index).initialize(to: EgressRecord(address: settings.address, owners: owners, localLow: local.low,
                                                         localCount: UInt32(local.count)))
            egressKeys.append((settings.address, 0, 0, UInt32(index)))
        }
        egressByAddress = TupleTable(egressKeys.map { ($0.0, $0.1, $0.2, $0.3) })
        servicesByTuple = TupleTable(serviceKeys.map { ($0.0, $0.1, $0.2, $0.3) })
        serviceIndex = ServiceIndex(serviceKeys.map { ($0.0, $0.1, $0.2, $0.3) })
        backendsByTuple = TupleTable(backendKeys.map { ($0.0, $0.1, $0.2, $0.3) })
        addresses = TupleTable(addressKeys.map { ($0.0, $0.1, $0.2, $0.3) })
    }

    deinit {
        for index in 0..<serviceCount { services[index].lookup?.deallocate() }
        services.deallocate()
        backends.deallocate()
        passiveSignals.deallocate()
        hostAddresses.deallocate()
        for index in 0..<egressCount { egress[index].owners.deallocate() }
        egress.deallocate()
        egressByAddress.deallocate()
        servicesByTuple.deallocate()
        serviceIndex.deallocate()
        backendsByTuple.deallocate()
        addresses.deallocate()
    }

    /// Lets the previous directory go (call once no lcore can read this directory's previous one's
    /// `previous`, i.e. after the graphs that read the previous directory were replaced).
    public func forgetPreviousOfPrevious() {
        previous?.previous = nil
    }

    /// Forgets the previous generation (before any lcore reads this directory: at start).
    public func forgetPrevious() {
        previous = nil
    }

    /// The raw view the data plane uses.
    public var view: ServiceView {
        ServiceView(services: services, backends: backends, servicesByTuple: servicesByTuple, serviceIndex: serviceIndex,
                    backendsByTuple: backendsByTuple, addresses: addresses, hostAddresses: hostAddresses,
                    lookupTableSize: UInt32(lookupTableSize),
                    lookupTableReciprocal: ServiceView.reciprocal(of: UInt32(lookupTableSize)),
                    localHostID: localHostID, egress: egress,
                    egressCount: egressCount, egressByAddress: egressByAddress,
                    previousServices: previous?.services, previousBackends: previous?.backends,
                    passiveSignals: passiveSignals)
    }
}

/// Pointers into a `ServiceDirectory`: what a stage keeps for the hot path (no ARC). Valid as long
/// as the directory lives; the stage also keeps the directory itself.
@frozen
public struct ServiceView {
    public let services: UnsafeMutablePointer<ServiceRecord>
    public let backends: UnsafeMutablePointer<BackendRecord>
    public let servicesByTuple: TupleTable
    public let serviceIndex: ServiceIndex
    public let backendsByTuple: TupleTable
    public let addresses: TupleTable
    public let hostAddresses: UnsafeMutablePointer<UInt32>
    public let lookupTableSize: UInt32
    /// `reciprocal(of: lookupTableSize)`: the slot of a flow hash by two multiplications, not a division.
    public let lookupTableReciprocal: UInt64
    public let localHostID: UInt16
    public let egress: UnsafeMutablePointer<EgressRecord>
    public let egressCount: Int
    public let egressByAddress: TupleTable
    /// The previous generation's services and backends (`ServiceDirectory.previous`), nil without one.
    public let previousServices: UnsafeMutablePointer<ServiceRecord>?
    public let previousBackends: UnsafeMutablePointer<BackendRecord>?
    /// `ServiceDirectory.passiveSignals`.
    public let passiveSignals: UnsafeMutablePointer<UInt64>

    /// The egress address `address` is, as an index into `egress`; nil when it is none.
    @inlinable @inline(__always)
    public func egressIndex(high: UInt64, low: UInt64, family: UInt8) -> Int? {
        guard egressCount > 0,
              let value = egressByAddress.find(high: high, low: low, tag: TupleTable.tag(family: family, protocol: 0, port: 0))
        else { return nil }
        return Int(value)
    }

    /// The host that owns `port` (network byte order) of egress address `index`; 0 for none.
    @inlinable @inline(__always)
    public func egressOwner(_ index: Int, portNetworkOrder port: UInt16) -> UInt16 {
        egress[index].owners[Int(UInt16(bigEndian: port))]
    }

    /// What `address` is to the cluster: (kind, host id) or nil for an address of nobody we know.
    @inlinable @inline(__always)
    public func classify(address high: UInt64, low: UInt64, family: UInt8) -> (kind: ServiceDirectory.AddressKind, hostID: UInt16)? {
        guard let value = addresses.find(high: high, low: low, tag: TupleTable.tag(family: family, protocol: 0, port: 0)) else {
            return nil
        }
        return (ServiceDirectory.AddressKind(rawValue: value & 0xff).unsafelyUnwrapped, UInt16(truncatingIfNeeded: value >> 8))
    }

    /// ceil(2^64 / size), for `slot(flowHash:)`.
    public static func reciprocal(of size: UInt32) -> UInt64 { UInt64.max / UInt64(size) &+ 1 }

    /// `flowHash % lookupTableSize`, computed as Lemire's "fastmod" (exact for every 32-bit hash and
    /// size): a 32-bit division costs the lcore tens of cycles per new flow, and this two multiplies.
    @inlinable @inline(__always)
    public func slot(flowHash: UInt32) -> Int {
        Self.slot(flowHash, size: lookupTableSize, reciprocal: lookupTableReciprocal)
    }

    /// `flowHash % size`, given `reciprocal(of: size)`.
    @inlinable @inline(__always)
    public static func slot(_ flowHash: UInt32, size: UInt32, reciprocal: UInt64) -> Int {
        let fraction = reciprocal &* UInt64(flowHash)
        return Int(truncatingIfNeeded: fraction.multipliedFullWidth(by: UInt64(size)).high)
    }

    /// The address of the Maglev slot of a flow of `service` (nil when every weight is 0), for a
    /// prefetch before `pick` reads it.
    @inlinable @inline(__always)
    public func slotAddress(service: Int, flowHash: UInt32) -> UnsafeMutablePointer<UInt32>? {
        services[service].lookup.map { $0 + slot(flowHash: flowHash) }
    }

    /// The backend (global index) Maglev picks for a new flow of `service`; nil when every weight is 0.
    @inlinable @inline(__always)
    public func pick(service: Int, flowHash: UInt32) -> UInt32? {
        guard let lookup = services[service].lookup else { return nil }
        return lookup[slot(flowHash: flowHash)]
    }

    /// The backend the previous generation's table picks for the flow (nil: no previous generation,
    /// or every weight was 0 there): its record in the previous generation's backends.
    @inlinable @inline(__always)
    public func previousPick(service: Int, flowHash: UInt32) -> UnsafeMutablePointer<BackendRecord>? {
        guard let previousServices, let previousBackends, let lookup = previousServices[service].lookup else { return nil }
        return previousBackends + Int(lookup[slot(flowHash: flowHash)])
    }
}
