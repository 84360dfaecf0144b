import CDPDK
import SwitchyardCluster
import SwitchyardHeaders
import Testing

/// `HeaderRewrite.packet` (one fold per checksum for all its changes) against the address and port
/// rewrites done one after the other (`HeaderRewrite.address`, then `HeaderRewrite.port`, one
/// adjustment per changed word, as the ICMP-error paths use them): the same bytes for random IPv4
/// and IPv6 TCP/UDP headers, both directions, random checksums and tuples, including a UDP checksum
/// of 0 (none computed) and the edge words 0x0000 and 0xffff.
@Suite("header rewrite")
struct HeaderRewriteTests {
    @Test func oneFoldPerChecksumWritesWhatOneAdjustmentPerWordWrites() {
        var generator = SystemRandomNumberGenerator()
        let edges: [UInt64] = [0, UInt64.max, 0xffff, 0xffff_0000_ffff_0000]
        for round in 0..<20_000 {
            let family: UInt8 = round % 2 == 0 ? 4 : 6
            let protocolNumber = round % 4 < 2 ? IPProtocol.tcp : IPProtocol.udp
            let l3 = 14, l4 = l3 + (family == 4 ? IPv4Header.size : IPv6Header.size)
            let length = l4 + (protocolNumber == IPProtocol.tcp ? TCPHeader.size : UDPHeader.size)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let word = { (n: Int) -> UInt64 in round % 7 == 0 ? edges[n % edges.count] : UInt64.random(in: 0...UInt64.max, using: &generator) }
            if round % 5 == 0 { // a checksum of 0 (UDP: none computed) or 0xffff
                let checkOffset = l4 + (protocolNumber == IPProtocol.tcp ? TCPHeader.checksumOffset : UDPHeader.checksumOffset)
                bytes[checkOffset] = round % 10 == 0 ? 0 : 0xff
                bytes[checkOffset + 1] = round % 10 == 0 ? 0 : 0xff
            }
            let high = family == 4 ? word(1) & 0xffff_ffff : word(1), low = family == 4 ? 0 : word(2)
            let port = UInt16(truncatingIfNeeded: word(3))
            var meta = sy_meta()
            meta.l3 = UInt16(l3)
            meta.l4 = UInt16(l4)
            meta.l3_end = UInt16(length)
            meta.family = family
            meta.protocol = protocolNumber
            let source = round % 3 == 0
            let address = IPAddress(family: family, high: high, low: low)
            var stepwise = bytes, folded = bytes
            withUnsafeMutablePointer(to: &meta) { meta in
                let layout = RewriteLayout(meta: meta, contiguousLength: length)
                #expect(layout.fitsPacketWithPorts)
                stepwise.withUnsafeMutableBytes {
                    let frame = $0.baseAddress!
                    let edit = HeaderRewrite.address(ip: frame + l3, offset: source ? layout.sourceOffset : layout.destinationOffset,
                                                     to: address)
                    _ = HeaderRewrite.port(transport: frame + l4, offset: source ? 0 : 2, to: port, layout: layout,
                                           checksumPresent: true, oldAddress: edit.old, newAddress: address)
                }
                folded.withUnsafeMutableBytes {
                    HeaderRewrite.packet($0.baseAddress!, layout, source: source, address: address, port: port)
                }
            }
            let fast = folded, general = stepwise
            #expect(fast == general, "round \(round): IPv\(family) protocol \(protocolNumber) source \(source)")
            if fast != general { return }
        }
    }
}
