import CDPDK

/// What a new service directory would do to the flows of a running one, before it is applied
/// (`switchyard ctl preview FILE`, docs/operations.md "Preview").
///
///     connection table ──each entry──► key ──FlowKeys.hash──► flow hash
///                                        ├─► current Maglev table ──► pick before ─┐
///                                        ├─► new Maglev table ──────► pick after  ─┼─► compare, per service
///                                        └─► the entry itself ──────► where it is ─┘
///     every slot of both tables ──► share of new flows that move, per backend and per host
///
/// Connections: a connection "changes pick" when the two tables give it different backends (or
/// hosts); it is "held by its entry" when the new table's pick differs from where its entry keeps
/// it (the entry's backend, or for a remote entry its owner host). Those are the connections
/// that stay only because of their entry: the data plane follows an entry whatever the tables
/// say (ownership-lookup), so they do not move; they would if their entry were lost (expired,
/// or a flow that never had one).
///
/// Only reads: the tables and entries are read as the `connections` command reads them (the
/// entry's control word first), so it runs on the control thread while the lcores work.
public struct ReloadPreview {
    /// One service, by its (VIP, protocol, port): it may exist before, after, or both.
    public struct Service {
        public var name: String
        public var vip: IPAddress
        public var protocolNumber: UInt8
        public var port: UInt16
        /// "added", "removed", "changed" (backends or weights differ) or "unchanged".
        public var status: String
        /// Live entries of the service: all of them, those owned here, those owned by peers (gossip).
        public var connections = 0
        public var local = 0
        public var remote = 0
        /// Entries whose table pick differs between the two tables (backend; host).
        public var pickChangesBackend = 0
        public var pickChangesHost = 0
        /// Entries the new table would send to another backend (host) than the one their entry
        /// keeps: they stay only because of their entry.
        public var heldByEntryBackend = 0
        public var heldByEntryHost = 0
        /// `heldByEntryBackend`, by entry state (`syn`, `established`, `closing`, `remote`, `datagram`).
        public var heldByState: [String: Int] = [:]
        /// New flows: the hash space's slots and how many change backend (host).
        public var slots = 0
        public var movedSlotsBackend = 0
        public var movedSlotsHost = 0
        /// False when the two tables differ in size: then the shares come from `sampledHashes`
        /// evenly spread flow hashes instead of every slot.
        public var exact = true
        public var backends: [Share] = []
        public var hosts: [Share] = []
    }

    /// One backend's (or host's) share of the hash space before and after, and the slots it
    /// loses to others and gains from others.
    public struct Share {
        /// "ADDRESS:PORT" for a backend, the host id for a host.
        public var name: String
        public var hostID: Int
        public var weightBefore: Int?
        public var weightAfter: Int?
        public var slotsBefore = 0
        public var slotsAfter = 0
        public var slotsLost = 0
        public var slotsGained = 0
    }

    public var services: [Service]
    /// Entries whose (VIP, protocol, port) is a service of neither directory.
    public var unmatched: Int
    /// Published entries walked (all services).
    public var walked: Int

    /// Flow hashes sampled per service when the table sizes differ.
    public static let sampledHashes = 1 << 18

    /// Compares `current` and `next` over every entry of `table` and every slot of the tables.
    public init(current: ServiceDirectory, next: ServiceDirectory, table: ConnectionTable) {
        // Services by tuple, in the order of the new configuration, then the removed ones.
        struct Tuple: Hashable { var vip: IPAddress; var protocolNumber: UInt8; var port: UInt16 }
        func tuple(_ s: ServiceSettings) -> Tuple { Tuple(vip: s.vip, protocolNumber: s.transport.number, port: s.port) }
        let before = current.configuration.services, after = next.configuration.services
        var order: [Tuple] = []
        var oldIndex: [Tuple: Int] = [:], newIndex: [Tuple: Int] = [:]
        for (index, service) in after.enumerated() where newIndex[tuple(service)] == nil {
            newIndex[tuple(service)] = index
            order.append(tuple(service))
        }
        for (index, service) in before.enumerated() where oldIndex[tuple(service)] == nil {
            oldIndex[tuple(service)] = index
            if newIndex[tuple(service)] == nil { order.append(tuple(service)) }
        }
        var rows: [Service] = order.map { key in
            let old = oldIndex[key].map { before[$0] }, new = newIndex[key].map { after[$0] }
            let status: String
            switch (old, new) {
            case (nil, _): status = "added"
            case (_, nil): status = "removed"
            case (let old?, let new?): status = Self.backendText(old) == Self.backendText(new) ? "unchanged" : "changed"
            }
            return Service(name: new?.name ?? old?.name ?? "-", vip: key.vip, protocolNumber: key.protocolNumber,
                           port: key.port, status: status)
        }
        var row: [Tuple: Int] = [:]
        for (index, key) in order.enumerated() { row[key] = index }

        // Backends by tuple: one number per distinct (address, port), shared by both sides, so
        // the loops below compare integers.
        let catalog = BackendCatalog(current: current, next: next)

        // 1. Every published entry.
        let oldView = current.view, newView = next.view
        var unmatched = 0, walked = 0
        var key = sy_flow_key()
        for position in 0..<table.positions {
            let entry = table.entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control), sy_flow_table_key_at(table.hash, Int32(position), &key) == 0 else { continue }
            walked += 1
            let family = key.family
            let vip = withUnsafeBytes(of: key.dst) { IPAddress(family: family, at: $0.baseAddress!) }
            let flow = Tuple(vip: vip, protocolNumber: key.protocol, port: UInt16(bigEndian: key.dst_port))
            guard let index = row[flow] else {
                unmatched += 1
                continue
            }
            let hash = FlowKeys.hash(&key)
            let oldPick = oldIndex[flow].flatMap { oldView.pick(service: $0, flowHash: hash) }.map { catalog.old[Int($0)] }
            let newPick = newIndex[flow].flatMap { newView.pick(service: $0, flowHash: hash) }.map { catalog.new[Int($0)] }
            let state = FlowEntry.state(control)
            let owner = Int(FlowEntry.owner(control))
            let heldAddress = IPAddress(family: FlowEntry.family(control) == 0 ? family : FlowEntry.family(control),
                                        high: entry.pointee.backendHigh, low: entry.pointee.backendLow)
            let held = catalog.number(BackendKey(address: heldAddress, port: UInt16(bigEndian: FlowEntry.backendPort(control))))
            rows[index].connections += 1
            if state == FlowState.remote.rawValue { rows[index].remote += 1 } else { rows[index].local += 1 }
            if oldPick?.backend != newPick?.backend { rows[index].pickChangesBackend += 1 }
            if oldPick?.hostID != newPick?.hostID { rows[index].pickChangesHost += 1 }
            if newPick?.backend != held {
                rows[index].heldByEntryBackend += 1
                rows[index].heldByState[Self.stateName(state), default: 0] += 1
            }
            if newPick?.hostID != owner { rows[index].heldByEntryHost += 1 }
        }

        // 2. The hash space, per service present on both sides or on one.
        for (index, key) in order.enumerated() {
            Self.compareSlots(&rows[index], catalog: catalog, old: oldIndex[key].map { (current, $0) },
                              new: newIndex[key].map { (next, $0) })
        }
        services = rows
        self.unmatched = unmatched
        self.walked = walked
    }

    struct BackendKey: Hashable {
        var address: IPAddress
        var port: UInt16
        var text: String { address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
    }

    /// A table's pick, as numbers: the backend (`BackendCatalog` number) and its host.
    struct Pick {
        var backend: Int
        var hostID: Int
    }

    /// Every backend tuple of both directories, numbered; and each directory's global backend
    /// index as a `Pick`.
    struct BackendCatalog {
        var numbers: [BackendKey: Int] = [:]
        var keys: [BackendKey] = []
        var old: [Pick] = []
        var new: [Pick] = []

        init(current: ServiceDirectory, next: ServiceDirectory) {
            old = Self.picks(current, into: &numbers, &keys)
            new = Self.picks(next, into: &numbers, &keys)
        }

        static func picks(_ directory: ServiceDirectory, into numbers: inout [BackendKey: Int], _ keys: inout [BackendKey]) -> [Pick] {
            (0..<directory.backendCount).map { index in
                let record = directory.backends[index]
                let key = BackendKey(address: record.address, port: UInt16(bigEndian: record.portNetworkOrder))
                if numbers[key] == nil {
                    numbers[key] = keys.count
                    keys.append(key)
                }
                return Pick(backend: numbers[key]!, hostID: Int(record.hostID))
            }
        }

        /// The number of a tuple, or -1 for one of neither directory.
        func number(_ key: BackendKey) -> Int { numbers[key] ?? -1 }
    }

    /// Fills the new-flow part of `row`: every slot when both tables have the same size, else
    /// `sampledHashes` flow hashes spread evenly over the 32-bit space.
    static func compareSlots(_ row: inout Service, catalog: BackendCatalog, old: (ServiceDirectory, Int)?,
                             new: (ServiceDirectory, Int)?)
    {
        let sameSize = old == nil || new == nil || old!.0.lookupTableSize == new!.0.lookupTableSize
        let size = (new ?? old)!.0.lookupTableSize
        row.exact = sameSize
        let count = sameSize ? size : sampledHashes
        row.slots = count
        // Every backend of either side is listed, with its weights, even one that gets no slot.
        var backends: [Int: Share] = [:], hosts: [Int: Share] = [:]
        var backendOrder: [Int] = []
        for (side, entry) in [(0, old), (1, new)] {
            guard let (directory, service) = entry else { continue }
            for backend in directory.configuration.services[service].backends {
                let number = catalog.number(BackendKey(address: backend.address, port: backend.port))
                if backends[number] == nil {
                    backends[number] = Share(name: catalog.keys[number].text, hostID: backend.hostID)
                    backendOrder.append(number)
                }
                if hosts[backend.hostID] == nil { hosts[backend.hostID] = Share(name: String(backend.hostID), hostID: backend.hostID) }
                if side == 0 { backends[number]!.weightBefore = backend.weight } else { backends[number]!.weightAfter = backend.weight }
            }
        }
        let oldView = old.map { $0.0.view }, newView = new.map { $0.0.view }
        let stride = (UInt64(1) << 32) / UInt64(count)
        for slot in 0..<count {
            let hash = sameSize ? UInt32(slot) : UInt32(truncatingIfNeeded: UInt64(slot) * stride + stride / 2)
            let before = old.flatMap { oldView!.pick(service: $0.1, flowHash: hash) }.map { catalog.old[Int($0)] }
            let after = new.flatMap { newView!.pick(service: $0.1, flowHash: hash) }.map { catalog.new[Int($0)] }
            if let before { backends[before.backend]?.slotsBefore += 1; hosts[before.hostID]?.slotsBefore += 1 }
            if let after { backends[after.backend]?.slotsAfter += 1; hosts[after.hostID]?.slotsAfter += 1 }
            if before?.backend != after?.backend {
                row.movedSlotsBackend += 1
                if let before { backends[before.backend]?.slotsLost += 1 }
                if let after { backends[after.backend]?.slotsGained += 1 }
            }
            if before?.hostID != after?.hostID {
                row.movedSlotsHost += 1
                if let before { hosts[before.hostID]?.slotsLost += 1 }
                if let after { hosts[after.hostID]?.slotsGained += 1 }
            }
        }
        row.backends = backendOrder.map { backends[$0]! }
        row.hosts = hosts.keys.sorted().map { hosts[$0]! }
    }

    static func backendText(_ s: ServiceSettings) -> String {
        s.backends.map { "\($0.hostID) \($0.address) \($0.port) \($0.weight)" }.joined(separator: ", ") + " mss \(s.mssClamp ?? 0)"
    }

    /// The state names of `ctl connections`.
    public static func stateName(_ state: UInt8) -> String {
        switch FlowState(rawValue: state) {
        case .embryonic: "syn"
        case .established: "established"
        case .closing: "closing"
        case .remote: "remote"
        case .datagram: "datagram"
        case nil: "unknown"
        }
    }
}
