import Foundation
import SwitchyardPcap
import Testing

/// The wire test tools prove themselves: every `Frames` builder decodes cleanly in tshark, the
/// tshark check catches broken frames, and the namespace bench carries a crafted VXLAN frame
/// through the Linux kernel to a UDP socket.
@Suite("wire test tools", .serialized)
struct WireToolTests {
    static let client: [UInt8] = [198, 18, 0, 1]
    static let server: [UInt8] = [198, 19, 0, 1]
    static let router: [UInt8] = [198, 18, 255, 254]
    static let client6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    static let server6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    static let router6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]
    static let payload = Array("switchyard test payload".utf8)
    static let gueDecode = Tshark.gue(port: 6080)

    /// Every builder, with the protocol stack tshark must find.
    static func everyBuilder() -> [(name: String, frame: [UInt8], protocols: String)] {
        let innerUDP = Frames.withoutEthernet(Frames.ipv4UDP(source: client, destination: server, sourcePort: 5000,
                                                             destinationPort: 7000, payload: payload))
        let innerTCP = Frames.withoutEthernet(Frames.ipv4TCP(source: client, destination: server, sourcePort: 40000,
                                                             destinationPort: 80, payload: payload))
        let innerTCP6 = Frames.withoutEthernet(Frames.ipv6TCP(source: client6, destination: server6,
                                                              sourcePort: 40000, destinationPort: 80, payload: payload))
        let innerEthernet = Frames.ipv4UDP(source: [198, 19, 100, 1], destination: [198, 19, 100, 2],
                                           sourcePort: 5000, destinationPort: 7000, payload: payload)
        return [
            ("ipv4 tcp", Frames.ipv4TCP(source: client, destination: server, sourcePort: 40000, destinationPort: 80,
                                        flags: [.psh, .ack], payload: payload),
             "eth:ethertype:ip:tcp"),
            ("ipv4 udp", Frames.ipv4UDP(source: client, destination: server, sourcePort: 5000, destinationPort: 7000,
                                        payload: payload),
             "eth:ethertype:ip:udp:data"),
            ("ipv4 udp, odd length, zero checksum",
             Frames.ipv4UDP(source: client, destination: server, sourcePort: 5000, destinationPort: 7000,
                            payload: [1, 2, 3], checksum: .zero),
             "eth:ethertype:ip:udp:data"),
            ("ipv4 tcp vlan", Frames.ipv4TCP(source: client, destination: server, sourcePort: 40000,
                                             destinationPort: 80, link: .init(vlan: 100)),
             "eth:ethertype:vlan:ethertype:ip:tcp"),
            ("ipv4 tcp options (record route)",
             Frames.ipv4TCP(source: client, destination: server, sourcePort: 40000, destinationPort: 80,
                            ip: .init(options: [7, 7, 4, 0, 0, 0, 0])),
             "eth:ethertype:ip:tcp"),
            ("ipv4 first fragment",
             Frames.ipv4UDP(source: client, destination: server, sourcePort: 5000, destinationPort: 7000,
                            payload: payload, ip: .init(identification: 0x1234, moreFragments: true)),
             "eth:ethertype:ip:data"),
            ("ipv4 later fragment",
             Frames.ipv4UDP(source: client, destination: server, sourcePort: 5000, destinationPort: 7000,
                            payload: payload, ip: .init(identification: 0x1235, fragmentOffset: 185)),
             "eth:ethertype:ip:data"),
            ("ipv6 tcp", Frames.ipv6TCP(source: client6, destination: server6, sourcePort: 40000, destinationPort: 443,
                                        flags: [.syn, .ack], payload: payload),
             "eth:ethertype:ipv6:tcp:data"),
            ("ipv6 udp vlan", Frames.ipv6UDP(source: client6, destination: server6, sourcePort: 5000,
                                             destinationPort: 7000, payload: payload, link: .init(vlan: 4094)),
             "eth:ethertype:vlan:ethertype:ipv6:udp:data"),
            ("ipv6 extension headers",
             Frames.ipv6UDP(source: client6, destination: server6, sourcePort: 5000, destinationPort: 7000,
                            payload: payload,
                            ip: .init(extensionHeaders: [.hopByHop(), .routing(addresses: [server6]),
                                                         .destinationOptions(options: [0x1e, 1, 0])])),
             "eth:ethertype:ipv6:ipv6.hopopts:ipv6.routing:ipv6.dstopts:udp:data"),
            ("ipv6 atomic fragment",
             Frames.ipv6TCP(source: client6, destination: server6, sourcePort: 40000, destinationPort: 443,
                            ip: .init(extensionHeaders: [.fragment(identification: 7)])),
             "eth:ethertype:ipv6:ipv6.fraghdr:tcp"),
            ("ipv6 first fragment",
             Frames.ipv6UDP(source: client6, destination: server6, sourcePort: 5000, destinationPort: 7000,
                            payload: payload,
                            ip: .init(extensionHeaders: [.fragment(moreFragments: true, identification: 8)])),
             "eth:ethertype:ipv6:ipv6.fraghdr:data"),
            ("icmpv4 echo request", Frames.icmpv4EchoRequest(source: client, destination: server, payload: payload),
             "eth:ethertype:ip:icmp:data"),
            ("icmpv4 echo reply", Frames.icmpv4EchoReply(source: server, destination: client, identifier: 9,
                                                         sequence: 3, payload: payload),
             "eth:ethertype:ip:icmp:data"),
            ("icmpv4 fragmentation needed",
             Frames.icmpv4DestinationUnreachable(source: router, destination: client, code: 4, nextHopMTU: 1400,
                                                 original: innerTCP),
             "eth:ethertype:ip:icmp:ip:tcp"),
            ("icmpv4 port unreachable, quote cut to 28 bytes",
             Frames.icmpv4DestinationUnreachable(source: server, destination: client, code: 3, original: innerUDP,
                                                 originalLength: 28),
             "eth:ethertype:ip:icmp:ip:udp"),
            ("icmpv4 time exceeded",
             Frames.icmpv4TimeExceeded(source: router, destination: client, original: innerUDP),
             "eth:ethertype:ip:icmp:ip:udp:data"),
            ("icmpv6 echo request", Frames.icmpv6EchoRequest(source: client6, destination: server6, payload: payload),
             "eth:ethertype:ipv6:icmpv6:data"),
            ("icmpv6 echo reply", Frames.icmpv6EchoReply(source: server6, destination: client6, payload: payload),
             "eth:ethertype:ipv6:icmpv6:data"),
            ("icmpv6 packet too big",
             Frames.icmpv6PacketTooBig(source: router6, destination: client6, mtu: 1280, original: innerTCP6),
             "eth:ethertype:ipv6:icmpv6:ipv6:tcp"),
            ("icmpv6 unreachable, quote cut to 48 bytes",
             Frames.icmpv6DestinationUnreachable(source: router6, destination: client6, code: 0, original: innerTCP6,
                                                 originalLength: 48),
             "eth:ethertype:ipv6:icmpv6:ipv6:tcp"),
            ("icmpv6 neighbor solicitation",
             Frames.icmpv6NeighborSolicitation(source: client6, target: server6),
             "eth:ethertype:ipv6:icmpv6"),
            ("icmpv6 neighbor solicitation for duplicate address detection",
             Frames.icmpv6NeighborSolicitation(source: [UInt8](repeating: 0, count: 16), target: server6),
             "eth:ethertype:ipv6:icmpv6"),
            ("arp request", Frames.arpRequest(senderMAC: Frames.defaultSourceMAC, senderIP: client, targetIP: server),
             "eth:ethertype:arp"),
            ("arp reply", Frames.arpReply(senderMAC: Frames.defaultDestinationMAC, senderIP: server,
                                          targetMAC: Frames.defaultSourceMAC, targetIP: client),
             "eth:ethertype:arp"),
            ("gratuitous arp", Frames.gratuitousARP(senderMAC: Frames.defaultSourceMAC, senderIP: client,
                                                    vlan: 7),
             "eth:ethertype:vlan:ethertype:arp"),
            ("gre", Frames.gre(source: client, destination: server, payload: innerUDP),
             "eth:ethertype:ip:gre:ip:udp:data"),
            ("esp", Frames.esp(source: client, destination: server, spi: 0x1000, sequence: 1),
             "eth:ethertype:ip:esp"),
            ("vxlan, zero outer checksum",
             Frames.vxlan(outerSource: client, outerDestination: server, vni: 42, inner: innerEthernet),
             "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:udp:data"),
            ("vxlan, computed outer checksum",
             Frames.vxlan(outerSource: client, outerDestination: server, vni: 0xabcdef, inner: innerEthernet,
                          udpChecksum: .computed),
             "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:udp:data"),
            ("gue ipv4", Frames.gue(outerSource: client, outerDestination: server, destinationPort: 6080,
                                    inner: innerTCP, udpChecksum: .computed),
             "eth:ethertype:ip:udp:gue:ip:tcp"),
            ("gue ipv6", Frames.gue(outerSource: client, outerDestination: server, destinationPort: 6080,
                                    inner: innerTCP6),
             "eth:ethertype:ip:udp:gue:ipv6:tcp"),
        ]
    }

    @Test func everyBuilderDecodesCleanlyInTshark() throws {
        let builders = Self.everyBuilder()
        let extraFields = ["tcp.len", "ip.flags.mf", "ip.frag_offset", "ip.id", "icmp.mtu", "icmpv6.mtu",
                           "icmpv6.nd.ns.target_address", "icmpv6.opt.linkaddr", "arp.isgratuitous"]
        let decoded = try Tshark.assertWellFormed(frames: builders.map(\.frame), decodeAs: [Self.gueDecode],
                                                  fields: extraFields)
        for (builder, frame) in zip(builders, decoded) {
            #expect(frame.protocols == builder.protocols, "\(builder.name)")
        }
        func named(_ name: String) -> TsharkFrame { decoded[builders.firstIndex { $0.name == name }!] }

        let tcp = named("ipv4 tcp")
        #expect(tcp.field("ip.src") == "198.18.0.1")
        #expect(tcp.field("ip.dst") == "198.19.0.1")
        #expect(tcp.field("tcp.srcport") == "40000")
        #expect(tcp.field("tcp.dstport") == "80")
        #expect(tcp.field("tcp.flags") == "0x0018")
        #expect(tcp.field("tcp.len") == String(Self.payload.count))
        #expect(tcp.field("eth.src") == "02:00:00:00:00:01")
        #expect(tcp.field("eth.dst") == "02:00:00:00:00:02")
        #expect(tcp.values("tcp.checksum.status") == ["1"])
        #expect(tcp.values("ip.checksum.status") == ["1"])
        #expect(named("ipv4 tcp vlan").field("vlan.id") == "100")
        #expect(named("ipv6 udp vlan").values("udp.checksum.status") == ["1"])
        #expect(named("ipv6 tcp").field("ipv6.src") == "fd00::1")
        #expect(named("ipv6 extension headers").values("udp.checksum.status") == ["1"])
        #expect(named("ipv6 atomic fragment").values("tcp.checksum.status") == ["1"])
        #expect(named("ipv4 first fragment").field("ip.flags.mf") == "1")
        #expect(named("ipv4 first fragment").field("ip.id") == "0x1234")
        #expect(named("ipv4 later fragment").field("ip.frag_offset") == "185") // in 8-byte units

        let fragNeeded = named("icmpv4 fragmentation needed")
        #expect(fragNeeded.field("icmp.type") == "3")
        #expect(fragNeeded.field("icmp.code") == "4")
        #expect(fragNeeded.field("icmp.mtu") == "1400")
        #expect(fragNeeded.values("icmp.checksum.status") == ["1"])
        #expect(fragNeeded.values("ip.dst") == ["198.18.0.1", "198.19.0.1"])
        #expect(named("icmpv6 packet too big").field("icmpv6.mtu") == "1280")
        #expect(named("icmpv6 packet too big").values("icmpv6.checksum.status") == ["1"])

        let solicitation = named("icmpv6 neighbor solicitation")
        #expect(solicitation.field("icmpv6.type") == "135")
        #expect(solicitation.field("ipv6.dst") == "ff02::1:ff00:2")
        #expect(solicitation.field("eth.dst") == "33:33:ff:00:00:02")
        #expect(solicitation.field("icmpv6.nd.ns.target_address") == "fd00::2")
        #expect(solicitation.field("icmpv6.opt.linkaddr") == "02:00:00:00:00:01")

        #expect(named("icmpv6 neighbor solicitation for duplicate address detection").field("icmpv6.opt.linkaddr") == nil)
        #expect(named("arp request").field("arp.opcode") == "1")
        #expect(named("arp reply").field("arp.opcode") == "2")
        #expect(named("gratuitous arp").field("arp.isgratuitous") == "1")
        #expect(named("esp").field("esp.spi") == "0x00001000")
        #expect(named("vxlan, zero outer checksum").field("vxlan.vni") == "42")
        #expect(named("vxlan, zero outer checksum").values("udp.checksum.status") == ["3", "1"])
        #expect(named("vxlan, computed outer checksum").field("vxlan.vni") == "11259375")
        #expect(named("vxlan, computed outer checksum").values("udp.checksum.status") == ["1", "1"])
        #expect(named("gue ipv4").field("gue.proto") == "4")
        #expect(named("gue ipv6").field("gue.proto") == "41")
        #expect(named("gue ipv6").field("ipv6.dst") == "fd00::2")
    }

    @Test func checksumHelpersMatchKnownValues() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
        #expect(Frames.internetChecksum([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]) == ~UInt16(0xddf2))
        let header = Frames.ipv4Packet(source: Self.client, destination: Self.server, protocol: Frames.IPProtocol.udp,
                                       payload: [])
        #expect(Frames.internetChecksum(header) == 0) // a header with a correct checksum sums to zero
        #expect(Frames.ipv4Checksum(header) == UInt16(header[10]) << 8 | UInt16(header[11]))
        #expect(Frames.truncated([1, 2, 3, 4], to: 2) == [1, 2])
        #expect(Frames.truncated([1, 2], to: 5) == [1, 2])
    }

    @Test func brokenFramesAreReported() throws {
        let good = Frames.ipv4TCP(source: Self.client, destination: Self.server, sourcePort: 40000,
                                  destinationPort: 80, payload: Self.payload)
        var badTCPChecksum = good
        badTCPChecksum[14 + 20 + 16] ^= 0xff
        var badIPChecksum = good
        badIPChecksum[14 + 10] ^= 0x01
        let truncated = Frames.truncated(good, to: 40)
        var badVXLANInner = Frames.vxlan(outerSource: Self.client, outerDestination: Self.server, vni: 42,
                                         inner: good)
        badVXLANInner[badVXLANInner.count - 1] ^= 0x55 // a payload byte the inner TCP checksum covers

        let decoded = try Tshark.decode(frames: [good, badTCPChecksum, badIPChecksum, truncated, badVXLANInner])
        #expect(decoded[0].problems.isEmpty)
        #expect(decoded[1].problems.contains("tcp checksum bad"))
        #expect(decoded[2].problems.contains("ip checksum bad"))
        #expect(decoded[3].problems.contains("malformed"))
        #expect(decoded[4].problems.contains("tcp checksum bad"))

        for (index, broken) in [badTCPChecksum, badIPChecksum, truncated, badVXLANInner].enumerated() {
            let error = #expect(throws: Tshark.Failure.self) {
                try Tshark.assertWellFormed(frames: [good, broken])
            }
            #expect(error?.description.contains("frame 1 ") == true, "case \(index): \(String(describing: error))")
            #expect(error?.description.contains("frame 0 ") == false, "case \(index)")
        }
        let gueWithBadProto = Frames.gue(outerSource: Self.client, outerDestination: Self.server,
                                         destinationPort: 6080, inner: [0x99] + Array(repeating: 0, count: 40))
        #expect(throws: Tshark.Failure.self) {
            try Tshark.assertWellFormed(frames: [gueWithBadProto], decodeAs: [Self.gueDecode])
        }
    }

    /// The kernel proof path without Switchyard: a VXLAN frame crafted here, injected from
    /// namespace A, decapsulated by a kernel VXLAN device in namespace B and read from a UDP socket.
    @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"))
    func kernelVXLANDeviceReceivesCraftedFrame() throws {
        let net = try NetworkTopology()
        defer { net.tearDown() }
        try net.addNamespace("a")
        try net.addNamespace("b")
        try net.addVethPair("veth0", in: "a", "veth0", in: "b")
        try net.addAddress("198.18.0.1/24", to: "veth0", in: "a")
        try net.addAddress("198.18.0.2/24", to: "veth0", in: "b")
        try net.addVXLAN("vx0", vni: 42, local: "198.18.0.2", address: "198.19.100.2/24", in: "b")
        let vethA = try net.macAddress(of: "veth0", in: "a")
        let vethB = try net.macAddress(of: "veth0", in: "b")
        let vxlanB = try net.macAddress(of: "vx0", in: "b")

        let inner = Frames.ipv4UDP(source: [198, 19, 100, 1], destination: [198, 19, 100, 2], sourcePort: 5555,
                                   destinationPort: 9999, payload: Array("hello-vxlan".utf8),
                                   link: .init(source: [0x02, 0, 0, 0, 0x64, 0x01], destination: vxlanB))
        let frame = Frames.vxlan(outerSource: [198, 18, 0, 1], outerDestination: [198, 18, 0, 2], vni: 42,
                                 inner: inner, link: .init(source: vethA, destination: vethB))
        try Tshark.assertWellFormed(frames: [frame])

        let receiver = try net.startUDPReceiver(in: "b", address: "198.19.100.2", port: 9999, timeout: 5)
        try net.inject([frame], in: "a", interface: "veth0")
        #expect(try receiver.texts() == ["hello-vxlan"])

        let names = [net.namespaceName("a"), net.namespaceName("b")]
        net.tearDown()
        let left = try NetworkTopology.existingNamespaces()
        #expect(names.allSatisfy { !left.contains($0) }, "left behind: \(left)")
    }

    @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"))
    func topologyRemovesEverythingItCreated() throws {
        var names: [String] = []
        var rootEnd = ""
        do {
            let net = try NetworkTopology()
            names = [try net.addNamespace("x"), try net.addNamespace("y")]
            try net.addVethPair("v0", in: "x", "v1", in: "y")
            rootEnd = try net.addVethPair("root", in: nil, "v2", in: "x").0
            try net.addAddress("fd00::1/64", to: "v0", in: "x")
            #expect(NetworkTopology.rootInterfaceExists(rootEnd))
            #expect(try net.run(in: "x", ["ip", "-o", "link"]).stdout.contains("v2@"))
            _ = try net.start(in: "y", ["sleep", "30"])
            // Dropped here without tearDown(): deinit cleans up.
        }
        let left = try NetworkTopology.existingNamespaces()
        #expect(names.allSatisfy { !left.contains($0) }, "left behind: \(left)")
        #expect(!NetworkTopology.rootInterfaceExists(rootEnd))
    }
}
