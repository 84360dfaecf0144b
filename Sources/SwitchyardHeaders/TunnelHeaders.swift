/// VXLAN header (RFC 7348): 8 bytes after UDP, then the inner Ethernet frame.
///
///      0       1          4            7
///     │flags 08│ reserved │ VNI (24 bit)│ reserved │
@frozen
public struct VXLANHeader: HeaderView {
    @inlinable public static var size: Int { 8 }
    /// The I flag: the VNI is valid.
    @inlinable public static var validVNIFlag: UInt8 { 0x08 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var flags: UInt8 { raw._u8(0) }
    @inlinable public var hasValidVNI: Bool { flags & Self.validVNIFlag != 0 }
    @inlinable public var vni: UInt32 { raw._be32(4) >> 8 }
    /// Bytes 4..<8 (VNI and the reserved byte) as they lie in memory.
    @inlinable public var vniWordRaw: UInt32 { raw._raw32(4) }

    /// The `vniWordRaw` of `vni`, and the mask that leaves out the reserved byte.
    @inlinable public static func vniWordRaw(_ vni: UInt32) -> UInt32 { (vni << 8).bigEndian }
    @inlinable public static var vniMaskRaw: UInt32 { UInt32(0xffff_ff00).bigEndian }
}

/// GUE header, variant 0 (draft-ietf-intarea-gue): 4 bytes, `hlen` × 4 bytes of options, then the
/// inner IP packet (`protocolNumber` 4 or 41).
///
///      0               1        2
///     │ver 2|C 1|hlen 5│ proto  │ flags │
@frozen
public struct GUEHeader: HeaderView {
    @inlinable public static var size: Int { 4 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var version: UInt8 { raw._u8(0) >> 6 }
    /// A control message (C bit).
    @inlinable public var isControl: Bool { raw._u8(0) & 0x20 != 0 }
    /// The header with its options: 4 + hlen × 4.
    @inlinable public var headerLength: Int { Self.size + Int(raw._u8(0) & 0x1f) * 4 }
    /// The inner protocol (IP-in-IP 4, IPv6 41).
    @inlinable public var protocolNumber: UInt8 {
        @inline(__always) get { raw._u8(1) }
        @inline(__always) nonmutating set { raw._setU8(1, newValue) }
    }
}
