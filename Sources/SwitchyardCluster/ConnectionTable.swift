import CDPDK

/// The connection table: flow → owning host, chosen bypass tuple, state, last seen (seed 004).
///
///     data-plane lcores ──lookup (bulk, lock-free)──► rte_hash ──position──► entries[position]
///                       ──add / delete (SYN, FIN, RST)──┘                   (FlowEntry, 32 bytes,
///                                                                             in DPDK memory)
///                       ──opened / closed events──► events ring (many producers) ──► control thread
///     control thread ──expiry scan (idle timeouts), deletes──► rte_hash
///
/// Keys are `sy_flow_key` (client address and port, VIP and port, protocol, family): the flow as
/// the client sent it. Bounded: it never grows past `capacity`; when full, new flows are translated
/// statelessly (Maglev) and counted. Entries that have only seen a SYN may take at most
/// `embryonicShare` of the capacity, so a SYN flood can neither evict nor crowd out established
/// connections; embryonic entries also expire first (`timeouts.syn`).
///
/// Memory safety across lcores: lookups take no lock (RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF), and a
/// deleted key's slot is reused only after every data-plane lcore has reported a quiescent state
/// (rte_hash's RCU integration on the engine's rte_rcu_qsbr). An entry is published by writing its
/// `control` word last (release) and unpublished by clearing it first.
public final class ConnectionTable: @unchecked Sendable {
    public let hash: OpaquePointer
    public let entries: UnsafeMutablePointer<FlowEntry>
    public let positions: Int
    public let events: OpaquePointer
    /// [0] embryonic entries, [1] events the ring refused, [2] inserts refused (table full),
    /// [3] published entries (rte_hash's own count includes deleted keys still waiting for RCU).
    public let shared: UnsafeMutablePointer<UInt64>
    public let settings: ConnectionSettings
    /// Seeds the egress port choice (egress-translate), kept across reloads, so every lcore probes
    /// the same ports for a connection and outsiders cannot predict them. Random per process, or
    /// given (`egressSeed(gossipKey:host:)`): a gossiping host's seed must survive its restart.
    public let egressSeed: UInt32
    let usesRCU: Bool

    /// The egress seed of a host whose cluster gossips: derived from the gossip key (a secret of
    /// the cluster, the same after a restart) and the host id. A restarted host then probes the
    /// same ports for a connection as before its restart, and finds the entry the gossip's full
    /// sync gives back; with a seed drawn anew, its resources' connections would break.
    public static func egressSeed(gossipKey: [UInt8], host: Int) -> UInt32 {
        let start = sy_hash_crc_4byte(UInt32(truncatingIfNeeded: host), 0x5359_4547) // "SYEG"
        return gossipKey.withUnsafeBytes { sy_hash_crc($0.baseAddress, UInt32($0.count), start) }
    }

    public init(name: String, settings: ConnectionSettings, socket: Int32, qsbr: OpaquePointer?,
                egressSeed: UInt32? = nil) throws {
        self.settings = settings
        self.egressSeed = egressSeed ?? UInt32.random(in: 0...UInt32.max)
        guard let hash = sy_flow_table_create("\(name)_flows", UInt32(settings.capacity), socket) else {
            // A lack of memory can read ENOENT here (seen with --no-huge -m 256): say what to change.
            throw ClusterError("cannot create the connection table (\(settings.capacity) entries): \(String(cString: sy_strerror(sy_errno()))); about 128 bytes of DPDK memory per entry: raise eal.memory_mb, reserve more hugepages or lower cluster.connections.capacity")
        }
        self.hash = hash
        if let qsbr {
            guard sy_flow_table_attach_rcu(hash, qsbr) == 0 else {
                sy_flow_table_free(hash)
                throw ClusterError("cannot attach RCU to the connection table: \(String(cString: sy_strerror(sy_errno())))")
            }
        }
        usesRCU = qsbr != nil
        guard let events = sy_elem_ring_create("\(name)_events", UInt32(MemoryLayout<sy_flow_event>.stride),
                                               UInt32(Self.eventsRingSize), socket) else {
            sy_flow_table_free(hash)
            throw ClusterError("cannot create the events ring: \(String(cString: sy_strerror(sy_errno())))")
        }
        self.events = events
        positions = Int(sy_flow_table_max_position(hash)) + 1
        // In DPDK memory, beside rte_hash's own: hugepages when the EAL has them (a million entries
        // in malloc's 4 KB pages cost a TLB miss on nearly every lookup). Zeroed: all FlowEntry().
        let bytes = positions * MemoryLayout<FlowEntry>.stride
        guard let memory = sy_zmalloc_socket("\(name)_entries", bytes, socket) else {
            sy_flow_table_free(hash)
            sy_ring_free(events)
            throw ClusterError("cannot allocate the connection entries (\(bytes >> 20) MiB for \(settings.capacity) connections) in DPDK memory: raise eal.memory_mb, reserve more hugepages or lower cluster.connections.capacity")
        }
        entries = memory.bindMemory(to: FlowEntry.self, capacity: positions)
        shared = .allocate(capacity: 8)
        shared.initialize(repeating: 0, count: 8)
    }

    deinit {
        sy_flow_table_free(hash)
        sy_ring_free(events)
        sy_free(entries)
        shared.deallocate()
    }

    /// The raw view a stage keeps for the hot path.
    public var view: ConnectionView {
        let hz = Double(sy_tsc_hz())
        return ConnectionView(hash: hash, entries: entries, events: events, shared: shared, usesRCU: usesRCU,
                              embryonicLimit: UInt64(Double(settings.capacity) * settings.embryonicShare),
                              tscHz: UInt64(hz))
    }

    /// Connections in the table now (published entries).
    public var count: Int { Int(sy_counter_read(shared + 3)) }
    public var embryonic: UInt64 { sy_counter_read(shared) }
    public var eventsRefused: UInt64 { sy_counter_read(shared + 1) }
    public var insertsRefused: UInt64 { sy_counter_read(shared + 2) }

    /// Slots of the events ring (6 MiB of 48-byte events): at the engine's 10 ms tick, the
    /// lcores may open or close up to 1.3 × 10⁷ flows per second before the ring refuses any.
    public static let eventsRingSize = 1 << 17

    /// Takes up to `max` events (control thread only).
    public func takeEvents(max: Int = 4096) -> [sy_flow_event] {
        // Sized by what waits: at every tick, an idle ring costs no buffer (a full one of `max`
        // events is 192 KiB, written on the CPU an lcore may share).
        let waiting = min(max, Int(sy_ring_count(events)))
        guard waiting > 0 else { return [] }
        var buffer = [sy_flow_event](repeating: sy_flow_event(), count: waiting)
        let count = buffer.withUnsafeMutableBytes {
            Int(sy_elem_ring_dequeue_burst(events, $0.baseAddress, UInt32(MemoryLayout<sy_flow_event>.stride), UInt32(waiting)))
        }
        buffer.removeLast(waiting - count)
        return buffer
    }

    /// Removes entries idle past their state's timeout, scanning `budget` positions from `cursor`
    /// (control thread). Returns the new cursor and the number expired; emits a closed event each.
    /// Remote entries are left to the gossip control plane.
    public func expire(from cursor: Int, budget: Int, now: UInt64) -> (cursor: Int, expired: Int) {
        let view = self.view
        let hz = Double(view.tscHz)
        // Remote entries (owned by a peer, learned by gossip) never expire here: their owner's
        // closed message, anti-entropy repair or the down-peer rule removes them (docs/gossip.md).
        let never = UInt64.max
        let limits: [UInt64] = [0, UInt64(settings.synTimeout * hz), UInt64(settings.tcpTimeout * hz),
                                UInt64(settings.finTimeout * hz), never, UInt64(settings.udpTimeout * hz)]
        var position = cursor, expired = 0
        for _ in 0..<min(budget, positions) {
            if position >= positions { position = 0 }
            let entry = entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            if FlowEntry.isValid(control) {
                let state = Int(FlowEntry.state(control))
                let seen = sy_relaxed_load_u64(&entry.pointee.lastSeen)
                if state < limits.count, now > seen, now - seen > limits[state] {
                    var key = sy_flow_key()
                    if sy_flow_table_key_at(hash, Int32(position), &key) == 0 {
                        view.remove(key: &key, hash: sy_flow_hash(hash, &key), position: Int32(position),
                                    control: control, reason: 3)
                        expired += 1
                    }
                }
            }
            position += 1
        }
        return (position, expired)
    }
}

/// Flow states, kept in `FlowEntry.control`.
public enum FlowState: UInt8 {
    /// Only a SYN has been seen (counts against the embryonic share).
    case embryonic = 1
    case established = 2
    /// The client sent FIN or RST: kept for `timeouts.fin` so the last packets still find it.
    case closing = 3
    /// Owned by another host (learned from gossip): packets go to that host.
    case remote = 4
    /// A UDP (or ICMP echo) flow.
    case datagram = 5
}

/// One connection, at the position rte_hash gave its key. 32 bytes.
///
///     control:  bit 63 valid | bits 56-58 state | bits 48-55 family | bits 32-47 owner host | bits 0-15 backend port
@frozen
public struct FlowEntry {
    public var control: UInt64 = 0
    /// TSC of the last packet.
    public var lastSeen: UInt64 = 0
    /// The chosen backend address (as in the packet).
    public var backendHigh: UInt64 = 0
    public var backendLow: UInt64 = 0

    public init() {}

    @inlinable @inline(__always)
    public static func makeControl(state: FlowState, family: UInt8, owner: UInt16, backendPortNetworkOrder: UInt16) -> UInt64 {
        1 << 63 | UInt64(state.rawValue) << 56 | UInt64(family) << 48 | UInt64(owner) << 32 | UInt64(backendPortNetworkOrder)
    }
    @inlinable @inline(__always) public static func isValid(_ control: UInt64) -> Bool { control >> 63 != 0 }
    @inlinable @inline(__always) public static func state(_ control: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: (control >> 56) & 7) }
    @inlinable @inline(__always) public static func family(_ control: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: control >> 48) }
    @inlinable @inline(__always) public static func owner(_ control: UInt64) -> UInt16 { UInt16(truncatingIfNeeded: control >> 32) }
    @inlinable @inline(__always) public static func backendPort(_ control: UInt64) -> UInt16 { UInt16(truncatingIfNeeded: control) }
    @inlinable @inline(__always) public static func withState(_ control: UInt64, _ state: FlowState) -> UInt64 {
        control & ~(UInt64(7) << 56) | UInt64(state.rawValue) << 56
    }
}

/// Raw pointers into a `ConnectionTable`, for the hot path (no ARC).
@frozen
public struct ConnectionView {
    public let hash: OpaquePointer
    public let entries: UnsafeMutablePointer<FlowEntry>
    public let events: OpaquePointer
    public let shared: UnsafeMutablePointer<UInt64>
    public let usesRCU: Bool
    public let embryonicLimit: UInt64
    public let tscHz: UInt64

    /// Inserts a flow and publishes it; returns the position, or nil when the table (or, for
    /// embryonic entries, the embryonic share) is full.
    @inlinable
    public func insert(key: UnsafePointer<sy_flow_key>, hash flowHash: UInt32, control: UInt64,
                       backendHigh: UInt64, backendLow: UInt64, now: UInt64) -> Int32?
    {
        let embryonic = FlowEntry.state(control) == FlowState.embryonic.rawValue
        if embryonic && sy_counter_read(shared) >= embryonicLimit { return nil }
        let position = sy_flow_table_add(hash, key, flowHash)
        guard position >= 0 else {
            _ = sy_fetch_add_u64(shared + 2, 1)
            return nil
        }
        let entry = entries + Int(position)
        let previous = sy_atomic_load_u64(&entry.pointee.control)
        if FlowEntry.isValid(previous) && FlowEntry.state(previous) == FlowState.embryonic.rawValue {
            _ = sy_fetch_sub_u64(shared, 1) // replaced an embryonic entry of the same flow
        }
        if !FlowEntry.isValid(previous) { _ = sy_fetch_add_u64(shared + 3, 1) }
        entry.pointee.backendHigh = backendHigh
        entry.pointee.backendLow = backendLow
        sy_relaxed_store_u64(&entry.pointee.lastSeen, now)
        sy_atomic_store_u64(&entry.pointee.control, control)
        if embryonic { _ = sy_fetch_add_u64(shared, 1) }
        return position
    }

    /// Inserts a flow only if no published entry holds its key (egress port allocation: two lcores
    /// that pick the same port for the same destination cannot both win). Returns the position,
    /// `-1` when the key is live already, `-2` when the table (or the embryonic share) is full.
    @inlinable
    public func claim(key: UnsafePointer<sy_flow_key>, hash flowHash: UInt32, control: UInt64,
                      backendHigh: UInt64, backendLow: UInt64, now: UInt64) -> Int32
    {
        let embryonic = FlowEntry.state(control) == FlowState.embryonic.rawValue
        if embryonic && sy_counter_read(shared) >= embryonicLimit { return -2 }
        let position = sy_flow_table_add(hash, key, flowHash)
        guard position >= 0 else {
            _ = sy_fetch_add_u64(shared + 2, 1)
            return -2
        }
        let entry = entries + Int(position)
        // Bit 62 alone: taken, not yet valid (readers and the expiry scan skip it).
        guard sy_cas_u64(&entry.pointee.control, 0, 1 << 62) else { return -1 }
        _ = sy_fetch_add_u64(shared + 3, 1)
        entry.pointee.backendHigh = backendHigh
        entry.pointee.backendLow = backendLow
        sy_relaxed_store_u64(&entry.pointee.lastSeen, now)
        sy_atomic_store_u64(&entry.pointee.control, control)
        if embryonic { _ = sy_fetch_add_u64(shared, 1) }
        return position
    }

    /// Changes the state of a published entry (embryonic → established, → closing).
    @inlinable @inline(__always)
    public func setState(_ entry: UnsafeMutablePointer<FlowEntry>, control: UInt64, to state: FlowState) {
        if FlowEntry.state(control) == FlowState.embryonic.rawValue { _ = sy_fetch_sub_u64(shared, 1) }
        sy_atomic_store_u64(&entry.pointee.control, FlowEntry.withState(control, state))
    }

    /// Unpublishes and deletes an entry, and emits its closed event.
    @inlinable
    public func remove(key: UnsafeMutablePointer<sy_flow_key>, hash flowHash: UInt32, position: Int32, control: UInt64,
                       reason: UInt8)
    {
        let entry = entries + Int(position)
        // Only the writer that clears a still-published control word deletes (an lcore and the
        // expiry scan may race for the same entry).
        guard sy_cas_u64(&entry.pointee.control, control, 0) else { return }
        _ = sy_fetch_sub_u64(shared + 3, 1)
        if FlowEntry.state(control) == FlowState.embryonic.rawValue { _ = sy_fetch_sub_u64(shared, 1) }
        let deleted = sy_flow_table_delete(hash, key, flowHash)
        if deleted >= 0 && !usesRCU { _ = sy_flow_table_free_position(hash, deleted) }
        if FlowEntry.state(control) != FlowState.remote.rawValue {
            emit(kind: UInt8(SY_FLOW_CLOSED), reason: reason, owner: FlowEntry.owner(control),
                 backendPort: FlowEntry.backendPort(control), key: key)
        }
    }

    /// Hands an event to the control thread; never blocks (a full ring is counted).
    @inlinable @inline(__always)
    public func emit(kind: UInt8, reason: UInt8, owner: UInt16, backendPort: UInt16, key: UnsafePointer<sy_flow_key>) {
        var event = sy_flow_event(kind: kind, reason: reason, owner: owner, backend_port: backendPort, zero: 0,
                                  key: key.pointee)
        if sy_elem_ring_enqueue_burst(events, &event, UInt32(MemoryLayout<sy_flow_event>.stride), 1) == 0 {
            _ = sy_fetch_add_u64(shared + 1, 1)
        }
    }
}

public struct ClusterError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
