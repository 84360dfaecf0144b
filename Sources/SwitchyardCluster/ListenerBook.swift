/// Listener registration (seeds 002/003): a resource on a host says that it listens on a bypass
/// tuple for a service, and every host adds that backend to the service's Maglev table.
///
///     ctl listen / cluster.listen ──► this host's ListenerSet (version + 1) ──LISTENERS──► peers
///     peers' LISTENERS ─────────────► their ListenerSet, if newer (ordering rule) ──┐
///                                                                                 ▼
///     cluster.services (file) + every host's listeners ──► effective services ──► ServiceDirectory
///
/// **Ordering rule.** Each host is the only writer of its own listener set. Every change (listen,
/// unlisten, a new weight) makes a new version of the whole set, numbered (incarnation, version):
/// the host's gossip incarnation (higher after every restart) and a counter that starts at 1 in
/// each incarnation. A host replaces what it holds for a peer only by a set with a higher
/// (incarnation, version), compared in that order; an older or equal one changes nothing. Sets are
/// whole states, not deltas, so every host that holds the same versions holds the same sets, in
/// whatever order the messages came and however many were lost, and it builds the same Maglev
/// tables from them (`ClusterConfiguration.adding(listeners:)` orders backends the same way
/// everywhere). The directory generation is the list of (host, incarnation, version) held.
///
/// Used by the control thread only.
public final class ListenerBook: @unchecked Sendable {
    /// One registered backend: the service by its tuple, the bypass tuple and its weight.
    public struct Listener: Hashable, Sendable, Comparable {
        public var vip: IPAddress
        public var protocolNumber: UInt8
        /// The service's port (host order).
        public var servicePort: UInt16
        /// The bypass tuple (host order port).
        public var address: IPAddress
        public var port: UInt16
        public var weight: UInt16
        /// Withdrawn (`ctl unlisten`): in the table at weight 0, so that it takes no new flow while
        /// the replies of its established connections are still translated back to the VIP. The
        /// owner removes it once its connection table holds no connection to it.
        public var withdrawn: Bool
        /// Failed its health checks (issue 11 item 2): weight 0 until it recovers. A record of a
        /// backend of `cluster.services` that this host owns carries only this flag: it marks
        /// that backend down everywhere (the file's backend itself is not registered again).
        public var down: Bool

        public init(vip: IPAddress, protocolNumber: UInt8, servicePort: UInt16, address: IPAddress, port: UInt16, weight: UInt16,
                    withdrawn: Bool = false, down: Bool = false)
        {
            self.down = down
            self.vip = vip
            self.protocolNumber = protocolNumber
            self.servicePort = servicePort
            self.address = address
            self.port = port
            self.weight = weight
            self.withdrawn = withdrawn
        }

        /// The weight the Maglev table uses: 0 once withdrawn.
        public var effectiveWeight: UInt16 { withdrawn || down ? 0 : weight }

        /// Same service and bypass tuple (the weight aside).
        public func isSameBackend(_ other: Listener) -> Bool {
            vip == other.vip && protocolNumber == other.protocolNumber && servicePort == other.servicePort
                && address == other.address && port == other.port
        }

        /// The canonical order: by service tuple, then bypass tuple (bytes), then weight.
        public static func < (a: Listener, b: Listener) -> Bool {
            let ka = (a.vip.bytes, a.protocolNumber, a.servicePort, a.address.bytes, a.port, a.weight)
            let kb = (b.vip.bytes, b.protocolNumber, b.servicePort, b.address.bytes, b.port, b.weight)
            if ka.0 != kb.0 { return ka.0.lexicographicallyPrecedes(kb.0) }
            if ka.1 != kb.1 { return ka.1 < kb.1 }
            if ka.2 != kb.2 { return ka.2 < kb.2 }
            if ka.3 != kb.3 { return ka.3.lexicographicallyPrecedes(kb.3) }
            if ka.4 != kb.4 { return ka.4 < kb.4 }
            if ka.5 != kb.5 { return ka.5 < kb.5 }
            if a.withdrawn != b.withdrawn { return !a.withdrawn }
            return !a.down && b.down
        }
    }

    /// Where one of this host's listeners came from.
    public enum Source: String, Sendable {
        /// `cluster.listen` in the configuration file.
        case file
        /// `switchyard ctl listen`.
        case ctl
    }

    /// The whole listener set of one host, as of one version.
    public struct ListenerSet: Equatable, Sendable {
        public var incarnation: UInt64
        public var version: UInt64
        /// Sorted (canonical order), no two with the same service and bypass tuple.
        public var listeners: [Listener]

        public init(incarnation: UInt64, version: UInt64, listeners: [Listener]) {
            self.incarnation = incarnation
            self.version = version
            self.listeners = listeners.sorted()
        }

        /// The ordering rule: is this set newer than `other`?
        public func isNewer(than other: ListenerSet) -> Bool {
            (incarnation, version) > (other.incarnation, other.version)
        }
    }

    /// What `apply` did with a peer's set.
    public enum Outcome: Equatable, Sendable {
        /// Newer than what was held: replaced it.
        case applied
        /// Older than, or the same version as, what is held: nothing changed.
        case stale
    }

    public let localHostID: UInt16
    /// Every host's set this host holds, its own included.
    public private(set) var sets: [UInt16: ListenerSet] = [:]
    /// Where each of this host's own listeners came from.
    public private(set) var sources: [Listener: Source] = [:]
    /// When each host's current set was taken (`ContinuousClock`-free: seconds from `now()`).
    public private(set) var changedAt: [UInt16: Double] = [:]
    /// Counts every change of any set (own or a peer's): the engine republishes its tables when it moves.
    public private(set) var changes: UInt64 = 0
    /// Sets of peers that were older than or equal to what was held (`listeners-stale`).
    public private(set) var staleSets: UInt64 = 0
    /// The most listeners one host may register: what one LISTENERS datagram carries (31 IPv6 records).
    public let capacity: Int
    /// 31: the IPv6 records (42 bytes) that one LISTENERS datagram carries.
    public static let defaultCapacity = 31
    let clock: () -> Double

    /// `incarnation`: this host's run (the gossip node's, when there is one).
    public init(localHostID: UInt16, incarnation: UInt64, capacity: Int = ListenerBook.defaultCapacity, clock: @escaping () -> Double = { 0 }) {
        self.localHostID = localHostID
        self.capacity = capacity
        self.clock = clock
        sets[localHostID] = ListenerSet(incarnation: incarnation, version: 0, listeners: [])
        changedAt[localHostID] = clock()
    }

    /// This host's own set.
    public var own: ListenerSet { sets[localHostID]! }

    /// An independent copy (a preview changes the copy, never the book the engine runs).
    public func copy() -> ListenerBook {
        let book = ListenerBook(localHostID: localHostID, incarnation: own.incarnation, capacity: capacity, clock: clock)
        book.sets = sets
        book.sources = sources
        book.changedAt = changedAt
        book.changes = changes
        book.staleSets = staleSets
        return book
    }

    /// Registers (or re-weights) a backend of this host. Returns false when nothing changed.
    @discardableResult
    public func listen(_ listener: Listener, source: Source) throws -> Bool {
        var list = own.listeners
        if let index = list.firstIndex(where: { $0.isSameBackend(listener) }) {
            sources[list[index]] = nil
            if list[index] == listener {
                sources[listener] = source
                return false
            }
            list.remove(at: index)
        } else if list.count >= capacity {
            throw ListenerError("this host has \(list.count) listeners, the most one gossip message carries")
        }
        list.append(listener)
        sources[listener] = source
        replaceOwn(list)
        return true
    }

    /// Marks a backend of this host down (failed health checks) or up again: for a listener, its
    /// `down` flag; for a backend of `cluster.services` (`isFileBackend`), a record that carries
    /// the flag. Returns true when the set changed (a new version).
    @discardableResult
    public func setDown(_ backend: Listener, down: Bool, isFileBackend: Bool) -> Bool {
        var list = own.listeners
        if let index = list.firstIndex(where: { $0.isSameBackend(backend) }) {
            guard list[index].down != down else { return false }
            if isFileBackend && !down {
                sources[list.remove(at: index)] = nil
            } else {
                let source = sources.removeValue(forKey: list[index])
                list[index].down = down
                sources[list[index]] = source
            }
        } else {
            guard isFileBackend && down else { return false }
            var record = backend
            record.down = true
            list.append(record)
        }
        replaceOwn(list)
        return true
    }

    /// Withdraws a backend of this host: it stays, withdrawn (weight 0), until `purge`. Returns
    /// the listener as it was, or nil when there was none (or it was withdrawn already).
    @discardableResult
    public func unlisten(_ listener: Listener) -> Listener? {
        var list = own.listeners
        guard let index = list.firstIndex(where: { $0.isSameBackend(listener) }), !list[index].withdrawn else { return nil }
        let before = list[index]
        let source = sources.removeValue(forKey: before)
        list[index].withdrawn = true
        sources[list[index]] = source
        replaceOwn(list)
        return before
    }

    /// Removes a withdrawn backend of this host for good (no connection to it is left).
    @discardableResult
    public func purge(_ listener: Listener) -> Bool {
        var list = own.listeners
        guard let index = list.firstIndex(where: { $0.isSameBackend(listener) && $0.withdrawn }) else { return false }
        sources[list.remove(at: index)] = nil
        replaceOwn(list)
        return true
    }

    /// Replaces every listener of this host that came from `source` with `listeners` (a reload
    /// of `cluster.listen`); one new version when anything changed.
    public func replaceOwn(from source: Source, with listeners: [Listener]) {
        let kept = own.listeners.filter { sources[$0] != source && !listeners.contains(where: $0.isSameBackend) }
        // A file listener that is no longer in the file is withdrawn, like `ctl unlisten`.
        let dropped = own.listeners.filter { sources[$0] == source && !listeners.contains(where: $0.isSameBackend) }
            .map { var l = $0; l.withdrawn = true; return l }
        let list = (kept.filter { sources[$0] != source } + dropped + listeners).sorted()
        for listener in own.listeners where sources[listener] == source { sources[listener] = nil }
        for listener in dropped { sources[listener] = source }
        for listener in listeners { sources[listener] = source }
        if list != own.listeners { replaceOwn(list) }
    }

    private func replaceOwn(_ list: [Listener]) {
        let current = own
        sets[localHostID] = ListenerSet(incarnation: current.incarnation, version: current.version + 1, listeners: list)
        changedAt[localHostID] = clock()
        changes += 1
    }

    /// A peer's set (from gossip), under the ordering rule.
    @discardableResult
    public func apply(host: UInt16, set: ListenerSet) -> Outcome {
        guard host != localHostID else { return .stale }
        if let held = sets[host], !set.isNewer(than: held) {
            staleSets += 1
            return .stale
        }
        sets[host] = set
        changedAt[host] = clock()
        changes += 1
        return .applied
    }

    /// Forgets a peer's set (nothing uses this yet but tests; kept for a host that leaves).
    public func forget(host: UInt16) {
        guard host != localHostID, sets.removeValue(forKey: host) != nil else { return }
        changedAt[host] = nil
        changes += 1
    }

    /// The directory generation: (host, incarnation, version) of every set held, by host.
    public var generation: [(host: UInt16, incarnation: UInt64, version: UInt64)] {
        sets.keys.sorted().map { ($0, sets[$0]!.incarnation, sets[$0]!.version) }
    }

    /// The generation as text: "1:3 2:1" (host:version; versions of hosts without listeners too).
    public var generationText: String {
        generation.map { "\($0.host):\($0.version)" }.joined(separator: " ")
    }

    /// A 64-bit digest of every set held (FNV-1a over the canonical encoding): two hosts with the
    /// same digest build the same tables.
    public var digest: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ bytes: [UInt8]) { for byte in bytes { hash ^= UInt64(byte); hash = hash &* 0x0000_0100_0000_01b3 } }
        func mix64(_ value: UInt64) { mix((0..<8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }) }
        for host in sets.keys.sorted() {
            let set = sets[host]!
            mix64(UInt64(host)); mix64(set.incarnation); mix64(set.version)
            for l in set.listeners {
                mix(l.vip.bytes); mix([l.protocolNumber]); mix64(UInt64(l.servicePort))
                mix(l.address.bytes); mix64(UInt64(l.port)); mix64(UInt64(l.weight)); mix([l.withdrawn ? 1 : 0, l.down ? 1 : 0])
            }
        }
        return hash
    }

    /// Every host's listeners, in the order the directory adds them: by host id, then canonical.
    public var all: [(host: UInt16, listener: Listener)] {
        sets.keys.sorted().flatMap { host in sets[host]!.listeners.map { (host, $0) } }
    }
}

public struct ListenerError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

// MARK: - The effective services

extension ClusterConfiguration {
    /// Where a backend of the effective configuration came from.
    public enum BackendOrigin: Sendable, Equatable {
        /// `cluster.services[].backends` in the configuration file (every host has it).
        case config
        /// A backend of the file that its host marked down (failed health checks) in `version`.
        case configDown(host: UInt16, version: UInt64)
        /// A listener registered by `host` (gossiped), in the version `version` of its set.
        case listen(host: UInt16, version: UInt64)
    }

    /// A listener left out of the directory, and why.
    public struct SkippedListener: Sendable {
        public var host: UInt16
        public var listener: ListenerBook.Listener
        public var reason: String
    }

    /// The configuration with every listener of `book` appended to its service's backends, in an
    /// order that every host computes the same way: the file's backends first, as listed, then
    /// listeners by host id, then in canonical order. A listener whose service is unknown here, or
    /// whose bypass tuple (protocol, address, port) is already a backend of any service (the file's
    /// win, then the lower host id), is left out and reported.
    public func adding(listeners book: ListenerBook?) -> (configuration: ClusterConfiguration, origins: [[BackendOrigin]],
                                                            skipped: [SkippedListener])
    {
        var result = self
        var origins = services.map { $0.backends.map { _ in BackendOrigin.config } }
        var skipped: [SkippedListener] = []
        guard let book else { return (result, origins, skipped) }
        struct Tuple: Hashable { var proto: UInt8; var address: IPAddress; var port: UInt16 }
        var taken = Set<Tuple>()
        for service in services {
            for backend in service.backends {
                taken.insert(Tuple(proto: service.transport.number, address: backend.address, port: backend.port))
            }
        }
        for (host, listener) in book.all {
            guard let index = services.firstIndex(where: {
                $0.vip == listener.vip && $0.transport.number == listener.protocolNumber && $0.port == listener.servicePort
            }) else {
                skipped.append(SkippedListener(host: host, listener: listener, reason: "no such service here"))
                continue
            }
            guard listener.address.family == services[index].vip.family else {
                skipped.append(SkippedListener(host: host, listener: listener, reason: "address family differs from the VIP's"))
                continue
            }
            guard hosts.contains(where: { $0.id == Int(host) }) else {
                skipped.append(SkippedListener(host: host, listener: listener, reason: "host \(host) is not in cluster.hosts"))
                continue
            }
            let tuple = Tuple(proto: listener.protocolNumber, address: listener.address, port: listener.port)
            // A health record of a file backend this host owns: that backend is down everywhere.
            if let b = services[index].backends.firstIndex(where: {
                $0.address == listener.address && $0.port == listener.port && $0.hostID == Int(host)
            }) {
                if listener.down {
                    result.services[index].backends[b].weight = 0
                    origins[index][b] = .configDown(host: host, version: book.sets[host]?.version ?? 0)
                }
                continue
            }
            guard taken.insert(tuple).inserted else {
                skipped.append(SkippedListener(host: host, listener: listener, reason: "bypass tuple already a backend"))
                continue
            }
            result.services[index].backends.append(BackendSettings(hostID: Int(host), address: listener.address,
                                                                   port: listener.port, weight: Int(listener.effectiveWeight), line: 0))
            origins[index].append(.listen(host: host, version: book.sets[host]?.version ?? 0))
        }
        return (result, origins, skipped)
    }
}
