import CDPDK
import ClassifyStage
import SwitchyardCluster
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// Truncated, malformed and unusual frames: each is dropped with its own reason, or classified
/// with the right offsets. Nothing reads past the bytes it was given.
@Suite("classify stage: malformed and edge-case input")
struct ClassifyMalformedTests {
    private let tcpToVIP = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80)
    private let udpToVIP = Frames.ipv4UDP(source: Net.client, destination: Net.vip, sourcePort: 5000, destinationPort: 53,
                                          payload: [1, 2, 3, 4])
    private let tcp6ToVIP = Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 41000, destinationPort: 443)

    /// Pushes `frames`, expects each to be dropped for `reason`, and checks conservation.
    private func expectDrops(_ frames: [[UInt8]], _ reason: Classify.Counter, parameters: String = "{}",
                             sourceLocation: SourceLocation = #_sourceLocation) throws
    {
        let bench = try ClassifyBench(parameters: parameters)
        let records = bench.push(frames)
        #expect(records.map(\.reason) == Array(repeating: reason, count: frames.count), sourceLocation: sourceLocation)
        #expect(bench.counter(reason) == UInt64(frames.count), sourceLocation: sourceLocation)
        #expect(bench.output(.drop) == frames, sourceLocation: sourceLocation) // dropped untouched
        try bench.finish()
    }

    // MARK: - Ethernet and VLAN

    @Test("frames shorter than an Ethernet header: truncated-ethernet")
    func truncatedEthernet() throws {
        try expectDrops([[], [UInt8](repeating: 0xaa, count: 13), Frames.truncated(tcpToVIP, to: 12)], .truncatedEthernet)
    }

    @Test("an 802.1Q tag cut short: truncated-vlan")
    func truncatedVLAN() throws {
        let tagged = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 1, destinationPort: 80,
                                    link: .init(vlan: 42))
        try expectDrops([Frames.truncated(tagged, to: 14), Frames.truncated(tagged, to: 17)], .truncatedVLAN)
    }

    @Test("stacked tags (QinQ) and other EtherTypes are other, counted as information")
    func stackedAndNonIP() throws {
        let bench = try ClassifyBench()
        let ip = Frames.withoutEthernet(tcpToVIP)
        let qinq = Net.wireMAC + Net.routerMAC + [0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00] + ip
        let doubleTagged = Net.wireMAC + Net.routerMAC + [0x81, 0x00, 0, 10, 0x81, 0x00, 0, 20, 0x08, 0x00] + ip
        let lldp = Frames.ethernet(etherType: 0x88cc, payload: [UInt8](repeating: 0, count: 46))
        let records = bench.push([qinq, doubleTagged, lldp])
        #expect(records.map(\.disposition) == [.other, .other, .other])
        #expect(records[1].flags == Int(SY_META_VLAN))
        #expect(bench.counter(.vlanStacked) == 2 && bench.counter(.nonIP) == 1)
        try bench.finish()
    }

    // MARK: - ARP

    @Test("ARP cut short or not Ethernet/IPv4: malformed-arp; other opcodes are other")
    func malformedARP() throws {
        let request = Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip)
        try expectDrops([
            Frames.truncated(request, to: 14 + 27),
            Frames.truncated(request, to: 14),
            request.with(14, [0, 6]), // htype: IEEE 802
            request.with(16, [0x86, 0xdd]), // ptype: IPv6
            request.with(18, [8]), // hlen
            request.with(19, [16]), // plen
        ], .malformedARP)
        let bench = try ClassifyBench()
        let inverse = request.with(20, [0, 8]) // InARP request
        #expect(bench.push(inverse).disposition == .other)
        #expect(bench.output(.other) == [inverse])
        #expect(bench.neighbors.isEmpty)
        try bench.finish()
    }

    // MARK: - IPv4

    @Test("IPv4 header cut short: truncated-ipv4")
    func truncatedIPv4() throws {
        let withOptions = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 1, destinationPort: 80,
                                         ip: .init(options: [1, 1, 1, 1, 1, 1, 1, 0]))
        try expectDrops([Frames.truncated(tcpToVIP, to: 14), Frames.truncated(tcpToVIP, to: 33),
                         Frames.truncated(withOptions, to: 40)], .truncatedIPv4)
    }

    @Test("IPv4 IHL below 5: ipv4-bad-header-length")
    func ipv4HeaderLength() throws {
        try expectDrops([tcpToVIP.with(14, [0x44]).fixingIPv4Checksum(), tcpToVIP.with(14, [0x40])], .ipv4BadHeaderLength)
    }

    @Test("IPv4 total length past the frame or below the header: ipv4-bad-total-length")
    func ipv4TotalLength() throws {
        try expectDrops([
            tcpToVIP.with(16, [0, 41]).fixingIPv4Checksum(), // 40 bytes are there
            tcpToVIP.with(16, [0, 19]).fixingIPv4Checksum(),
            Frames.truncated(tcpToVIP, to: 50), // the frame ends inside the TCP header
        ], .ipv4BadTotalLength)
    }

    @Test("IPv4 header checksum wrong: ipv4-bad-checksum")
    func ipv4Checksum() throws {
        try expectDrops([tcpToVIP.with(24, [tcpToVIP[24] ^ 0x01]), tcpToVIP.with(22, [63])], .ipv4BadChecksum)
    }

    @Test("IP version not matching the EtherType: ip-bad-version")
    func ipVersion() throws {
        let v6InV4 = Frames.ethernet(etherType: 0x0800, payload: Frames.withoutEthernet(tcp6ToVIP))
        let v4InV6 = Frames.ethernet(etherType: 0x86dd, payload: Frames.withoutEthernet(tcpToVIP) + [UInt8](repeating: 0, count: 20))
        try expectDrops([v6InV4, v4InV6], .ipBadVersion)
    }

    @Test("IPv4 options: classified normally with l4 after them, counted as information")
    func ipv4Options() throws {
        let bench = try ClassifyBench()
        let recordRoute: [UInt8] = [7, 7, 4, 0, 0, 0, 0]
        let frame = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                   ip: .init(options: recordRoute))
        let records = bench.push([frame, tcpToVIP])
        #expect(records.map(\.disposition) == [.vip, .vip])
        #expect(records[0].meta.l4 == 14 + 28 && records[0].meta.l3_end == 14 + 28 + 20)
        #expect(records[0].meta.flow_hash == records[1].meta.flow_hash)
        #expect(bench.counter(.ipv4Options) == 1)
        try bench.finish()
    }

    @Test("Ethernet padding is not part of the IP packet: l3_end stops before it")
    func padding() throws {
        let bench = try ClassifyBench()
        let record = bench.push(Frames.padded(udpToVIP, to: 80))
        #expect(record.disposition == .vip)
        #expect(record.meta.l3_end == 14 + 20 + 8 + 4)
        try bench.finish()
    }

    // MARK: - IPv6

    @Test("IPv6 header cut short: truncated-ipv6")
    func truncatedIPv6() throws {
        try expectDrops([Frames.truncated(tcp6ToVIP, to: 14), Frames.truncated(tcp6ToVIP, to: 53)], .truncatedIPv6)
    }

    @Test("IPv6 payload length past the frame: ipv6-bad-payload-length")
    func ipv6PayloadLength() throws {
        try expectDrops([tcp6ToVIP.with(18, [0, 21]), Frames.truncated(tcp6ToVIP, to: 60)], .ipv6BadPayloadLength)
    }

    @Test("hop-by-hop, routing and destination options before TCP: vip with l4 after the chain")
    func ipv6ExtensionHeaders() throws {
        let bench = try ClassifyBench()
        let chain: [Frames.IPv6ExtensionHeader] = [.hopByHop(), .routing(addresses: [Net.ip("fd00:18:7::1")]),
                                                   .destinationOptions(options: [1, 2, 0, 0])]
        let frame = Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 41000, destinationPort: 443,
                                   flags: [.syn], ip: .init(extensionHeaders: chain))
        let records = bench.push([frame, tcp6ToVIP])
        #expect(records.map(\.disposition) == [.vip, .vip])
        #expect(records[0].meta.l4 == 14 + 40 + 8 + 24 + 8 && records[0].meta.protocol == 6)
        #expect(records[0].meta.l3_end == UInt16(frame.count) && records[0].meta.tcp_flags == 0x02)
        #expect(records[0].meta.flow_hash == records[1].meta.flow_hash)
        #expect(bench.counter(.ipv6ExtensionHeaders) == 1)
        try Tshark.assertWellFormed(frames: [frame])
        try bench.finish()
    }

    @Test("more than 8 extension headers, hop-by-hop not first, or a header past the packet: ipv6-extension-chain")
    func ipv6ExtensionChain() throws {
        let bench = try ClassifyBench()
        func tcp(_ chain: [Frames.IPv6ExtensionHeader]) -> [UInt8] {
            Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 41000, destinationPort: 443,
                           ip: .init(extensionHeaders: chain))
        }
        let eight = tcp(Array(repeating: .destinationOptions(), count: 8))
        #expect(bench.push(eight).disposition == .vip)
        // The first destination options header claims 8 * 256 bytes.
        let overlong = tcp([.destinationOptions()]).with(14 + 40 + 1, [255])
        bench.push([tcp(Array(repeating: .destinationOptions(), count: 9)), tcp([.destinationOptions(), .hopByHop()]),
                    overlong])
        #expect(bench.counter(.ipv6ExtensionChain) == 3)
        try bench.finish()
    }

    // MARK: - Transport

    @Test("TCP shorter than 20 bytes, data offset below 5 or past the segment: tcp-bad-header")
    func tcpHeader() throws {
        let short = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.vip, protocol: 6,
                                                     payload: Array(Frames.withoutEthernet(tcpToVIP)[20..<32])))
        let short6 = Frames.ipFrame(Frames.ipv6Packet(source: Net.client6, destination: Net.vip6, nextHeader: 6,
                                                      payload: Array(Frames.withoutEthernet(tcp6ToVIP)[40..<59])))
        try expectDrops([short, short6, tcpToVIP.with(14 + 20 + 12, [0x40]), tcpToVIP.with(14 + 20 + 12, [0x60]),
                         tcp6ToVIP.with(14 + 40 + 12, [0x00])], .tcpBadHeader)
    }

    @Test("UDP shorter than 8 bytes, length below 8 or past the IP payload: udp-bad-length")
    func udpLength() throws {
        let short = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.vip, protocol: 17,
                                                     payload: [0x13, 0x88, 0, 53]))
        try expectDrops([short, udpToVIP.with(14 + 20 + 4, [0, 7]), udpToVIP.with(14 + 20 + 4, [0, 13])], .udpBadLength)
    }

    @Test("ICMP and ICMPv6 shorter than 8 bytes: truncated-icmp")
    func truncatedICMP() throws {
        let icmp = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.vip, protocol: 1, payload: [8, 0, 0xf7, 0xff]))
        let icmp6 = Frames.ipFrame(Frames.ipv6Packet(source: Net.client6, destination: Net.vip6, nextHeader: 58,
                                                     payload: [128, 0, 0, 0, 0, 1]))
        let toHost = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.host, protocol: 1, payload: [8, 0]))
        try expectDrops([icmp, icmp6, toHost], .truncatedICMP)
    }

    @Test("ICMP errors to a VIP whose quote lacks a whole IP header or the 8 port bytes: icmp-error-truncated")
    func icmpErrorTruncated() throws {
        let synAck = Frames.ipv4Packet(source: Net.vip, destination: Net.client, protocol: 6,
                                       payload: Frames.tcpSegment(source: Net.vip, destination: Net.client, sourcePort: 80,
                                                                  destinationPort: 40000, flags: [.syn, .ack]))
        let reply6 = Frames.ipv6Packet(source: Net.vip6, destination: Net.client6, nextHeader: 6,
                                       payload: Frames.tcpSegment(source: Net.vip6, destination: Net.client6,
                                                                  sourcePort: 443, destinationPort: 41000))
        try expectDrops([
            Frames.icmpv4DestinationUnreachable(source: Net.router, destination: Net.vip, code: 1, original: synAck,
                                                originalLength: 24), // 4 bytes of TCP
            Frames.icmpv4DestinationUnreachable(source: Net.router, destination: Net.vip, code: 1, original: synAck,
                                                originalLength: 12), // inside the IP header
            Frames.icmpv4TimeExceeded(source: Net.router, destination: Net.vip, original: synAck.with(0, [0x43])),
            Frames.icmpv6PacketTooBig(source: Net.router6, destination: Net.vip6, mtu: 1280, original: reply6,
                                      originalLength: 46),
        ], .icmpErrorTruncated)
    }

    // MARK: - Fragments

    @Test("IPv4 fragments to a VIP, first and later: fragment (no reassembly); later ones have no l4")
    func ipv4Fragments() throws {
        let bench = try ClassifyBench()
        let first = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                   ip: .init(identification: 5, moreFragments: true))
        let later = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.vip, protocol: 6,
                                                     payload: [UInt8](repeating: 1, count: 16),
                                                     fields: .init(identification: 5, fragmentOffset: 185)))
        let elsewhere = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.stranger, protocol: 17,
                                                         payload: [UInt8](repeating: 1, count: 16),
                                                         fields: .init(identification: 6, fragmentOffset: 3)))
        let records = bench.push([first, later, elsewhere])
        #expect(records.map(\.reason) == [.fragment, .fragment, nil])
        #expect(records.map(\.flags) == [Int(SY_META_FRAGMENT), Int(SY_META_FRAGMENT), Int(SY_META_FRAGMENT)])
        #expect(records[0].meta.l4 == 34 && records[1].meta.l4 == 0 && records[1].meta.protocol == 6)
        #expect(records[2].disposition == .other && records[2].meta.l4 == 0)
        #expect(bench.counter(.fragment) == 2)
        try bench.finish()
    }

    @Test("IPv6 fragments to a VIP, first and later: fragment; an atomic fragment is a whole packet")
    func ipv6Fragments() throws {
        let bench = try ClassifyBench()
        func tcp(_ header: Frames.IPv6ExtensionHeader) -> [UInt8] {
            Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 41000, destinationPort: 443,
                           ip: .init(extensionHeaders: [header]))
        }
        let later = Frames.ipFrame(Frames.ipv6Packet(source: Net.client6, destination: Net.vip6, nextHeader: 6,
                                                     payload: [UInt8](repeating: 2, count: 24),
                                                     fields: .init(extensionHeaders: [.fragment(offset: 100, identification: 9)])))
        let records = bench.push([tcp(.fragment(offset: 0, moreFragments: true, identification: 9)), later,
                                  tcp(.fragment(offset: 0, moreFragments: false))])
        #expect(records.map(\.reason) == [.fragment, .fragment, nil])
        #expect(records[0].meta.l4 == 14 + 48 && records[1].meta.l4 == 0 && records[1].meta.protocol == 6)
        #expect(records[2].disposition == .vip && records[2].flags == 0 && records[2].meta.l4 == 14 + 48)
        #expect(bench.counter(.fragment) == 2)
        try bench.finish()
    }

    @Test("fragments: vip hands TCP/UDP fragments to a VIP on as vip (later ones without service); others still drop")
    func fragmentsToVIP() throws {
        let bench = try ClassifyBench(parameters: "fragments: vip")
        let first = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                   ip: .init(identification: 5, moreFragments: true))
        let later = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.vip, protocol: 6,
                                                     payload: [UInt8](repeating: 1, count: 16),
                                                     fields: .init(identification: 5, fragmentOffset: 185)))
        let later6 = Frames.ipFrame(Frames.ipv6Packet(source: Net.client6, destination: Net.vip6, nextHeader: 6,
                                                      payload: [UInt8](repeating: 2, count: 24),
                                                      fields: .init(extensionHeaders: [.fragment(offset: 100, identification: 9)])))
        let icmp = Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.vip, protocol: 1,
                                                    payload: [UInt8](repeating: 1, count: 16),
                                                    fields: .init(identification: 7, fragmentOffset: 3)))
        let closedPort = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 81,
                                        ip: .init(identification: 6, moreFragments: true))
        let records = bench.push([first, later, later6, icmp, closedPort])
        #expect(records.map(\.disposition) == [.vip, .vip, .vip, .drop, .drop])
        #expect(records.map(\.reason) == [nil, nil, nil, .fragment, .noService])
        #expect(records[0].meta.service != 0 && records[0].meta.flow_hash != 0 && records[0].flags == Int(SY_META_FRAGMENT))
        #expect(records[1].meta.service == 0 && records[1].meta.l4 == 0 && records[1].flags == Int(SY_META_FRAGMENT))
        #expect(records[2].meta.service == 0 && records[2].meta.l4 == 0 && records[2].meta.protocol == 6)
        #expect(bench.counter(.fragmentToVIP) == 4)
        #expect(bench.counter(.fragment) == 1)
        try bench.finish()
    }

    @Test("a first fragment from a backend tuple is dropped: its later fragments could not be translated")
    func replyFragment() throws {
        let bench = try ClassifyBench(parameters: "side: backends", inputPort: 1)
        let first = Frames.ipv4UDP(source: Net.backend1, destination: Net.client, sourcePort: 5353, destinationPort: 5000,
                                   payload: [UInt8](repeating: 3, count: 32), ip: .init(moreFragments: true))
        #expect(bench.push(first).reason == .fragment)
        try bench.finish()
    }

    // MARK: - Segments

    @Test("headers continuing in a second segment: headers-not-contiguous; headers in the first are fine")
    func multiSegment() throws {
        let extra = TestEAL.makePool(size: 63)
        defer { rte_mempool_free(extra) }
        /// Moves every byte after `split` into a second, chained mbuf.
        func splitting(at split: Int) -> (Packet) -> Void {
            { packet in
                let total = packet.length
                guard let tail = sy_pktmbuf_alloc(extra), let data = sy_pktmbuf_append(tail, UInt16(total - split)) else {
                    fatalError("no mbuf for the second segment")
                }
                UnsafeMutableRawPointer(data).copyMemory(from: packet.bytes + split, byteCount: total - split)
                _ = sy_pktmbuf_trim(packet.mbuf, UInt16(total - split))
                guard rte_pktmbuf_chain(packet.mbuf, tail) == 0 else { fatalError("cannot chain") }
            }
        }
        let payload = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                     payload: [UInt8](repeating: 7, count: 100))
        for (split, reason) in [(20, Classify.Counter.headersNotContiguous), (40, .headersNotContiguous), (60, nil)] {
            let harness = try StageHarness<Classify>(ports: Net.ports, cluster: Net.cluster, prepare: splitting(at: split))
            harness.push([payload])
            if let reason {
                #expect(harness.counter(reason) == 1, "split at \(split)")
                #expect(harness.output(.drop) == [payload])
            } else {
                #expect(harness.output(.vip) == [payload], "split at \(split)")
            }
            try harness.finish()
        }
        #expect(sy_mempool_avail(extra) == sy_mempool_size(extra))
    }
}
