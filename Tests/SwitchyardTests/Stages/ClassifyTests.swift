import CDPDK
import ClassifyStage
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

private let vlanFlag = Int(SY_META_VLAN)
private let fragmentFlag = Int(SY_META_FRAGMENT)
private let icmpErrorFlag = Int(SY_META_ICMP_ERROR)
private let replyFlag = Int(SY_META_REPLY)
private let fromPeerFlag = Int(SY_META_FROM_PEER)

@Suite("classify stage")
struct ClassifyTests {
    // MARK: - vip

    @Test("TCP to a service: vip, offsets, service, tcp_flags, flow hash; bytes untouched")
    func vipTCP() throws {
        let bench = try ClassifyBench()
        let frame = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                   flags: [.syn], payload: [1, 2, 3], link: Net.fromRouter)
        let record = bench.push(frame)
        #expect(record.disposition == .vip)
        #expect(bench.output(.vip) == [frame])
        #expect(record.meta.l3 == 14 && record.meta.l4 == 34 && record.meta.l3_end == 14 + 20 + 20 + 3)
        #expect(record.meta.family == 4 && record.meta.protocol == 6 && record.meta.tcp_flags == 0x02)
        #expect(record.meta.service == 1 && record.meta.backend == 0 && record.meta.flags == 0)
        #expect(record.meta.inner_l3 == 0 && record.meta.inner_l4 == 0)
        #expect(record.meta.flow_hash == Net.flowHash(client: Net.client, clientPort: 40000, vip: Net.vip, vipPort: 80,
                                                      protocol: 6))
        try bench.finish()
    }

    @Test("filter_mac: unicast frames for another MAC are dropped as not-our-mac; ours and broadcast pass")
    func filterMAC() throws {
        let bench = try ClassifyBench(parameters: "filter_mac: true")
        let ours = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                  link: Net.fromRouter)
        let theirs = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40001, destinationPort: 80,
                                    link: Frames.Link(source: Net.routerMAC, destination: [0x02, 0x53, 0x59, 0, 0, 0x99]))
        let broadcast = Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip)
        #expect(bench.push(ours).disposition == .vip)
        let dropped = bench.push(theirs)
        #expect(dropped.disposition == .drop && dropped.reason == .notOurMAC)
        #expect(bench.push(broadcast).disposition == .answer)
        #expect(bench.counter(.notOurMAC) == 1)
        try bench.finish()

        // Without it (the default), the same frame is classified as usual.
        let open = try ClassifyBench()
        #expect(open.push(theirs).disposition == .vip)
        try open.finish()
    }

    @Test("link-layer broadcast and multicast frames to a VIP, this host or from a backend are dropped (RFC 1122 3.3.6); ARP and ND still work")
    func linkBroadcastToUnicastIP() throws {
        let broadcast = Frames.Link(source: Net.routerMAC, destination: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        let multicast4 = Frames.Link(source: Net.routerMAC, destination: [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01])
        let multicast6 = Frames.Link(source: Net.routerMAC, destination: [0x33, 0x33, 0x00, 0x00, 0x00, 0x01])
        let inner = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80)
        let dropped = [
            Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80, link: broadcast),
            Frames.ipv4UDP(source: Net.client, destination: Net.vip, sourcePort: 5000, destinationPort: 53, link: multicast4),
            Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 41000, destinationPort: 443, link: multicast6),
            Frames.icmpv4EchoRequest(source: Net.client, destination: Net.vip, link: broadcast),
            Frames.ipv4UDP(source: Net.router, destination: Net.host, sourcePort: 1, destinationPort: 9999, link: broadcast),
            Frames.vxlan(outerSource: Net.peer, outerDestination: Net.host, vni: 7, inner: inner, link: broadcast),
        ]
        let passed = [
            Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip),
            Frames.icmpv6NeighborSolicitation(source: Net.client6, target: Net.vip6, sourceMAC: Net.routerMAC),
            // Not an address of the cluster: whether it is a (subnet) broadcast is the kernel's business.
            Frames.ipv4UDP(source: Net.client, destination: Net.stranger, sourcePort: 1, destinationPort: 2, link: broadcast),
        ]
        for parameters in ["filter_mac: true", "filter_mac: false"] {
            let bench = try ClassifyBench(parameters: parameters)
            let records = bench.push(dropped + passed)
            #expect(records.prefix(dropped.count).allSatisfy { $0.disposition == .drop && $0.reason == .linkBroadcastToUnicastIP },
                    "\(parameters)")
            #expect(records.suffix(passed.count).map(\.disposition) == [.answer, .answer, .other], "\(parameters)")
            #expect(bench.counter(.linkBroadcastToUnicastIP) == UInt64(dropped.count))
            try bench.finish()
        }
        // A backend's reply in a broadcast frame is not translated either.
        let backends = try ClassifyBench(parameters: "side: backends", inputPort: 1)
        let record = backends.push(Frames.ipv4TCP(source: Net.backend1, destination: Net.client, sourcePort: 8080,
                                                  destinationPort: 40000, flags: [.ack], link: broadcast))
        #expect(record.disposition == .drop && record.reason == .linkBroadcastToUnicastIP)
        try backends.finish()
    }

    @Test("side: uplink (the default) never gives reply: packets from a backend tuple are dropped as backend-source-on-uplink")
    func backendSourceOnUplink() throws {
        let query = Frames.ipv4Packet(source: Net.client, destination: Net.backend1, protocol: 17,
                                      payload: Frames.udpDatagram(source: Net.client, destination: Net.backend1,
                                                                  sourcePort: 5000, destinationPort: 5353, payload: [1, 2]))
        let spoofed = [
            // Anyone on the uplink sending from a bypass tuple would otherwise leave as the VIP.
            Frames.ipv4TCP(source: Net.backend1, destination: Net.stranger, sourcePort: 8080, destinationPort: 40000,
                           flags: [.ack], link: Net.fromRouter),
            Frames.ipv4UDP(source: Net.backend1, destination: Net.client, sourcePort: 5353, destinationPort: 5000,
                           link: Net.fromRouter),
            Frames.ipv6TCP(source: Net.backend6, destination: Net.client6, sourcePort: 8443, destinationPort: 41000,
                           link: Net.fromRouter),
            Frames.icmpv4DestinationUnreachable(source: Net.backend1, destination: Net.client, code: 3, original: query,
                                                link: Net.fromRouter),
        ]
        for parameters in ["{}", "side: uplink"] {
            let bench = try ClassifyBench(parameters: parameters)
            let records = bench.push(spoofed)
            #expect(records.allSatisfy { $0.disposition == .drop && $0.reason == .backendSourceOnUplink }, "\(parameters)")
            #expect(bench.counter(.backendSourceOnUplink) == UInt64(spoofed.count))
            #expect(bench.output(.reply).isEmpty)
            try bench.finish()
        }
        // The same packets on the backends side are replies.
        let backends = try ClassifyBench(parameters: "side: backends", inputPort: 1)
        #expect(backends.push(spoofed).allSatisfy { $0.disposition == .reply })
        try backends.finish()
    }

    @Test("UDP and IPv6 TCP services get their own service index")
    func vipUDPAndIPv6() throws {
        let bench = try ClassifyBench()
        let records = bench.push([
            Frames.ipv4UDP(source: Net.client, destination: Net.vip, sourcePort: 5000, destinationPort: 53, payload: [7]),
            Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 41000, destinationPort: 443),
        ])
        #expect(records.map(\.disposition) == [.vip, .vip])
        #expect(records[0].meta.service == 2 && records[0].meta.protocol == 17 && records[0].meta.tcp_flags == 0)
        #expect(records[0].meta.flow_hash == Net.flowHash(client: Net.client, clientPort: 5000, vip: Net.vip,
                                                          vipPort: 53, protocol: 17))
        #expect(records[1].meta.service == 3 && records[1].meta.family == 6)
        #expect(records[1].meta.l3 == 14 && records[1].meta.l4 == 54 && records[1].meta.l3_end == 74)
        #expect(records[1].meta.flow_hash == Net.flowHash(client: Net.client6, clientPort: 41000, vip: Net.vip6,
                                                          vipPort: 443, protocol: 6))
        #expect(bench.output(.vip).count == 2)
        try bench.finish()
    }

    @Test("an 802.1Q tag is flagged and shifts every offset by 4")
    func vipWithVLAN() throws {
        let bench = try ClassifyBench()
        let frame = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                   link: .init(source: Net.routerMAC, destination: Net.wireMAC, vlan: 100))
        let record = bench.push(frame)
        #expect(record.disposition == .vip)
        #expect(record.flags == vlanFlag)
        #expect(record.meta.l3 == 18 && record.meta.l4 == 38 && record.meta.l3_end == 58)
        #expect(record.meta.flow_hash == Net.flowHash(client: Net.client, clientPort: 40000, vip: Net.vip, vipPort: 80,
                                                      protocol: 6))
        try bench.finish()
    }

    @Test("every packet of a flow has the same flow hash; other flows differ")
    func flowHashIsPerFlow() throws {
        let bench = try ClassifyBench()
        func segment(_ port: UInt16, _ flags: Frames.TCPFlags, _ sequence: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
            Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: port, destinationPort: 80, flags: flags,
                           sequence: sequence, payload: payload)
        }
        let flow = [segment(40000, [.syn], 1), segment(40000, [.ack], 2), segment(40000, [.psh, .ack], 2, [1, 2, 3, 4]),
                    segment(40000, [.fin, .ack], 6), Frames.padded(segment(40000, [.rst], 7))]
        let records = bench.push(flow + [segment(40001, [.syn], 1)])
        #expect(records.allSatisfy { $0.disposition == .vip })
        let hashes = Set(records.prefix(5).map(\.meta.flow_hash))
        #expect(hashes == [Net.flowHash(client: Net.client, clientPort: 40000, vip: Net.vip, vipPort: 80, protocol: 6)])
        #expect(records[5].meta.flow_hash != records[0].meta.flow_hash)
        #expect(records.map(\.meta.tcp_flags) == [0x02, 0x10, 0x18, 0x11, 0x04, 0x02])
        try bench.finish()
    }

    @Test("TCP/UDP to a VIP port without a service is dropped as no-service")
    func noService() throws {
        let bench = try ClassifyBench()
        bench.push([
            Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 81),
            Frames.ipv4UDP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80),
            Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 40000, destinationPort: 80),
        ])
        #expect(bench.output(.drop).count == 3)
        #expect(bench.counter(.noService) == 3)
        try bench.finish()
    }

    @Test("GRE and ESP to a VIP are dropped as vip-protocol; GRE elsewhere is other")
    func greAndESP() throws {
        let bench = try ClassifyBench()
        let inner = Frames.ipv4Packet(source: Net.client, destination: Net.stranger, protocol: 17, payload: [0, 1, 0, 2, 0, 8, 0, 0])
        bench.push([
            Frames.gre(source: Net.client, destination: Net.vip, payload: inner),
            Frames.esp(source: Net.client, destination: Net.vip, spi: 0x1000, sequence: 1),
            Frames.esp(source: Net.client6, destination: Net.vip6, spi: 0x1001, sequence: 1),
            Frames.gre(source: Net.client, destination: Net.stranger, payload: inner),
        ])
        #expect(bench.counter(.vipProtocol) == 3)
        #expect(bench.output(.drop).count == 3)
        #expect(bench.output(.other).count == 1)
        try bench.finish()
    }

    @Test("ICMP to a VIP that is neither an echo request nor an error is dropped as vip-icmp-type")
    func vipICMPType() throws {
        let bench = try ClassifyBench()
        bench.push([
            Frames.icmpv4EchoReply(source: Net.client, destination: Net.vip),
            Frames.ipFrame(Frames.ipv4Packet(source: Net.client, destination: Net.vip, protocol: 1,
                                             payload: Frames.icmpv4Message(type: 13, code: 0, rest: [0, 1, 0, 1],
                                                                           body: [UInt8](repeating: 0, count: 12)))),
        ])
        #expect(bench.counter(.vipICMPType) == 2)
        try bench.finish()
    }

    // MARK: - ICMP errors about VIP flows

    @Test("an ICMP error to the VIP quoting a whole header is vip with the client's own flow hash")
    func icmpErrorToVIP() throws {
        let bench = try ClassifyBench()
        let fromClient = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80)
        // The VIP's SYN-ACK could not be delivered; a router says so, quoting it.
        let synAck = Frames.ipv4Packet(source: Net.vip, destination: Net.client, protocol: 6,
                                       payload: Frames.tcpSegment(source: Net.vip, destination: Net.client, sourcePort: 80,
                                                                  destinationPort: 40000, flags: [.syn, .ack]))
        let error = Frames.icmpv4DestinationUnreachable(source: Net.router, destination: Net.vip, code: 4, nextHopMTU: 1400,
                                                        original: synAck)
        let records = bench.push([fromClient, error])
        #expect(records.map(\.disposition) == [.vip, .vip])
        let meta = records[1].meta
        #expect(records[1].flags == icmpErrorFlag)
        #expect(meta.l4 == 34 && meta.inner_l3 == 42 && meta.inner_l4 == 62)
        #expect(meta.protocol == 6 && meta.service == 1 && meta.family == 4)
        #expect(meta.flow_hash == records[0].meta.flow_hash)
        #expect(bench.output(.vip) == [fromClient, error])
        try bench.finish()
    }

    @Test("an ICMPv6 packet too big to the VIP quoting a whole header is vip with the client's flow hash")
    func icmpv6ErrorToVIP() throws {
        let bench = try ClassifyBench()
        let fromClient = Frames.ipv6TCP(source: Net.client6, destination: Net.vip6, sourcePort: 41000, destinationPort: 443)
        let reply = Frames.ipv6Packet(source: Net.vip6, destination: Net.client6, nextHeader: 6,
                                      payload: Frames.tcpSegment(source: Net.vip6, destination: Net.client6, sourcePort: 443,
                                                                 destinationPort: 41000, flags: [.ack],
                                                                 payload: [UInt8](repeating: 9, count: 64)))
        let error = Frames.icmpv6PacketTooBig(source: Net.router6, destination: Net.vip6, mtu: 1280, original: reply)
        let records = bench.push([fromClient, error])
        #expect(records.map(\.disposition) == [.vip, .vip])
        #expect(records[1].flags == icmpErrorFlag)
        #expect(records[1].meta.inner_l3 == 14 + 40 + 8 && records[1].meta.inner_l4 == 14 + 40 + 8 + 40)
        #expect(records[1].meta.protocol == 6 && records[1].meta.service == 3)
        #expect(records[1].meta.flow_hash == records[0].meta.flow_hash)
        try bench.finish()
    }

    @Test("an ICMP error to the VIP quoting a packet no service sent is dropped as icmp-error-unmatched")
    func icmpErrorUnmatched() throws {
        let bench = try ClassifyBench()
        func quoting(source: [UInt8], port: UInt16) -> [UInt8] {
            let original = Frames.ipv4Packet(source: source, destination: Net.client, protocol: 6,
                                             payload: Frames.tcpSegment(source: source, destination: Net.client,
                                                                        sourcePort: port, destinationPort: 40000))
            return Frames.icmpv4TimeExceeded(source: Net.router, destination: Net.vip, original: original)
        }
        bench.push([quoting(source: Net.vip, port: 81), quoting(source: Net.stranger, port: 80)])
        #expect(bench.counter(.icmpErrorUnmatched) == 2)
        try bench.finish()
    }

    // MARK: - reply

    @Test("from a backend tuple: reply with the backend and its service")
    func reply() throws {
        let bench = try ClassifyBench(parameters: "side: backends", inputPort: 1)
        let records = bench.push([
            Frames.ipv4TCP(source: Net.backend1, destination: Net.client, sourcePort: 8080, destinationPort: 40000,
                           flags: [.syn, .ack]),
            Frames.ipv4TCP(source: Net.backend2, destination: Net.client, sourcePort: 8080, destinationPort: 40001,
                           flags: [.ack]),
            Frames.ipv4UDP(source: Net.backend1, destination: Net.client, sourcePort: 5353, destinationPort: 5000),
            Frames.ipv6TCP(source: Net.backend6, destination: Net.client6, sourcePort: 8443, destinationPort: 41000,
                           flags: [.ack]),
            // Not a backend tuple: the port differs.
            Frames.ipv4TCP(source: Net.backend1, destination: Net.client, sourcePort: 9999, destinationPort: 40000),
        ])
        #expect(records.map(\.disposition) == [.reply, .reply, .reply, .reply, .other])
        #expect(records.prefix(4).allSatisfy { $0.flags == replyFlag && $0.meta.flow_hash == 0 })
        #expect(records.map(\.meta.backend) == [1, 2, 3, 4, 0])
        #expect(records.map(\.meta.service) == [1, 1, 2, 3, 0])
        #expect(records[0].meta.tcp_flags == 0x12 && records[3].meta.l4 == 54)
        try bench.finish()
    }

    @Test("an ICMP error from a backend about a packet to its tuple is a reply with the quoted flow")
    func icmpErrorFromBackend() throws {
        let bench = try ClassifyBench(parameters: "side: backends", inputPort: 1)
        // The backend had no socket on 5353 for a (translated) query: port unreachable to the client.
        let query = Frames.ipv4Packet(source: Net.client, destination: Net.backend1, protocol: 17,
                                      payload: Frames.udpDatagram(source: Net.client, destination: Net.backend1,
                                                                  sourcePort: 5000, destinationPort: 5353, payload: [1, 2]))
        let error = Frames.icmpv4DestinationUnreachable(source: Net.backend1, destination: Net.client, code: 3,
                                                        original: query)
        let elsewhere = Frames.icmpv4DestinationUnreachable(source: Net.backend2, destination: Net.client, code: 3,
                                                            original: query)
        // backend1 does serve port 8080, but the quoted packet went to backend2's tuple.
        let toOther = Frames.ipv4Packet(source: Net.client, destination: Net.backend2, protocol: 6,
                                        payload: Frames.tcpSegment(source: Net.client, destination: Net.backend2,
                                                                   sourcePort: 40000, destinationPort: 8080))
        let misattributed = Frames.icmpv4DestinationUnreachable(source: Net.backend1, destination: Net.client, code: 3,
                                                                original: toOther)
        let records = bench.push([error, elsewhere, misattributed])
        #expect(records.map(\.disposition) == [.reply, .other, .other])
        #expect(records[0].flags == icmpErrorFlag | replyFlag)
        #expect(records[0].meta.protocol == 17 && records[0].meta.backend == 3 && records[0].meta.service == 2)
        #expect(records[0].meta.inner_l3 == 42 && records[0].meta.inner_l4 == 62)
        try bench.finish()
    }

    // MARK: - tunnel

    @Test("VXLAN to this host from a peer host is tunnel with the peer's id; from anyone else a drop")
    func tunnel() throws {
        let bench = try ClassifyBench()
        let inner = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80)
        let fromPeer = Frames.vxlan(outerSource: Net.peer, outerDestination: Net.host, vni: 7, inner: inner)
        let fromStranger = Frames.vxlan(outerSource: Net.stranger, outerDestination: Net.host, vni: 7, inner: inner)
        let records = bench.push([fromPeer, fromStranger])
        #expect(records[0].disposition == .tunnel)
        #expect(records[0].meta.peer == 2 && records[0].meta.protocol == 17 && records[0].meta.service == 0)
        #expect(records[1].disposition == .drop && records[1].reason == .tunnelUnknownPeer)
        #expect(bench.output(.tunnel) == [fromPeer])
        #expect(bench.counter(.tunnelUnknownPeer) == 1)
        try bench.finish()
    }

    // MARK: - local and other

    @Test("other traffic to this host's address is local; traffic for anyone else is other")
    func localAndOther() throws {
        let bench = try ClassifyBench()
        let records = bench.push([
            Frames.ipv4TCP(source: Net.client, destination: Net.host, sourcePort: 50000, destinationPort: 22),
            Frames.ipv4UDP(source: Net.peer, destination: Net.host, sourcePort: 4789, destinationPort: 4790),
            Frames.ipv4TCP(source: Net.client, destination: Net.stranger, sourcePort: 50000, destinationPort: 80),
            Frames.ipv4TCP(source: Net.client, destination: Net.peer, sourcePort: 50000, destinationPort: 22),
            // A peer host talking to a backend directly (a health check): its answer is not a reply.
            Frames.ipv4TCP(source: Net.backend1, destination: Net.peer, sourcePort: 8080, destinationPort: 50000),
            Frames.ipv6UDP(source: Net.client6, destination: Net.ip("fd00:99::1"), sourcePort: 1, destinationPort: 2),
        ])
        #expect(records.map(\.disposition) == [.local, .local, .other, .other, .other, .other])
        #expect(records[0].meta.l4 == 34 && records[0].meta.service == 0 && records[0].meta.flow_hash == 0)
        try bench.finish()
    }

    // MARK: - answer: ARP

    @Test("ARP requests for the VIP and the host address get byte-exact replies that tshark accepts")
    func arpAnswer() throws {
        let bench = try ClassifyBench()
        let requests = [
            Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip),
            Frames.padded(Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.host)),
            Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip, vlan: 100),
        ]
        let records = bench.push(requests)
        #expect(records.map(\.disposition) == [.answer, .answer, .answer])
        let expected = [
            Frames.arpReply(senderMAC: Net.wireMAC, senderIP: Net.vip, targetMAC: Net.routerMAC, targetIP: Net.router),
            Frames.padded(Frames.arpReply(senderMAC: Net.wireMAC, senderIP: Net.host, targetMAC: Net.routerMAC,
                                          targetIP: Net.router)),
            Frames.arpReply(senderMAC: Net.wireMAC, senderIP: Net.vip, targetMAC: Net.routerMAC, targetIP: Net.router,
                            vlan: 100),
        ]
        #expect(bench.output(.answer) == expected)
        #expect(records[2].flags == vlanFlag)
        #expect(bench.counter(.answeredARP) == 3)
        let decoded = try Tshark.assertWellFormed(frames: bench.output(.answer), fields: ["arp.src.proto_ipv4"])
        #expect(decoded.map { $0.field("arp.opcode") } == ["2", "2", "2"])
        #expect(decoded.map { $0.field("arp.src.proto_ipv4") } == ["198.19.0.1", "198.18.0.11", "198.19.0.1"])
        try bench.finish()
    }

    @Test("answers leave with the MAC of the port the request came in on")
    func answerUsesInputPortMAC() throws {
        let bench = try ClassifyBench(inputPort: 1)
        bench.push([Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip)])
        #expect(bench.output(.answer) == [Frames.arpReply(senderMAC: Net.backendPortMAC, senderIP: Net.vip,
                                                          targetMAC: Net.routerMAC, targetIP: Net.router)])
        try bench.finish()
    }

    @Test("ARP for other addresses is other; ARP for an owned address with answer: false is local")
    func arpNotAnswered() throws {
        let bench = try ClassifyBench()
        let records = bench.push([
            Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.stranger),
            Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.peer),
            Frames.arpReply(senderMAC: Net.clientMAC, senderIP: Net.client, targetMAC: Net.routerMAC, targetIP: Net.router),
        ])
        #expect(records.map(\.disposition) == [.other, .other, .other])
        #expect(bench.output(.other) == records.map(\.bytes)) // untouched
        try bench.finish()

        let silent = try ClassifyBench(parameters: "answer: false")
        let request = Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip)
        let replyToUs = Frames.arpReply(senderMAC: Net.clientMAC, senderIP: Net.client, targetMAC: Net.wireMAC,
                                        targetIP: Net.host)
        #expect(silent.push([request, replyToUs]).map(\.disposition) == [.local, .local])
        #expect(silent.output(.local) == [request, replyToUs])
        #expect(silent.counter(.answeredARP) == 0)
        try silent.finish()
    }

    // MARK: - answer: neighbour discovery

    @Test("a neighbour solicitation for the IPv6 VIP gets a byte-exact advertisement that tshark accepts")
    func neighborAdvertisement() throws {
        let bench = try ClassifyBench()
        let solicitation = Frames.icmpv6NeighborSolicitation(source: Net.router6, target: Net.vip6, sourceMAC: Net.routerMAC)
        let record = bench.push(solicitation)
        #expect(record.disposition == .answer)
        let advertisement = Frames.icmpv6Message(source: Net.vip6, destination: Net.router6, type: 136, code: 0,
                                                 body: [0x60, 0, 0, 0] + Net.vip6 + [2, 1] + Net.wireMAC)
        let expected = Frames.ipFrame(Frames.ipv6Packet(source: Net.vip6, destination: Net.router6, nextHeader: 58,
                                                        payload: advertisement, fields: .init(hopLimit: 255)),
                                      link: .init(source: Net.wireMAC, destination: Net.routerMAC))
        #expect(bench.output(.answer) == [expected])
        #expect(bench.counter(.answeredND) == 1)
        let decoded = try Tshark.assertWellFormed(frames: bench.output(.answer),
                                                  fields: ["icmpv6.nd.na.target_address", "icmpv6.nd.na.flag.s",
                                                           "icmpv6.nd.na.flag.o", "icmpv6.opt.linkaddr"])
        #expect(decoded[0].field("icmpv6.type") == "136")
        #expect(decoded[0].field("icmpv6.nd.na.target_address") == "fd00:19::1")
        #expect(decoded[0].field("icmpv6.opt.linkaddr") == "02:53:59:00:00:01")
        // A solicitation with trailing padding: the advertisement is cut to its own length.
        #expect(bench.push(Frames.padded(solicitation, to: 200)).disposition == .answer)
        #expect(bench.output(.answer) == [expected, expected])
        try bench.finish()
    }

    @Test("duplicate address detection for the VIP is answered to all nodes, S clear; VLAN kept")
    func neighborAdvertisementForDAD() throws {
        let bench = try ClassifyBench()
        let probe = Frames.icmpv6NeighborSolicitation(source: [UInt8](repeating: 0, count: 16), target: Net.vip6,
                                                      sourceMAC: Net.clientMAC, vlan: 7)
        let record = bench.push(probe)
        #expect(record.disposition == .answer && record.flags == vlanFlag)
        let allNodes = Net.ip("ff02::1")
        let advertisement = Frames.icmpv6Message(source: Net.vip6, destination: allNodes, type: 136, code: 0,
                                                 body: [0x20, 0, 0, 0] + Net.vip6 + [2, 1] + Net.wireMAC)
        let expected = Frames.ipFrame(Frames.ipv6Packet(source: Net.vip6, destination: allNodes, nextHeader: 58,
                                                        payload: advertisement, fields: .init(hopLimit: 255)),
                                      link: .init(source: Net.wireMAC, destination: [0x33, 0x33, 0, 0, 0, 1], vlan: 7))
        #expect(bench.output(.answer) == [expected])
        try Tshark.assertWellFormed(frames: bench.output(.answer))
        #expect(bench.neighbors.isEmpty) // :: is nobody
        try bench.finish()
    }

    @Test("solicitations for other addresses are other; with answer: false an owned target is local")
    func neighborSolicitationNotAnswered() throws {
        let bench = try ClassifyBench()
        let forStranger = Frames.icmpv6NeighborSolicitation(source: Net.router6, target: Net.ip("fd00:99::1"),
                                                            sourceMAC: Net.routerMAC)
        #expect(bench.push(forStranger).disposition == .other)
        #expect(bench.output(.other) == [forStranger])
        try bench.finish()

        let silent = try ClassifyBench(parameters: "answer: false")
        let forVIP = Frames.icmpv6NeighborSolicitation(source: Net.router6, target: Net.vip6, sourceMAC: Net.routerMAC)
        #expect(silent.push(forVIP).disposition == .local)
        #expect(silent.output(.local) == [forVIP])
        try silent.finish()
    }

    @Test("neighbour discovery that fails RFC 4861 checks is dropped as malformed-nd")
    func malformedND() throws {
        let bench = try ClassifyBench()
        let good = Frames.icmpv6NeighborSolicitation(source: Net.router6, target: Net.vip6, sourceMAC: Net.routerMAC)
        let hopLimit64 = good.with(14 + 7, [64]) // not covered by the checksum
        let badChecksum = good.with(14 + 40 + 2, [good[56] ^ 0xff])
        let zeroLengthOption = good.with(14 + 40 + 25, [0]) // option length 0: checksum fixed below
        let sum = Frames.transportChecksum(source: Net.router6, destination: Array(good[38..<54]), protocol: 58,
                                           segment: Array(zeroLengthOption[54...]).with(2, [0, 0]))
        let fixed = zeroLengthOption.with(56, [UInt8(sum >> 8), UInt8(sum & 0xff)])
        bench.push([hopLimit64, badChecksum, fixed])
        #expect(bench.counter(.malformedND) == 3)
        #expect(bench.neighbors.isEmpty)
        try bench.finish()
    }

    // MARK: - answer: echo

    @Test("echo requests to the VIPs and the host get byte-exact echo replies that tshark accepts")
    func echoAnswer() throws {
        let bench = try ClassifyBench()
        let requests = [
            Frames.icmpv4EchoRequest(source: Net.client, destination: Net.vip, identifier: 0x1234, sequence: 7,
                                     payload: Array("ping".utf8), ip: .init(ttl: 57, identification: 99),
                                     link: Net.fromRouter),
            Frames.icmpv4EchoRequest(source: Net.client, destination: Net.host, identifier: 1, sequence: 1,
                                     ip: .init(ttl: 200), link: .init(source: Net.routerMAC, destination: Net.wireMAC,
                                                                      vlan: 5)),
            Frames.icmpv6EchoRequest(source: Net.client6, destination: Net.vip6, identifier: 0x4321, sequence: 9,
                                     payload: [1, 2, 3], ip: .init(hopLimit: 50), link: Net.fromRouter),
        ]
        let records = bench.push(requests)
        #expect(records.map(\.disposition) == [.answer, .answer, .answer])
        let expected = [
            Frames.icmpv4EchoReply(source: Net.vip, destination: Net.client, identifier: 0x1234, sequence: 7,
                                   payload: Array("ping".utf8), ip: .init(ttl: 64, identification: 99),
                                   link: .init(source: Net.wireMAC, destination: Net.routerMAC)),
            Frames.icmpv4EchoReply(source: Net.host, destination: Net.client, identifier: 1, sequence: 1,
                                   ip: .init(ttl: 64), link: .init(source: Net.wireMAC, destination: Net.routerMAC,
                                                                   vlan: 5)),
            Frames.icmpv6EchoReply(source: Net.vip6, destination: Net.client6, identifier: 0x4321, sequence: 9,
                                   payload: [1, 2, 3], ip: .init(hopLimit: 64),
                                   link: .init(source: Net.wireMAC, destination: Net.routerMAC)),
        ]
        #expect(bench.output(.answer) == expected)
        #expect(bench.counter(.answeredEcho) == 3)
        let decoded = try Tshark.assertWellFormed(frames: bench.output(.answer))
        #expect(decoded.map { $0.field("icmp.type") ?? $0.field("icmpv6.type") } == ["0", "0", "129"])
        try bench.finish()
    }

    @Test("with answer: false an echo request to the VIP is other, to the host local")
    func echoNotAnswered() throws {
        let bench = try ClassifyBench(parameters: "answer: false")
        let records = bench.push([
            Frames.icmpv4EchoRequest(source: Net.client, destination: Net.vip),
            Frames.icmpv4EchoRequest(source: Net.client, destination: Net.host),
        ])
        #expect(records.map(\.disposition) == [.other, .local])
        try bench.finish()
    }

    // MARK: - neighbour learning

    @Test("neighbours that ARP or solicit an owned address are learned; strangers are not; known ones are refreshed")
    func learning() throws {
        let bench = try ClassifyBench()
        bench.push([
            Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip),
            Frames.icmpv6NeighborSolicitation(source: Net.router6, target: Net.vip6, sourceMAC: Net.routerMAC),
            // Between strangers: not learned.
            Frames.arpRequest(senderMAC: Net.clientMAC, senderIP: Net.client, targetIP: Net.stranger),
        ])
        #expect(bench.neighbor(Net.router) == Net.routerMAC)
        #expect(bench.neighbor(Net.router6) == Net.routerMAC)
        #expect(bench.neighbor(Net.client) == nil)
        #expect(bench.counter(.neighborLearned) == 2)

        // The router moves to a new MAC and announces it (gratuitous ARP): known, so refreshed.
        let newMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x0a, 0x02]
        #expect(bench.push(Frames.gratuitousARP(senderMAC: newMAC, senderIP: Net.router)).disposition == .other)
        #expect(bench.neighbor(Net.router) == newMAC)
        // An advertisement to the VIP (answering a solicitation of ours) teaches its target.
        let advertisement = Frames.icmpv6Message(source: Net.backend6, destination: Net.vip6, type: 136, code: 0,
                                                 body: [0x60, 0, 0, 0] + Net.backend6 + [2, 1] + Net.clientMAC)
        let na = Frames.ipFrame(Frames.ipv6Packet(source: Net.backend6, destination: Net.vip6, nextHeader: 58,
                                                  payload: advertisement, fields: .init(hopLimit: 255)))
        #expect(bench.push(na).disposition == .local)
        #expect(bench.neighbor(Net.backend6) == Net.clientMAC)
        #expect(bench.counter(.neighborLearned) == 4)
        try bench.finish()

        let forgetful = try ClassifyBench(parameters: "learn_neighbors: false")
        forgetful.push([Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip)])
        #expect(forgetful.neighbors.isEmpty)
        #expect(forgetful.output(.answer).count == 1)
        try forgetful.finish()
    }

    // MARK: - input: tunnel

    /// The metadata decapsulate leaves: from peer 2, plus stale fields classify must clear.
    private static func decapsulated(_ packet: Packet) {
        packet.meta.pointee.flags = UInt8(SY_META_FROM_PEER) | UInt8(SY_META_REPLY)
        packet.meta.pointee.peer = 2
        packet.meta.pointee.service = 77
        packet.meta.pointee.flow_hash = 0xdead_beef
        packet.meta.pointee.has_target = 1
    }

    @Test("input: tunnel keeps from-peer and peer, re-parses the inner frame; VIP flows are vip")
    func tunnelInputVIP() throws {
        let bench = try ClassifyBench(parameters: "input: tunnel", prepare: Self.decapsulated)
        let inner = Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 40000, destinationPort: 80,
                                   flags: [.ack])
        let synAck = Frames.ipv4Packet(source: Net.vip, destination: Net.client, protocol: 6,
                                       payload: Frames.tcpSegment(source: Net.vip, destination: Net.client, sourcePort: 80,
                                                                  destinationPort: 40000, flags: [.syn, .ack]))
        let error = Frames.icmpv4DestinationUnreachable(source: Net.router, destination: Net.vip, code: 4, nextHopMTU: 1400,
                                                        original: synAck)
        let records = bench.push([inner, error])
        #expect(records.map(\.disposition) == [.vip, .vip])
        #expect(records[0].flags == fromPeerFlag && records[0].meta.peer == 2)
        #expect(records[0].meta.service == 1 && records[0].meta.has_target == 0 && records[0].meta.tcp_flags == 0x10)
        #expect(records[0].meta.flow_hash == Net.flowHash(client: Net.client, clientPort: 40000, vip: Net.vip,
                                                          vipPort: 80, protocol: 6))
        #expect(records[1].flags == fromPeerFlag | icmpErrorFlag && records[1].meta.peer == 2)
        #expect(records[1].meta.flow_hash == records[0].meta.flow_hash)
        try bench.finish()
    }

    @Test("input: tunnel drops everything that is not VIP traffic, and tunnels in tunnels")
    func tunnelInputRest() throws {
        let bench = try ClassifyBench(parameters: "input: tunnel", prepare: Self.decapsulated)
        let vxlanInside = Frames.vxlan(outerSource: Net.peer, outerDestination: Net.host, vni: 7,
                                       inner: Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 1,
                                                             destinationPort: 80))
        let records = bench.push([
            vxlanInside,
            Frames.ipv4TCP(source: Net.client, destination: Net.host, sourcePort: 50000, destinationPort: 22),
            Frames.ipv4TCP(source: Net.backend1, destination: Net.client, sourcePort: 8080, destinationPort: 40000),
            Frames.ipv4TCP(source: Net.client, destination: Net.stranger, sourcePort: 50000, destinationPort: 80),
            Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip),
            Frames.icmpv4EchoRequest(source: Net.client, destination: Net.vip),
            Frames.icmpv6NeighborSolicitation(source: Net.router6, target: Net.vip6, sourceMAC: Net.routerMAC),
            Frames.ethernet(etherType: 0x88cc, payload: [UInt8](repeating: 0, count: 46)),
        ])
        #expect(records.map(\.reason) == [.nestedTunnel] + Array(repeating: .tunnelNotVIP, count: 7))
        #expect(bench.counter(.nestedTunnel) == 1 && bench.counter(.tunnelNotVIP) == 7)
        #expect(bench.neighbors.isEmpty)
        // Malformed and VIP-specific drops keep their own reasons inside a tunnel.
        bench.push([
            Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 1, destinationPort: 81),
            Frames.truncated(Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: 1, destinationPort: 80), to: 30),
        ])
        #expect(bench.counter(.noService) == 1 && bench.counter(.truncatedIPv4) == 1)
        try bench.finish()
    }

    // MARK: - bursts

    @Test("a mixed stream in bursts: every packet gets exactly one disposition")
    func mixedBursts() throws {
        let bench = try ClassifyBench(parameters: "side: backends", burstSize: 8)
        var frames: [[UInt8]] = []
        for index in 0..<50 {
            let port = UInt16(40000 + index)
            switch index % 5 {
            case 0: frames.append(Frames.ipv4TCP(source: Net.client, destination: Net.vip, sourcePort: port, destinationPort: 80))
            case 1: frames.append(Frames.ipv4TCP(source: Net.backend1, destination: Net.client, sourcePort: 8080,
                                                 destinationPort: port))
            case 2: frames.append(Frames.arpRequest(senderMAC: Net.routerMAC, senderIP: Net.router, targetIP: Net.vip))
            case 3: frames.append(Frames.truncated(Frames.ipv4UDP(source: Net.client, destination: Net.vip, sourcePort: port,
                                                                  destinationPort: 53), to: 20))
            default: frames.append(Frames.ipv4UDP(source: Net.client, destination: Net.stranger, sourcePort: port,
                                                  destinationPort: 53))
            }
        }
        bench.push(frames)
        #expect(bench.harness.dispositionCounts == ["drop": 10, "vip": 10, "reply": 10, "tunnel": 0, "answer": 10,
                                                    "local": 0, "other": 10])
        #expect(bench.counter(.truncatedIPv4) == 10)
        try bench.finish()
    }

    // MARK: - parameters

    @Test("parameters: unknown keys, a missing cluster and bad combinations are rejected by name")
    func parameters() throws {
        func message(_ body: () throws -> Void) -> String {
            do { try body() } catch { return String(describing: error) }
            return "no error"
        }
        let unknown = message { _ = try StageHarness<Classify>(parameters: "anser: true", ports: Net.ports, cluster: Net.cluster) }
        #expect(unknown.contains("key 'anser'") && unknown.contains("unknown key"))
        let noCluster = message { _ = try StageHarness<Classify>(parameters: "{}", ports: Net.ports) }
        #expect(noCluster.contains("key 'kind'") && noCluster.contains("classify needs the `cluster:` section"))
        let badInput = message { _ = try StageHarness<Classify>(parameters: "input: gre", ports: Net.ports, cluster: Net.cluster) }
        #expect(badInput.contains("key 'input'") && badInput.contains("not one of: wire, tunnel"))
        let pointless = message {
            _ = try StageHarness<Classify>(parameters: "{input: tunnel, answer: true}", ports: Net.ports, cluster: Net.cluster)
        }
        #expect(pointless.contains("key 'answer'") && pointless.contains("no effect with input: tunnel"))
        let notBool = message { _ = try StageHarness<Classify>(parameters: "learn_neighbors: 1", ports: Net.ports, cluster: Net.cluster) }
        #expect(notBool.contains("key 'learn_neighbors'"))
        let badSide = message { _ = try StageHarness<Classify>(parameters: "side: client", ports: Net.ports, cluster: Net.cluster) }
        #expect(badSide.contains("key 'side'") && badSide.contains("not one of: uplink, backends"))
        let sideInTunnel = message {
            _ = try StageHarness<Classify>(parameters: "{input: tunnel, side: backends}", ports: Net.ports, cluster: Net.cluster)
        }
        #expect(sideInTunnel.contains("key 'side'") && sideInTunnel.contains("no effect with input: tunnel"))
        let noPorts = message { _ = try StageHarness<Classify>(parameters: "{}", cluster: Net.cluster) }
        #expect(noPorts.contains("needs a port"))
        // Without a cluster runtime at run time (parameters parsed with one), setup names the stage.
        let map = try ConfigDocument.parse("{}", file: "<test>")
        let configuration = try ClusterRuntimeFixture.configuration()
        let parameters = try Classify.Parameters(from: map, stage: StageParameterContext(instanceName: "edge", portNames: [],
                                                                                         cluster: configuration))
        let setup = message {
            _ = try Classify(parameters: parameters, context: StageContext(instanceName: "edge", lcoreID: 0, socketID: 0,
                                                                           burstSize: 32, ports: Net.ports))
        }
        #expect(setup.contains("stage 'edge' (classify) needs the `cluster:` section"))
        #expect(try StageHarness<Classify>(parameters: "{input: tunnel}", cluster: Net.cluster).burstSize == 32)
    }
}

enum ClusterRuntimeFixture {
    /// The test cluster's configuration, parsed.
    static func configuration() throws -> ClusterConfiguration {
        try ClusterConfiguration.parse(sectionBody: Net.cluster, file: "<test cluster>")
    }
}
