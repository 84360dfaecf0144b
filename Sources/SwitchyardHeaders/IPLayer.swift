/// The IP layer of a parsed packet, IPv4 or IPv6 (classify fills one per packet, on the stack):
/// where its headers are and what the parser found.
///
///     l3 ─► [IPv4 + options | IPv6 + extension headers] l4 ─► [TCP / UDP / ICMP ...] ... end
///
/// `l4` is 0 for a non-first fragment (no transport header in it); `end` is just past the IP
/// packet (Ethernet padding excluded).
@frozen
public struct IPLayer {
    /// 4 or 6.
    public var family: UInt8
    public var l3: Int
    public var l4: Int
    public var end: Int
    /// The upper-layer protocol (after any IPv6 extension headers).
    public var protocolNumber: UInt8
    public var isFragment: Bool

    @inlinable @inline(__always)
    public init(family: UInt8, l3: Int, l4: Int, end: Int, protocolNumber: UInt8, isFragment: Bool) {
        self.family = family
        self.l3 = l3
        self.l4 = l4
        self.end = end
        self.protocolNumber = protocolNumber
        self.isFragment = isFragment
    }

    /// Where the addresses are in an IP header of `family`.
    @inlinable @inline(__always)
    public static func sourceOffset(family: UInt8) -> Int {
        family == 4 ? IPv4Header.sourceOffset : IPv6Header.sourceOffset
    }
    @inlinable @inline(__always)
    public static func destinationOffset(family: UInt8) -> Int {
        family == 4 ? IPv4Header.destinationOffset : IPv6Header.destinationOffset
    }

    /// Where the addresses are in the packet.
    @inlinable public var sourceOffset: Int { l3 + Self.sourceOffset(family: family) }
    @inlinable public var destinationOffset: Int { l3 + Self.destinationOffset(family: family) }
    @inlinable public var isTCPOrUDP: Bool { IPProtocol.isTCPOrUDP(protocolNumber) }
    /// ICMP in IPv4, ICMPv6 in IPv6.
    @inlinable public var isICMP: Bool { protocolNumber == IPProtocol.icmp(family: family) }
}

extension PacketBytes {
    /// The address of `family` at `offset` as `IPAddress` words (IPv4: the raw word in `high`,
    /// `low` 0). The caller checked that the header holding it is in the packet.
    @inlinable @inline(__always)
    public func address(at offset: Int, family: UInt8) -> (high: UInt64, low: UInt64) {
        family == 4 ? (UInt64(base._raw32(offset)), 0) : (base._raw64(offset), base._raw64(offset + 8))
    }
}

/// The packet an ICMP or ICMPv6 error quotes, after its 8-byte header: a complete IP header of
/// the error's own family and at least the 8 transport bytes that hold the ports.
///
///     [IP][ICMP 8] ─► [quoted IP header (+ options / extension headers)][quoted ports ...]
///                      l3                                                l4
@frozen
public struct ICMPQuote {
    /// Why no flow can be named from a quote.
    public enum Failure: UInt8 {
        /// The quote ends (or its IPv6 extension chain is malformed) before the ports.
        case truncated
        /// The quote goes on past the contiguous bytes: in another segment.
        case notContiguous
        /// A quoted non-first fragment: no transport header, no ports.
        case noPorts
    }

    public var l3: Int
    public var l4: Int
    public var protocolNumber: UInt8
    public var failure: Failure?

    @inlinable @inline(__always)
    public init(l3: Int, l4: Int, protocolNumber: UInt8, failure: Failure?) {
        self.l3 = l3
        self.l4 = l4
        self.protocolNumber = protocolNumber
        self.failure = failure
    }

    @inlinable @inline(__always)
    static func failed(_ failure: Failure) -> ICMPQuote {
        ICMPQuote(l3: 0, l4: 0, protocolNumber: 0, failure: failure)
    }

    /// The quote of the ICMP error at `ip.l4` (its 8-byte header checked), read within `packet`
    /// and `ip.end`. An IPv6 quote's extension headers are walked as `IPv6ExtensionChain.walk`
    /// walks them, at most `maximumHeaders`.
    @inlinable @inline(__always)
    public static func parse(_ packet: PacketBytes, _ ip: IPLayer, maximumHeaders: Int) -> ICMPQuote {
        let inner = ip.l4 + ICMPHeader.size
        let end = ip.end
        if ip.family == 4 {
            guard inner + IPv4Header.size <= end else { return failed(.truncated) }
            guard let quoted = packet.header(IPv4Header.self, at: inner) else { return failed(.notContiguous) }
            let headerLength = quoted.headerLength
            guard quoted.version == 4, headerLength >= IPv4Header.size, inner + headerLength + 8 <= end else {
                return failed(.truncated)
            }
            guard packet.fits(inner + headerLength, 8) else { return failed(.notContiguous) }
            // A quoted non-first fragment has no ports: no flow can be named from it.
            guard quoted.fragmentOffset == 0 else { return failed(.noPorts) }
            return ICMPQuote(l3: inner, l4: inner + headerLength, protocolNumber: quoted.protocolNumber, failure: nil)
        }
        guard inner + IPv6Header.size <= end else { return failed(.truncated) }
        guard let quoted = packet.header(IPv6Header.self, at: inner) else { return failed(.notContiguous) }
        guard quoted.version == 6 else { return failed(.truncated) }
        let chain = IPv6ExtensionChain.walk(packet, from: inner + IPv6Header.size, end: end, first: quoted.nextHeader,
                                            maximumHeaders: maximumHeaders)
        switch chain.failure {
        case .malformed?: return failed(.truncated)
        case .notContiguous?: return failed(.notContiguous)
        case nil: break
        }
        guard chain.l4 != 0 else { return failed(.noPorts) }
        guard chain.l4 + 8 <= end else { return failed(.truncated) }
        guard packet.fits(chain.l4, 8) else { return failed(.notContiguous) }
        return ICMPQuote(l3: inner, l4: chain.l4, protocolNumber: chain.protocolNumber, failure: nil)
    }
}
