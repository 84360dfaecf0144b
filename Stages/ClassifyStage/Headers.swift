import CDPDK
import SwitchyardCluster
import SwitchyardCore

/// The bytes of one frame: `available` of them readable in the first segment, `length` in all.
///
/// Every read is preceded by a bounds check against `available`. A header that does not fit is
/// `truncated` when the packet really ends there, and `headers-not-contiguous` when it goes on in
/// another segment (we never gather headers across segments).
struct Frame {
    let bytes: UnsafeMutableRawPointer
    let available: Int
    let length: Int

    @inline(__always) func has(_ end: Int) -> Bool { end <= available }

    @inline(__always) func short(_ reason: Classify.Counter, needs end: Int) -> Outcome {
        end <= length ? .drop(.headersNotContiguous) : .drop(reason)
    }

    @inline(__always) func u8(_ offset: Int) -> UInt8 { bytes.load(fromByteOffset: offset, as: UInt8.self) }

    /// A big-endian 16-bit field, in host order.
    @inline(__always) func be16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    /// A 16-bit word as it lies in memory (for checksum arithmetic and compares).
    @inline(__always) func raw16(_ offset: Int) -> UInt16 { bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self) }
    @inline(__always) func raw32(_ offset: Int) -> UInt32 { bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
    @inline(__always) func raw64(_ offset: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }

    /// The address of `family` at `offset`, in `IPAddress` words.
    @inline(__always) func address(_ offset: Int, family: UInt8) -> (high: UInt64, low: UInt64) {
        family == 4 ? (UInt64(raw32(offset)), 0) : (raw64(offset), raw64(offset + 8))
    }

    /// Six MAC bytes at `offset` as a word (low 48 bits, memory order).
    @inline(__always) func mac(_ offset: Int) -> UInt64 {
        UInt64(raw32(offset)) | UInt64(raw16(offset + 4)) << 32
    }

    @inline(__always) func storeMAC(_ word: UInt64, at offset: Int) {
        bytes.storeBytes(of: UInt32(truncatingIfNeeded: word), toByteOffset: offset, as: UInt32.self)
        bytes.storeBytes(of: UInt16(truncatingIfNeeded: word >> 32), toByteOffset: offset + 4, as: UInt16.self)
    }

    @inline(__always) func storeBE16(_ value: UInt16, at offset: Int) {
        bytes.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
}

/// The IP layer of a parsed packet (lives on the stack).
struct IPLayer {
    var family: UInt8
    var l3: Int
    /// The transport header; 0 for a non-first fragment (no transport header in it).
    var l4: Int
    /// Just past the IP packet (Ethernet padding excluded).
    var end: Int
    var protocolNumber: UInt8
    var isFragment: Bool

    var sourceOffset: Int { family == 4 ? l3 + 12 : l3 + 8 }
    var destinationOffset: Int { family == 4 ? l3 + 16 : l3 + 24 }
    var addressSize: Int { family == 4 ? 4 : 16 }
    var isTCPOrUDP: Bool { protocolNumber == 6 || protocolNumber == 17 }
    var isICMP: Bool { family == 4 ? protocolNumber == 1 : protocolNumber == 58 }
}

/// Where an IPv6 extension-header chain ended.
struct Chain {
    /// The upper-layer header; 0 when a non-first fragment header ended the walk.
    var l4: Int
    var protocolNumber: UInt8
    var isFragment: Bool
    var headers: Int
    var failure: Classify.Counter?
}

/// A quoted packet inside an ICMP error: its IP and transport headers.
struct Quote {
    var l3: Int
    var l4: Int
    var protocolNumber: UInt8
    var failure: Classify.Counter?
}

enum ICMPType {
    @inline(__always) static func isEchoRequest(_ type: UInt8, family: UInt8) -> Bool {
        family == 4 ? type == 8 : type == 128
    }

    /// Destination unreachable, source quench, redirect, time exceeded, parameter problem (v4);
    /// destination unreachable, packet too big, time exceeded, parameter problem (v6).
    @inline(__always) static func isError(_ type: UInt8, family: UInt8) -> Bool {
        family == 4 ? (type == 3 || type == 4 || type == 5 || type == 11 || type == 12) : (type >= 1 && type <= 4)
    }
}

extension Classify {
    /// At most this many IPv6 extension headers are walked (RFC 8200 recommends few; a long chain
    /// is a way to hide the transport header from middleboxes).
    static let maximumExtensionHeaders = 8

    /// Parses an IPv4 header at `l3`: version, IHL, total length against the frame, header checksum.
    @inline(__always)
    func parseIPv4(_ frame: Frame, l3: Int, _ out: BurstOutput<Classify>) -> (IPLayer?, Outcome?) {
        guard frame.has(l3 + 1) else { return (nil, frame.short(.truncatedIPv4, needs: l3 + 20)) }
        let versionIHL = frame.u8(l3)
        guard versionIHL >> 4 == 4 else { return (nil, .drop(.ipBadVersion)) }
        let headerLength = Int(versionIHL & 0x0f) * 4
        guard headerLength >= 20 else { return (nil, .drop(.ipv4BadHeaderLength)) }
        guard frame.has(l3 + headerLength) else { return (nil, frame.short(.truncatedIPv4, needs: l3 + headerLength)) }
        let totalLength = Int(frame.be16(l3 + 2))
        guard totalLength >= headerLength, l3 + totalLength <= frame.length else {
            return (nil, .drop(.ipv4BadTotalLength))
        }
        // Verified in software: a one's-complement sum over 20 bytes is a few adds, and a corrupt
        // header must not be translated (an incremental update would make its checksum look right).
        guard Checksum.fold(Checksum.sum(frame.bytes + l3, count: headerLength)) == 0xffff else {
            return (nil, .drop(.ipv4BadChecksum))
        }
        if headerLength > 20 { out.count(.ipv4Options) }
        let fragmentField = frame.be16(l3 + 6)
        let offset = fragmentField & 0x1fff
        let isFragment = fragmentField & 0x2000 != 0 || offset != 0
        return (IPLayer(family: 4, l3: l3, l4: offset == 0 ? l3 + headerLength : 0, end: l3 + totalLength,
                        protocolNumber: frame.u8(l3 + 9), isFragment: isFragment), nil)
    }

    /// Parses an IPv6 header at `l3` and walks its extension headers.
    @inline(__always)
    func parseIPv6(_ frame: Frame, l3: Int, _ out: BurstOutput<Classify>) -> (IPLayer?, Outcome?) {
        guard frame.has(l3 + 40) else { return (nil, frame.short(.truncatedIPv6, needs: l3 + 40)) }
        guard frame.u8(l3) >> 4 == 6 else { return (nil, .drop(.ipBadVersion)) }
        let end = l3 + 40 + Int(frame.be16(l3 + 4))
        guard end <= frame.length else { return (nil, .drop(.ipv6BadPayloadLength)) }
        let chain = walkExtensionHeaders(frame, from: l3 + 40, end: end, next: frame.u8(l3 + 6),
                                         malformed: .ipv6ExtensionChain)
        if let failure = chain.failure { return (nil, .drop(failure)) }
        if chain.headers > 0 { out.count(.ipv6ExtensionHeaders) }
        return (IPLayer(family: 6, l3: l3, l4: chain.l4, end: end, protocolNumber: chain.protocolNumber,
                        isFragment: chain.isFragment), nil)
    }

    /// Walks hop-by-hop (0), routing (43), fragment (44), destination options (60) and AH (51)
    /// headers from `start` up to `end`; anything else (TCP, UDP, ICMPv6, ESP 50, no next 59, ...)
    /// ends the chain. A non-first fragment ends it too: what follows is not a header.
    @inline(__always)
    func walkExtensionHeaders(_ frame: Frame, from start: Int, end: Int, next first: UInt8,
                              malformed: Classify.Counter) -> Chain
    {
        var offset = start
        var next = first
        var headers = 0
        var isFragment = false
        while true {
            switch next {
            case 0, 43, 44, 51, 60:
                // Hop-by-hop options may only come first (RFC 8200 4.1).
                if next == 0 && headers > 0 || headers == Self.maximumExtensionHeaders || offset + 8 > end {
                    return Chain(l4: 0, protocolNumber: next, isFragment: isFragment, headers: headers, failure: malformed)
                }
                guard frame.has(offset + 8) else {
                    return Chain(l4: 0, protocolNumber: next, isFragment: isFragment, headers: headers,
                                 failure: offset + 8 <= frame.length ? .headersNotContiguous : malformed)
                }
                headers += 1
                let length: Int
                switch next {
                case 44: length = 8
                case 51: length = (Int(frame.u8(offset + 1)) + 2) * 4
                default: length = (Int(frame.u8(offset + 1)) + 1) * 8
                }
                guard offset + length <= end else {
                    return Chain(l4: 0, protocolNumber: next, isFragment: isFragment, headers: headers, failure: malformed)
                }
                if next == 44 {
                    let field = frame.be16(offset + 2)
                    let fragmentOffset = field >> 3
                    // Offset 0 without M is an "atomic fragment" (RFC 6946): a whole packet.
                    if fragmentOffset != 0 || field & 1 != 0 { isFragment = true }
                    if fragmentOffset != 0 {
                        return Chain(l4: 0, protocolNumber: frame.u8(offset), isFragment: true, headers: headers,
                                     failure: nil)
                    }
                }
                next = frame.u8(offset)
                offset += length
            default:
                return Chain(l4: offset, protocolNumber: next, isFragment: isFragment, headers: headers, failure: nil)
            }
        }
    }

    /// Checks the transport header of a packet that has one; sets `tcp_flags`.
    @inline(__always)
    func checkTransport(_ frame: Frame, _ ip: IPLayer, _ meta: UnsafeMutablePointer<sy_meta>) -> Outcome? {
        let l4 = ip.l4
        let size = ip.end - l4
        switch ip.protocolNumber {
        case 6:
            guard size >= 20 else { return .drop(.tcpBadHeader) }
            guard frame.has(l4 + 20) else { return frame.short(.tcpBadHeader, needs: l4 + 20) }
            let dataOffset = Int(frame.u8(l4 + 12) >> 4)
            guard dataOffset >= 5, dataOffset * 4 <= size else { return .drop(.tcpBadHeader) }
            meta.pointee.tcp_flags = frame.u8(l4 + 13)
        case 17:
            guard size >= 8 else { return .drop(.udpBadLength) }
            guard frame.has(l4 + 8) else { return frame.short(.udpBadLength, needs: l4 + 8) }
            let length = Int(frame.be16(l4 + 4))
            // A first fragment carries only part of the datagram its length field counts.
            guard length >= 8, ip.isFragment || length <= size else { return .drop(.udpBadLength) }
        case 1 where ip.family == 4, 58 where ip.family == 6:
            guard size >= 8 else { return .drop(.truncatedICMP) }
            guard frame.has(l4 + 8) else { return frame.short(.truncatedICMP, needs: l4 + 8) }
        default:
            break
        }
        return nil
    }

    /// The packet an ICMP error quotes (after the 8-byte ICMP header): a complete IP header of the
    /// same family and at least the 8 transport bytes that hold the ports.
    @inline(__always)
    func parseQuote(_ frame: Frame, _ ip: IPLayer) -> Quote {
        let inner = ip.l4 + 8
        let end = ip.end
        if ip.family == 4 {
            guard inner + 20 <= end else { return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .icmpErrorTruncated) }
            guard frame.has(inner + 20) else {
                return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .headersNotContiguous)
            }
            let versionIHL = frame.u8(inner)
            let headerLength = Int(versionIHL & 0x0f) * 4
            guard versionIHL >> 4 == 4, headerLength >= 20, inner + headerLength + 8 <= end else {
                return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .icmpErrorTruncated)
            }
            guard frame.has(inner + headerLength + 8) else {
                return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .headersNotContiguous)
            }
            // A quoted non-first fragment has no ports: no flow can be named from it.
            guard frame.be16(inner + 6) & 0x1fff == 0 else {
                return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .icmpErrorUnmatched)
            }
            return Quote(l3: inner, l4: inner + headerLength, protocolNumber: frame.u8(inner + 9), failure: nil)
        }
        guard inner + 40 <= end else { return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .icmpErrorTruncated) }
        guard frame.has(inner + 40) else { return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .headersNotContiguous) }
        guard frame.u8(inner) >> 4 == 6 else { return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .icmpErrorTruncated) }
        let chain = walkExtensionHeaders(frame, from: inner + 40, end: end, next: frame.u8(inner + 6),
                                         malformed: .icmpErrorTruncated)
        if let failure = chain.failure { return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: failure) }
        guard chain.l4 != 0 else { return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .icmpErrorUnmatched) }
        guard chain.l4 + 8 <= end else { return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .icmpErrorTruncated) }
        guard frame.has(chain.l4 + 8) else {
            return Quote(l3: 0, l4: 0, protocolNumber: 0, failure: .headersNotContiguous)
        }
        return Quote(l3: inner, l4: chain.l4, protocolNumber: chain.protocolNumber, failure: nil)
    }
}
