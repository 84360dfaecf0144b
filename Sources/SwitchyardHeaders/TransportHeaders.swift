/// TCP header (RFC 9293): 20 bytes fixed, `headerLength` with options.
///
///      0      2      4          8          12          13     14      16        18
///     │ sport│ dport│ sequence │ ack      │off|rsvd   │flags │window │checksum │urgent│ options…
@frozen
public struct TCPHeader: HeaderView {
    @inlinable public static var size: Int { 20 }
    @inlinable public static var checksumOffset: Int { 16 }
    @inlinable public static var optionsOffset: Int { 20 }
    /// Flag bits of `flags`.
    @inlinable public static var fin: UInt8 { 0x01 }
    @inlinable public static var syn: UInt8 { 0x02 }
    @inlinable public static var rst: UInt8 { 0x04 }
    @inlinable public static var ack: UInt8 { 0x10 }
    /// Option kinds.
    @inlinable public static var optionEnd: UInt8 { 0 }
    @inlinable public static var optionNoOperation: UInt8 { 1 }
    @inlinable public static var optionMSS: UInt8 { 2 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    /// Ports, host order.
    @inlinable public var sourcePort: UInt16 {
        @inline(__always) get { raw._be16(0) }
        @inline(__always) nonmutating set { raw._setBE16(0, newValue) }
    }
    @inlinable public var destinationPort: UInt16 {
        @inline(__always) get { raw._be16(2) }
        @inline(__always) nonmutating set { raw._setBE16(2, newValue) }
    }
    @inlinable public var sequence: UInt32 { raw._be32(4) }
    @inlinable public var acknowledgment: UInt32 { raw._be32(8) }
    /// Bytes of the header with its options (data offset × 4).
    @inlinable public var headerLength: Int { Int(raw._u8(12) >> 4) * 4 }
    @inlinable public var flags: UInt8 { raw._u8(13) }
    @inlinable public var window: UInt16 { raw._be16(14) }
    /// Memory order.
    @inlinable public var checksum: UInt16 {
        @inline(__always) get { raw._raw16(16) }
        @inline(__always) nonmutating set { raw._setRaw16(16, newValue) }
    }

    /// Where option `kind` is among the options, which end `headerLength` bytes into the header:
    /// its offset from the start of the header and its length, nil when it is not there, or
    /// `malformed` when an option runs past the end or has a length below 2. Only bytes before
    /// `headerLength` are read; the caller checked that they are in the packet.
    @inlinable @inline(__always)
    public func findOption(_ kind: UInt8, headerLength: Int) -> (offset: Int, length: Int, malformed: Bool)? {
        var offset = Self.optionsOffset
        while offset < headerLength {
            let current = raw._u8(offset)
            if current == Self.optionEnd { break }
            if current == Self.optionNoOperation { offset += 1; continue }
            guard offset + 1 < headerLength else { return (offset, 0, true) }
            let length = Int(raw._u8(offset + 1))
            guard length >= 2, offset + length <= headerLength else { return (offset, length, true) }
            if current == kind { return (offset, length, false) }
            offset += length
        }
        return nil
    }

    /// The 16-bit big-endian value at `offset` from the start of the header (an option's value).
    @inlinable @inline(__always)
    public func be16(at offset: Int) -> UInt16 { raw._be16(offset) }

    /// Writes `value` big-endian at `offset` from the start of the header and returns what changed
    /// for the checksum (RFC 1624), memory order: the 16-bit word (`wide` false), or, for a value
    /// at an odd offset, which straddles two checksum words, the 32 bits around it (`wide` true).
    @inlinable @inline(__always)
    public func replace16(at offset: Int, with value: UInt16) -> (old: UInt32, new: UInt32, wide: Bool) {
        if offset & 1 == 0 {
            let before = UInt32(raw._raw16(offset))
            raw._setBE16(offset, value)
            return (before, UInt32(raw._raw16(offset)), false)
        }
        let before = raw._raw32(offset - 1)
        raw._setBE16(offset, value)
        return (before, raw._raw32(offset - 1), true)
    }
}

/// The two ports that open a TCP and a UDP header alike: what a flow key takes from either.
///
///      0      2      4
///     │ sport│ dport│
@frozen
public struct TransportPorts: HeaderView {
    @inlinable public static var size: Int { 4 }
    @inlinable public static var sourcePortOffset: Int { 0 }
    @inlinable public static var destinationPortOffset: Int { 2 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    /// Host order.
    @inlinable public var sourcePort: UInt16 { raw._be16(0) }
    @inlinable public var destinationPort: UInt16 { raw._be16(2) }
    /// As they lie in memory (what `sy_flow_key` holds).
    @inlinable public var sourcePortRaw: UInt16 { raw._raw16(0) }
    @inlinable public var destinationPortRaw: UInt16 { raw._raw16(2) }
    /// Both ports as one word, memory order (source first, as in `sy_flow_key`).
    @inlinable public var bothRaw: UInt32 { raw._raw32(0) }
}

/// UDP header (RFC 768): 8 bytes.
///
///      0      2      4       6
///     │ sport│ dport│ length│ checksum │
@frozen
public struct UDPHeader: HeaderView {
    @inlinable public static var size: Int { 8 }
    @inlinable public static var lengthOffset: Int { 4 }
    @inlinable public static var checksumOffset: Int { 6 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var sourcePort: UInt16 {
        @inline(__always) get { raw._be16(0) }
        @inline(__always) nonmutating set { raw._setBE16(0, newValue) }
    }
    @inlinable public var destinationPort: UInt16 {
        @inline(__always) get { raw._be16(2) }
        @inline(__always) nonmutating set { raw._setBE16(2, newValue) }
    }
    /// The destination port as it lies in memory (compare with a port stored `.bigEndian`).
    @inlinable public var destinationPortRaw: UInt16 { raw._raw16(2) }
    /// Header and payload bytes.
    @inlinable public var length: UInt16 {
        @inline(__always) get { raw._be16(4) }
        @inline(__always) nonmutating set { raw._setBE16(4, newValue) }
    }
    /// Memory order; 0 over IPv4 means none computed.
    @inlinable public var checksum: UInt16 {
        @inline(__always) get { raw._raw16(6) }
        @inline(__always) nonmutating set { raw._setRaw16(6, newValue) }
    }
}

/// The common ICMP / ICMPv6 header: 8 bytes, the last 4 depend on the type (MTU, identifier and
/// sequence, pointer, unused). An error quotes the packet it is about after them.
///
///      0     1     2         4
///     │type │code │checksum │ rest of header │ quote or data…
@frozen
public struct ICMPHeader: HeaderView {
    @inlinable public static var size: Int { 8 }
    @inlinable public static var checksumOffset: Int { 2 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var type: UInt8 {
        @inline(__always) get { raw._u8(0) }
        @inline(__always) nonmutating set { raw._setU8(0, newValue) }
    }
    @inlinable public var code: UInt8 {
        @inline(__always) get { raw._u8(1) }
        @inline(__always) nonmutating set { raw._setU8(1, newValue) }
    }
    /// Memory order.
    @inlinable public var checksum: UInt16 {
        @inline(__always) get { raw._raw16(2) }
        @inline(__always) nonmutating set { raw._setRaw16(2, newValue) }
    }
    /// Type and code as the 16-bit word they share, memory order (for an incremental checksum update).
    @inlinable public var typeAndCodeRaw: UInt16 { raw._raw16(0) }
    /// The echo identifier (bytes 4..<6) as it lies in memory.
    @inlinable public var identifierRaw: UInt16 { raw._raw16(4) }
    /// Bytes 4..<8, host order (the next-hop MTU of a fragmentation-needed or packet-too-big error).
    @inlinable public var rest: UInt32 {
        @inline(__always) get { raw._be32(4) }
        @inline(__always) nonmutating set { raw._setBE32(4, newValue) }
    }

    /// Sets type and code and clears the checksum.
    @inlinable @inline(__always)
    public func start(type: UInt8, code: UInt8) {
        raw._setU8(0, type)
        raw._setU8(1, code)
        raw._setRaw16(2, 0)
    }
}

/// A neighbour solicitation or advertisement (RFC 4861 4.3, 4.4): the ICMPv6 header (its `rest`
/// holds the advertisement's flags), the target address, then options.
///
///      0      4        8               24
///     │ ICMPv6│ flags  │ target address │ option: type 1|2, length 1 (8 bytes), MAC │
@frozen
public struct NeighborDiscoveryHeader: HeaderView {
    /// The message up to the target address; `sizeWithLinkLayerOption` with one MAC option.
    @inlinable public static var size: Int { 24 }
    @inlinable public static var sizeWithLinkLayerOption: Int { 32 }
    /// Option types: the sender's link-layer address (solicitations), the target's (advertisements).
    @inlinable public static var sourceLinkLayerOption: UInt8 { 1 }
    @inlinable public static var targetLinkLayerOption: UInt8 { 2 }
    /// Flags of an advertisement (in `icmp.rest`): router, solicited, override.
    @inlinable public static var routerFlag: UInt32 { 0x8000_0000 }
    @inlinable public static var solicitedFlag: UInt32 { 0x4000_0000 }
    @inlinable public static var overrideFlag: UInt32 { 0x2000_0000 }
    /// ff02::1, all nodes (RFC 4291 2.7.1), as raw words, and its Ethernet group MAC 33:33:00:00:00:01
    /// as a MAC word.
    @inlinable public static var allNodesHigh: UInt64 { UInt64(0xff02_0000_0000_0000).bigEndian }
    @inlinable public static var allNodesLow: UInt64 { UInt64(1).bigEndian }
    @inlinable public static var allNodesMAC: UInt64 { UInt64(0x0100_0000_3333) }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var icmp: ICMPHeader { ICMPHeader(unchecked: raw) }
    /// A multicast target address (ff00::/8), which RFC 4861 7.1 forbids.
    @inlinable public var targetIsMulticast: Bool { raw._u8(8) == 0xff }
    /// The target address as two raw words, memory order.
    @inlinable public var targetHigh: UInt64 {
        @inline(__always) get { raw._raw64(8) }
        @inline(__always) nonmutating set { raw._setRaw64(8, newValue) }
    }
    @inlinable public var targetLow: UInt64 {
        @inline(__always) get { raw._raw64(16) }
        @inline(__always) nonmutating set { raw._setRaw64(16, newValue) }
    }

    /// Walks the options of a message of `length` bytes (RFC 4861 4.6: type, length in 8-byte
    /// units, never 0, within the message): where the MAC of the last link-layer option of `type`
    /// (at least 8 bytes) is, from the start of the header, 0 when there is none; nil when an
    /// option is malformed. Only bytes before `length` are read; the caller checked that they are
    /// in the packet.
    @inlinable @inline(__always)
    public func linkLayerOption(_ type: UInt8, length: Int) -> Int? {
        var found = 0
        var option = Self.size
        while option < length {
            guard option + 2 <= length else { return nil }
            let optionLength = Int(raw._u8(option + 1)) * 8
            guard optionLength > 0, option + optionLength <= length else { return nil }
            if raw._u8(option) == type && optionLength >= 8 { found = option + 2 }
            option += optionLength
        }
        return found
    }

    /// The MAC at `offset` from the start of the header (`linkLayerOption`'s), as a MAC word.
    @inlinable @inline(__always)
    public func mac(at offset: Int) -> UInt64 { raw._mac(offset) }

    /// Writes one link-layer address option (8 bytes) right after the target: `type`, length 1, `mac`.
    /// `sizeWithLinkLayerOption` bytes must be writable.
    @inlinable @inline(__always)
    public func setLinkLayerOption(type: UInt8, mac: UInt64) {
        raw._setU8(24, type)
        raw._setU8(25, 1)
        raw._setMAC(26, mac)
    }

    /// The solicited-node multicast address of a target (ff02::1:ffXX:XXXX, RFC 4291 2.7.1) as
    /// raw words, and its Ethernet group MAC (33:33:ff:XX:XX:XX) as a MAC word.
    @inlinable @inline(__always)
    public static func solicitedNode(targetLow: UInt64) -> (high: UInt64, low: UInt64, mac: UInt64) {
        let low24 = UInt64(bigEndian: targetLow) & 0x00ff_ffff
        return (UInt64(0xff02_0000_0000_0000).bigEndian, (0x0000_0001_ff00_0000 | low24).bigEndian,
                ((0x3333_ff00_0000 | low24) << 16).bigEndian)
    }
}
