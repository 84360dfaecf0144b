import CDPDK
import DecapsulateStage
import EncapsulateStage
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// decapsulate: VXLAN and GUE from known peers give back the inner frame (byte-exact), marked
/// FROM_PEER with the sender's host id; everything else is dropped by reason, truncated input at
/// every length among it; and encapsulate → decapsulate is a round trip.
@Suite("decapsulate stage")
struct DecapsulateTests {
    typealias F = TunnelFixtures
    static let peerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02] // host 2's uplink
    static let port0MAC: [UInt8] = [0x02, 0xcc, 0, 0, 0, 0x00]
    static let port1MAC: [UInt8] = [0x02, 0xcc, 0, 0, 0, 0x01]
    static let ports = [
        PortDescription(name: "uplink", portID: 0, mac: (0x02, 0xcc, 0, 0, 0, 0x00), socketID: 0),
        PortDescription(name: "second", portID: 1, mac: (0x02, 0xcc, 0, 0, 0, 0x01), socketID: 0),
    ]
    static let outerLink = Frames.Link(source: peerMAC, destination: port0MAC)

    static let innerTCP = Frames.ipv4TCP(source: F.client, destination: F.vip, sourcePort: 40000, destinationPort: 80,
                                         flags: [.ack], payload: Array("inner tcp".utf8), link: F.clientLink)
    static let innerUDP6 = Frames.ipv6UDP(source: F.client6, destination: F.vip6, sourcePort: 5300, destinationPort: 7000,
                                          payload: Array("inner udp6".utf8), link: F.clientLink)
    static let innerTagged = Frames.ipv4UDP(source: F.client, destination: F.vip, sourcePort: 7001, destinationPort: 9001,
                                            payload: [1, 2, 3], link: .init(source: F.routerMAC,
                                                                            destination: F.ourMAC, vlan: 33))

    static func vxlan(from source: [UInt8] = F.host2, vni: UInt32 = 42, port: UInt16 = 4789, inner: [UInt8],
                      checksum: Frames.UDPChecksum = .zero) -> [UInt8]
    {
        Frames.vxlan(outerSource: source, outerDestination: F.host1, sourcePort: 50000, destinationPort: port,
                     vni: vni, inner: inner, udpChecksum: checksum, link: outerLink)
    }

    static func gue(from source: [UInt8] = F.host2, innerFrame: [UInt8]) -> [UInt8] {
        Frames.gue(outerSource: source, outerDestination: F.host1, sourcePort: 50001, destinationPort: 6080,
                   inner: Frames.withoutEthernet(innerFrame), link: outerLink)
    }

    /// A GUE frame with a raw 4-byte GUE header, `options` after it, then `payload`.
    static func rawGUE(first: UInt8, proto: UInt8, options: [UInt8] = [], payload: [UInt8]) -> [UInt8] {
        let udp = Frames.udpDatagram(source: F.host2, destination: F.host1, sourcePort: 50002, destinationPort: 6080,
                                     payload: [first, proto, 0, 0] + options + payload, checksum: .zero)
        return Frames.ipFrame(Frames.ipv4Packet(source: F.host2, destination: F.host1, protocol: 17, payload: udp),
                              link: outerLink)
    }

    /// The frame decapsulate makes of a GUE inner packet: a fresh Ethernet header in front.
    static func gueResult(_ innerFrame: [UInt8], portMAC: [UInt8] = port0MAC, source: [UInt8] = peerMAC) -> [UInt8] {
        let ip = Frames.withoutEthernet(innerFrame)
        return Frames.ethernet(link: .init(source: source, destination: portMAC),
                               etherType: ip[0] >> 4 == 6 ? Frames.EtherType.ipv6 : Frames.EtherType.ipv4, payload: ip)
    }

    static func harness(kind: String = "vxlan", script: MetaScript) throws -> StageHarness<Decapsulate> {
        try StageHarness<Decapsulate>(ports: ports, cluster: F.cluster(kind: kind), prepare: { script.apply($0) })
    }

    // MARK: - VXLAN

    @Test("VXLAN from a peer: the inner frame byte for byte (IPv4, IPv6, 802.1Q; zero and computed checksums)")
    func vxlan() throws {
        let script = MetaScript(defaultPeer: 2)
        let harness = try Self.harness(script: script)
        let inners = [Self.innerTCP, Self.innerUDP6, Self.innerTagged]
        harness.push(inners.map { Self.vxlan(inner: $0) } + inners.map { Self.vxlan(inner: $0, checksum: .computed) })
        #expect(harness.output(.inner) == inners + inners)
        #expect(harness.counter(.decapsulated) == 6)
        try harness.finish()
    }

    @Test("the metadata is reset to FROM_PEER and the sender's host id (from the outer source, not meta.peer)")
    func metadata() throws {
        let harness = try Self.harness(script: MetaScript())
        var stage = try Decapsulate(parameters: .init(), context: StageContext(
            instanceName: "test", lcoreID: 0, socketID: 0, burstSize: 32, ports: Self.ports, cluster: harness.cluster))
        let results = DirectRun.run(&stage, frames: [Self.vxlan(from: F.host7, inner: Self.innerTCP)]) { packet in
            F.describeTunnel(packet, peer: 3) // what classify said; the outer source says 7
            packet.meta.pointee.service = 5
            packet.meta.pointee.flow_hash = 77
        }
        #expect(results.count == 1)
        #expect(results[0].disposition == Decapsulate.Disposition.inner.rawValue)
        #expect(results[0].bytes == Self.innerTCP)
        let meta = results[0].meta
        #expect(meta.flags == UInt8(SY_META_FROM_PEER))
        #expect(meta.peer == 7)
        #expect(meta.l3 == 0 && meta.l4 == 0 && meta.family == 0 && meta.service == 0 && meta.flow_hash == 0)
    }

    @Test("outer Ethernet padding and bytes after the UDP payload are removed")
    func trailingBytes() throws {
        let harness = try Self.harness(script: MetaScript())
        harness.push([Self.vxlan(inner: Self.innerTCP) + [0, 0, 0, 0]])
        #expect(harness.output(.inner) == [Self.innerTCP])
        try harness.finish()
    }

    // MARK: - GUE

    @Test("GUE: IPv4 and IPv6 inner behind a fresh Ethernet header (input port's MAC, outer source MAC)")
    func gue() throws {
        let script = MetaScript(defaultPeer: 2)
        let harness = try Self.harness(kind: "gue", script: script)
        script.add(peer: 2, port: 1)
        script.add(peer: 2, port: 0)
        script.add(peer: 2) // no input port (0xffff in the harness): the first port's MAC
        script.add(peer: 2, port: 1)
        harness.push([Self.gue(innerFrame: Self.innerTCP), Self.gue(innerFrame: Self.innerUDP6),
                      Self.gue(innerFrame: Self.innerTagged),
                      Self.rawGUE(first: 0x02, proto: 4, options: Array(repeating: 0xee, count: 8),
                                  payload: Frames.withoutEthernet(Self.innerTCP))])
        #expect(harness.output(.inner) == [
            Self.gueResult(Self.innerTCP, portMAC: Self.port1MAC),
            Self.gueResult(Self.innerUDP6, portMAC: Self.port0MAC),
            Self.gueResult(Self.innerTagged, portMAC: Self.port0MAC), // the inner VLAN tag never crossed the tunnel
            Self.gueResult(Self.innerTCP, portMAC: Self.port1MAC), // 8 bytes of options skipped
        ])
        #expect(harness.counter(.decapsulated) == 4)
        try harness.finish()
        let decoded = try Tshark.assertWellFormed(frames: harness.output(.inner))
        #expect(decoded.map(\.protocols) == ["eth:ethertype:ip:tcp", "eth:ethertype:ipv6:udp:data",
                                             "eth:ethertype:ip:udp:data", "eth:ethertype:ip:tcp"])
    }

    @Test("GUE: other versions, control messages and protocols are dropped by name")
    func gueDrops() throws {
        let harness = try Self.harness(kind: "gue", script: MetaScript())
        let ipv4 = Frames.withoutEthernet(Self.innerTCP)
        let ipv6 = Frames.withoutEthernet(Self.innerUDP6)
        harness.push([
            Self.rawGUE(first: 0x40, proto: 4, payload: ipv4), // version 1
            Self.rawGUE(first: 0xc0, proto: 4, payload: ipv4), // version 3
            Self.rawGUE(first: 0x20, proto: 0, payload: [0, 0, 0, 0]), // control
            Self.rawGUE(first: 0x00, proto: 17, payload: ipv4),
            Self.rawGUE(first: 0x00, proto: 4, payload: ipv6),
            Self.rawGUE(first: 0x00, proto: 41, payload: ipv4),
            Self.rawGUE(first: 0x1f, proto: 4, payload: ipv4), // 124 bytes of options: past the end
            Self.rawGUE(first: 0x00, proto: 4, payload: Array(ipv4.prefix(19))), // less than an IPv4 header
            Self.rawGUE(first: 0x00, proto: 4, payload: []),
        ])
        #expect(harness.output(.drop).count == 9)
        #expect(harness.counter(.gueVersion) == 2)
        #expect(harness.counter(.gueControl) == 1)
        #expect(harness.counter(.gueProtocol) == 3)
        #expect(harness.counter(.truncated) == 3)
        try harness.finish()
    }

    // MARK: - Drops

    @Test("only from known peers: this host, unknown addresses and VIPs are unknown-peer")
    func unknownPeers() throws {
        let harness = try Self.harness(script: MetaScript())
        harness.push([Self.vxlan(from: F.host1, inner: Self.innerTCP), Self.vxlan(from: [198, 18, 0, 99], inner: Self.innerTCP),
                      Self.vxlan(from: F.vip, inner: Self.innerTCP), Self.vxlan(from: F.host3, inner: Self.innerTCP)])
        #expect(harness.counter(.unknownPeer) == 3)
        #expect(harness.output(.inner) == [Self.innerTCP])
        try harness.finish()
    }

    @Test("VXLAN: another VNI or no I flag is wrong-vni; short inner frames and lying lengths are truncated")
    func vxlanDrops() throws {
        let script = MetaScript()
        let harness = try Self.harness(script: script)
        var noIFlag = Self.vxlan(inner: Self.innerTCP)
        noIFlag[42] = 0
        var udpTooLong = Self.vxlan(inner: Self.innerTCP)
        udpTooLong[38] &+= 1 // UDP length past the IP packet
        var udpTooShort = Self.vxlan(inner: Self.innerTCP)
        udpTooShort[38] = 0
        udpTooShort[39] = 7
        var notTunnelPort = Self.vxlan(inner: Self.innerTCP)
        notTunnelPort[37] &+= 1
        var fragment = Self.vxlan(inner: Self.innerTCP)
        fragment[20] |= 0x20 // more fragments
        harness.push([
            Self.vxlan(vni: 43, inner: Self.innerTCP), Self.vxlan(vni: 0x2a_0000, inner: Self.innerTCP), noIFlag,
            Self.vxlan(inner: Array(Self.innerTCP.prefix(13))), udpTooLong, udpTooShort,
            notTunnelPort, fragment,
        ])
        #expect(harness.counter(.wrongVNI) == 3)
        #expect(harness.counter(.truncated) == 3)
        #expect(harness.counter(.malformed) == 2)
        #expect(harness.output(.inner).isEmpty)
        try harness.finish()
    }

    @Test("truncated at every length: each cut of a VXLAN and a GUE frame is dropped as truncated", arguments: ["vxlan", "gue"])
    func truncatedEverywhere(kind: String) throws {
        let frame = kind == "vxlan" ? Self.vxlan(inner: Self.innerTCP) : Self.gue(innerFrame: Self.innerTCP)
        let harness = try StageHarness<Decapsulate>(ports: Self.ports, cluster: F.cluster(kind: kind), prepare: { packet in
            // What classify said about the whole frame, before it was cut.
            packet.meta.pointee.l3 = 14
            packet.meta.pointee.l4 = 34
            packet.meta.pointee.family = 4
            packet.meta.pointee.protocol = 17
            packet.meta.pointee.peer = 2
        })
        let cuts = (0..<frame.count).map { Array(frame.prefix($0)) }
        harness.push(cuts + [frame])
        #expect(harness.counter(.truncated) == UInt64(frame.count))
        #expect(harness.output(.drop).count == frame.count)
        #expect(harness.output(.inner).count == 1)
        try harness.finish()
    }

    @Test("metadata that does not describe an outer IPv4/UDP packet is malformed")
    func malformedMetadata() throws {
        let script = MetaScript()
        let harness = try Self.harness(script: script)
        script.add(peer: 2, edit: { $0.meta.pointee.family = 0 })
        script.add(peer: 2, edit: { $0.meta.pointee.l4 = 20 })
        script.add(peer: 2, edit: { $0.meta.pointee.l3 = 2 })
        script.add(peer: 2, edit: { $0.meta.pointee.l3 = 18; $0.meta.pointee.l4 = 38 }) // not an IP header there
        harness.push(Array(repeating: Self.vxlan(inner: Self.innerTCP), count: 4))
        #expect(harness.counter(.malformed) == 4)
        try harness.finish()
    }

    @Test("parameters: none of its own, and the cluster section is required")
    func parameters() throws {
        #expect(throws: (any Error).self) {
            try StageHarness<Decapsulate>(parameters: "vni: 5", cluster: F.cluster())
        }
        let missing = #expect(throws: (any Error).self) { try StageHarness<Decapsulate>() }
        #expect(String(describing: missing).contains("cluster"))
    }

    // MARK: - Round trip

    @Test("encapsulate on host 1, decapsulate on host 2: the original frame comes back", arguments: ["vxlan", "gue"])
    func roundTrip(kind: String) throws {
        let originals = [Self.innerTCP, Self.innerUDP6, Self.innerTagged,
                         Frames.ipv6TCP(source: F.client6, destination: F.vip6, sourcePort: 1, destinationPort: 2,
                                        payload: Array(repeating: 0x5a, count: 1000), link: F.clientLink)]
        let sending = try StageHarness<Encapsulate>(parameters: "udp_checksum: true",
                                                    cluster: F.cluster(kind: kind, host2MAC: nil),
                                                    prepare: { MetaScript(defaultPeer: 2).apply($0) })
        sending.push(originals)
        try sending.finish()
        // What forward does between the hosts: real Ethernet addresses on the outer frame.
        let onTheWire = sending.output(.out).map { Self.port0MAC + Self.peerMAC + Array($0[12...]) }
        #expect(onTheWire.count == originals.count)

        let receiving = try StageHarness<Decapsulate>(ports: Self.ports, cluster: F.cluster(local: 2, kind: kind))
        var stage = try Decapsulate(parameters: .init(), context: StageContext(
            instanceName: "test", lcoreID: 0, socketID: 0, burstSize: 32, ports: Self.ports, cluster: receiving.cluster))
        let results = DirectRun.run(&stage, frames: onTheWire) { F.describeTunnel($0, peer: 1) }
        let expected = kind == "vxlan" ? originals : originals.map { Self.gueResult($0, source: Self.peerMAC) }
        #expect(results.map(\.bytes) == expected)
        #expect(results.allSatisfy { $0.disposition == Decapsulate.Disposition.inner.rawValue })
        #expect(results.allSatisfy { $0.meta.flags == UInt8(SY_META_FROM_PEER) && $0.meta.peer == 1 })
    }
}
