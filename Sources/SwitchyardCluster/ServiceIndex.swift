/// (VIP, protocol, port) → service, for classify's common case: a perfect hash sized for the
/// number of services, so a lookup is one multiply, one shift and one slot compared (no probing).
///
///     key (address words, tag) ──mix──► × multiplier >> shift ──► slots[i] ──equal?──► service
///                                                                              └─no──► nil
///
/// Built once (control thread): the table has a power-of-two size of at least twice the services,
/// and multipliers are tried in a fixed order until every key has a slot of its own; the size
/// doubles after 64 failed tries. Nothing is random, so every process builds the same index.
/// `find` answers exactly what `TupleTable.find` answers for the same keys, or nil: it is only
/// a faster way to the same service (classify falls back to the full path on nil).
@frozen
public struct ServiceIndex {
    /// One key and its value: 32 bytes, two per cache line.
    @frozen
    public struct Slot {
        public var high: UInt64 = 0
        public var low: UInt64 = 0
        public var tag: UInt32 = 0
        /// service index + 1; 0 marks an empty slot.
        public var value: UInt32 = 0
        public var padding: UInt64 = 0
    }

    @usableFromInline let slots: UnsafeMutablePointer<Slot>
    @usableFromInline let multiplier: UInt64
    @usableFromInline let shift: UInt64
    /// The number of slots.
    public let size: Int

    /// An index of `entries` (address, protocol, port, value). Duplicate keys keep the first, as
    /// `TupleTable` does.
    public init(_ entries: [(address: IPAddress, protocol: UInt8, port: UInt16, value: UInt32)]) {
        var keys: [(high: UInt64, low: UInt64, tag: UInt32, value: UInt32)] = []
        for entry in entries {
            let tag = TupleTable.tag(family: entry.address.family, protocol: entry.protocol, port: entry.port)
            if keys.contains(where: { $0.high == entry.address.high && $0.low == entry.address.low && $0.tag == tag }) { continue }
            keys.append((entry.address.high, entry.address.low, tag, entry.value))
        }
        var bits = 1
        while 1 << bits < max(2, keys.count * 2) { bits += 1 }
        var candidate: UInt64 = 0x9e37_79b9_7f4a_7c15
        var found: (bits: Int, multiplier: UInt64)?
        search: while bits <= 24 {
            for _ in 0..<64 {
                let shift = UInt64(64 - bits)
                var used = Set<UInt64>()
                if keys.allSatisfy({ used.insert((Self.mix($0.high, $0.low, $0.tag) &* candidate) >> shift).inserted }) {
                    found = (bits, candidate)
                    break search
                }
                // The next odd multiplier (splitmix64 step): fixed sequence, same index every time.
                candidate = (candidate &+ 0x9e37_79b9_7f4a_7c15) ^ (candidate >> 31) | 1
            }
            bits += 1
        }
        // No perfect hash (only conceivable for IPv6 keys whose mixes collide): an index that
        // finds nothing, so every packet takes the full path.
        let (finalBits, finalMultiplier) = found ?? (1, 0)
        size = 1 << finalBits
        shift = UInt64(64 - finalBits)
        multiplier = finalMultiplier
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Slot(), count: size)
        if found != nil {
            for key in keys {
                let slot = Int((Self.mix(key.high, key.low, key.tag) &* multiplier) >> shift)
                slots[slot] = Slot(high: key.high, low: key.low, tag: key.tag, value: key.value + 1)
            }
        }
    }

    /// Frees the memory; only when no lcore can read the index any more.
    public func deallocate() { slots.deallocate() }

    /// One word from the key: for IPv4 (`low` = 0, `high` < 2³²) the address and the tag side by side,
    /// so distinct IPv4 keys always give distinct words.
    @inlinable @inline(__always)
    static func mix(_ high: UInt64, _ low: UInt64, _ tag: UInt32) -> UInt64 {
        (high ^ low &* 0xff51_afd7_ed55_8ccd) ^ UInt64(tag) << 32
    }

    /// The value (service index) for the key, or nil.
    @inlinable @inline(__always)
    public func find(high: UInt64, low: UInt64, tag: UInt32) -> UInt32? {
        let slot = slots + Int(truncatingIfNeeded: (Self.mix(high, low, tag) &* multiplier) >> shift)
        guard slot.pointee.high == high, slot.pointee.low == low, slot.pointee.tag == tag, slot.pointee.value != 0 else {
            return nil
        }
        return slot.pointee.value &- 1
    }
}
