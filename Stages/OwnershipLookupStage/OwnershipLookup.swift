import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// ownership-lookup: decides which host owns each VIP flow, through the connection table.
///
///     vip packet ──► key (client addr/port, VIP/port, proto) ──bulk lookup──► connection table
///        hit,  owner = this host ───────────────────────────────────────────► local  (bypass tuple in meta)
///        hit,  owner = peer (gossip) ───────────────────────────────────────► remote (meta.peer = owner)
///        miss, new flow (TCP SYN, UDP) ─► Maglev pick ─► backend here: entry + "opened" ─► local
///                                                    └─► backend on a peer ─────────────► remote
///                                                        (SYN: new-flow-remote, else miss-remote)
///        miss, TCP without SYN ─► miss: adopt → as a new flow (entry "established") / miss: drop
///
/// The owner of a flow is the host of its backend (bypass tuple): a SYN is accepted by the host whose
/// resource the consistent hash picked, and that host records the entry and announces it ("opened"
/// event for the control thread, which gossips it). Other hosts send the flow's packets there while
/// their own consistent hash agrees, and follow the gossiped entry once the backend set has changed.
///
/// State: TCP entries start embryonic (SYN), become established on the first packet without SYN,
/// go to closing on FIN (kept `timeouts.fin` so the last ACKs still find it) and are removed at once
/// on RST; every removal emits a "closed" event. UDP entries are datagram flows. Idle entries are
/// expired by the control thread (`timeouts` in `cluster.connections`).
///
/// Packets decapsulated from a peer (SY_META_FROM_PEER) never go `remote` again: a flow that a peer
/// sent here but that this host would send elsewhere is dropped as `peer-loop`. The one exception is
/// daisy chaining by the previous generation of the tables (`handleMiss`, docs/gossip.md): a packet
/// is handed on once, marked SY_META_HANDED_ON, and a marked packet never again.
public struct OwnershipLookup: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// Owned here: the bypass tuple is in the metadata (`has_target`), on to tuple-translate.
        case local
        /// Owned by another host (`meta.peer`), on to encapsulate.
        case remote
    }

    public enum Counter: Int, StageCounter {
        case hit
        case opened
        case forwardedNew
        case missRemote
        case adopted
        case stateless
        case closedByFin
        case closedByRst
        case icmpError
        case notClassified
        case noBackend
        case missDropped
        case peerLoop
        case daisyChained
        case previousTable

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .hit: .info("hit", "packets of flows found in the connection table")
            case .opened: .info("opened", "new flows owned here: entry created, opened event emitted")
            case .forwardedNew: .info("new-flow-remote", "TCP SYNs (no ACK) without an entry whose backend is on a peer: new connections sent to that host")
            case .missRemote: .info("miss-remote", "other packets without an entry sent to a peer by the consistent hash (TCP without SYN, UDP, ICMP errors)")
            case .adopted: .info("miss-adopted", "TCP packets without SYN and without entry, adopted here (miss: adopt)")
            case .stateless: .info("stateless", "flows owned here that got no entry (table or embryonic share full): consistent hashing only")
            case .closedByFin: .info("fin", "FIN from the client: entry set to closing")
            case .closedByRst: .info("rst", "RST from the client: entry removed, closed event emitted")
            case .icmpError: .info("icmp-error", "ICMP errors about a VIP flow, whatever became of them (local, remote or dropped)")
            case .notClassified: .drop("not-classified", "not a VIP flow from classify (no service in the metadata)")
            case .noBackend: .drop("no-backend", "new flow of a service whose backends all have weight 0")
            case .missDropped: .drop("miss-dropped", "TCP packets without SYN and without entry (miss: drop)")
            case .peerLoop: .drop("peer-loop", "from a peer, but owned by yet another host: never sent on again")
            case .daisyChained: .info("daisy-chained", "TCP packets without SYN and without entry that this table gives here (or to no one) but the previous table gave to a peer: handed on to that peer once")
            case .previousTable: .info("previous-table", "TCP packets without SYN and without entry from a peer (or handed on) that the current table gives elsewhere but the previous table gave here: served by the previous table")
            }
        }
    }

    public enum MissPolicy: String, Sendable {
        /// Treat the packet as a new flow: pick its backend by consistent hashing; if that backend is
        /// here, record the flow as established (it survives later backend-set changes).
        case adopt
        /// Drop it (counted `miss-dropped`): only flows seen from their SYN are served.
        case drop
    }

    public struct Parameters: StageParameters {
        public var miss: MissPolicy = .adopt

        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            _ = try stage.requireCluster(map, kind: OwnershipLookup.kind)
            miss = MissPolicy(rawValue: try map.choice("miss", ["adopt", "drop"], default: "adopt"))!
        }
    }

    public static let kind = "ownership-lookup"
    public static let summary = "connection table: who owns each VIP flow (local, or the peer to encapsulate to)"

    /// Per-burst scratch memory, allocated once. The keys themselves are in each packet's metadata
    /// (classify filled them with the flow hash).
    final class Scratch {
        let keyPointers: UnsafeMutablePointer<UnsafeMutablePointer<sy_flow_key>?>
        let hashes: UnsafeMutablePointer<UInt32>
        let positions: UnsafeMutablePointer<Int32>
        let indices: UnsafeMutablePointer<Int32>
        /// Flow hashes of the entries the burst inserted so far (`opened` of them, a local of `process`).
        let openedHashes: UnsafeMutablePointer<UInt32>

        init(capacity: Int) {
            // Written at every burst: lines of this stage instance's own (CacheLines).
            keyPointers = CacheLines.allocate(UnsafeMutablePointer<sy_flow_key>?.self, count: capacity, initializedTo: nil)
            hashes = CacheLines.allocate(UInt32.self, count: capacity, initializedTo: 0)
            positions = CacheLines.allocate(Int32.self, count: capacity, initializedTo: 0)
            indices = CacheLines.allocate(Int32.self, count: capacity, initializedTo: 0)
            openedHashes = CacheLines.allocate(UInt32.self, count: capacity, initializedTo: 0)
        }

        deinit {
            keyPointers.deallocate(); hashes.deallocate(); positions.deallocate(); indices.deallocate()
            openedHashes.deallocate()
        }
    }

    let runtime: ClusterRuntime
    let scratch: Scratch
    @usableFromInline let services: ServiceView
    @usableFromInline let table: ConnectionView
    @usableFromInline let keyPointers: UnsafeMutablePointer<UnsafeMutablePointer<sy_flow_key>?>
    @usableFromInline let hashes: UnsafeMutablePointer<UInt32>
    @usableFromInline let positions: UnsafeMutablePointer<Int32>
    @usableFromInline let indices: UnsafeMutablePointer<Int32>
    @usableFromInline let openedHashes: UnsafeMutablePointer<UInt32>
    @usableFromInline let adoptMisses: Bool
    @usableFromInline let localHost: UInt16
    @usableFromInline let tscPerMillisecond: UInt64

    public init(parameters: Parameters, context: StageContext) throws {
        runtime = try context.requireCluster(kind: Self.kind)
        scratch = Scratch(capacity: maximumBurstSize)
        services = runtime.directory.view
        table = runtime.connections.view
        keyPointers = scratch.keyPointers
        hashes = scratch.hashes
        positions = scratch.positions
        indices = scratch.indices
        openedHashes = scratch.openedHashes
        adoptMisses = parameters.miss == .adopt
        localHost = services.localHostID
        tscPerMillisecond = sy_tsc_hz() / 1000
    }

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<OwnershipLookup>) {
        // 1. Keys of the VIP flows, compacted for one bulk lookup.
        var count = 0
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            guard meta.pointee.service != 0, meta.pointee.flags & UInt8(SY_META_REPLY) == 0 else {
                out.drop(index, reason: .notClassified)
                continue
            }
            keyPointers[count] = sy_meta_key(meta)
            hashes[count] = meta.pointee.flow_hash
            indices[count] = Int32(index)
            count += 1
        }
        guard count > 0 else { return }
        keyPointers.withMemoryRebound(to: UnsafePointer<sy_flow_key>?.self, capacity: count) {
            sy_flow_table_lookup_bulk(table.hash, $0, hashes, UInt32(count), positions)
        }
        // The entries are spread over the table: start loading them all before the first is read,
        // and for a flow without one, its Maglev slot (a new flow, or a peer's under exceptions).
        for slot in 0..<count {
            if positions[slot] >= 0 {
                sy_prefetch(table.entries + Int(positions[slot]))
            } else if let address = services.slotAddress(service: Int(burst[Int(indices[slot])].meta.pointee.service) - 1,
                                                         flowHash: hashes[slot])
            {
                sy_prefetch(address)
            }
        }

        // 2. One decision per packet.
        let now = sy_rdtsc()
        var opened = 0 // entries this burst inserted, their hashes in `openedHashes`
        for slot in 0..<count {
            let index = Int(indices[slot])
            let meta = burst[index].meta
            // Every ICMP error about a VIP flow, wherever it goes (local, remote or a drop).
            if meta.pointee.flags & UInt8(SY_META_ICMP_ERROR) != 0 { out.count(.icmpError) }
            let position = positions[slot]
            if position >= 0 {
                let entry = table.entries + Int(position)
                let control = sy_atomic_load_u64(&entry.pointee.control)
                if FlowEntry.isValid(control) {
                    out.count(.hit)
                    followEntry(index, slot: slot, meta: meta, entry: entry, control: control, now: now, out)
                    continue
                }
            }
            // A flow that an earlier packet of this burst just opened missed the bulk lookup too:
            // looked up again, but only when this burst opened a flow of the same hash.
            if openedEarlier(hash: hashes[slot], opened: opened) {
                let again = sy_flow_table_lookup(table.hash, keyPointers[slot], hashes[slot])
                let entry = table.entries + Int(max(again, 0))
                let control = again >= 0 ? sy_atomic_load_u64(&entry.pointee.control) : 0
                if FlowEntry.isValid(control) {
                    positions[slot] = again
                    out.count(.hit)
                    followEntry(index, slot: slot, meta: meta, entry: entry, control: control, now: now, out)
                    continue
                }
            }
            handleMiss(index, slot: slot, meta: meta, now: now, opened: &opened, out)
        }
    }

    /// Whether an earlier packet of this burst inserted an entry with this flow hash.
    @inlinable @inline(__always)
    func openedEarlier(hash: UInt32, opened: Int) -> Bool {
        var found = false
        for i in 0..<opened where openedHashes[i] == hash { found = true }
        return found
    }

    /// A flow with an entry: local with its bypass tuple, or remote to its owner.
    @inlinable @inline(__always)
    func followEntry(_ index: Int, slot: Int, meta: UnsafeMutablePointer<sy_meta>, entry: UnsafeMutablePointer<FlowEntry>,
                     control: UInt64, now: UInt64, _ out: BurstOutput<OwnershipLookup>)
    {
        // Refresh `lastSeen` only when it moved by more than a millisecond: no cache line is dirtied
        // for every packet of a busy flow (timeouts are seconds).
        if now &- sy_relaxed_load_u64(&entry.pointee.lastSeen) > tscPerMillisecond {
            sy_relaxed_store_u64(&entry.pointee.lastSeen, now)
        }
        let owner = FlowEntry.owner(control)
        let isError = meta.pointee.flags & UInt8(SY_META_ICMP_ERROR) != 0
        guard owner == localHost else {
            if meta.pointee.flags & UInt8(SY_META_FROM_PEER) != 0 {
                out.drop(index, reason: .peerLoop)
            } else {
                meta.pointee.peer = owner
                out.send(index, to: .remote)
            }
            return
        }
        meta.pointee.has_target = 1
        meta.pointee.target_high = entry.pointee.backendHigh
        meta.pointee.target_low = entry.pointee.backendLow
        meta.pointee.target_port = FlowEntry.backendPort(control)
        out.send(index, to: .local)
        guard !isError, meta.pointee.protocol == IPProtocol.tcp else { return }
        let flags = meta.pointee.tcp_flags
        let state = FlowEntry.state(control)
        if flags & TCPHeader.rst != 0 { // the connection is over
            table.remove(key: keyPointers[slot].unsafelyUnwrapped, hash: hashes[slot], position: positions[slot],
                         control: control, reason: 2)
            out.count(.closedByRst)
        } else if flags & TCPHeader.fin != 0 { // keep the entry a little for the last packets
            if state != FlowState.closing.rawValue {
                table.setState(entry, control: control, to: .closing)
                out.count(.closedByFin)
            }
        } else if flags & TCPHeader.syn == 0 && state == FlowState.embryonic.rawValue {
            table.setState(entry, control: control, to: .established)
        }
    }

    /// A flow without an entry: pick its backend; the backend's host owns it. With a previous
    /// generation of the tables (listeners registered or withdrawn, a reload), daisy chaining:
    ///
    ///     TCP non-SYN, no entry, current pick here (or none), previous pick on host P ≠ here
    ///         ─► handed on to P once (SY_META_HANDED_ON, marked in the tunnel header)   daisy-chained
    ///     TCP non-SYN from a peer (or handed on), current pick elsewhere, previous pick here
    ///         ─► served here by the previous pick                                       previous-table
    ///     (a SYN never: a new connection follows the current table, whose backend is alive)
    ///     a handed-on packet is never handed on again: at most one extra hop, no loop
    ///
    /// `mutating` only so that the call passes `self` by address: a non-mutating call from the
    /// mutating `process` copied the whole stage (384 bytes) for every miss.
    @inlinable @inline(__always)
    mutating func handleMiss(_ index: Int, slot: Int, meta: UnsafeMutablePointer<sy_meta>, now: UInt64,
                             opened: inout Int, _ out: BurstOutput<OwnershipLookup>)
    {
        let metaFlags = meta.pointee.flags
        let isError = metaFlags & UInt8(SY_META_ICMP_ERROR) != 0
        let fromPeer = metaFlags & UInt8(SY_META_FROM_PEER | SY_META_HANDED_ON) != 0
        let isTCP = meta.pointee.protocol == IPProtocol.tcp
        let flags = meta.pointee.tcp_flags
        let isSyn = isTCP && flags & (TCPHeader.syn | TCPHeader.ack) == TCPHeader.syn // SYN without ACK
        let service = Int(meta.pointee.service) - 1
        let picked = services.pick(service: service, flowHash: meta.pointee.flow_hash)
        var record = picked.map { services.backends + Int($0) }
        if let previous = services.previousPick(service: service, flowHash: meta.pointee.flow_hash),
           previous.pointee.hostID != record?.pointee.hostID
        {
            let currentHere = record == nil || record.unsafelyUnwrapped.pointee.hostID == localHost
            if currentHere && isTCP && !isSyn && !isError && metaFlags & UInt8(SY_META_HANDED_ON) == 0
                && previous.pointee.hostID != localHost
            {
                // Not a flow this host opened (it would have an entry): the host the previous table
                // gave it to may hold it. Handed on once; marked so that it never goes further.
                meta.pointee.flags = (metaFlags & ~UInt8(SY_META_FROM_PEER)) | UInt8(SY_META_HANDED_ON)
                meta.pointee.peer = previous.pointee.hostID
                out.count(.daisyChained)
                out.send(index, to: .remote)
                return
            }
            if !currentHere && fromPeer && isTCP && !isSyn && !isError && previous.pointee.hostID == localHost {
                // A packet of a connection that began under the previous table, sent here by a peer
                // still on it (or handed on): serve it by that table. Never a SYN: the previous
                // table's backend may be the one just withdrawn or found down.
                record = previous
            }
        }
        if isTCP && !isSyn && !isError && !adoptMisses {
            out.drop(index, reason: .missDropped)
            return
        }
        guard let record else {
            out.drop(index, reason: .noBackend)
            return
        }
        guard record.pointee.hostID == localHost else {
            if fromPeer {
                out.drop(index, reason: .peerLoop)
            } else {
                meta.pointee.peer = record.pointee.hostID
                // A SYN starts a connection; anything else (a later packet of a flow the peer owns,
                // any UDP datagram, an ICMP error) is counted apart, so a flood shows as new flows.
                out.count(isSyn && !isError ? .forwardedNew : .missRemote)
                out.send(index, to: .remote)
            }
            return
        }
        let current = picked.map { services.backends + Int($0) == record } ?? false
        if !current { out.count(.previousTable) }
        meta.pointee.backend = current ? UInt16(truncatingIfNeeded: picked.unsafelyUnwrapped + 1) : 0
        meta.pointee.has_target = 1
        meta.pointee.target_high = record.pointee.address.high
        meta.pointee.target_low = record.pointee.address.low
        meta.pointee.target_port = record.pointee.portNetworkOrder
        out.send(index, to: .local)
        if isError { return }
        if isTCP && flags & TCPHeader.rst != 0 { return } // an RST of an unknown flow opens nothing
        let state: FlowState = isSyn ? .embryonic : (isTCP ? .established : .datagram)
        let control = FlowEntry.makeControl(state: state, family: meta.pointee.family, owner: localHost,
                                            backendPortNetworkOrder: record.pointee.portNetworkOrder)
        let key = keyPointers[slot].unsafelyUnwrapped
        if table.insert(key: key, hash: hashes[slot], control: control, backendHigh: record.pointee.address.high,
                        backendLow: record.pointee.address.low, now: now) != nil
        {
            openedHashes[opened] = hashes[slot]
            opened += 1
            table.emit(kind: UInt8(SY_FLOW_OPENED), reason: 0, owner: localHost,
                       backendPort: record.pointee.portNetworkOrder, key: key)
            out.count(isTCP && !isSyn ? .adopted : .opened)
        } else {
            out.count(.stateless)
        }
    }
}
