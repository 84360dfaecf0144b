import CDPDK
import ClassifyStage
import DecapsulateStage
import EncapsulateStage
import SwitchyardCluster
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// The IPv6 underlay: hosts fd00::1, ::2, ::3, ::7. Encapsulate writes IPv6 outer headers with the
/// UDP checksum computed (byte-exact against `Frames`, decoded by tshark), reports the right MTU in
/// its ICMP errors, and decapsulate takes IPv6-outer VXLAN and GUE from known peers only.
@Suite("IPv6 underlay: encapsulate and decapsulate")
struct TunnelIPv6Tests {
    typealias F = TunnelFixtures
    static let payload = Array("switchyard over an IPv6 underlay".utf8)
    static let tcp4 = Frames.ipv4TCP(source: F.client, destination: F.vip, sourcePort: 40000, destinationPort: 80,
                                     flags: [.ack, .psh], payload: payload, link: F.clientLink)
    static let udp6 = Frames.ipv6UDP(source: F.client6, destination: F.vip6, sourcePort: 5000, destinationPort: 7000,
                                     payload: payload, link: F.clientLink)
    static let tagged = Frames.ipv4UDP(source: F.client, destination: F.vip, sourcePort: 7001, destinationPort: 9001,
                                       payload: [1, 2, 3], link: .init(source: F.routerMAC, destination: F.ourMAC, vlan: 33))

    static func encapsulator(_ parameters: String = "{}", kind: String = "vxlan",
                             script: MetaScript) throws -> StageHarness<Encapsulate>
    {
        try StageHarness<Encapsulate>(parameters: parameters, cluster: F.cluster(kind: kind, ipv6: true),
                                      prepare: { script.apply($0) })
    }

    // MARK: - Encapsulate

    @Test("VXLAN over IPv6: 70-byte outer header per peer, UDP checksum computed, IPv4 and IPv6 inner")
    func vxlan() throws {
        let script = MetaScript()
        let harness = try Self.encapsulator(script: script)
        script.add(peer: 2, flowHash: 0x1234_5678)
        script.add(peer: 3, flowHash: 0xdead_beef)
        script.add(peer: 7, flowHash: 0)
        harness.push([Self.tcp4, Self.udp6, Self.tagged])
        let output = harness.output(.out)
        #expect(output == [
            F.expectedIPv6(to: F.host2v6, flowHash: 0x1234_5678, inner: F.withDestination(Self.tcp4, F.host2MAC)),
            F.expectedIPv6(to: F.host3v6, flowHash: 0xdead_beef, inner: Self.udp6),
            F.expectedIPv6(to: F.host7v6, flowHash: 0, inner: Self.tagged),
        ])
        #expect(output.map { $0.count - 70 } == [Self.tcp4.count, Self.udp6.count, Self.tagged.count])
        #expect(output.map { Int($0[54]) << 8 | Int($0[55]) } == [0xd678, 0xfeef, 0xc000]) // source port from the flow
        #expect(harness.counter(.encapsulated) == 3)
        #expect(harness.counter(.bytesAdded) == 210)
        try harness.finish()

        let decoded = try Tshark.assertWellFormed(frames: output)
        #expect(decoded[0].protocols == "eth:ethertype:ipv6:udp:vxlan:eth:ethertype:ip:tcp")
        #expect(decoded[1].protocols == "eth:ethertype:ipv6:udp:vxlan:eth:ethertype:ipv6:udp:data")
        #expect(decoded[2].protocols == "eth:ethertype:ipv6:udp:vxlan:eth:ethertype:vlan:ethertype:ip:udp:data")
        for (index, peer) in ["fd00::2", "fd00::3", "fd00::7"].enumerated() {
            #expect(decoded[index].values("ipv6.src").first == "fd00::1")
            #expect(decoded[index].values("ipv6.dst").first == peer)
            #expect(decoded[index].values("udp.dstport").first == "4789")
            #expect(decoded[index].values("udp.checksum.status").first == "1") // present and good
            #expect(decoded[index].field("vxlan.vni") == "42")
        }
    }

    @Test("GUE over IPv6: 66-byte outer header in front of the inner IP packet, checksum computed")
    func gue() throws {
        let script = MetaScript()
        let harness = try Self.encapsulator(kind: "gue", script: script)
        script.add(peer: 2, flowHash: 0xabcd)
        script.add(peer: 7, flowHash: 0x4321)
        harness.push([Self.tagged, Self.udp6])
        #expect(harness.output(.out) == [
            F.expectedIPv6(kind: "gue", to: F.host2v6, flowHash: 0xabcd, inner: Self.tagged),
            F.expectedIPv6(kind: "gue", to: F.host7v6, flowHash: 0x4321, inner: Self.udp6),
        ])
        #expect(harness.counter(.bytesAdded) == UInt64((66 - 18) + (66 - 14)))
        try harness.finish()
        let decoded = try Tshark.assertWellFormed(frames: harness.output(.out), decodeAs: [Tshark.gue(port: 6080)])
        #expect(decoded[0].protocols == "eth:ethertype:ipv6:udp:gue:ip:udp:data")
        #expect(decoded[0].field("gue.proto") == "4")
        #expect(decoded[1].protocols == "eth:ethertype:ipv6:udp:gue:ipv6:udp:data")
        #expect(decoded[1].field("gue.proto") == "41")
        #expect(decoded.allSatisfy { $0.values("udp.checksum.status") == ["1", "1"] || $0.values("udp.checksum.status") == ["1"] })
    }

    @Test("the metadata describes the outer IPv6/UDP packet afterwards")
    func metadata() throws {
        let harness = try Self.encapsulator(script: MetaScript())
        var stage = try Encapsulate(parameters: .init(), context: StageContext(
            instanceName: "test", lcoreID: 0, socketID: 0, burstSize: 32, ports: [], cluster: harness.cluster))
        let results = DirectRun.run(&stage, frames: [Self.tcp4]) { packet in
            F.describe(packet)
            packet.meta.pointee.peer = 3
        }
        #expect(results[0].disposition == Encapsulate.Disposition.out.rawValue)
        let meta = results[0].meta
        #expect(meta.l3 == 14 && meta.l4 == 54 && meta.family == 6 && meta.protocol == 17 && meta.peer == 3)
        #expect(Int(meta.l3_end) == results[0].bytes.count)
    }

    @Test("MTU over IPv6 counts 20 more bytes: VXLAN mtu 1500 fits a 1430-byte inner packet, GUE 1448",
          arguments: [("vxlan", 1430), ("gue", 1448)])
    func mtu(kind: String, largest: Int) throws {
        let script = MetaScript(defaultPeer: 2)
        let harness = try Self.encapsulator(kind: kind, script: script)
        let fits = Frames.ipv4TCP(source: F.client, destination: F.vip, sourcePort: 1, destinationPort: 80,
                                  flags: [.ack], payload: Array(repeating: 0x61, count: largest - 40),
                                  ip: .init(dontFragment: true), link: F.clientLink)
        let tooBig = Frames.ipv4TCP(source: F.client, destination: F.vip, sourcePort: 1, destinationPort: 80,
                                    flags: [.ack], payload: Array(repeating: 0x62, count: largest + 1 - 40),
                                    ip: .init(dontFragment: true), link: F.clientLink)
        let tooBig6 = Frames.ipv6TCP(source: F.client6, destination: F.vip6, sourcePort: 1, destinationPort: 443,
                                     flags: [.ack], payload: Array(repeating: 0x63, count: largest + 1 - 60),
                                     link: F.clientLink)
        harness.push([fits, tooBig, tooBig6])
        #expect(harness.output(.out).map(\.count) == [14 + 1500])
        #expect(harness.output(.tooBig).count == 2)
        #expect(harness.counter(.icmpTooBig) == 2)
        try harness.finish()
        let decoded = try Tshark.decode(frames: harness.output(.tooBig), fields: ["icmp.mtu", "icmpv6.mtu"])
        #expect(decoded[0].field("icmp.mtu") == String(largest))
        #expect(decoded[1].field("icmpv6.mtu") == String(largest))
    }

    @Test("a two-segment packet: the IPv6 outer UDP checksum covers both segments")
    func multiSegment() throws {
        let script = MetaScript()
        let harness = try Self.encapsulator(script: script)
        let frame = Frames.ipv4TCP(source: F.client, destination: F.vip, sourcePort: 40000, destinationPort: 80,
                                   flags: [.ack], payload: Array(repeating: 0x77, count: 301), link: F.clientLink)
        script.add(peer: 3, flowHash: 0x99, edit: { MbufSurgery.split($0, after: 101) })
        harness.push([frame])
        #expect(harness.output(.out) == [F.expectedIPv6(to: F.host3v6, flowHash: 0x99, inner: frame)])
        try harness.finish()
        try Tshark.assertWellFormed(frames: harness.output(.out))
    }

    @Test("headroom: VXLAN over IPv6 needs 70 bytes, GUE 66 less the inner Ethernet header", arguments: [
        ("vxlan", 69, false), ("vxlan", 70, true), ("gue", 51, false), ("gue", 52, true),
    ])
    func headroom(kind: String, headroom: Int, fits: Bool) throws {
        let script = MetaScript()
        let harness = try Self.encapsulator(kind: kind, script: script)
        script.add(peer: 3, flowHash: 3, edit: { MbufSurgery.leaveHeadroom($0, headroom) })
        harness.push([Self.tcp4])
        if fits {
            #expect(harness.output(.out) == [F.expectedIPv6(kind: kind, to: F.host3v6, flowHash: 3, inner: Self.tcp4)])
        } else {
            #expect(harness.output(.drop) == [Self.tcp4])
            #expect(harness.counter(.noHeadroom) == 1)
        }
        try harness.finish()
    }

    @Test("udp_checksum: false is refused over IPv6 (RFC 8200); true or absent is accepted")
    func udpChecksumKey() throws {
        let cluster = F.cluster(ipv6: true)
        let error = #expect(throws: (any Error).self) {
            try StageHarness<Encapsulate>(parameters: "udp_checksum: false", cluster: cluster)
        }
        #expect(String(describing: error).contains("udp_checksum"))
        #expect(String(describing: error).contains("RFC 8200"))
        _ = try StageHarness<Encapsulate>(parameters: "udp_checksum: true", cluster: cluster)
        _ = try StageHarness<Encapsulate>(parameters: "{}", cluster: cluster)
    }

    // MARK: - Decapsulate

    static let peerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02]
    static let port0MAC: [UInt8] = [0x02, 0xcc, 0, 0, 0, 0x00]
    static let ports = [PortDescription(name: "uplink", portID: 0, mac: (0x02, 0xcc, 0, 0, 0, 0x00), socketID: 0)]
    static let outerLink = Frames.Link(source: peerMAC, destination: port0MAC)

    static func vxlan6(from source: [UInt8] = F.host2v6, inner: [UInt8], checksum: Frames.UDPChecksum = .computed,
                       fields: Frames.IPv6Fields? = nil) -> [UInt8]
    {
        let udp = Frames.udpDatagram(source: source, destination: F.host1v6, sourcePort: 50000, destinationPort: 4789,
                                     payload: [0x08, 0, 0, 0, 0, 0, 42, 0] + inner, checksum: checksum)
        let ip = Frames.ipv6Packet(source: source, destination: F.host1v6, nextHeader: 17, payload: udp,
                                   fields: fields ?? .init())
        return Frames.ipFrame(ip, link: outerLink)
    }

    static func decapsulator(kind: String = "vxlan", script: MetaScript) throws -> StageHarness<Decapsulate> {
        try StageHarness<Decapsulate>(ports: ports, cluster: F.cluster(kind: kind, ipv6: true),
                                      prepare: { script.apply($0) })
    }

    @Test("decapsulate: IPv6-outer VXLAN and GUE from a peer give back the inner frame byte for byte")
    func decapsulate() throws {
        let vxlan = try Self.decapsulator(script: MetaScript(defaultPeer: 2))
        let inners = [Self.tcp4, Self.udp6, Self.tagged]
        vxlan.push(inners.map { Self.vxlan6(inner: $0) })
        #expect(vxlan.output(.inner) == inners)
        #expect(vxlan.counter(.decapsulated) == 3)
        try vxlan.finish()

        let gue = try Self.decapsulator(kind: "gue", script: MetaScript(defaultPeer: 2))
        gue.push([Self.tcp4, Self.udp6].map {
            Frames.gue(outerSource: F.host2v6, outerDestination: F.host1v6, sourcePort: 50001, destinationPort: 6080,
                       inner: Frames.withoutEthernet($0), udpChecksum: .computed, link: Self.outerLink)
        })
        #expect(gue.output(.inner) == [Self.tcp4, Self.udp6].map {
            let ip = Frames.withoutEthernet($0)
            return Frames.ethernet(link: .init(source: Self.peerMAC, destination: Self.port0MAC),
                                   etherType: ip[0] >> 4 == 6 ? Frames.EtherType.ipv6 : Frames.EtherType.ipv4, payload: ip)
        })
        try gue.finish()
    }

    @Test("decapsulate over IPv6: unknown peers, zero checksums, extension headers and IPv4 outer are dropped by name")
    func decapsulateDrops() throws {
        let script = MetaScript(defaultPeer: 2)
        let harness = try Self.decapsulator(script: script)
        let hopByHop = Frames.IPv6Fields(extensionHeaders: [.hopByHop(options: [1, 4, 0, 0, 0, 0])])
        harness.push([
            Self.vxlan6(from: F.host1v6, inner: Self.tcp4),                  // this host
            Self.vxlan6(from: F.ipv6Host(99), inner: Self.tcp4),             // nobody
            Self.vxlan6(from: F.vip6, inner: Self.tcp4),                     // not a host
            Self.vxlan6(inner: Self.tcp4, checksum: .zero),                  // RFC 8200: 0 is invalid
            Self.vxlan6(inner: Self.tcp4, fields: hopByHop),                 // l4 is not l3 + 40
            Frames.vxlan(outerSource: F.host2, outerDestination: F.host1, vni: 42, inner: Self.tcp4,
                         link: Self.outerLink),                                  // an IPv4 underlay packet
            Self.vxlan6(inner: Self.tcp4),
        ])
        #expect(harness.counter(.unknownPeer) == 3)
        #expect(harness.counter(.zeroChecksum) == 1)
        #expect(harness.counter(.malformed) == 2)
        #expect(harness.output(.inner) == [Self.tcp4])
        try harness.finish()
    }

    @Test("truncated at every length: each cut of an IPv6-outer VXLAN frame is dropped as truncated")
    func truncatedEverywhere() throws {
        let frame = Self.vxlan6(inner: Self.tcp4)
        let harness = try StageHarness<Decapsulate>(ports: Self.ports, cluster: F.cluster(ipv6: true), prepare: { packet in
            packet.meta.pointee.l3 = 14
            packet.meta.pointee.l4 = 54
            packet.meta.pointee.family = 6
            packet.meta.pointee.protocol = 17
            packet.meta.pointee.peer = 2
        })
        harness.push((0..<frame.count).map { Array(frame.prefix($0)) } + [frame])
        #expect(harness.counter(.truncated) == UInt64(frame.count))
        #expect(harness.output(.inner).count == 1)
        try harness.finish()
    }

    @Test("encapsulate on host 1, decapsulate on host 2 over IPv6: the original frame comes back",
          arguments: ["vxlan", "gue"])
    func roundTrip(kind: String) throws {
        let originals = [Self.tcp4, Self.udp6, Self.tagged,
                         Frames.ipv6TCP(source: F.client6, destination: F.vip6, sourcePort: 1, destinationPort: 2,
                                        payload: Array(repeating: 0x5a, count: 1000), link: F.clientLink)]
        let sending = try StageHarness<Encapsulate>(cluster: F.cluster(kind: kind, host2MAC: nil, ipv6: true),
                                                    prepare: { MetaScript(defaultPeer: 2).apply($0) })
        sending.push(originals)
        try sending.finish()
        let onTheWire = sending.output(.out).map { Self.port0MAC + Self.peerMAC + Array($0[12...]) }
        #expect(onTheWire.count == originals.count)

        let receiving = try StageHarness<Decapsulate>(ports: Self.ports, cluster: F.cluster(local: 2, kind: kind, ipv6: true))
        var stage = try Decapsulate(parameters: .init(), context: StageContext(
            instanceName: "test", lcoreID: 0, socketID: 0, burstSize: 32, ports: Self.ports, cluster: receiving.cluster))
        let results = DirectRun.run(&stage, frames: onTheWire) { F.describeTunnel($0, peer: 1) }
        let expected = kind == "vxlan" ? originals : originals.map {
            let ip = Frames.withoutEthernet($0)
            return Frames.ethernet(link: .init(source: Self.peerMAC, destination: Self.port0MAC),
                                   etherType: ip[0] >> 4 == 6 ? Frames.EtherType.ipv6 : Frames.EtherType.ipv4, payload: ip)
        }
        #expect(results.map(\.bytes) == expected)
        #expect(results.allSatisfy { $0.disposition == Decapsulate.Disposition.inner.rawValue })
        #expect(results.allSatisfy { $0.meta.flags == UInt8(SY_META_FROM_PEER) && $0.meta.peer == 1 })
    }

    @Test("classify sends IPv6-outer VXLAN from a peer to `tunnel`, from anyone else to tunnel-unknown-peer")
    func classifyThenDecapsulate() throws {
        let cluster = F.cluster(ipv6: true)
        let classify = try StageHarness<Classify>(ports: Self.ports, cluster: cluster)
        let fromPeer = Self.vxlan6(inner: Self.tcp4)
        classify.push([fromPeer, Self.vxlan6(from: F.ipv6Host(99), inner: Self.tcp4)])
        #expect(classify.output(.tunnel) == [fromPeer])
        #expect(classify.counter(.tunnelUnknownPeer) == 1)
        try classify.finish()

    }

    // MARK: - Configuration

    @Test("cluster.hosts: IPv6 addresses are accepted; mixing families names the host, its line and the key")
    func mixedFamilies() throws {
        let six = try ClusterConfiguration.parse(sectionBody: F.cluster(ipv6: true), file: "six.yaml")
        #expect(six.underlayFamily == 6)
        let mixed = """
            host: 1
            hosts:
              - {id: 1, address: 198.18.0.1}
              - {id: 2, address: "fd00::2"}
            """
        let error = #expect(throws: (any Error).self) {
            try ClusterConfiguration.parse(sectionBody: mixed, file: "mixed.yaml")
        }
        let text = String(describing: error)
        #expect(text.contains("mixed.yaml:5:"), "\(text)") // line 1 is the `cluster:` the helper adds
        #expect(text.contains("key 'address'"), "\(text)")
        #expect(text.contains("host 2 is IPv6 but host 1"), "\(text)")
    }

    @Test("gossip over an IPv6 underlay runs on the hosts' IPv6 addresses; IPv4 members may be given instead")
    func gossipFollowsTheUnderlayUnlessMembersAreGiven() throws {
        let key = String(repeating: "ab", count: 32)
        let byDefault = F.cluster(ipv6: true) + "\ngossip: {key: \"\(key)\"}"
        let implicit = try ClusterConfiguration.parse(sectionBody: byDefault, file: "g.yaml")
        #expect(implicit.gossip?.members.isEmpty == false)
        #expect(implicit.gossip?.members.allSatisfy { !$0.address.isIPv4 } == true)
        let given = F.cluster(ipv6: true) + "\ngossip:\n  key: \"\(key)\"\n  members:\n"
            + [1, 2, 3, 7].map { "    - {host: \($0), address: 10.0.0.\($0)}" }.joined(separator: "\n")
        let parsed = try ClusterConfiguration.parse(sectionBody: given, file: "g.yaml")
        #expect(parsed.gossip?.members.allSatisfy { $0.address.isIPv4 } == true)
    }
}
