import SwitchyardCluster
import Testing

/// Maglev tables as ServiceDirectory builds them: keys are backend tuples (address, protocol,
/// port), the table size is the default prime 65537.
@Suite("Maglev consistent hashing")
struct MaglevTests {
    static let size = 65537

    /// The key of backend `index`: 10.1.x.y, TCP, port 8080 (as ServiceDirectory spells keys).
    static func key(_ index: Int) -> [UInt8] { [10, 1, UInt8(index >> 8), UInt8(index & 0xff), 6, 0x1f, 0x90] }

    static func keys(_ count: Int, from first: Int = 0) -> [[UInt8]] { (first..<first + count).map(key) }

    static func table(_ keys: [[UInt8]], _ weights: [Int]) throws -> [UInt32] {
        try #require(Maglev.populate(keys: keys, weights: weights, size: size))
    }

    /// Slots per backend index.
    static func counts(_ table: [UInt32], backends: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: backends)
        for slot in table { counts[Int(slot)] += 1 }
        return counts
    }

    @Test("every slot holds a backend, every backend holds slots")
    func fullyPopulated() throws {
        for count in [1, 2, 3, 10, 100] {
            let table = try Self.table(Self.keys(count), Array(repeating: 1, count: count))
            #expect(table.count == Self.size)
            #expect(table.allSatisfy { $0 < UInt32(count) })
            #expect(Self.counts(table, backends: count).allSatisfy { $0 > 0 })
        }
        #expect(Maglev.populate(keys: Self.keys(3), weights: [0, 0, 0], size: Self.size) == nil)
        #expect(Maglev.populate(keys: [], weights: [], size: Self.size) == nil)
    }

    @Test("deterministic: two builds of the same backends are identical")
    func deterministic() throws {
        let weights = [1, 3, 0, 2, 1, 1, 5, 1, 1, 2]
        let first = try Self.table(Self.keys(10), weights)
        let second = try Self.table(Self.keys(10), weights)
        #expect(first == second)
        // Pinned: hosts running another build of this code must build the same table, so the
        // hashes (FNV-1a) and the population order may not change silently.
        #expect(Array(first[0..<16]) == [1, 4, 9, 6, 6, 6, 0, 0, 6, 6, 3, 7, 3, 1, 5, 1])
        #expect(Array(first[65521..<65537]) == [9, 4, 7, 3, 9, 7, 4, 6, 6, 3, 1, 6, 1, 3, 1, 8])
    }

    @Test("weights are respected: shares within 0.05 points of w / sum (measured worst 0.0023 points)")
    func weights() throws {
        for weights in [[1, 1, 2], [1, 2, 3, 4], [5, 1, 1, 1, 1, 1], [3, 0, 1, 0, 2], [1, 1, 2, 0]] {
            let table = try Self.table(Self.keys(weights.count), weights)
            let counts = Self.counts(table, backends: weights.count)
            let total = Double(weights.reduce(0, +))
            for (count, weight) in zip(counts, weights) {
                let share = Double(count) / Double(Self.size)
                #expect(abs(share - Double(weight) / total) < 0.0005, "weights \(weights): counts \(counts)")
                if weight == 0 { #expect(count == 0) }
            }
        }
    }

    /// Removing backend `removed` of `count`: (its own slots, others' slots that moved, others' slots).
    static func removal(of removed: Int, count: Int) throws -> (own: Int, moved: Int, others: Int) {
        let all = Self.keys(count)
        let before = try Self.table(all, Array(repeating: 1, count: count))
        var remaining = all
        remaining.remove(at: removed)
        let after = try Self.table(remaining, Array(repeating: 1, count: count - 1))
        var own = 0, moved = 0, others = 0
        for slot in 0..<Self.size {
            let owner = Int(before[slot])
            if owner == removed {
                own += 1
                continue
            }
            others += 1
            // Indices above the removed one shift down by one in the smaller set.
            if Int(after[slot]) != (owner > removed ? owner - 1 : owner) { moved += 1 }
        }
        return (own, moved, others)
    }

    @Test("removing 1 of 10 backends moves its own slots plus under 0.5 % of the others' (measured 0.19-0.26 %)")
    func removeOne() throws {
        var worst = 0.0
        for removed in 0..<10 {
            let result = try Self.removal(of: removed, count: 10)
            #expect(abs(Double(result.own) / Double(Self.size) - 0.1) < 0.001)
            let share = Double(result.moved) / Double(result.others)
            worst = max(worst, share)
            #expect(share < 0.005, "removing backend \(removed) moved \(result.moved) of \(result.others) other slots")
        }
        #expect(worst > 0, "Maglev is not perfectly stable: some other slots do move")
    }

    @Test("adding an 11th backend moves about 1/11 of the slots: 9.0-10 % (measured 9.26-9.51 %)")
    func addOne() throws {
        let before = try Self.table(Self.keys(10), Array(repeating: 1, count: 10))
        for added in 0..<20 {
            let after = try Self.table(Self.keys(10) + [Self.key(1000 + added)], Array(repeating: 1, count: 11))
            var moved = 0, toNew = 0
            for slot in 0..<Self.size where after[slot] != before[slot] {
                moved += 1
                if after[slot] == 10 { toNew += 1 }
            }
            let share = Double(moved) / Double(Self.size)
            #expect(share >= 1.0 / 11 - 0.001 && share < 0.10, "adding backend \(added) moved \(share)")
            // Nearly every moved slot went to the new backend (measured at least 95.6 %).
            #expect(Double(toNew) / Double(moved) > 0.9)
        }
    }

    @Test("draining (weight 1 → 0) hands out only that backend's slots; others keep every slot")
    func drain() throws {
        let keys = Self.keys(10)
        let before = try Self.table(keys, Array(repeating: 1, count: 10))
        for drained in 0..<10 {
            var weights = Array(repeating: 1, count: 10)
            weights[drained] = 0
            let after = try Self.table(keys, weights)
            var own = 0
            for slot in 0..<Self.size {
                if Int(before[slot]) == drained {
                    own += 1
                    #expect(Int(after[slot]) != drained)
                } else if after[slot] != before[slot] {
                    Issue.record("draining \(drained) moved slot \(slot) from \(before[slot]) to \(after[slot])")
                    return
                }
            }
            #expect(abs(Double(own) / Double(Self.size) - 0.1) < 0.001)
            // The freed slots are spread over the nine others about evenly.
            let counts = Self.counts(after, backends: 10)
            for (index, count) in counts.enumerated() where index != drained {
                #expect(abs(Double(count) / Double(Self.size) - 1.0 / 9) < 0.001, "counts \(counts)")
            }
        }
        // Draining a heavier backend moves a little more: it took its turns at weight 1, not 2, in the
        // drained table (measured: 0.16 % of the slots of the others for 2 → 0 among weights 2).
        var weights = Array(repeating: 2, count: 10)
        let heavy = try Self.table(keys, weights)
        weights[3] = 0
        let drainedHeavy = try Self.table(keys, weights)
        var others = 0
        for slot in 0..<Self.size where heavy[slot] != 3 && drainedHeavy[slot] != heavy[slot] { others += 1 }
        #expect(Double(others) / Double(Self.size) < 0.005, "draining from weight 2 moved \(others) other slots")
    }

    @Test("a flow hash's slot by the reciprocal is the hash modulo the table size")
    func slotByReciprocal() {
        var generator = SystemRandomNumberGenerator()
        for size: UInt32 in [1, 2, 3, 7, 251, 4099, 65521, 65537, 131_071, 1_000_003, 16_777_213] {
            let reciprocal = ServiceView.reciprocal(of: size)
            var hashes: [UInt32] = [0, 1, size - 1, size, size &+ 1, UInt32.max, UInt32.max - 1, UInt32.max / 2]
            for _ in 0..<20_000 { hashes.append(UInt32.random(in: 0...UInt32.max, using: &generator)) }
            for hash in hashes {
                #expect(ServiceView.slot(hash, size: size, reciprocal: reciprocal) == Int(hash % size), "hash \(hash), size \(size)")
            }
        }
    }
}
