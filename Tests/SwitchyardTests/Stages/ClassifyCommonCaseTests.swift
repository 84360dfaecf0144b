import CDPDK
import ClassifyStage
import SwitchyardCluster
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// classify's common case (CommonCase.swift) against the full parser: the stage (which tries the
/// common case first) and `classify(single:)` (the full parser only) must give every packet the
/// same disposition, bytes and metadata, for the packets the common case takes and for the near
/// misses it must leave to the full parser.
@Suite("classify common case")
struct ClassifyCommonCaseTests {
    static func tcp4(port: UInt16 = 80, payload: [UInt8] = [1, 2, 3], ip: Frames.IPv4Fields = .init(),
                     link: Frames.Link = Net.fromRouter) -> [UInt8]
    {
        Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: port,
                       flags: [.ack], payload: payload, ip: ip, link: link)
    }

    static func udp4(port: UInt16 = 53, ip: Frames.IPv4Fields = .init()) -> [UInt8] {
        Frames.ipv4UDP(source: Net.client, destination: Net.vip, sourcePort: 40001, destinationPort: port,
                       payload: [9, 9, 9, 9], ip: ip, link: Net.fromRouter)
    }

    static func tcp6(port: UInt16 = 443, ip: Frames.IPv6Fields = .init()) -> [UInt8] {
        Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 40002, destinationPort: port,
                       flags: [.ack], payload: [5], ip: ip, link: Net.fromRouter)
    }

    /// (what, frame, expected disposition, expected drop reason)
    static var cases: [(String, [UInt8], Classify.Disposition, Classify.Counter?)] {
        let base = tcp4()
        var badChecksum = base
        badChecksum[24] ^= 0xff
        var badVersion = base
        badVersion[14] = 0x65
        var shortTotal = base
        shortTotal[16] = 0; shortTotal[17] = 19 // total length 19 (checksum no longer matters: checked first)
        var longTotal = base
        longTotal[17] &+= 40 // past the frame
        var dataOffset4 = base
        dataOffset4[34 + 12] = 0x40
        var udpTooLong = udp4()
        udpTooLong[34 + 5] &+= 20
        var udpTooShort = udp4()
        udpTooShort[34 + 4] = 0; udpTooShort[34 + 5] = 7
        var multicast = base
        multicast[0] = 0x01
        return [
            ("IPv4 TCP to web", base, .vip, nil),
            ("IPv4 UDP to dns", udp4(), .vip, nil),
            ("IPv6 TCP to web6", tcp6(), .vip, nil),
            ("IPv4 TCP, DF set", tcp4(ip: .init(dontFragment: true)), .vip, nil),
            ("IPv4 TCP, Ethernet padding", Frames.padded(tcp4(payload: []), to: 80), .vip, nil),
            ("IPv4 TCP with options", tcp4(ip: .init(options: [1, 1, 1, 1])), .vip, nil),
            ("IPv4 TCP in a VLAN", tcp4(link: Frames.Link(source: Net.routerMAC, destination: Net.wireMAC, vlan: 7)), .vip, nil),
            ("IPv6 TCP behind a destination-options header",
             tcp6(ip: .init(extensionHeaders: [.destinationOptions()])), .vip, nil),
            ("IPv4 header checksum wrong", badChecksum, .drop, .ipv4BadChecksum),
            ("IPv4 version 6 in an IPv4 frame", badVersion, .drop, .ipBadVersion),
            ("IPv4 total length 19", shortTotal, .drop, .ipv4BadTotalLength),
            ("IPv4 total length past the frame", longTotal, .drop, .ipv4BadTotalLength),
            ("IPv4 UDP first fragment (MF)", udp4(ip: .init(moreFragments: true)), .drop, .fragment),
            ("IPv4 UDP later fragment", udp4(ip: .init(fragmentOffset: 3)), .drop, .fragment),
            ("TCP data offset 4", dataOffset4, .drop, .tcpBadHeader),
            ("UDP length past the IP payload", udpTooLong, .drop, .udpBadLength),
            ("UDP length 7", udpTooShort, .drop, .udpBadLength),
            ("TCP to a port without a service", tcp4(port: 81), .drop, .noService),
            ("IPv6 TCP to a port without a service", tcp6(port: 80), .drop, .noService),
            ("IPv4 TCP in a multicast frame", multicast, .drop, .linkBroadcastToUnicastIP),
            ("IPv4 TCP cut to 30 bytes", Frames.truncated(base, to: 30), .drop, .truncatedIPv4),
        ]
    }

    @Test("the stage and the full parser agree on disposition, drop reason, bytes and metadata")
    func agreesWithFullParser() throws {
        let bench = try ClassifyBench()
        let cases = Self.cases
        let records = bench.push(cases.map(\.1))
        for ((what, _, disposition, reason), record) in zip(cases, records) {
            #expect(record.disposition == disposition, "\(what): full parser gave \(record.disposition)")
            #expect(record.reason == reason, "\(what): full parser's reason \(String(describing: record.reason))")
        }
        // The stage's vip packets, in order, carry exactly the full parser's metadata.
        let stageMetas = bench.harness.outputMeta(.vip)
        let parserMetas = records.filter { $0.disposition == .vip }.map(\.meta)
        #expect(stageMetas.count == parserMetas.count)
        for (index, (stage, parser)) in zip(stageMetas, parserMetas).enumerated() {
            var a = stage, b = parser
            let same = withUnsafeBytes(of: &a) { x in withUnsafeBytes(of: &b) { y in x.elementsEqual(y) } }
            #expect(same, "vip packet \(index): the stage's metadata differs from the full parser's")
        }
        // Counters the full parser adds on the way (the common case adds none).
        #expect(bench.counter(.ipv4Options) == 1)
        #expect(bench.counter(.ipv6ExtensionHeaders) == 1)
        #expect(bench.counter(.ipv4BadChecksum) == 1)
        #expect(bench.counter(.fragment) == 2)
        try bench.finish()
    }

    @Test("ServiceIndex finds exactly what the services' TupleTable finds")
    func serviceIndexMatchesTupleTable() throws {
        let bench = try ClassifyBench()
        let view = bench.cluster.directory.view
        let probes: [(IPAddress, UInt8, UInt16)] = [
            (IPAddress("198.19.0.1")!, 6, 80), (IPAddress("198.19.0.1")!, 17, 53), (IPAddress("fd00:19::1")!, 6, 443),
            (IPAddress("198.19.0.1")!, 6, 53), (IPAddress("198.19.0.1")!, 17, 80), (IPAddress("198.19.0.2")!, 6, 80),
            (IPAddress("fd00:19::1")!, 17, 443), (IPAddress("fd00:19::2")!, 6, 443), (IPAddress("0.0.0.0")!, 0, 0),
        ]
        for (address, protocolNumber, port) in probes {
            let tag = TupleTable.tag(family: address.family, protocol: protocolNumber, port: port)
            #expect(view.serviceIndex.find(high: address.high, low: address.low, tag: tag)
                        == view.servicesByTuple.find(high: address.high, low: address.low, tag: tag),
                    "\(address) \(protocolNumber) \(port)")
        }
        // Many services: still one slot each, and every one found.
        var entries: [(address: IPAddress, protocol: UInt8, port: UInt16, value: UInt32)] = []
        for index in 0..<500 {
            entries.append((IPAddress("198.19.\(index / 200).\(index % 200 + 1)")!, index % 2 == 0 ? 6 : 17,
                            UInt16(80 + index % 7), UInt32(index)))
        }
        let index = ServiceIndex(entries)
        defer { index.deallocate() }
        #expect(index.size <= 4096)
        for entry in entries {
            let tag = TupleTable.tag(family: entry.address.family, protocol: entry.protocol, port: entry.port)
            let first = entries.first { $0.address == entry.address && $0.protocol == entry.protocol && $0.port == entry.port }!
            #expect(index.find(high: entry.address.high, low: entry.address.low, tag: tag) == first.value)
        }
    }
}
