/// IPv4 header (RFC 791); `size` is the fixed 20 bytes, `headerLength` includes options.
///
///      0       1      2             4         6              8     9      10        12    16    20
///     │ver|IHL │ TOS  │ total length│ ident   │flags|frag off│ TTL │proto │ checksum│ src │ dst │ options…
@frozen
public struct IPv4Header: HeaderView {
    @inlinable public static var size: Int { 20 }
    @inlinable public static var totalLengthOffset: Int { 2 }
    @inlinable public static var checksumOffset: Int { 10 }
    @inlinable public static var sourceOffset: Int { 12 }
    @inlinable public static var destinationOffset: Int { 16 }
    /// Flags and fragment offset: DF, MF, and the 13-bit offset in 8-byte units.
    @inlinable public static var dontFragmentBit: UInt16 { 0x4000 }
    @inlinable public static var moreFragmentsBit: UInt16 { 0x2000 }
    @inlinable public static var fragmentOffsetMask: UInt16 { 0x1fff }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    /// Version 4 and IHL 5: the first byte of a header without options.
    @inlinable public static var versionAndHeaderLengthNoOptions: UInt8 { 0x45 }
    @inlinable public var version: UInt8 { Self.version(firstByte: raw._u8(0)) }
    /// The first byte: version (high nibble) and IHL (low nibble).
    @inlinable public var versionAndHeaderLength: UInt8 { raw._u8(0) }
    /// Bytes of the header with its options (IHL × 4).
    @inlinable public var headerLength: Int { Self.headerLength(firstByte: raw._u8(0)) }

    /// The version and the header length (IHL × 4) that a header's first byte gives: for a parser
    /// that reads that byte (`PacketBytes.byte(at:)`) to learn how long the header is before it
    /// makes the view.
    @inlinable @inline(__always)
    public static func version(firstByte: UInt8) -> UInt8 { firstByte >> 4 }
    @inlinable @inline(__always)
    public static func headerLength(firstByte: UInt8) -> Int { Int(firstByte & 0x0f) * 4 }
    @inlinable public var totalLength: UInt16 {
        @inline(__always) get { raw._be16(2) }
        @inline(__always) nonmutating set { raw._setBE16(2, newValue) }
    }
    @inlinable public var identification: UInt16 {
        @inline(__always) get { raw._be16(4) }
        @inline(__always) nonmutating set { raw._setBE16(4, newValue) }
    }
    @inlinable public var flagsAndFragmentOffset: UInt16 {
        @inline(__always) get { raw._be16(6) }
        @inline(__always) nonmutating set { raw._setBE16(6, newValue) }
    }
    @inlinable public var dontFragment: Bool { flagsAndFragmentOffset & Self.dontFragmentBit != 0 }
    @inlinable public var moreFragments: Bool { flagsAndFragmentOffset & Self.moreFragmentsBit != 0 }
    /// In 8-byte units.
    @inlinable public var fragmentOffset: UInt16 { flagsAndFragmentOffset & Self.fragmentOffsetMask }
    /// A fragment: MF set or a non-zero offset.
    @inlinable public var isFragment: Bool { flagsAndFragmentOffset & (Self.moreFragmentsBit | Self.fragmentOffsetMask) != 0 }
    @inlinable public var ttl: UInt8 {
        @inline(__always) get { raw._u8(8) }
        @inline(__always) nonmutating set { raw._setU8(8, newValue) }
    }
    @inlinable public var protocolNumber: UInt8 {
        @inline(__always) get { raw._u8(9) }
        @inline(__always) nonmutating set { raw._setU8(9, newValue) }
    }
    /// TTL and protocol as the 16-bit word they share, memory order: what an incremental checksum
    /// update (RFC 1624) takes when the TTL changes.
    @inlinable public var ttlAndProtocolRaw: UInt16 { raw._raw16(8) }
    /// Memory order (one's-complement arithmetic does not care).
    @inlinable public var checksum: UInt16 {
        @inline(__always) get { raw._raw16(10) }
        @inline(__always) nonmutating set { raw._setRaw16(10, newValue) }
    }
    /// Raw words, memory order.
    @inlinable public var source: UInt32 {
        @inline(__always) get { raw._raw32(12) }
        @inline(__always) nonmutating set { raw._setRaw32(12, newValue) }
    }
    @inlinable public var destination: UInt32 {
        @inline(__always) get { raw._raw32(16) }
        @inline(__always) nonmutating set { raw._setRaw32(16, newValue) }
    }

    /// The fixed 20 bytes as five 32-bit words added in 64 bits: `Checksum.fold` of it is 0xffff
    /// when the header checksum of a header without options is right (the same one's-complement
    /// sum as ten 16-bit words, in five loads).
    @inlinable public var fixedHeaderSum: UInt64 {
        @inline(__always) get {
            UInt64(raw._raw32(0)) &+ UInt64(raw._raw32(4)) &+ UInt64(raw._raw32(8)) &+ UInt64(raw._raw32(12))
                &+ UInt64(raw._raw32(16))
        }
    }

    /// Writes version 4, IHL 5 (no options) and TOS 0.
    @inlinable @inline(__always)
    public func setVersionNoOptions() { raw._setBE16(0, 0x4500) }
}

/// IPv6 fixed header (RFC 8200): 40 bytes; extension headers follow (`IPv6ExtensionChain`).
///
///      0                 4              6      7       8       24      40
///     │ver|class|flow    │payload length│ next │ hops  │ source│ dest  │
@frozen
public struct IPv6Header: HeaderView {
    @inlinable public static var size: Int { 40 }
    @inlinable public static var payloadLengthOffset: Int { 4 }
    @inlinable public static var sourceOffset: Int { 8 }
    @inlinable public static var destinationOffset: Int { 24 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var version: UInt8 { raw._u8(0) >> 4 }
    /// Version, traffic class and flow label, host order.
    @inlinable public var versionClassFlow: UInt32 {
        @inline(__always) get { raw._be32(0) }
        @inline(__always) nonmutating set { raw._setBE32(0, newValue) }
    }
    /// Bytes after the fixed header (extension headers included).
    @inlinable public var payloadLength: UInt16 {
        @inline(__always) get { raw._be16(4) }
        @inline(__always) nonmutating set { raw._setBE16(4, newValue) }
    }
    @inlinable public var nextHeader: UInt8 {
        @inline(__always) get { raw._u8(6) }
        @inline(__always) nonmutating set { raw._setU8(6, newValue) }
    }
    @inlinable public var hopLimit: UInt8 {
        @inline(__always) get { raw._u8(7) }
        @inline(__always) nonmutating set { raw._setU8(7, newValue) }
    }
    /// The addresses as two raw words each (`IPAddress`'s high and low), memory order.
    @inlinable public var sourceHigh: UInt64 {
        @inline(__always) get { raw._raw64(8) }
        @inline(__always) nonmutating set { raw._setRaw64(8, newValue) }
    }
    @inlinable public var sourceLow: UInt64 {
        @inline(__always) get { raw._raw64(16) }
        @inline(__always) nonmutating set { raw._setRaw64(16, newValue) }
    }
    @inlinable public var destinationHigh: UInt64 {
        @inline(__always) get { raw._raw64(24) }
        @inline(__always) nonmutating set { raw._setRaw64(24, newValue) }
    }
    @inlinable public var destinationLow: UInt64 {
        @inline(__always) get { raw._raw64(32) }
        @inline(__always) nonmutating set { raw._setRaw64(32, newValue) }
    }

    /// Writes version 6, traffic class 0, flow label 0.
    @inlinable @inline(__always)
    public func setVersionNoClassNoFlow() { versionClassFlow = 0x6000_0000 }
}

/// The IPv6 fragment extension header (RFC 8200 4.5): 8 bytes.
@frozen
public struct IPv6FragmentHeader: HeaderView {
    @inlinable public static var size: Int { 8 }
    public let raw: UnsafeMutableRawPointer

    @inlinable @inline(__always) public init(unchecked raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inlinable public var nextHeader: UInt8 { raw._u8(0) }
    /// Fragment offset (13 bits, 8-byte units) << 3 | M.
    @inlinable public var offsetAndFlags: UInt16 { raw._be16(2) }
    @inlinable public var fragmentOffset: UInt16 { offsetAndFlags >> 3 }
    @inlinable public var moreFragments: Bool { offsetAndFlags & 1 != 0 }
    @inlinable public var identification: UInt32 { raw._be32(4) }
    /// The identification as it lies in memory.
    @inlinable public var identificationRaw: UInt32 { raw._raw32(4) }
}

/// An IPv6 extension-header chain, walked from the fixed header to the upper-layer header.
///
///     [IPv6 40][hop-by-hop][routing][fragment][dest opts][AH] ─► upper layer (TCP, UDP, ICMPv6, ESP, …)
///
/// Hop-by-hop (0), routing (43), fragment (44), destination options (60) and AH (51) are walked;
/// anything else ends the chain. A non-first fragment ends it too: what follows is not a header.
@frozen
public struct IPv6ExtensionChain {
    /// Why a walk stopped short.
    public enum Failure: UInt8 {
        /// Hop-by-hop not first, too many headers, or a header past `end`.
        case malformed
        /// A header goes on past the contiguous bytes but not past the packet (`end`).
        case notContiguous
    }

    /// The upper-layer header; 0 when a non-first fragment ended the walk.
    public var l4: Int
    /// The upper-layer protocol (or the header where the walk failed).
    public var protocolNumber: UInt8
    public var isFragment: Bool
    /// Extension headers walked.
    public var headers: Int
    public var failure: Failure?

    @inlinable @inline(__always)
    public init(l4: Int, protocolNumber: UInt8, isFragment: Bool, headers: Int, failure: Failure?) {
        self.l4 = l4
        self.protocolNumber = protocolNumber
        self.isFragment = isFragment
        self.headers = headers
        self.failure = failure
    }

    /// Whether `next` is a header this walk steps over.
    @inlinable @inline(__always)
    public static func isExtension(_ next: UInt8) -> Bool {
        next == IPProtocol.hopByHop || next == IPProtocol.routing || next == IPProtocol.fragment
            || next == IPProtocol.ah || next == IPProtocol.destinationOptions
    }

    /// Walks from `start` (just past the fixed header) up to `end` (the end of the IPv6 packet),
    /// reading only within `packet`. `first` is the fixed header's next header. At most
    /// `maximumHeaders` are walked; hop-by-hop may only come first (RFC 8200 4.1). An offset-0
    /// fragment without M is an atomic fragment (RFC 6946): not a fragment.
    @inlinable @inline(__always)
    public static func walk(_ packet: PacketBytes, from start: Int, end: Int, first: UInt8,
                            maximumHeaders: Int) -> IPv6ExtensionChain
    {
        var offset = start
        var next = first
        var headers = 0
        var isFragment = false
        while isExtension(next) {
            if next == IPProtocol.hopByHop && headers > 0 || headers == maximumHeaders || offset + 8 > end {
                return IPv6ExtensionChain(l4: 0, protocolNumber: next, isFragment: isFragment, headers: headers,
                                          failure: .malformed)
            }
            guard packet.fits(offset, 8) else {
                return IPv6ExtensionChain(l4: 0, protocolNumber: next, isFragment: isFragment, headers: headers,
                                          failure: .notContiguous)
            }
            headers += 1
            let header = packet.base + offset
            let length: Int
            switch next {
            case IPProtocol.fragment: length = 8
            case IPProtocol.ah: length = (Int(header._u8(1)) + 2) * 4
            default: length = (Int(header._u8(1)) + 1) * 8
            }
            guard offset + length <= end else {
                return IPv6ExtensionChain(l4: 0, protocolNumber: next, isFragment: isFragment, headers: headers,
                                          failure: .malformed)
            }
            if next == IPProtocol.fragment {
                let fragment = IPv6FragmentHeader(unchecked: header)
                if fragment.fragmentOffset != 0 || fragment.moreFragments { isFragment = true }
                if fragment.fragmentOffset != 0 {
                    return IPv6ExtensionChain(l4: 0, protocolNumber: fragment.nextHeader, isFragment: true,
                                              headers: headers, failure: nil)
                }
            }
            next = header._u8(0)
            offset += length
        }
        return IPv6ExtensionChain(l4: offset, protocolNumber: next, isFragment: isFragment, headers: headers,
                                  failure: nil)
    }

    /// The fragment header of a chain (a fragment's, which classify already walked): its offset,
    /// found by stepping over hop-by-hop, routing, destination options and AH headers from `start`,
    /// at most `maximumHeaders` of them; nil when another header comes first or the walk would
    /// leave `packet` (whose `count` is the end of the IPv6 packet).
    @inlinable @inline(__always)
    public static func fragmentHeader(_ packet: PacketBytes, from start: Int, first: UInt8,
                                      maximumHeaders: Int) -> IPv6FragmentHeader?
    {
        var next = first
        var offset = start
        var walked = 0
        while next != IPProtocol.fragment {
            guard isExtension(next), walked < maximumHeaders, packet.fits(offset, 8) else { return nil }
            let header = packet.base + offset
            let length = next == IPProtocol.ah ? (Int(header._u8(1)) + 2) * 4 : (Int(header._u8(1)) + 1) * 8
            next = header._u8(0)
            offset += length
            walked += 1
        }
        return packet.header(IPv6FragmentHeader.self, at: offset)
    }
}
