import CDPDK

/// IP → MAC for next hops, shared by every lcore of the process.
///
///     classify (ARP reply/request, ND advertisement) ──learn──► NeighborTable ◄──find── forward
///     forward parameters (static neighbours)         ──learn──┘
///
/// Readers take no lock: a slot's key is written before its `used` flag is published, and a MAC
/// is one atomic 64-bit word. Writers (rare: only when a neighbour is new or changed its MAC) take
/// a spinlock. Fixed size; when full, new neighbours are not learned (counted by the caller).
public final class NeighborTable: @unchecked Sendable {
    public static let capacity = 1024
    let highs: UnsafeMutablePointer<UInt64>
    let lows: UnsafeMutablePointer<UInt64>
    /// family in bits 0-7, 1 << 8 when used.
    let tags: UnsafeMutablePointer<UInt32>
    /// bit 63 valid, bit 62 static (never replaced by learning), low 48 bits the MAC in memory order.
    let macs: UnsafeMutablePointer<UInt64>
    let lock: UnsafeMutablePointer<UInt32>

    public init() {
        let n = Self.capacity
        highs = .allocate(capacity: n); highs.initialize(repeating: 0, count: n)
        lows = .allocate(capacity: n); lows.initialize(repeating: 0, count: n)
        tags = .allocate(capacity: n); tags.initialize(repeating: 0, count: n)
        macs = .allocate(capacity: n); macs.initialize(repeating: 0, count: n)
        lock = .allocate(capacity: 1); lock.initialize(to: 0)
    }

    deinit {
        highs.deallocate(); lows.deallocate(); tags.deallocate(); macs.deallocate(); lock.deallocate()
    }

    public var view: NeighborView { NeighborView(highs: highs, lows: lows, tags: tags, macs: macs, lock: lock) }

    /// Every neighbour known, for `switchyard` output and tests.
    public var entries: [(IPAddress, MACAddress, isStatic: Bool)] {
        (0..<Self.capacity).compactMap { slot in
            let tag = sy_atomic_load_u32(tags + slot)
            let mac = sy_atomic_load_u64(macs + slot)
            guard tag & 0x100 != 0, mac >> 63 != 0 else { return nil }
            let address = IPAddress(family: UInt8(tag & 0xff), high: highs[slot], low: lows[slot])
            return (address, NeighborView.mac(from: mac), mac & (1 << 62) != 0)
        }
    }
}

@frozen
public struct NeighborView {
    @usableFromInline let highs: UnsafeMutablePointer<UInt64>
    @usableFromInline let lows: UnsafeMutablePointer<UInt64>
    @usableFromInline let tags: UnsafeMutablePointer<UInt32>
    @usableFromInline let macs: UnsafeMutablePointer<UInt64>
    @usableFromInline let lock: UnsafeMutablePointer<UInt32>

    @inlinable @inline(__always)
    static func slot(_ high: UInt64, _ low: UInt64) -> Int {
        Int(sy_hash_crc_8byte(low, sy_hash_crc_8byte(high, 0x4e45_4947))) & (NeighborTable.capacity - 1)
    }

    /// The MAC word (bit 63 valid, low 48 bits the MAC) for `address`, or 0 when unknown.
    @inlinable @inline(__always)
    public func find(family: UInt8, high: UInt64, low: UInt64) -> UInt64 {
        var slot = Self.slot(high, low)
        for _ in 0..<NeighborTable.capacity {
            let tag = sy_atomic_load_u32(tags + slot)
            if tag == 0 { return 0 }
            if tag == 0x100 | UInt32(family) && highs[slot] == high && lows[slot] == low {
                return sy_atomic_load_u64(macs + slot)
            }
            slot = (slot + 1) & (NeighborTable.capacity - 1)
        }
        return 0
    }

    /// Records `mac` (6 bytes at `macPointer`) for `address`. Static entries are only replaced by
    /// static ones. Returns false when the table is full.
    @inlinable
    @discardableResult
    public func learn(family: UInt8, high: UInt64, low: UInt64, macPointer: UnsafeRawPointer, isStatic: Bool = false) -> Bool {
        var word: UInt64 = 1 << 63 | (isStatic ? 1 << 62 : 0)
        word |= UInt64(macPointer.loadUnaligned(as: UInt32.self)) | UInt64(macPointer.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) << 32
        let current = find(family: family, high: high, low: low)
        if current == word { return true }
        if current & (1 << 62) != 0 && !isStatic { return true }
        while !sy_cas_u32(lock, 0, 1) { sy_pause() }
        defer { sy_atomic_store_u32(lock, 0) }
        var slot = Self.slot(high, low)
        for _ in 0..<NeighborTable.capacity {
            let tag = sy_atomic_load_u32(tags + slot)
            if tag == 0 {
                highs[slot] = high
                lows[slot] = low
                sy_atomic_store_u64(macs + slot, word)
                sy_atomic_store_u32(tags + slot, 0x100 | UInt32(family))
                return true
            }
            if tag == 0x100 | UInt32(family) && highs[slot] == high && lows[slot] == low {
                sy_atomic_store_u64(macs + slot, word)
                return true
            }
            slot = (slot + 1) & (NeighborTable.capacity - 1)
        }
        return false
    }

    /// Writes the MAC of a valid word to `pointer` (6 bytes).
    @inlinable @inline(__always)
    public static func store(mac word: UInt64, to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: UInt32(truncatingIfNeeded: word), as: UInt32.self)
        pointer.storeBytes(of: UInt16(truncatingIfNeeded: word >> 32), toByteOffset: 4, as: UInt16.self)
    }

    public static func mac(from word: UInt64) -> MACAddress {
        var copy = word
        let bytes = withUnsafeBytes(of: &copy) { Array($0) }
        return MACAddress((bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]))
    }
}
