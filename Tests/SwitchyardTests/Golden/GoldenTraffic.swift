import SwitchyardPcap

/// The input captures of the golden test `Tests/Golden/host1`, with what should become of each
/// packet. Host 1 (198.18.0.11) of a two-host cluster; the router is 198.18.0.1 (02:00:00:00:00:01).
enum GoldenTraffic {
    static let router: [UInt8] = [2, 0, 0, 0, 0, 1]
    static let broadcast: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    /// net_pcap's MAC for port 0 (uplink) and 1 (backends): 02:70:63:61:70:NN ("pcap").
    static let uplinkMAC = Frames.netPcapMAC(0)
    static let backendsMAC = Frames.netPcapMAC(1)
    static let fromRouter = Frames.Link(source: router, destination: uplinkMAC)
    static let fromBackend = Frames.Link(source: [2, 0, 0, 0, 0x10, 0x10], destination: backendsMAC)

    static let host1: [UInt8] = [198, 18, 0, 11]
    static let host2: [UInt8] = [198, 18, 0, 12]
    static let vipWeb: [UInt8] = [198, 19, 0, 1]
    static let vipAPI: [UInt8] = [198, 19, 0, 2]
    static let vip6: [UInt8] = [0xfd, 0, 0, 0x19] + [UInt8](repeating: 0, count: 11) + [1]
    static let client6: [UInt8] = [0xfd, 0, 0, 1] + [UInt8](repeating: 0, count: 11) + [1]
    static let backend6: [UInt8] = [0xfd, 0, 1, 0] + [UInt8](repeating: 0, count: 11) + [0x10]

    /// One input packet and its expected fate (the stage and counter that decide it).
    struct Case {
        var frame: [UInt8]
        var fate: String
    }

    /// A web SYN (client 198.18.1.1 port 40011) with 76 bytes of data, cut into two IPv4 fragments
    /// (80 + 16 bytes of TCP segment, identification 1).
    static var fragmentedSYN: [[UInt8]] {
        let segment = Frames.tcpSegment(source: [198, 18, 1, 1], destination: vipWeb, sourcePort: 40011,
                                        destinationPort: 80, payload: Array(repeating: 1, count: 76))
        return [(Array(segment[0..<80]), Frames.IPv4Fields(moreFragments: true)),
                (Array(segment[80...]), Frames.IPv4Fields(fragmentOffset: 10))].map { piece, fields in
            Frames.ipFrame(Frames.ipv4Packet(source: [198, 18, 1, 1], destination: vipWeb, protocol: 6, payload: piece,
                                             fields: fields), link: fromRouter)
        }
    }

    static var uplink: [Case] {
        let client1: [UInt8] = [198, 18, 1, 1]
        let request = Array("GET / HTTP/1.1\r\nHost: vip\r\n\r\n".utf8)
        let syn = Frames.ipv4TCP(source: client1, destination: vipWeb, sourcePort: 40000, destinationPort: 80,
                                 flags: [.syn], link: fromRouter)
        let ourReply = Frames.ipv4TCP(source: vipWeb, destination: client1, sourcePort: 80, destinationPort: 40000,
                                      flags: [.ack], payload: Array(repeating: 0x61, count: 1400))
        let innerFromPeer = Frames.ipv4TCP(source: [198, 18, 1, 4], destination: vipWeb, sourcePort: 40003,
                                           destinationPort: 80, flags: [.ack], payload: request,
                                           link: Frames.Link(source: router, destination: [2, 0, 0, 0, 2, 1]))
        var badChecksum = Frames.ipv4UDP(source: [198, 18, 1, 9], destination: vipWeb, sourcePort: 1, destinationPort: 7000,
                                         link: fromRouter)
        badChecksum[24] ^= 0xff
        var shortIHL = Frames.ipv4TCP(source: [198, 18, 1, 9], destination: vipWeb, sourcePort: 2, destinationPort: 80,
                                      link: fromRouter)
        shortIHL[14] = 0x44
        var shortOffset = Frames.ipv4TCP(source: [198, 18, 1, 9], destination: vipWeb, sourcePort: 3, destinationPort: 80,
                                         link: fromRouter)
        shortOffset[14 + 20 + 12] = 0x40
        return [
            Case(frame: syn, fate: "web SYN, owned here: translated to 198.18.100.10:8080 → backends"),
            Case(frame: Frames.ipv4TCP(source: client1, destination: vipWeb, sourcePort: 40000, destinationPort: 80,
                                       flags: [.ack, .psh], payload: request, link: fromRouter),
                 fate: "web data of the same flow (hit) → backends"),
            Case(frame: Frames.ipv4UDP(source: [198, 18, 1, 2], destination: vipWeb, sourcePort: 5000, destinationPort: 7000,
                                       payload: Array("query".utf8), link: fromRouter),
                 fate: "game datagram: translated to 198.18.100.11:7700 → backends"),
            Case(frame: Frames.ipv6TCP(source: client6, destination: vip6, sourcePort: 40001, destinationPort: 80,
                                       flags: [.syn], link: fromRouter),
                 fate: "web6 SYN over IPv6 → fd00:100::10:8080 → backends"),
            Case(frame: Frames.ipv4TCP(source: [198, 18, 1, 3], destination: vipAPI, sourcePort: 40002, destinationPort: 443,
                                       flags: [.syn], link: fromRouter),
                 fate: "api SYN, backend on host 2: VXLAN (VNI 7) to 198.18.0.12 → uplink"),
            Case(frame: Frames.ipv4TCP(source: [198, 18, 1, 3], destination: vipAPI, sourcePort: 40004, destinationPort: 443,
                                       flags: [.ack], payload: Array(repeating: 0x62, count: 1460),
                                       ip: Frames.IPv4Fields(dontFragment: true), link: fromRouter),
                 fate: "api 1500-byte DF packet: too big once encapsulated → ICMP fragmentation needed → uplink"),
            Case(frame: Frames.arpRequest(senderMAC: router, senderIP: [198, 18, 0, 1], targetIP: vipWeb),
                 fate: "ARP who-has the VIP → ARP reply → uplink"),
            Case(frame: Frames.arpRequest(senderMAC: router, senderIP: [198, 18, 0, 1], targetIP: host1),
                 fate: "ARP who-has this host → ARP reply → uplink"),
            Case(frame: Frames.arpRequest(senderMAC: router, senderIP: [198, 18, 0, 1], targetIP: [198, 18, 0, 77]),
                 fate: "ARP for somebody else → other → exception"),
            Case(frame: Frames.icmpv4EchoRequest(source: client1, destination: vipWeb, identifier: 7, sequence: 1,
                                                 payload: Array("ping".utf8), link: fromRouter),
                 fate: "ping the VIP → echo reply → uplink"),
            Case(frame: Frames.icmpv4EchoRequest(source: client1, destination: host1, identifier: 8, sequence: 1,
                                                 link: fromRouter),
                 fate: "ping this host → echo reply → uplink"),
            Case(frame: Frames.icmpv6NeighborSolicitation(source: client6, target: vip6, sourceMAC: router),
                 fate: "ND solicitation for the IPv6 VIP → advertisement → uplink"),
            Case(frame: Frames.vxlan(outerSource: host2, outerDestination: host1, sourcePort: 50000, vni: 7,
                                     inner: innerFromPeer, link: fromRouter),
                 fate: "VXLAN from host 2: decapsulated, adopted (miss, pick here), translated → backends"),
            Case(frame: Frames.vxlan(outerSource: [198, 18, 0, 99], outerDestination: host1, vni: 7, inner: innerFromPeer,
                                     link: fromRouter),
                 fate: "VXLAN from an unknown host → drop classify tunnel-unknown-peer"),
            Case(frame: Frames.vxlan(outerSource: host2, outerDestination: host1, vni: 8, inner: innerFromPeer,
                                     link: fromRouter),
                 fate: "VXLAN with the wrong VNI → drop decap wrong-vni"),
            Case(frame: Frames.ipv4TCP(source: client1, destination: vipWeb, sourcePort: 40010, destinationPort: 22,
                                       link: fromRouter),
                 fate: "VIP port without a service → drop classify no-service"),
            Case(frame: Frames.gre(source: client1, destination: vipWeb, payload: Array(repeating: 0x45, count: 20),
                                   link: fromRouter),
                 fate: "GRE to the VIP → drop classify vip-protocol"),
            Case(frame: Frames.esp(source: client1, destination: vipWeb, spi: 0x1000, sequence: 1, link: fromRouter),
                 fate: "ESP to the VIP → drop classify vip-protocol"),
            // A web SYN with 76 bytes of data in two fragments, the later one first; and a later
            // fragment whose first never comes (held until shutdown).
            Case(frame: fragmentedSYN[1],
                 fate: "later fragment before its first → held by fragments, released with it, translated → backends"),
            Case(frame: fragmentedSYN[0],
                 fate: "first fragment to the VIP (a SYN) → fragments learns its flow → translated → backends"),
            Case(frame: Frames.ipFrame(Frames.ipv4Packet(source: client1, destination: vipWeb, protocol: 6,
                                                         payload: Array(repeating: 2, count: 16),
                                                         fields: Frames.IPv4Fields(identification: 77, fragmentOffset: 10)),
                                       link: fromRouter),
                 fate: "later fragment whose first never comes → held until shutdown → drop fragments hold-teardown"),
            Case(frame: Frames.truncated(syn, to: 30), fate: "cut inside the IPv4 header → drop classify truncated-ipv4"),
            Case(frame: shortIHL, fate: "IPv4 IHL 4 → drop classify ipv4-bad-header-length"),
            Case(frame: badChecksum, fate: "bad IPv4 header checksum → drop classify ipv4-bad-checksum"),
            Case(frame: shortOffset, fate: "TCP data offset 4 → drop classify tcp-bad-header"),
            Case(frame: Frames.icmpv4DestinationUnreachable(source: [198, 18, 0, 1], destination: vipWeb, code: 4,
                                                            nextHopMTU: 1400, original: Frames.withoutEthernet(ourReply),
                                                            originalLength: 28, link: fromRouter),
                 fate: "ICMP fragmentation needed about the web flow's reply → translated by the quoted flow → backends"),
            Case(frame: Frames.ipv4UDP(source: client1, destination: [198, 18, 5, 5], sourcePort: 1234, destinationPort: 9,
                                       link: fromRouter),
                 fate: "not ours → other → exception"),
            Case(frame: Frames.ipv4UDP(source: [198, 18, 0, 1], destination: host1, sourcePort: 1234, destinationPort: 9999,
                                       link: fromRouter),
                 fate: "UDP to this host → local → exception"),
            Case(frame: Frames.ipv4TCP(source: client1, destination: vipWeb, sourcePort: 40000, destinationPort: 80,
                                       flags: [.rst], link: fromRouter),
                 fate: "RST of the web flow, entry removed: translated → backends"),
            Case(frame: Frames.ipv4TCP(source: [198, 18, 100, 10], destination: [198, 18, 7, 7], sourcePort: 8080,
                                       destinationPort: 40000, flags: [.ack], link: fromRouter),
                 fate: "spoofed from web's bypass tuple, on the uplink → drop classify backend-source-on-uplink"),
            Case(frame: Frames.ipv4TCP(source: client1, destination: vipWeb, sourcePort: 40020, destinationPort: 80,
                                       flags: [.syn], link: Frames.Link(source: router, destination: broadcast)),
                 fate: "SYN to the VIP in a broadcast frame → drop classify link-broadcast-to-unicast-ip"),
            Case(frame: Frames.ipv6TCP(source: client6, destination: vip6, sourcePort: 40021, destinationPort: 80,
                                       flags: [.syn], link: Frames.Link(source: router, destination: [0x33, 0x33, 0, 0, 0, 1])),
                 fate: "SYN to the IPv6 VIP in a multicast frame → drop classify link-broadcast-to-unicast-ip"),
        ]
    }

    static var backends: [Case] {
        [
            Case(frame: Frames.ipv4TCP(source: [198, 18, 100, 10], destination: [198, 18, 1, 1], sourcePort: 8080,
                                       destinationPort: 40000, flags: [.syn, .ack], link: fromBackend),
                 fate: "web SYN-ACK: source back to 198.19.0.1:80, via the router → uplink"),
            Case(frame: Frames.ipv4UDP(source: [198, 18, 100, 11], destination: [198, 18, 1, 2], sourcePort: 7700,
                                       destinationPort: 5000, payload: Array("answer".utf8), link: fromBackend),
                 fate: "game answer: back to 198.19.0.1:7000 → uplink"),
            Case(frame: Frames.ipv6TCP(source: backend6, destination: client6, sourcePort: 8080, destinationPort: 40001,
                                       flags: [.syn, .ack], link: fromBackend),
                 fate: "web6 SYN-ACK: back to fd00:19::1:80 via fd00:18::1 → uplink"),
            Case(frame: Frames.icmpv4DestinationUnreachable(
                    source: [198, 18, 100, 11], destination: [198, 18, 1, 2], code: 3,
                    original: Frames.withoutEthernet(Frames.ipv4UDP(source: [198, 18, 1, 2], destination: [198, 18, 100, 11],
                                                                    sourcePort: 5000, destinationPort: 7700,
                                                                    payload: Array("query".utf8))),
                    link: fromBackend),
                 fate: "port unreachable from the game backend: quoted flow back to the VIP → uplink"),
            Case(frame: Frames.ipv4UDP(source: [198, 18, 100, 99], destination: [198, 18, 1, 2], sourcePort: 7,
                                       destinationPort: 7, link: fromBackend),
                 fate: "from an address that is no backend → other → exception"),
            Case(frame: Frames.ipv4UDP(source: [198, 18, 100, 11], destination: [198, 18, 1, 2], sourcePort: 7700,
                                       destinationPort: 5000, payload: Array("answer".utf8),
                                       link: Frames.Link(source: [2, 0, 0, 0, 0x10, 0x10], destination: broadcast)),
                 fate: "game answer in a broadcast frame → drop classify-backends link-broadcast-to-unicast-ip"),
        ]
    }
}
