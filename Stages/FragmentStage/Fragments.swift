import CDPDK
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// fragments: gives every IP fragment of a datagram to a VIP the flow of its first fragment (the
/// only one with ports), so ownership-lookup and tuple-translate treat the whole datagram as that
/// flow. Nothing is reassembled: the backend's kernel does that.
///
///     classify (fragments: vip) ─vip─► fragments ─flow─► ownership-lookup ─► ...
///                                        │
///       not a fragment ──────────────────┼──────────────────────────────────► flow (unchanged)
///       first fragment (ports) ──► learn (src, dst, proto, id) → flow ──────► flow
///       later fragment ──► table hit ──► copy the first one's flow ─────────► flow
///                      └─► miss ──► holding area (bounded: hold_size, hold_timeout_ms)
///                                     ├─ its first fragment arrives ─► flow   (released by flush)
///                                     ├─ hold_timeout_ms passes ─────► drop   (hold-timeout)
///                                     └─ area full ──────────────────► drop   (hold-full)
///
/// Datagram key: (source, destination, protocol, identification) — 16-bit IPv4 id or 32-bit
/// IPv6 Fragment-header id. The table is set-associative (4 ways per set), `table_size` entries,
/// each living `table_timeout_ms` after its first fragment; a new first fragment replaces an
/// expired entry or else the oldest of its set (`table-evicted`).
///
/// Per lcore, no locks: one instance per lcore owns its table and holding area. This relies on
/// every fragment of a datagram reaching the lcore that saw its first fragment: true when RSS
/// hashes fragments on their addresses (the engine's RSS types include DPDK's FRAG_IPV4/FRAG_IPV6,
/// see the README), and when fragments decapsulated from a peer come in one tunnel flow
/// (encapsulate derives the outer source port from the flow hash, which all fragments share after
/// this stage).
///
/// Timeouts are checked when a burst reaches the stage; held fragments still there when the
/// stage is torn down (shutdown, reload) are freed and counted as `hold-teardown`.
public struct Fragments: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// Every packet, fragments with their datagram's flow (service, flow key, flow hash).
        case flow
    }

    public enum Counter: Int, StageCounter {
        case holdFull
        case holdTimeout
        case holdTeardown
        case noFragmentHeader
        case firstFragments
        case laterFragments
        case held
        case released
        case tableEvicted

        public var declaration: CounterDeclaration {
            switch self {
            case .holdFull: .drop("hold-full", "a later fragment arrived before its first one and the holding area was full")
            case .holdTimeout: .drop("hold-timeout", "a held fragment whose first fragment did not come within hold_timeout_ms")
            case .holdTeardown: .drop("hold-teardown", "held fragments freed when the stage was torn down (shutdown, reload)")
            case .noFragmentHeader: .drop("no-fragment-header", "a later fragment whose identification could not be read (IPv6 Fragment header not found)")
            case .firstFragments: .info("first-fragments", "first fragments (with ports) whose flow was learned")
            case .laterFragments: .info("later-fragments", "later fragments given their first fragment's flow on arrival")
            case .held: .info("held", "later fragments held because they arrived before their first fragment")
            case .released: .info("released", "held fragments released with their first fragment's flow")
            case .tableEvicted: .info("table-evicted", "live table entries replaced by a newer datagram (set full)")
            }
        }
    }

    public struct Parameters: StageParameters {
        /// Fragment table entries (datagrams remembered), a power of two.
        public var tableSize: Int
        /// How long an entry lives after its first fragment.
        public var tableTimeoutMilliseconds: Int
        /// Later fragments that may wait for their first fragment at once.
        public var holdSize: Int
        /// How long a later fragment may wait for its first fragment.
        public var holdTimeoutMilliseconds: Int

        public init(tableSize: Int = 4096, tableTimeoutMilliseconds: Int = 1000, holdSize: Int = 64,
                    holdTimeoutMilliseconds: Int = 50)
        {
            self.tableSize = tableSize
            self.tableTimeoutMilliseconds = tableTimeoutMilliseconds
            self.holdSize = holdSize
            self.holdTimeoutMilliseconds = holdTimeoutMilliseconds
        }

        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            tableSize = try map.int("table_size", default: 4096, in: 4...1 << 20)
            guard tableSize & (tableSize - 1) == 0 else {
                throw map.error("must be a power of two (4 ... 1048576), not \(tableSize)", key: "table_size")
            }
            tableTimeoutMilliseconds = try map.int("table_timeout_ms", default: 1000, in: 1...60_000)
            holdSize = try map.int("hold_size", default: 64, in: 0...maximumBurstSize)
            holdTimeoutMilliseconds = try map.int("hold_timeout_ms", default: 50, in: 1...10_000)
        }
    }

    public static let kind = "fragments"
    public static let summary = "give later IP fragments their first fragment's flow (fragment table, bounded holding area)"
    public static var holdsPackets: Bool { true }

    /// Keeps the memory alive; the hot path uses `table` (raw pointers, no reference counting).
    let memory: FragmentMemory
    let table: FragmentTable

    public init(parameters: Parameters, context: StageContext) throws {
        let hz = sy_tsc_hz()
        memory = FragmentMemory(tableSize: parameters.tableSize, holdSize: parameters.holdSize,
                                tableTimeout: hz * UInt64(parameters.tableTimeoutMilliseconds) / 1000,
                                holdTimeout: hz * UInt64(parameters.holdTimeoutMilliseconds) / 1000)
        table = memory.table
    }

    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Fragments>) {
        let now = sy_rdtsc()
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            guard meta.pointee.flags & UInt8(SY_META_FRAGMENT) != 0,
                  meta.pointee.flags & UInt8(SY_META_ICMP_ERROR) == 0
            else {
                out.send(index, to: .flow)
                continue
            }
            var key = sy_flow_key()
            guard Self.datagramKey(&key, packet) else {
                out.drop(index, reason: .noFragmentHeader)
                continue
            }
            if meta.pointee.l4 != 0 {
                // The first fragment: its flow is already in the metadata (classify filled it).
                if table.learn(key, from: meta, now: now) { out.count(.tableEvicted) }
                out.count(.firstFragments)
                out.send(index, to: .flow)
            } else if let entry = table.find(key, now: now) {
                table.apply(entry, to: meta)
                out.count(.laterFragments)
                out.send(index, to: .flow)
            } else if table.hold(packet.mbuf, key: key, now: now) {
                out.count(.held)
                out.hold(index)
            } else {
                out.drop(index, reason: .holdFull)
            }
        }
    }

    /// Releases held fragments whose first fragment has been learned, and drops timed-out ones.
    public mutating func flush(_ held: HeldPackets<Fragments>) {
        guard table.heldCount > 0 else { return }
        let now = sy_rdtsc()
        var slot = 0
        while slot < table.heldCount && held.room > 0 {
            let mbuf = table.heldMbufs[slot]!
            if let entry = table.find(table.heldKeys[slot], now: now) {
                let packet = Packet(mbuf)
                table.apply(entry, to: packet.meta)
                held.emit(packet, to: .flow)
                held.out.count(.released)
            } else if now &- table.heldSince[slot] > table.holdTimeout {
                held.emit(Packet(mbuf), to: .drop)
                held.out.count(.holdTimeout)
            } else {
                slot += 1
                continue
            }
            table.removeHeld(at: slot)
        }
    }

    public mutating func releaseAll(_ out: BurstOutput<Fragments>) -> Int {
        let count = table.heldCount
        for slot in 0..<count { sy_pktmbuf_free(table.heldMbufs[slot]) }
        table.heldCount = 0
        out.count(.holdTeardown, UInt64(count))
        return count
    }

    /// The datagram key of a fragment: addresses in the flow-key layout, the identification in
    /// the port words, protocol and family. False when an IPv6 Fragment header is not found.
    @inline(__always)
    static func datagramKey(_ key: inout sy_flow_key, _ packet: Packet) -> Bool {
        let meta = packet.meta
        let l3 = Int(meta.pointee.l3)
        let end = min(Int(meta.pointee.l3_end), packet.contiguousLength)
        let ip = PacketBytes(packet.bytes, count: end)
        let family = meta.pointee.family
        let identification: UInt32
        let source: UnsafeMutableRawPointer
        let size: Int
        if family == 4 {
            guard let header = ip.header(IPv4Header.self, at: l3) else { return false }
            identification = UInt32(header.identification.bigEndian) // memory order, as before
            source = header.raw + IPv4Header.sourceOffset
            size = 4
        } else {
            guard let header = ip.header(IPv6Header.self, at: l3) else { return false }
            // Walk the extension headers classify already checked, up to the Fragment header.
            guard let fragment = IPv6ExtensionChain.fragmentHeader(ip, from: l3 + IPv6Header.size, first: header.nextHeader,
                                                                   maximumHeaders: 8)
            else { return false }
            identification = fragment.identificationRaw
            source = header.raw + IPv6Header.sourceOffset
            size = 16
        }
        withUnsafeMutableBytes(of: &key) { raw in
            raw.baseAddress!.copyMemory(from: source, byteCount: size)
            (raw.baseAddress! + 16).copyMemory(from: source + size, byteCount: size)
        }
        key.src_port = UInt16(truncatingIfNeeded: identification)
        key.dst_port = UInt16(truncatingIfNeeded: identification >> 16)
        key.protocol = meta.pointee.protocol
        key.family = family
        return true
    }
}
