/// The contiguous bytes of a packet (an mbuf's first segment, or a test buffer): where the header
/// views come from. A view is handed out only when its fixed part lies within `count`: the bounds
/// are checked once, when the view is made, and its field accessors then read and write without
/// further checks.
///
///     PacketBytes(base, count) ──► .ethernet()          EthernetHeader?   (14 bytes at 0)
///                              ──► .header(IPv4Header.self, at: l3)  IPv4Header?  (20 bytes at l3)
///                              ──► .header(UDPHeader.self, at: l4)   UDPHeader?   (8 bytes at l4)
///
/// Every view is a `@frozen` struct holding one pointer, with `@inlinable` accessors at fixed
/// offsets: after inlining, `ip.totalLength` is the same load as
/// `UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: l3 + 2, as: UInt16.self))`, and an
/// optional view costs no more than an optional pointer. Multi-byte numbers are read and written
/// in host order; addresses and checksums are raw words in memory order (what `IPAddress`,
/// `Checksum` and the flow keys take).
@frozen
public struct PacketBytes {
    public let base: UnsafeMutableRawPointer
    /// Readable and writable bytes from `base`.
    public let count: Int

    @inlinable @inline(__always)
    public init(_ base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    /// Whether `size` bytes at `offset` lie within the packet (`offset` is never negative: it
    /// comes from a header field or a metadata offset).
    @inlinable @inline(__always)
    public func fits(_ offset: Int, _ size: Int) -> Bool { offset + size <= count }

    /// The byte at `offset`, or nil when it is past the end (a header's first byte, read to learn
    /// how long the header is before its view is made).
    @inlinable @inline(__always)
    public func byte(at offset: Int) -> UInt8? { offset < count ? base._u8(offset) : nil }

    /// A view of `H` at `offset`, or nil when its fixed part does not fit.
    @inlinable @inline(__always)
    public func header<H: HeaderView>(_: H.Type, at offset: Int) -> H? {
        offset + H.size <= count ? H(unchecked: base + offset) : nil
    }

    /// The Ethernet header at the start of the packet.
    @inlinable @inline(__always)
    public func ethernet() -> EthernetHeader? { header(EthernetHeader.self, at: 0) }
}

/// A fixed-size header at a pointer whose bounds the caller has checked (`PacketBytes.header`).
public protocol HeaderView {
    /// Bytes of the fixed part of the header.
    static var size: Int { get }
    /// A view of the header at `raw`; `size` bytes there must be readable and writable.
    init(unchecked raw: UnsafeMutableRawPointer)
    var raw: UnsafeMutableRawPointer { get }
}

// Unaligned big-endian loads and stores at a byte offset: the only raw accesses of the views.
extension UnsafeMutableRawPointer {
    @inlinable @inline(__always)
    func _u8(_ offset: Int) -> UInt8 { load(fromByteOffset: offset, as: UInt8.self) }

    @inlinable @inline(__always)
    func _setU8(_ offset: Int, _ value: UInt8) { storeBytes(of: value, toByteOffset: offset, as: UInt8.self) }

    @inlinable @inline(__always)
    func _be16(_ offset: Int) -> UInt16 { UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }

    @inlinable @inline(__always)
    func _setBE16(_ offset: Int, _ value: UInt16) { storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self) }

    @inlinable @inline(__always)
    func _be32(_ offset: Int) -> UInt32 { UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }

    @inlinable @inline(__always)
    func _setBE32(_ offset: Int, _ value: UInt32) { storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self) }

    @inlinable @inline(__always)
    func _raw16(_ offset: Int) -> UInt16 { loadUnaligned(fromByteOffset: offset, as: UInt16.self) }

    @inlinable @inline(__always)
    func _setRaw16(_ offset: Int, _ value: UInt16) { storeBytes(of: value, toByteOffset: offset, as: UInt16.self) }

    @inlinable @inline(__always)
    func _raw32(_ offset: Int) -> UInt32 { loadUnaligned(fromByteOffset: offset, as: UInt32.self) }

    @inlinable @inline(__always)
    func _setRaw32(_ offset: Int, _ value: UInt32) { storeBytes(of: value, toByteOffset: offset, as: UInt32.self) }

    @inlinable @inline(__always)
    func _raw64(_ offset: Int) -> UInt64 { loadUnaligned(fromByteOffset: offset, as: UInt64.self) }

    @inlinable @inline(__always)
    func _setRaw64(_ offset: Int, _ value: UInt64) { storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }

    /// Six bytes as the low 48 bits of a word, in memory order (`NeighborView`'s MAC layout).
    @inlinable @inline(__always)
    func _mac(_ offset: Int) -> UInt64 { UInt64(_raw32(offset)) | UInt64(_raw16(offset + 4)) << 32 }

    @inlinable @inline(__always)
    func _setMAC(_ offset: Int, _ word: UInt64) {
        _setRaw32(offset, UInt32(truncatingIfNeeded: word))
        _setRaw16(offset + 4, UInt16(truncatingIfNeeded: word >> 32))
    }
}
