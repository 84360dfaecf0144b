import CDPDK

/// A read-only hash table from (address, protocol, port) to a small integer, built once and then
/// read by every lcore without locks: open addressing, linear probing, raw memory (no ARC).
///
/// Keys: the address words as loaded from the packet, and `tag` = family << 24 | protocol << 16 | port.
@frozen
public struct TupleTable {
    @usableFromInline let highs: UnsafeMutablePointer<UInt64>
    @usableFromInline let lows: UnsafeMutablePointer<UInt64>
    @usableFromInline let tags: UnsafeMutablePointer<UInt32>
    /// value + 1; 0 marks an empty slot.
    @usableFromInline let values: UnsafeMutablePointer<UInt32>
    @usableFromInline let mask: Int

    /// A table for `entries` (address, protocol, port, value); duplicates keep the first.
    public init(_ entries: [(address: IPAddress, protocol: UInt8, port: UInt16, value: UInt32)]) {
        var capacity = 16
        while capacity < entries.count * 2 { capacity <<= 1 }
        mask = capacity - 1
        highs = .allocate(capacity: capacity)
        lows = .allocate(capacity: capacity)
        tags = .allocate(capacity: capacity)
        values = .allocate(capacity: capacity)
        highs.initialize(repeating: 0, count: capacity)
        lows.initialize(repeating: 0, count: capacity)
        tags.initialize(repeating: 0, count: capacity)
        values.initialize(repeating: 0, count: capacity)
        for entry in entries {
            let tag = Self.tag(family: entry.address.family, protocol: entry.protocol, port: entry.port)
            var slot = Self.hash(entry.address.high, entry.address.low, tag) & mask
            while values[slot] != 0 {
                if highs[slot] == entry.address.high && lows[slot] == entry.address.low && tags[slot] == tag { break }
                slot = (slot + 1) & mask
            }
            if values[slot] != 0 { continue }
            highs[slot] = entry.address.high
            lows[slot] = entry.address.low
            tags[slot] = tag
            values[slot] = entry.value + 1
        }
    }

    /// Frees the memory; only when no lcore can read the table any more.
    public func deallocate() {
        highs.deallocate(); lows.deallocate(); tags.deallocate(); values.deallocate()
    }

    @inlinable @inline(__always)
    public static func tag(family: UInt8, protocol: UInt8, port: UInt16) -> UInt32 {
        UInt32(family) << 24 | UInt32(`protocol`) << 16 | UInt32(port)
    }

    @inlinable @inline(__always)
    static func hash(_ high: UInt64, _ low: UInt64, _ tag: UInt32) -> Int {
        Int(sy_hash_crc_4byte(tag, sy_hash_crc_8byte(low, sy_hash_crc_8byte(high, 0x5359_4e43))))
    }

    /// The value for the key, or nil.
    @inlinable @inline(__always)
    public func find(high: UInt64, low: UInt64, tag: UInt32) -> UInt32? {
        var slot = Self.hash(high, low, tag) & mask
        while true {
            let value = values[slot]
            if value == 0 { return nil }
            if highs[slot] == high && lows[slot] == low && tags[slot] == tag { return value - 1 }
            slot = (slot + 1) & mask
        }
    }

    @inlinable @inline(__always)
    public func find(_ address: IPAddress, protocol: UInt8, port: UInt16) -> UInt32? {
        find(high: address.high, low: address.low, tag: Self.tag(family: address.family, protocol: `protocol`, port: port))
    }
}
