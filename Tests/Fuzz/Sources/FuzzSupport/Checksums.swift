import CDPDK

/// Internet checksums recomputed from scratch over a packet's bytes, to check the incremental
/// updates a stage made (RFC 1071: a correct header or segment sums to 0xffff).
public enum Checksums {
    static func sum(_ bytes: ArraySlice<UInt8>, _ initial: UInt32 = 0) -> UInt32 {
        var total = initial
        var index = bytes.startIndex
        while index + 1 < bytes.endIndex {
            total += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.endIndex { total += UInt32(bytes[index]) << 8 }
        return total
    }

    static func fold(_ value: UInt32) -> UInt16 {
        var total = value
        while total > 0xffff { total = (total & 0xffff) + (total >> 16) }
        return UInt16(total)
    }

    /// The IPv4 header at `l3` sums to 0xffff.
    public static func ipv4HeaderValid(_ bytes: [UInt8], l3: Int) -> Bool {
        guard l3 + 20 <= bytes.count else { return false }
        let length = Int(bytes[l3] & 0x0f) * 4
        guard length >= 20, l3 + length <= bytes.count else { return false }
        return fold(sum(bytes[l3..<(l3 + length)])) == 0xffff
    }

    /// The transport checksum of `bytes[l4..<end]` (protocol `proto`) is right, with the IPv4 or
    /// IPv6 pseudo-header of the addresses at `l3` (none for ICMPv4). A zero UDP checksum over
    /// IPv4 means none and is valid. Nil when the addresses or the segment are not all there.
    public static func transportValid(_ bytes: [UInt8], l3: Int, l4: Int, end: Int, family: UInt8, proto: UInt8) -> Bool? {
        guard l4 < end, end <= bytes.count else { return nil }
        let segment = bytes[l4..<end]
        if proto == 17 && family == 4 && l4 + 8 <= end && bytes[l4 + 6] == 0 && bytes[l4 + 7] == 0 { return true }
        var pseudo: UInt32 = 0
        if family == 4 {
            guard l3 + 20 <= bytes.count else { return nil }
            if proto != 1 { pseudo = sum(bytes[(l3 + 12)..<(l3 + 20)]) + UInt32(proto) + UInt32(segment.count) }
        } else {
            guard l3 + 40 <= bytes.count else { return nil }
            pseudo = sum(bytes[(l3 + 8)..<(l3 + 40)]) + UInt32(proto) + UInt32(segment.count)
        }
        return fold(sum(segment, pseudo)) == 0xffff
    }
}
