import CDPDK

/// One remembered datagram: its key, and the flow its first fragment carried.
struct FragmentEntry {
    var key = sy_flow_key()
    var flow = sy_flow_key()
    var learnedAt: UInt64 = 0
    var flowHash: UInt32 = 0
    var service: UInt16 = 0
    var used = false
}

/// Owns the memory of one `fragments` instance (one lcore): allocated once when the stage is
/// built, freed with it. The hot path never touches this object, only the `FragmentTable` view.
final class FragmentMemory {
    let table: FragmentTable

    init(tableSize: Int, holdSize: Int, tableTimeout: UInt64, holdTimeout: UInt64) {
        table = FragmentTable(tableSize: tableSize, holdSize: holdSize, tableTimeout: tableTimeout,
                              holdTimeout: holdTimeout)
    }

    deinit { table.deallocate() }
}

/// The fragment table and holding area of one lcore, as raw memory (no reference counting):
///
///     table   [set 0: way 0..3][set 1: way 0..3] ...    table_size entries, CRC32-C of the key picks the set
///     holding [mbuf | key | since] × hold_size          arrival order, compacted on removal
struct FragmentTable {
    static let ways = 4
    let entries: UnsafeMutablePointer<FragmentEntry>
    let setMask: Int
    let tableTimeout: UInt64
    let holdTimeout: UInt64
    let holdCapacity: Int
    let heldMbufs: UnsafeMutablePointer<OpaquePointer?>
    let heldKeys: UnsafeMutablePointer<sy_flow_key>
    let heldSince: UnsafeMutablePointer<UInt64>
    let heldCountSlot: UnsafeMutablePointer<Int>
    let tableSize: Int

    /// Fragments held now.
    var heldCount: Int {
        get { heldCountSlot.pointee }
        nonmutating set { heldCountSlot.pointee = newValue }
    }

    init(tableSize: Int, holdSize: Int, tableTimeout: UInt64, holdTimeout: UInt64) {
        self.tableSize = tableSize
        entries = .allocate(capacity: tableSize)
        entries.initialize(repeating: FragmentEntry(), count: tableSize)
        setMask = tableSize / Self.ways - 1
        self.tableTimeout = tableTimeout
        self.holdTimeout = holdTimeout
        holdCapacity = holdSize
        heldMbufs = .allocate(capacity: max(holdSize, 1))
        heldMbufs.initialize(repeating: nil, count: max(holdSize, 1))
        heldKeys = .allocate(capacity: max(holdSize, 1))
        heldKeys.initialize(repeating: sy_flow_key(), count: max(holdSize, 1))
        heldSince = .allocate(capacity: max(holdSize, 1))
        heldSince.initialize(repeating: 0, count: max(holdSize, 1))
        heldCountSlot = .allocate(capacity: 1)
        heldCountSlot.initialize(to: 0)
    }

    /// Frees the memory (the runner's releaseAll freed the held mbufs before).
    func deallocate() {
        heldCountSlot.deallocate()
        entries.deallocate()
        heldMbufs.deallocate()
        heldKeys.deallocate()
        heldSince.deallocate()
    }

    @inline(__always)
    static func equal(_ a: sy_flow_key, _ b: sy_flow_key) -> Bool {
        withUnsafeBytes(of: a) { x in
            withUnsafeBytes(of: b) { y in
                x.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == y.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
                    && x.loadUnaligned(fromByteOffset: 8, as: UInt64.self) == y.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    && x.loadUnaligned(fromByteOffset: 16, as: UInt64.self) == y.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
                    && x.loadUnaligned(fromByteOffset: 24, as: UInt64.self) == y.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
                    && x.loadUnaligned(fromByteOffset: 32, as: UInt64.self) == y.loadUnaligned(fromByteOffset: 32, as: UInt64.self)
            }
        }
    }

    @inline(__always)
    func firstWay(_ key: sy_flow_key) -> Int {
        var key = key
        let hash = withUnsafePointer(to: &key) { sy_hash_crc($0, 40, 0) }
        return (Int(hash) & setMask) * Self.ways
    }

    /// The live entry of `key`, if any.
    @inline(__always)
    func find(_ key: sy_flow_key, now: UInt64) -> Int? {
        let first = firstWay(key)
        for way in first..<first + Self.ways {
            let entry = entries + way
            if entry.pointee.used && now &- entry.pointee.learnedAt <= tableTimeout && Self.equal(entry.pointee.key, key) {
                return way
            }
        }
        return nil
    }

    /// Remembers the flow of a first fragment; true when a live entry of another datagram was replaced.
    @inline(__always)
    func learn(_ key: sy_flow_key, from meta: UnsafeMutablePointer<sy_meta>, now: UInt64) -> Bool {
        let first = firstWay(key)
        var victim = first
        var evicted = true
        for way in first..<first + Self.ways {
            let entry = entries + way
            let live = entry.pointee.used && now &- entry.pointee.learnedAt <= tableTimeout
            if !live || Self.equal(entry.pointee.key, key) {
                victim = way
                evicted = false
                break
            }
            if entry.pointee.learnedAt < entries[victim].learnedAt { victim = way }
        }
        let entry = entries + victim
        entry.pointee.key = key
        entry.pointee.flow = meta.pointee.key
        entry.pointee.flowHash = meta.pointee.flow_hash
        entry.pointee.service = meta.pointee.service
        entry.pointee.learnedAt = now
        entry.pointee.used = true
        return evicted
    }

    /// Gives a later fragment the flow of entry `index`.
    @inline(__always)
    func apply(_ index: Int, to meta: UnsafeMutablePointer<sy_meta>) {
        meta.pointee.key = entries[index].flow
        meta.pointee.flow_hash = entries[index].flowHash
        meta.pointee.service = entries[index].service
    }

    /// Holds `mbuf` until its first fragment comes; false when the holding area is full.
    @inline(__always)
    func hold(_ mbuf: OpaquePointer, key: sy_flow_key, now: UInt64) -> Bool {
        guard heldCount < holdCapacity else { return false }
        heldMbufs[heldCount] = mbuf
        heldKeys[heldCount] = key
        heldSince[heldCount] = now
        heldCount += 1
        return true
    }

    /// Removes slot `index`, keeping the others in arrival order.
    @inline(__always)
    func removeHeld(at index: Int) {
        var slot = index
        while slot + 1 < heldCount {
            heldMbufs[slot] = heldMbufs[slot + 1]
            heldKeys[slot] = heldKeys[slot + 1]
            heldSince[slot] = heldSince[slot + 1]
            slot += 1
        }
        heldCount -= 1
        heldMbufs[heldCount] = nil
    }
}
