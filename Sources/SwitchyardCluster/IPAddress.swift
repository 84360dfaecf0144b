import Glibc

/// An IPv4 or IPv6 address, stored as the raw bytes of the packet (network order) in two words,
/// so that the hot path compares and hashes it with two loads.
///
///     IPv4 198.18.0.1   high = the 4 address bytes as loaded from memory, low = 0
///     IPv6 fd00::1      high = bytes 0..<8, low = bytes 8..<16
@frozen
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public var family: UInt8
    public var high: UInt64
    public var low: UInt64

    @inlinable
    public init(family: UInt8, high: UInt64, low: UInt64) {
        self.family = family
        self.high = high
        self.low = low
    }

    /// Reads an address of `family` (4 or 6) from packet memory.
    @inlinable @inline(__always)
    public init(family: UInt8, at pointer: UnsafeRawPointer) {
        self.family = family
        if family == 4 {
            high = UInt64(pointer.loadUnaligned(as: UInt32.self))
            low = 0
        } else {
            high = pointer.loadUnaligned(as: UInt64.self)
            low = pointer.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        }
    }

    /// Parses dotted IPv4 or RFC 4291 IPv6 text; nil when it is neither.
    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(bytes: withUnsafeBytes(of: &v4) { Array($0) })
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(bytes: withUnsafeBytes(of: &v6) { Array($0) })
        } else {
            return nil
        }
    }

    /// From 4 or 16 bytes in network order.
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 4 || bytes.count == 16, "an IP address has 4 or 16 bytes")
        var padded = bytes + [UInt8](repeating: 0, count: 16 - bytes.count)
        let (high, low) = padded.withUnsafeMutableBytes {
            ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        self.init(family: bytes.count == 4 ? 4 : 6, high: bytes.count == 4 ? high & 0xffff_ffff : high,
                  low: bytes.count == 4 ? 0 : low)
    }

    /// The address in network order: 4 or 16 bytes.
    public var bytes: [UInt8] {
        var words = (high, low)
        let all = withUnsafeBytes(of: &words) { Array($0) }
        return family == 4 ? Array(all[0..<4]) : all
    }

    /// Writes the address (4 or 16 bytes) to packet memory.
    @inlinable @inline(__always)
    public func store(to pointer: UnsafeMutableRawPointer) {
        if family == 4 {
            pointer.storeBytes(of: UInt32(truncatingIfNeeded: high), as: UInt32.self)
        } else {
            pointer.storeBytes(of: high, as: UInt64.self)
            pointer.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
        }
    }

    public var isIPv4: Bool { family == 4 }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: 64)
        var raw = bytes
        _ = inet_ntop(family == 4 ? AF_INET : AF_INET6, &raw, &buffer, socklen_t(buffer.count))
        return String(cString: buffer)
    }

    /// True when the first `length` bits of both addresses agree (and the families do).
    public func matches(prefix: IPAddress, length: Int) -> Bool {
        guard family == prefix.family else { return false }
        let mine = bytes, theirs = prefix.bytes
        var remaining = length
        for index in 0..<mine.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - bits))
            if mine[index] & mask != theirs[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}

/// A MAC address: six bytes, stored in the low 48 bits in memory order.
@frozen
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init(_ bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) { self.bytes = bytes }

    /// Parses `02:00:00:00:00:01`.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var values: [UInt8] = []
        for part in parts {
            guard part.count == 2, let value = UInt8(part, radix: 16) else { return nil }
            values.append(value)
        }
        bytes = (values[0], values[1], values[2], values[3], values[4], values[5])
    }

    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }

    public static func == (a: MACAddress, b: MACAddress) -> Bool { a.array == b.array }
    public func hash(into hasher: inout Hasher) { hasher.combine(array) }

    public var description: String { array.map { String(format2: $0) }.joined(separator: ":") }

    /// Writes the six bytes at `pointer`.
    @inlinable @inline(__always)
    public func store(to pointer: UnsafeMutableRawPointer) {
        var copy = bytes
        withUnsafeBytes(of: &copy) { pointer.copyMemory(from: $0.baseAddress!, byteCount: 6) }
    }
}

extension String {
    /// Two lower-case hex digits.
    init(format2 byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
