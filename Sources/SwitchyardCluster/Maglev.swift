/// Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
///
/// Each backend walks its own permutation of the table's slots (offset and skip from two hashes of
/// its tuple) and claims the next free slot when its turn comes; a backend of weight w gets w turns
/// for every `maxWeight` turns of the heaviest. A flow's slot is `hash % size`.
///
///     slot:     0   1   2   3   4   5   6  ...  size-1
///     backend:  b2  b0  b1  b2  b0  b2  b1 ...  b0        (weights 3:2:2 → about 3/7, 2/7, 2/7)
///
/// A drained backend (weight 0) still takes its turns as if its weight were 1, so every other
/// backend claims exactly the slots it claimed before the drain; then its slots are handed out to
/// the others, which continue their permutations (weighted turns as before). Draining a backend of
/// weight 1 therefore moves only its own slots.
///
/// Changing the set moves few flows: slots of backends that stay mostly keep their owner. Measured
/// in MaglevTests (table of 65537 slots, equal weights):
///
///     remove 1 of 10 backends   its own tenth moves, plus 0.19-0.26 % of the others' slots
///     add an 11th backend       9.26-9.51 % of all slots move (1/11 = 9.09 %), 96 % of them to it
///     drain 1 of 10 (1 → 0)     its own tenth moves, nothing else
///     drain from weight 2 → 0   its own slots, plus 0.16 % of the others' (all weights 2)
///     weights                   every share within 0.0023 points of w / sum
///
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

        /// Turns of the backends whose `turnWeights` are above 0 until `free` slots are claimed.
        func fill(_ free: Int, turnWeights: [Int]) {
            var filled = 0
            while true {
                for index in keys.indices where turnWeights[index] > 0 {
                    credit[index] += turnWeights[index]
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
                        if filled == free { return }
                    }
                }
            }
        }

        // Everyone, drained backends at weight 1: the table as it was before they were drained.
        fill(size, turnWeights: weights.map { max($0, 1) })
        // Free the drained backends' slots and let the others continue their permutations.
        var freed = 0
        for slot in 0..<size where weights[Int(table[slot])] == 0 {
            table[slot] = UInt32.max
            freed += 1
        }
        if freed > 0 { fill(freed, turnWeights: weights) }
        return table
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
