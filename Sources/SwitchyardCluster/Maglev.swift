/// Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
///
/// Each backend walks its own permutation of the table's slots (offset and skip from two hashes of
/// its tuple) and claims the next free slot when its turn comes; a backend of weight w gets w turns
/// for every `maxWeight` turns of the heaviest. A flow's slot is `hash % size`.
///
///     slot:     0   1   2   3   4   5   6  ...  size-1
///     backend:  b2  b0  b1  b2  b0  b2  b1 ...  b0        (weights 3:2:2 → about 3/7, 2/7, 2/7)
///
/// Changing the set moves few flows: slots of backends that stay mostly keep their owner (measured
/// in MaglevTests: removing one of ten backends moves its own tenth plus under 2 % of the others).
/// Everything is deterministic across processes and hosts: tables built from the same backends are
/// identical everywhere, so a flow picks the same backend on every host.
public enum Maglev {
    /// The table: for each slot, the index of the backend in `keys` (nil when every weight is 0).
    public static func populate(keys: [[UInt8]], weights: [Int], size: Int) -> [UInt32]? {
        precondition(keys.count == weights.count && size > 1)
        let maxWeight = weights.max() ?? 0
        guard maxWeight > 0 else { return nil }
        let offsets = keys.map { Int(fnv1a($0, basis: 0xcbf2_9ce4_8422_2325) % UInt64(size)) }
        let skips = keys.map { Int(fnv1a($0, basis: 0x8422_2325_cbf2_9ce4) % UInt64(size - 1)) + 1 }
        var next = [Int](repeating: 0, count: keys.count)
        var credit = [Int](repeating: 0, count: keys.count)
        var table = [UInt32](repeating: UInt32.max, count: size)
        var filled = 0
        while true {
            for index in keys.indices where weights[index] > 0 {
                credit[index] += weights[index]
                while credit[index] >= maxWeight {
                    credit[index] -= maxWeight
                    var slot = (offsets[index] + next[index] * skips[index]) % size
                    while table[slot] != UInt32.max {
                        next[index] += 1
                        slot = (offsets[index] + next[index] * skips[index]) % size
                    }
                    table[slot] = UInt32(index)
                    next[index] += 1
                    filled += 1
                    if filled == size { return table }
                }
            }
        }
    }

    /// FNV-1a, 64 bits: stable across processes (unlike Swift's seeded Hasher).
    static func fnv1a(_ bytes: [UInt8], basis: UInt64) -> UInt64 {
        var hash = basis
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}
