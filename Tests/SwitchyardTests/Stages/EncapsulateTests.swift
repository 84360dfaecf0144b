import CDPDK
import EncapsulateStage
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// encapsulate: byte-exact outer headers against `Frames.vxlan` / `Frames.gue`, every emitted frame
/// decoded by tshark, the UDP source port following the flow, MTU behaviour and every drop reason.
@Suite("encapsulate stage")
struct EncapsulateTests {
    typealias F = TunnelFixtures
    static let payload = Array("switchyard tunnel payload".utf8)

    static func tcp4(sourcePort: UInt16 = 40000, payload: [UInt8] = payload, dontFragment: Bool = false,
                     vlan: UInt16? = nil) -> [UInt8]
    {
        Frames.ipv4TCP(source: F.client, destination: F.vip, sourcePort: sourcePort, destinationPort: 80,
                       flags: [.ack, .psh], payload: payload, ip: .init(dontFragment: dontFragment),
                       link: .init(source: F.routerMAC, destination: F.ourMAC, vlan: vlan))
    }

    static func tcp6(sourcePort: UInt16 = 40000, payload: [UInt8] = payload, vlan: UInt16? = nil) -> [UInt8] {
        Frames.ipv6TCP(source: F.client6, destination: F.vip6, sourcePort: sourcePort, destinationPort: 443,
                       flags: [.ack], payload: payload,
                       link: .init(source: F.routerMAC, destination: F.ourMAC, vlan: vlan))
    }

    static func udp6(payload: [UInt8] = payload) -> [UInt8] {
        Frames.ipv6UDP(source: F.client6, destination: F.vip6, sourcePort: 5000, destinationPort: 7000,
                       payload: payload, link: F.clientLink)
    }

    static func harness(_ parameters: String = "{}", kind: String = "vxlan",
                        script: MetaScript) throws -> StageHarness<Encapsulate>
    {
        try StageHarness<Encapsulate>(parameters: parameters, cluster: F.cluster(kind: kind),
                                      prepare: { script.apply($0) })
    }

    // MARK: - VXLAN and GUE, byte for byte

    @Test("VXLAN: one template per peer, byte-exact, inner destination MAC from the peer's `mac`")
    func vxlanPerPeer() throws {
        let script = MetaScript()
        let harness = try Self.harness(script: script)
        let frame = Self.tcp4()
        script.add(peer: 2, flowHash: 0x1234_5678)
        script.add(peer: 3, flowHash: 0xdead_beef)
        script.add(peer: 7, flowHash: 0)
        harness.push([frame, frame, frame])

        let expected = [
            F.expectedVXLAN(to: F.host2, flowHash: 0x1234_5678, inner: F.withDestination(frame, F.host2MAC)),
            F.expectedVXLAN(to: F.host3, flowHash: 0xdead_beef, inner: frame),
            F.expectedVXLAN(to: F.host7, flowHash: 0, inner: frame),
        ]
        let output = harness.output(.out)
        #expect(output == expected)
        #expect(output.map { Int($0[34]) << 8 | Int($0[35]) } == [0xd678, 0xfeef, 0xc000])
        #expect(harness.counter(.encapsulated) == 3)
        #expect(harness.counter(.bytesAdded) == 150)
        try harness.finish()

        let decoded = try Tshark.assertWellFormed(frames: output)
        for (index, peer) in ["198.18.0.2", "198.18.0.3", "198.18.0.7"].enumerated() {
            let frame = decoded[index]
            #expect(frame.protocols == "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp")
            #expect(frame.values("ip.src") == ["198.18.0.1", "198.51.100.10"])
            #expect(frame.values("ip.dst") == [peer, "203.0.113.80"])
            #expect(frame.field("udp.dstport") == "4789")
            #expect(frame.field("vxlan.vni") == "42")
            #expect(frame.field("tcp.dstport") == "80")
            #expect(frame.values("udp.checksum.status") == ["3"]) // zero: not present
            #expect(frame.values("tcp.checksum.status") == ["1"])
        }
        #expect(decoded[0].values("eth.dst") == ["00:00:00:00:00:00", "02:00:00:00:02:02"])
        #expect(decoded[1].values("eth.dst") == ["00:00:00:00:00:00", "02:bb:00:00:00:01"])
    }

    @Test("VXLAN: IPv6 inner and an 802.1Q-tagged inner frame, outer UDP checksum computed")
    func vxlanIPv6VLANChecksum() throws {
        let script = MetaScript()
        let harness = try Self.harness("udp_checksum: true", script: script)
        let ipv6 = Self.udp6()
        let tagged = Self.tcp4(vlan: 100)
        script.add(peer: 3, flowHash: 0x0000_0001)
        script.add(peer: 7, flowHash: 0xffff_ffff)
        harness.push([ipv6, tagged])
        #expect(harness.output(.out) == [
            F.expectedVXLAN(to: F.host3, flowHash: 1, inner: ipv6, udpChecksum: .computed),
            F.expectedVXLAN(to: F.host7, flowHash: 0xffff_ffff, inner: tagged, udpChecksum: .computed),
        ])
        try harness.finish()

        let decoded = try Tshark.assertWellFormed(frames: harness.output(.out))
        #expect(decoded[0].protocols == "eth:ethertype:ip:udp:vxlan:eth:ethertype:ipv6:udp:data")
        #expect(decoded[0].values("udp.checksum.status") == ["1", "1"])
        #expect(decoded[0].field("ipv6.dst") == "2001:db8::80")
        #expect(decoded[0].values("udp.dstport") == ["4789", "7000"])
        #expect(decoded[1].protocols == "eth:ethertype:ip:udp:vxlan:eth:ethertype:vlan:ethertype:ip:tcp")
        #expect(decoded[1].field("vlan.id") == "100")
        #expect(decoded[1].values("udp.checksum.status") == ["1"])
        #expect(decoded[1].values("ip.dst") == ["198.18.0.7", "203.0.113.80"])
    }

    @Test("GUE: inner IP packet behind a 4-byte variant-0 header, Ethernet and VLAN stripped", arguments: [false, true])
    func gue(udpChecksum: Bool) throws {
        let script = MetaScript()
        let harness = try Self.harness("udp_checksum: \(udpChecksum)", kind: "gue", script: script)
        let tagged = Self.tcp4(vlan: 7)
        let ipv6 = Self.tcp6()
        script.add(peer: 2, flowHash: 0xabcd)
        script.add(peer: 7, flowHash: 0x4321)
        harness.push([tagged, ipv6])
        let checksum: Frames.UDPChecksum = udpChecksum ? .computed : .zero
        #expect(harness.output(.out) == [
            F.expectedGUE(to: F.host2, flowHash: 0xabcd, innerFrame: tagged, udpChecksum: checksum),
            F.expectedGUE(to: F.host7, flowHash: 0x4321, innerFrame: ipv6, udpChecksum: checksum),
        ])
        #expect(harness.counter(.bytesAdded) == UInt64((46 - 18) + (46 - 14)))
        try harness.finish()

        let decoded = try Tshark.assertWellFormed(frames: harness.output(.out), decodeAs: [Tshark.gue(port: 6080)])
        #expect(decoded[0].protocols == "eth:ethertype:ip:udp:gue:ip:tcp")
        #expect(decoded[0].field("gue.proto") == "4")
        #expect(decoded[0].values("ip.dst") == ["198.18.0.2", "203.0.113.80"])
        #expect(decoded[0].field("udp.dstport") == "6080")
        #expect(decoded[0].field("vlan.id") == nil)
        #expect(decoded[1].protocols == "eth:ethertype:ip:udp:gue:ipv6:tcp:data")
        #expect(decoded[1].field("gue.proto") == "41")
        #expect(decoded[1].field("ipv6.src") == "2001:db8::10")
        #expect(decoded[1].values("tcp.checksum.status") == ["1"])
        #expect(decoded[1].values("udp.checksum.status") == [udpChecksum ? "1" : "3"])
    }

    @Test("Ethernet padding after the inner IP packet is not carried", arguments: ["vxlan", "gue"])
    func paddingIsNotCarried(kind: String) throws {
        let script = MetaScript(defaultPeer: 3)
        let harness = try Self.harness(kind: kind, script: script)
        let short = Frames.ipv4UDP(source: F.client, destination: F.vip, sourcePort: 1, destinationPort: 2,
                                   payload: [1, 2], link: F.clientLink)
        #expect(short.count == 44)
        script.add(peer: 3, flowHash: 5)
        harness.push([Frames.padded(short)])
        let expected = kind == "vxlan" ? F.expectedVXLAN(to: F.host3, flowHash: 5, inner: short)
            : F.expectedGUE(to: F.host3, flowHash: 5, innerFrame: short)
        #expect(harness.output(.out) == [expected])
        try harness.finish()
    }

    @Test("the outer UDP source port follows the flow: one port per flow, flows spread over 49152...65535")
    func sourcePortFollowsTheFlow() throws {
        let script = MetaScript(defaultPeer: 3) // flow hashes from FlowKeys, as classify computes them
        let harness = try Self.harness(script: script)
        let flows = (0..<64).map { Self.tcp4(sourcePort: UInt16(30000 + $0)) }
        harness.push(flows + flows.map { Array($0.dropLast(4)) + Array("more".utf8) } + flows)
        let output = harness.output(.out)
        #expect(output.count == 192)
        let ports = output.map { Int($0[34]) << 8 | Int($0[35]) }
        #expect(ports.allSatisfy { (49152...65535).contains($0) })
        #expect(Array(ports[0..<64]) == Array(ports[64..<128]))
        #expect(Array(ports[0..<64]) == Array(ports[128..<192]))
        #expect(Set(ports[0..<64]).count >= 60, "64 flows share too few ports: \(Set(ports).count)")
        try harness.finish()
    }

    // MARK: - MTU

    /// The ICMP fragmentation-needed error encapsulate should build for `frame` (IPv4).
    static func expectedFragmentationNeeded(for frame: [UInt8], mtu: UInt16, vlan: UInt16? = nil) -> [UInt8] {
        let original = Frames.withoutEthernet(frame)
        let quote = Array(original.prefix(Int(original[0] & 0x0f) * 4 + 8))
        let icmp = Frames.icmpv4Message(type: 3, code: 4, rest: [0, 0, UInt8(mtu >> 8), UInt8(mtu & 0xff)],
                                        body: quote)
        let ip = Frames.ipv4Packet(source: F.vip, destination: F.client, protocol: Frames.IPProtocol.icmp,
                                   payload: icmp, fields: .init(ttl: 64, identification: 0, dontFragment: true))
        return Frames.ipFrame(ip, link: .init(source: F.ourMAC, destination: F.routerMAC, vlan: vlan))
    }

    static func expectedPacketTooBig(for frame: [UInt8], mtu: UInt32, quote: Int = 1232) -> [UInt8] {
        Frames.icmpv6PacketTooBig(source: F.vip6, destination: F.client6, mtu: mtu,
                                  original: Frames.withoutEthernet(frame), originalLength: quote,
                                  link: .init(source: F.ourMAC, destination: F.routerMAC))
    }

    static let icmpFields = ["icmp.mtu", "icmpv6.mtu"]

    /// tshark validates the TCP checksum of a segment quoted in an ICMPv6 error even when the quote
    /// is cut short (as RFC 4443 cuts it, to fit 1280 bytes), so exactly that check fails: every
    /// other one, the ICMPv6 checksum among them, must pass.
    static func assertWellFormedWithCutQuote(_ frames: [[UInt8]]) throws -> [TsharkFrame] {
        let decoded = try Tshark.decode(frames: frames, fields: icmpFields)
        for frame in decoded {
            #expect(frame.values("tcp.checksum.status") == ["0"], "frame \(frame.index): the cut quote")
            let others = frame.problems.filter { $0 != "tcp checksum bad" && !$0.hasPrefix("expert error: Bad checksum") }
            #expect(others.isEmpty, "frame \(frame.index): \(others)")
            #expect(frame.values("icmpv6.checksum.status") == ["1"], "frame \(frame.index)")
        }
        return decoded
    }

    @Test("VXLAN, mtu 1500: 1450-byte inner IPv4 fits exactly; 1451 with DF becomes ICMP frag-needed (MTU 1450)")
    func vxlanFragmentationNeeded() throws {
        let script = MetaScript(defaultPeer: 2)
        let harness = try Self.harness(script: script)
        let fits = Self.tcp4(payload: Array(repeating: 0x61, count: 1450 - 40), dontFragment: true)
        let tooBig = Self.tcp4(payload: Array(repeating: 0x62, count: 1451 - 40), dontFragment: true)
        let tooBigTagged = Self.tcp4(payload: Array(repeating: 0x63, count: 1447 - 40), dontFragment: true, vlan: 9)
        harness.push([fits, tooBig, tooBigTagged])

        #expect(harness.output(.out).map(\.count) == [14 + 1500])
        #expect(harness.output(.tooBig) == [
            Self.expectedFragmentationNeeded(for: tooBig, mtu: 1450),
            Self.expectedFragmentationNeeded(for: tooBigTagged, mtu: 1446, vlan: 9), // the tag is inner overhead
        ])
        #expect(harness.counter(.icmpTooBig) == 2)
        #expect(harness.counter(.encapsulated) == 1)
        try harness.finish()

        let decoded = try Tshark.assertWellFormed(frames: harness.output(.tooBig) + harness.output(.out),
                                                  fields: Self.icmpFields)
        #expect(decoded[0].protocols == "eth:ethertype:ip:icmp:ip:tcp")
        #expect(decoded[0].field("icmp.type") == "3")
        #expect(decoded[0].field("icmp.code") == "4")
        #expect(decoded[0].field("icmp.mtu") == "1450")
        #expect(decoded[0].values("icmp.checksum.status") == ["1"])
        #expect(decoded[0].values("ip.src") == ["203.0.113.80", "198.51.100.10"])
        #expect(decoded[0].values("ip.dst") == ["198.51.100.10", "203.0.113.80"])
        #expect(decoded[0].field("eth.dst") == "02:aa:00:00:00:01")
        #expect(decoded[1].field("icmp.mtu") == "1446")
        #expect(decoded[1].field("vlan.id") == "9")
        #expect(decoded[2].field("vxlan.vni") == "42")
    }

    @Test("GUE, mtu 1500: DF IPv4 of 1469 bytes becomes ICMP frag-needed with MTU 1468")
    func gueFragmentationNeeded() throws {
        let script = MetaScript(defaultPeer: 3)
        let harness = try Self.harness(kind: "gue", script: script)
        let fits = Self.tcp4(payload: Array(repeating: 1, count: 1468 - 40), dontFragment: true)
        let tooBig = Self.tcp4(payload: Array(repeating: 2, count: 1469 - 40), dontFragment: true)
        harness.push([fits, tooBig])
        #expect(harness.output(.out).map(\.count) == [14 + 1500])
        #expect(harness.output(.tooBig) == [Self.expectedFragmentationNeeded(for: tooBig, mtu: 1468)])
        try harness.finish()
        let decoded = try Tshark.assertWellFormed(frames: harness.output(.tooBig) + harness.output(.out),
                                                  decodeAs: [Tshark.gue(port: 6080)], fields: Self.icmpFields)
        #expect(decoded[0].field("icmp.mtu") == "1468")
        #expect(decoded[1].field("gue.proto") == "4")
    }

    @Test("IPv6 too big becomes ICMPv6 packet-too-big quoting 1232 bytes; mtu - overhead below 1280 reports 1280")
    func ipv6PacketTooBig() throws {
        let script = MetaScript(defaultPeer: 2)
        let harness = try Self.harness(script: script)
        let tooBig = Self.tcp6(payload: Array(repeating: 0x36, count: 1500 - 60))
        harness.push([tooBig])
        #expect(harness.output(.tooBig) == [Self.expectedPacketTooBig(for: tooBig, mtu: 1450)])
        try harness.finish()

        // mtu 1300: 1300 - 50 = 1250 < 1280. The 1260-byte original is shorter than the 1280-byte
        // error, so the packet grows in place.
        let small = try Self.harness("mtu: 1300", script: MetaScript(defaultPeer: 2))
        let original = Self.tcp6(payload: Array(repeating: 0x37, count: 1260 - 60))
        small.push([original])
        let expected = Self.expectedPacketTooBig(for: original, mtu: 1280)
        #expect(expected.count == 14 + 1280)
        #expect(small.output(.tooBig) == [expected])
        try small.finish()

        let decoded = try Self.assertWellFormedWithCutQuote(harness.output(.tooBig) + small.output(.tooBig))
        for frame in decoded {
            #expect(frame.protocols == "eth:ethertype:ipv6:icmpv6:ipv6:tcp:data")
            #expect(frame.field("icmpv6.type") == "2")
            #expect(frame.values("icmpv6.checksum.status") == ["1"])
            #expect(frame.values("ipv6.src") == ["2001:db8::80", "2001:db8::10"])
            #expect(frame.values("ipv6.dst") == ["2001:db8::10", "2001:db8::80"])
        }
        #expect(decoded[0].field("icmpv6.mtu") == "1450")
        #expect(decoded[1].field("icmpv6.mtu") == "1280")
    }

    @Test("too big without DF is dropped (not fragmented); too_big: drop drops; no error about errors or later fragments")
    func tooBigDrops() throws {
        let big = Array(repeating: UInt8(0x55), count: 1480)
        let noDF = Self.tcp4(payload: big)
        let withDF = Self.tcp4(payload: big, dontFragment: true)
        let ipv6 = Self.tcp6(payload: big)

        let dropping = try Self.harness("too_big: drop", script: MetaScript())
        dropping.push([noDF, withDF, ipv6])
        #expect(dropping.output(.drop).count == 3)
        #expect(dropping.counter(.tooBigFragmentable) == 1)
        #expect(dropping.counter(.tooBig) == 2)
        #expect(dropping.counter(.icmpTooBig) == 0)
        try dropping.finish()

        let script = MetaScript()
        let answering = try Self.harness(script: script)
        let quotedError = Frames.icmpv6DestinationUnreachable(
            source: F.client6, destination: F.vip6, code: 4,
            original: Frames.withoutEthernet(Self.tcp6(payload: big)), link: F.clientLink)
        script.add(peer: 2)
        script.add(peer: 2, setFlags: UInt8(SY_META_ICMP_ERROR))
        script.add(peer: 2, edit: { packet in // a later IPv6 fragment: classify leaves l4 at 0
            packet.meta.pointee.flags |= UInt8(SY_META_FRAGMENT)
            packet.meta.pointee.l4 = 0
        })
        answering.push([noDF, quotedError, ipv6])
        #expect(answering.output(.drop).count == 3)
        #expect(answering.counter(.tooBigFragmentable) == 1)
        #expect(answering.counter(.tooBig) == 2)
        #expect(answering.output(.tooBig).isEmpty)
        try answering.finish()
    }

    // MARK: - Segments

    @Test("a two-segment packet: UDP checksum over both segments; ICMPv6 quote from the first, the rest freed")
    func multiSegment() throws {
        let script = MetaScript()
        let harness = try Self.harness("udp_checksum: true", script: script)
        let frame = Self.tcp4(payload: Array(repeating: 0x77, count: 301))
        let big = Self.tcp6(payload: Array(repeating: 0x78, count: 1500))
        script.add(peer: 3, flowHash: 0x99, edit: { MbufSurgery.split($0, after: 101) })
        script.add(peer: 3, flowHash: 0x99, edit: { MbufSurgery.split($0, after: 214) })
        harness.push([frame, big])
        #expect(harness.output(.out) == [F.expectedVXLAN(to: F.host3, flowHash: 0x99, inner: frame,
                                                         udpChecksum: .computed)])
        #expect(harness.output(.tooBig) == [Self.expectedPacketTooBig(for: big, mtu: 1450, quote: 200)])
        try harness.finish() // every segment back in the pool
        try Tshark.assertWellFormed(frames: harness.output(.out))
        #expect(try Self.assertWellFormedWithCutQuote(harness.output(.tooBig))[0].field("icmpv6.mtu") == "1450")
    }

    // MARK: - Drops

    @Test("never encapsulates what came from a peer (loop); unknown peers; malformed metadata")
    func drops() throws {
        let script = MetaScript()
        let harness = try Self.harness(script: script)
        let frame = Self.tcp4()
        script.add(peer: 2, setFlags: UInt8(SY_META_FROM_PEER))
        for peer: UInt16 in [0, 1, 99, 4095, 5000] { script.add(peer: peer) } // none, self, unknown, out of range
        script.add(peer: 2, edit: { $0.meta.pointee.family = 0 })
        script.add(peer: 2, edit: { $0.meta.pointee.l3 = 30 })
        script.add(peer: 2, edit: { $0.meta.pointee.l3 = 5 })
        script.add(peer: 2, edit: { $0.bytes.storeBytes(of: UInt8(0x10), toByteOffset: 16, as: UInt8.self) }) // length > packet
        script.add(peer: 2, edit: { $0.meta.pointee.family = 6 }) // an IPv4 header where IPv6 was announced
        harness.push(Array(repeating: frame, count: 11))
        #expect(harness.output(.drop).count == 11)
        #expect(harness.counter(.loop) == 1)
        #expect(harness.counter(.unknownPeer) == 5)
        #expect(harness.counter(.malformed) == 5)
        #expect(harness.counter(.encapsulated) == 0)
        try harness.finish()
    }

    @Test("headroom: VXLAN needs 50 bytes, GUE 46 less the inner Ethernet header", arguments: [
        ("vxlan", 49, false), ("vxlan", 50, true), ("gue", 31, false), ("gue", 32, true),
    ])
    func headroom(kind: String, headroom: Int, fits: Bool) throws {
        let script = MetaScript()
        let harness = try Self.harness(kind: kind, script: script)
        script.add(peer: 2, flowHash: 3, edit: { MbufSurgery.leaveHeadroom($0, headroom) })
        let frame = Self.tcp4()
        harness.push([frame])
        if fits {
            let expected = kind == "vxlan"
                ? F.expectedVXLAN(to: F.host2, flowHash: 3, inner: F.withDestination(frame, F.host2MAC))
                : F.expectedGUE(to: F.host2, flowHash: 3, innerFrame: frame)
            #expect(harness.output(.out) == [expected])
        } else {
            #expect(harness.output(.drop) == [frame])
            #expect(harness.counter(.noHeadroom) == 1)
        }
        try harness.finish()
    }

    // MARK: - Configuration

    @Test("parameters are checked: unknown keys, ranges, choices, and the cluster section is required")
    func parameters() throws {
        let cluster = F.cluster()
        #expect(throws: (any Error).self) { try StageHarness<Encapsulate>(parameters: "colour: blue", cluster: cluster) }
        #expect(throws: (any Error).self) { try StageHarness<Encapsulate>(parameters: "mtu: 100", cluster: cluster) }
        #expect(throws: (any Error).self) { try StageHarness<Encapsulate>(parameters: "too_big: bounce", cluster: cluster) }
        #expect(throws: (any Error).self) { try StageHarness<Encapsulate>(parameters: "udp_checksum: 1", cluster: cluster) }
        let missing = #expect(throws: (any Error).self) { try StageHarness<Encapsulate>() }
        #expect(String(describing: missing).contains("cluster"))
        _ = try StageHarness<Encapsulate>(parameters: "{mtu: 9000, too_big: drop, udp_checksum: true}", cluster: cluster)
    }
}
