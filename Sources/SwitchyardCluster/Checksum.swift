/// Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624) on raw words loaded
/// from packet memory. One's-complement sums do not depend on byte order, so nothing is swapped.
public enum Checksum {
    /// Folds a wide one's-complement sum to 16 bits.
    @inlinable @inline(__always)
    public static func fold(_ sum: UInt64) -> UInt16 {
        var s = (sum & 0xffff_ffff) &+ (sum >> 32)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// Folds a one's-complement sum below 2^32 to 16 bits: two steps suffice there.
    @inlinable @inline(__always)
    public static func foldSmall(_ sum: UInt64) -> UInt16 {
        var s = (sum & 0xffff) &+ (sum >> 16)
        s = (s & 0xffff) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// A checksum field after changes whose one's-complement difference is `change` (the sum of
    /// `halves(~old) + halves(new)` of every changed word, below 2^32): one fold for all of them.
    @inlinable @inline(__always)
    public static func adjust(_ check: UInt16, change: UInt64) -> UInt16 {
        ~foldSmall(UInt64(~check) &+ change)
    }

    /// The one's-complement difference a word's change from `old` to `new` makes (for `adjust(_:change:)`).
    @inlinable @inline(__always)
    public static func change(old: UInt32, new: UInt32) -> UInt64 { halves(~old) &+ halves(new) }

    @inlinable @inline(__always)
    public static func change(old: UInt64, new: UInt64) -> UInt64 { halves(~old) &+ halves(new) }

    @inlinable @inline(__always)
    public static func change(old: UInt16, new: UInt16) -> UInt64 { UInt64(~old) &+ UInt64(new) }

    /// The sum of the 16-bit halves of a 32-bit word.
    @inlinable @inline(__always)
    public static func halves(_ word: UInt32) -> UInt64 { UInt64(word & 0xffff) &+ UInt64(word >> 16) }

    @inlinable @inline(__always)
    public static func halves(_ word: UInt64) -> UInt64 {
        UInt64(word & 0xffff) &+ UInt64((word >> 16) & 0xffff) &+ UInt64((word >> 32) & 0xffff) &+ UInt64(word >> 48)
    }

    /// A checksum field after a 16-bit word changed from `old` to `new` (RFC 1624 eq. 3).
    @inlinable @inline(__always)
    public static func adjust(_ check: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        adjust(check, change: change(old: old, new: new))
    }

    /// A checksum field after a 32-bit word changed.
    @inlinable @inline(__always)
    public static func adjust(_ check: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        adjust(check, change: change(old: old, new: new))
    }

    /// A checksum field after a 64-bit word changed.
    @inlinable @inline(__always)
    public static func adjust(_ check: UInt16, old: UInt64, new: UInt64) -> UInt16 {
        adjust(check, change: change(old: old, new: new))
    }

    /// A checksum field after an address (4 or 16 bytes) changed from `old` to `new`.
    @inlinable @inline(__always)
    public static func adjust(_ check: UInt16, old: IPAddress, new: IPAddress) -> UInt16 {
        if old.family == 4 {
            return adjust(check, old: UInt32(truncatingIfNeeded: old.high), new: UInt32(truncatingIfNeeded: new.high))
        }
        return adjust(adjust(check, old: old.high, new: new.high), old: old.low, new: new.low)
    }

    /// The one's-complement sum of `count` bytes (not folded, not inverted).
    @inlinable
    public static func sum(_ bytes: UnsafeRawPointer, count: Int, initial: UInt64 = 0) -> UInt64 {
        var sum = initial
        var offset = 0
        while offset + 8 <= count {
            sum = sum &+ halves(bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            offset += 8
        }
        while offset + 2 <= count {
            sum = sum &+ UInt64(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            offset += 2
        }
        if offset < count {
            // The odd byte is the high-order byte of a big-endian word: in memory order, the low byte.
            sum = sum &+ UInt64(bytes.load(fromByteOffset: offset, as: UInt8.self))
        }
        return sum
    }

    /// The finished checksum (to store as is) of `count` bytes plus `initial`.
    @inlinable
    public static func complete(_ bytes: UnsafeRawPointer, count: Int, initial: UInt64 = 0) -> UInt16 {
        ~fold(sum(bytes, count: count, initial: initial))
    }

    /// The pseudo-header sum for TCP/UDP/ICMPv6 over IPv4 or IPv6 (addresses read from the IP header
    /// at `l3`), for `length` bytes of `protocolNumber`.
    @inlinable
    public static func pseudoHeader(ip l3: UnsafeRawPointer, family: UInt8, protocolNumber: UInt8, length: Int) -> UInt64 {
        let addresses = family == 4 ? sum(l3 + 12, count: 8) : sum(l3 + 8, count: 32)
        return addresses &+ UInt64(UInt16(protocolNumber).bigEndian) &+ UInt64(UInt16(truncatingIfNeeded: length).bigEndian)
    }
}
