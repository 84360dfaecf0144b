import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing
import TupleTranslateStage

/// The metadata for each pushed packet, in push order (the harness's `prepare` takes one per packet).
final class MetaQueue {
    var pending: [sy_meta] = []
    private var next = 0

    func take() -> sy_meta {
        defer { next += 1 }
        return pending[next]
    }
}

/// sy_meta filled by hand, as classify (and ownership-lookup) would fill it, from offsets this
/// file computes from the frame it built.
enum HandClassify {
    static func be16(_ frame: [UInt8], _ offset: Int) -> Int { Int(frame[offset]) << 8 | Int(frame[offset + 1]) }

    /// Offsets, family, protocol and flags of an Ethernet frame (one optional VLAN tag, IPv4 with
    /// options, IPv6 without extension headers). `icmpError`: l4 is an ICMP error quoting a packet.
    static func layout(_ frame: [UInt8], icmpError: Bool = false) -> sy_meta {
        var meta = sy_meta()
        var l3 = 14
        var etherType = be16(frame, 12)
        if etherType == 0x8100 {
            meta.flags |= UInt8(SY_META_VLAN)
            etherType = be16(frame, 16)
            l3 = 18
        }
        meta.l3 = UInt16(l3)
        if etherType == 0x0800 {
            meta.family = 4
            meta.l3_end = UInt16(l3 + be16(frame, l3 + 2))
            meta.l4 = UInt16(l3 + Int(frame[l3] & 0x0f) * 4)
            meta.protocol = frame[l3 + 9]
            let fragment = be16(frame, l3 + 6) & 0x3fff
            if fragment != 0 {
                meta.flags |= UInt8(SY_META_FRAGMENT)
                if fragment & 0x1fff != 0 { meta.l4 = 0 }
            }
        } else {
            meta.family = 6
            meta.l3_end = UInt16(l3 + 40 + be16(frame, l3 + 4))
            meta.l4 = UInt16(l3 + 40)
            meta.protocol = frame[l3 + 6]
        }
        if icmpError {
            meta.flags |= UInt8(SY_META_ICMP_ERROR)
            let inner = Int(meta.l4) + 8
            meta.inner_l3 = UInt16(inner)
            if meta.family == 4 {
                meta.inner_l4 = UInt16(inner + Int(frame[inner] & 0x0f) * 4)
                meta.protocol = frame[inner + 9]
            } else {
                meta.inner_l4 = UInt16(inner + 40)
                meta.protocol = frame[inner + 6]
            }
        } else if meta.protocol == 6, meta.l4 != 0 {
            meta.tcp_flags = frame[Int(meta.l4) + 13]
        }
        return meta
    }

    /// The flow hash classify computes (FlowKeys over the client-side flow).
    static func flowHash(_ frame: [UInt8], _ meta: sy_meta) -> UInt32 {
        var key = sy_flow_key()
        var meta = meta
        frame.withUnsafeBytes { raw in
            withUnsafePointer(to: &meta) { FlowKeys.fill(&key, frame: raw.baseAddress!, meta: $0) }
        }
        return withUnsafePointer(to: &key) { FlowKeys.hash($0) }
    }
}

/// A tuple-translate stage on the harness with the test cluster, and the metadata it is given.
final class TranslateBench {
    static let cluster = """
        host: 1
        hosts:
          - {id: 1, address: 192.0.2.1}
          - {id: 2, address: 192.0.2.2}
        services:
          - name: web
            vip: 198.51.100.10
            protocol: tcp
            port: 80
            backends:
              - {host: 1, address: 10.1.0.1, port: 8080}
              - {host: 2, address: 10.1.0.2, port: 8081}
          - name: echo
            vip: 198.51.100.10
            protocol: udp
            port: 7000
            backends:
              - {host: 1, address: 10.1.0.3, port: 7700}
          - name: web6
            vip: "fd00:100::10"
            protocol: tcp
            port: 443
            backends:
              - {host: 1, address: "fd00:1::1", port: 8443}
          - name: echo6
            vip: "fd00:100::10"
            protocol: udp
            port: 7000
            backends:
              - {host: 2, address: "fd00:1::2", port: 7700}
          - name: drained
            vip: 198.51.100.20
            protocol: tcp
            port: 80
            backends:
              - {host: 1, address: 10.1.0.9, port: 80, weight: 0}
              - {host: 2, address: 10.1.0.10, port: 80, weight: 0}
          - name: weighted
            vip: 198.51.100.30
            protocol: tcp
            port: 80
            backends:
              - {host: 1, address: 10.2.0.1, port: 80, weight: 1}
              - {host: 1, address: 10.2.0.2, port: 80, weight: 1}
              - {host: 2, address: 10.2.0.3, port: 80, weight: 2}
        """

    let queue: MetaQueue
    let harness: StageHarness<TupleTranslate>

    init() throws {
        let queue = MetaQueue()
        self.queue = queue
        harness = try StageHarness<TupleTranslate>(cluster: Self.cluster, prepare: { packet in
            packet.meta.pointee = queue.take()
        })
    }

    var configuration: ClusterConfiguration { harness.cluster!.configuration }
    var view: ServiceView { harness.cluster!.directory.view }

    /// index + 1 of the service called `name`.
    func service(_ name: String) -> UInt16 {
        UInt16(configuration.services.firstIndex { $0.name == name }! + 1)
    }

    /// index + 1 (global) of the backend `address`:`port`.
    func backend(_ address: String, _ port: UInt16) -> UInt16 {
        let all = configuration.services.flatMap(\.backends)
        return UInt16(all.firstIndex { $0.address == IPAddress(address)! && $0.port == port }! + 1)
    }

    /// The backend Maglev picks for `hash` in `service`: (address bytes, port).
    func picked(service: String, hash: UInt32) -> (address: [UInt8], port: UInt16) {
        let index = Int(view.pick(service: Int(self.service(service)) - 1, flowHash: hash)!)
        let record = view.backends[index]
        return (record.address.bytes, UInt16(bigEndian: record.portNetworkOrder))
    }

    /// Metadata of a packet (or ICMP error) towards a VIP, optionally with a target from the table.
    func inbound(_ frame: [UInt8], service: String, icmpError: Bool = false,
                 target: (address: String, port: UInt16)? = nil) -> sy_meta
    {
        var meta = HandClassify.layout(frame, icmpError: icmpError)
        meta.service = self.service(service)
        meta.flow_hash = HandClassify.flowHash(frame, meta)
        if let target {
            let address = IPAddress(target.address)!
            meta.has_target = 1
            meta.target_high = address.high
            meta.target_low = address.low
            meta.target_port = target.port.bigEndian
            meta.backend = backend(target.address, target.port)
        }
        return meta
    }

    /// Metadata of a packet (or ICMP error) from backend `address`:`port` back to a client.
    func reply(_ frame: [UInt8], service: String, backend address: String, _ port: UInt16,
               icmpError: Bool = false) -> sy_meta
    {
        var meta = HandClassify.layout(frame, icmpError: icmpError)
        meta.flags |= UInt8(SY_META_REPLY)
        meta.service = self.service(service)
        meta.backend = backend(address, port)
        return meta
    }

    func push(_ items: [(frame: [UInt8], meta: sy_meta)]) {
        queue.pending += items.map(\.meta)
        harness.push(items.map(\.frame))
    }
}

@Suite("tuple-translate stage")
struct TupleTranslateTests {
    static let client: [UInt8] = [198, 18, 0, 1]
    static let vip: [UInt8] = [198, 51, 100, 10]
    static let router: [UInt8] = [203, 0, 113, 1]
    static let client6 = IPAddress("fd00:200::1")!.bytes
    static let vip6 = IPAddress("fd00:100::10")!.bytes
    static let router6 = IPAddress("fd00:ff::1")!.bytes
    static let payload = Array("tuple-translate test payload".utf8)

    static func ip(_ text: String) -> [UInt8] { IPAddress(text)!.bytes }

    /// Every output packet decodes cleanly in tshark with checksum validation on.
    static func assertWellFormed(_ frames: [[UInt8]]) throws {
        #expect(!frames.isEmpty)
        try Tshark.assertWellFormed(frames: frames)
    }

    // MARK: - Ordinary packets, byte-exact

    @Test("inbound IPv4 TCP: destination becomes the picked backend, checksums as built directly")
    func inboundIPv4TCP() throws {
        let bench = try TranslateBench()
        let frame = Frames.ipv4TCP(source: Self.client, destination: Self.vip, sourcePort: 40000, destinationPort: 80,
                                   flags: [.psh, .ack], sequence: 1000, acknowledgment: 2000, payload: Self.payload)
        let meta = bench.inbound(frame, service: "web")
        let chosen = bench.picked(service: "web", hash: meta.flow_hash)
        bench.push([(frame, meta)])
        let expected = Frames.ipv4TCP(source: Self.client, destination: chosen.address, sourcePort: 40000,
                                      destinationPort: chosen.port, flags: [.psh, .ack], sequence: 1000,
                                      acknowledgment: 2000, payload: Self.payload)
        #expect(bench.harness.output(.out) == [expected])
        #expect(bench.harness.counter(.inbound) == 1)
        #expect(bench.harness.counter(.picked) == 1)
        #expect(bench.harness.counter(.reply) == 0)
        try Self.assertWellFormed(bench.harness.output(.out))
        try bench.harness.finish()
    }

    @Test("inbound IPv4 UDP: with a checksum, with a zero checksum (stays zero), and one that comes out 0 (0xffff)")
    func inboundIPv4UDP() throws {
        let bench = try TranslateBench()
        let backend = Self.ip("10.1.0.3")
        let withSum = Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 5000, destinationPort: 7000,
                                     payload: Self.payload)
        let withoutSum = Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 5001,
                                        destinationPort: 7000, payload: Self.payload, checksum: .zero)
        // A payload word chosen so that the translated datagram sums to zero: its checksum is sent as 0xffff.
        let probe = Frames.udpDatagram(source: Self.client, destination: backend, sourcePort: 5002,
                                       destinationPort: 7700, payload: [0, 0])
        let zeroing = [probe[6], probe[7]]
        let sumsToZero = Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 5002,
                                        destinationPort: 7000, payload: zeroing)
        bench.push([withSum, withoutSum, sumsToZero].map { ($0, bench.inbound($0, service: "echo")) })

        let expected = [
            Frames.ipv4UDP(source: Self.client, destination: backend, sourcePort: 5000, destinationPort: 7700,
                           payload: Self.payload),
            Frames.ipv4UDP(source: Self.client, destination: backend, sourcePort: 5001, destinationPort: 7700,
                           payload: Self.payload, checksum: .zero),
            Frames.ipv4UDP(source: Self.client, destination: backend, sourcePort: 5002, destinationPort: 7700,
                           payload: zeroing),
        ]
        #expect(Array(expected[1][40..<42]) == [0, 0])
        #expect(Array(expected[2][40..<42]) == [0xff, 0xff])
        #expect(Array(sumsToZero[40..<42]) != [0xff, 0xff])
        #expect(bench.harness.output(.out) == expected)
        #expect(bench.harness.counter(.inbound) == 3)
        try Self.assertWellFormed(bench.harness.output(.out))
        try bench.harness.finish()
    }

    @Test("inbound IPv6 TCP and UDP: no header checksum, the L4 checksum follows the pseudo-header")
    func inboundIPv6() throws {
        let bench = try TranslateBench()
        let tcp = Frames.ipv6TCP(source: Self.client6, destination: Self.vip6, sourcePort: 40000, destinationPort: 443,
                                 payload: Self.payload)
        let udp = Frames.ipv6UDP(source: Self.client6, destination: Self.vip6, sourcePort: 5000, destinationPort: 7000,
                                 payload: Self.payload)
        bench.push([(tcp, bench.inbound(tcp, service: "web6")), (udp, bench.inbound(udp, service: "echo6"))])
        let expected = [
            Frames.ipv6TCP(source: Self.client6, destination: Self.ip("fd00:1::1"), sourcePort: 40000,
                           destinationPort: 8443, payload: Self.payload),
            Frames.ipv6UDP(source: Self.client6, destination: Self.ip("fd00:1::2"), sourcePort: 5000,
                           destinationPort: 7700, payload: Self.payload),
        ]
        #expect(bench.harness.output(.out) == expected)
        try Self.assertWellFormed(bench.harness.output(.out))
        try bench.harness.finish()
    }

    @Test("replies IPv4 and IPv6, TCP and UDP: the source becomes the VIP and the service port")
    func replies() throws {
        let bench = try TranslateBench()
        let backend = Self.ip("10.1.0.3")
        // A backend datagram whose checksum is the transmitted zero (0xffff) on the way in.
        let probe = Frames.udpDatagram(source: backend, destination: Self.client, sourcePort: 7700,
                                       destinationPort: 5002, payload: [0, 0])
        let zeroing = [probe[6], probe[7]]
        let inputs: [(frame: [UInt8], service: String, backend: String, port: UInt16)] = [
            (Frames.ipv4TCP(source: Self.ip("10.1.0.2"), destination: Self.client, sourcePort: 8081,
                            destinationPort: 40000, flags: [.syn, .ack], payload: Self.payload), "web", "10.1.0.2", 8081),
            (Frames.ipv4UDP(source: backend, destination: Self.client, sourcePort: 7700, destinationPort: 5000,
                            payload: Self.payload), "echo", "10.1.0.3", 7700),
            (Frames.ipv4UDP(source: backend, destination: Self.client, sourcePort: 7700, destinationPort: 5001,
                            payload: Self.payload, checksum: .zero), "echo", "10.1.0.3", 7700),
            (Frames.ipv4UDP(source: backend, destination: Self.client, sourcePort: 7700, destinationPort: 5002,
                            payload: zeroing), "echo", "10.1.0.3", 7700),
            (Frames.ipv6TCP(source: Self.ip("fd00:1::1"), destination: Self.client6, sourcePort: 8443,
                            destinationPort: 40000, flags: [.ack], payload: Self.payload), "web6", "fd00:1::1", 8443),
            (Frames.ipv6UDP(source: Self.ip("fd00:1::2"), destination: Self.client6, sourcePort: 7700,
                            destinationPort: 5000, payload: Self.payload), "echo6", "fd00:1::2", 7700),
        ]
        #expect(Array(inputs[3].frame[40..<42]) == [0xff, 0xff])
        bench.push(inputs.map { ($0.frame, bench.reply($0.frame, service: $0.service, backend: $0.backend, $0.port)) })
        let expected = [
            Frames.ipv4TCP(source: Self.vip, destination: Self.client, sourcePort: 80, destinationPort: 40000,
                           flags: [.syn, .ack], payload: Self.payload),
            Frames.ipv4UDP(source: Self.vip, destination: Self.client, sourcePort: 7000, destinationPort: 5000,
                           payload: Self.payload),
            Frames.ipv4UDP(source: Self.vip, destination: Self.client, sourcePort: 7000, destinationPort: 5001,
                           payload: Self.payload, checksum: .zero),
            Frames.ipv4UDP(source: Self.vip, destination: Self.client, sourcePort: 7000, destinationPort: 5002,
                           payload: zeroing),
            Frames.ipv6TCP(source: Self.vip6, destination: Self.client6, sourcePort: 443, destinationPort: 40000,
                           flags: [.ack], payload: Self.payload),
            Frames.ipv6UDP(source: Self.vip6, destination: Self.client6, sourcePort: 7000, destinationPort: 5000,
                           payload: Self.payload),
        ]
        let output = bench.harness.output(.out)
        #expect(output.count == expected.count)
        for (index, pair) in zip(output, expected).enumerated() {
            #expect(pair.0 == pair.1, "reply #\(index)")
        }
        #expect(bench.harness.counter(.reply) == 6)
        #expect(bench.harness.counter(.inbound) == 0)
        #expect(bench.harness.counter(.picked) == 0)
        try Self.assertWellFormed(output)
        try bench.harness.finish()
    }

    @Test("VLAN tags and IPv4 options: the offsets come from the metadata, inbound and reply")
    func vlanAndOptions() throws {
        let bench = try TranslateBench()
        let vlan = Frames.Link(vlan: 100)
        let options = Frames.IPv4Fields(identification: 7, options: [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00])
        let backend = Self.ip("10.1.0.3")
        let inputs: [(frame: [UInt8], meta: (([UInt8]) -> sy_meta))] = [
            (Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 5000, destinationPort: 7000,
                            payload: Self.payload, link: vlan), { bench.inbound($0, service: "echo") }),
            (Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 5000, destinationPort: 7000,
                            payload: Self.payload, ip: options), { bench.inbound($0, service: "echo") }),
            (Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 5000, destinationPort: 7000,
                            payload: Self.payload, ip: options, link: vlan), { bench.inbound($0, service: "echo") }),
            (Frames.ipv6TCP(source: Self.client6, destination: Self.vip6, sourcePort: 40000, destinationPort: 443,
                            link: vlan), { bench.inbound($0, service: "web6") }),
            (Frames.ipv4UDP(source: backend, destination: Self.client, sourcePort: 7700, destinationPort: 5000,
                            payload: Self.payload, ip: options, link: vlan),
             { bench.reply($0, service: "echo", backend: "10.1.0.3", 7700) }),
            (Frames.ipv6TCP(source: Self.ip("fd00:1::1"), destination: Self.client6, sourcePort: 8443,
                            destinationPort: 40000, flags: [.syn, .ack], link: vlan),
             { bench.reply($0, service: "web6", backend: "fd00:1::1", 8443) }),
        ]
        bench.push(inputs.map { ($0.frame, $0.meta($0.frame)) })
        let expected = [
            Frames.ipv4UDP(source: Self.client, destination: backend, sourcePort: 5000, destinationPort: 7700,
                           payload: Self.payload, link: vlan),
            Frames.ipv4UDP(source: Self.client, destination: backend, sourcePort: 5000, destinationPort: 7700,
                           payload: Self.payload, ip: options),
            Frames.ipv4UDP(source: Self.client, destination: backend, sourcePort: 5000, destinationPort: 7700,
                           payload: Self.payload, ip: options, link: vlan),
            Frames.ipv6TCP(source: Self.client6, destination: Self.ip("fd00:1::1"), sourcePort: 40000,
                           destinationPort: 8443, link: vlan),
            Frames.ipv4UDP(source: Self.vip, destination: Self.client, sourcePort: 7000, destinationPort: 5000,
                           payload: Self.payload, ip: options, link: vlan),
            Frames.ipv6TCP(source: Self.vip6, destination: Self.client6, sourcePort: 443, destinationPort: 40000,
                           flags: [.syn, .ack], link: vlan),
        ]
        let output = bench.harness.output(.out)
        #expect(output.count == expected.count)
        for (index, pair) in zip(output, expected).enumerated() {
            #expect(pair.0 == pair.1, "packet #\(index)")
        }
        #expect(bench.harness.counter(.inbound) == 4)
        #expect(bench.harness.counter(.reply) == 2)
        try Self.assertWellFormed(output)
        try bench.harness.finish()
    }

    @Test("fragments: the first is translated whole, a later one only in its address")
    func fragments() throws {
        let bench = try TranslateBench()
        let backend = Self.ip("10.1.0.3")
        let first = Frames.IPv4Fields(identification: 0x1234, moreFragments: true)
        let later = Frames.IPv4Fields(identification: 0x1235, fragmentOffset: 3)
        let firstFrame = Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 5000,
                                        destinationPort: 7000, payload: Self.payload, ip: first)
        let laterFrame = Frames.ipv4Packet(source: Self.client, destination: Self.vip, protocol: Frames.IPProtocol.udp,
                                           payload: Self.payload, fields: later)
        let laterEthernet = Frames.ipFrame(laterFrame)
        bench.push([(firstFrame, bench.inbound(firstFrame, service: "echo")),
                    (laterEthernet, bench.inbound(laterEthernet, service: "echo"))])
        #expect(bench.harness.output(.out) == [
            Frames.ipv4UDP(source: Self.client, destination: backend, sourcePort: 5000, destinationPort: 7700,
                           payload: Self.payload, ip: first),
            Frames.ipFrame(Frames.ipv4Packet(source: Self.client, destination: backend,
                                             protocol: Frames.IPProtocol.udp, payload: Self.payload, fields: later)),
        ])
        try Self.assertWellFormed(bench.harness.output(.out))
        try bench.harness.finish()
    }

    // MARK: - ICMP errors

    /// The IPv4 packet (no Ethernet) VIP-side or backend-side of a flow, as an ICMP error quotes it.
    static func quotedTCP4(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16) -> [UInt8] {
        Frames.ipv4Packet(source: source, destination: destination, protocol: Frames.IPProtocol.tcp,
                          payload: Frames.tcpSegment(source: source, destination: destination, sourcePort: sourcePort,
                                                     destinationPort: destinationPort, flags: [.psh, .ack],
                                                     sequence: 77, acknowledgment: 88, payload: payload),
                          fields: .init(identification: 0x4242, dontFragment: true))
    }

    static func quotedUDP4(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16) -> [UInt8] {
        Frames.ipv4Packet(source: source, destination: destination, protocol: Frames.IPProtocol.udp,
                          payload: Frames.udpDatagram(source: source, destination: destination, sourcePort: sourcePort,
                                                      destinationPort: destinationPort, payload: payload))
    }

    @Test("ICMP errors towards the VIP: outer destination and quoted source become the backend's")
    func icmpErrorsInbound() throws {
        let bench = try TranslateBench()
        let echoBackend = Self.ip("10.1.0.3")
        let web6Backend = Self.ip("fd00:1::1")
        // 1. Fragmentation needed about a whole quoted UDP datagram VIP:7000 → client (its checksum is fixed too).
        let fragNeeded = Frames.icmpv4DestinationUnreachable(
            source: Self.router, destination: Self.vip, code: 4, nextHopMTU: 1400,
            original: Self.quotedUDP4(source: Self.vip, destination: Self.client, sourcePort: 7000, destinationPort: 5000))
        // 2. Time exceeded quoting 28 bytes of a TCP segment VIP:80 → client (no TCP checksum quoted),
        //    with a target from the connection table.
        let timeExceeded = Frames.icmpv4TimeExceeded(
            source: Self.router, destination: Self.vip,
            original: Self.quotedTCP4(source: Self.vip, destination: Self.client, sourcePort: 80, destinationPort: 40000),
            originalLength: 28)
        // 3. Port unreachable quoting a whole TCP segment VIP:80 → client, backend picked by Maglev.
        let unreachable = Frames.icmpv4DestinationUnreachable(
            source: Self.router, destination: Self.vip, code: 3,
            original: Self.quotedTCP4(source: Self.vip, destination: Self.client, sourcePort: 80, destinationPort: 40001))
        // 4. ICMPv6 packet too big quoting a whole TCP segment [VIP6]:443 → client.
        let quoted6 = Frames.withoutEthernet(Frames.ipv6TCP(source: Self.vip6, destination: Self.client6,
                                                            sourcePort: 443, destinationPort: 40000, flags: [.ack],
                                                            payload: Self.payload))
        let tooBig = Frames.icmpv6PacketTooBig(source: Self.router6, destination: Self.vip6, mtu: 1280, original: quoted6)

        let unreachableMeta = bench.inbound(unreachable, service: "web", icmpError: true)
        let chosen = bench.picked(service: "web", hash: unreachableMeta.flow_hash)
        bench.push([
            (fragNeeded, bench.inbound(fragNeeded, service: "echo", icmpError: true)),
            (timeExceeded, bench.inbound(timeExceeded, service: "web", icmpError: true, target: ("10.1.0.2", 8081))),
            (unreachable, unreachableMeta),
            (tooBig, bench.inbound(tooBig, service: "web6", icmpError: true)),
        ])
        let expected = [
            Frames.icmpv4DestinationUnreachable(
                source: Self.router, destination: echoBackend, code: 4, nextHopMTU: 1400,
                original: Self.quotedUDP4(source: echoBackend, destination: Self.client, sourcePort: 7700,
                                          destinationPort: 5000)),
            Frames.icmpv4TimeExceeded(
                source: Self.router, destination: Self.ip("10.1.0.2"),
                original: Self.quotedTCP4(source: Self.ip("10.1.0.2"), destination: Self.client, sourcePort: 8081,
                                          destinationPort: 40000),
                originalLength: 28),
            Frames.icmpv4DestinationUnreachable(
                source: Self.router, destination: chosen.address, code: 3,
                original: Self.quotedTCP4(source: chosen.address, destination: Self.client, sourcePort: chosen.port,
                                          destinationPort: 40001)),
            Frames.icmpv6PacketTooBig(
                source: Self.router6, destination: web6Backend, mtu: 1280,
                original: Frames.withoutEthernet(Frames.ipv6TCP(source: web6Backend, destination: Self.client6,
                                                                sourcePort: 8443, destinationPort: 40000,
                                                                flags: [.ack], payload: Self.payload))),
        ]
        let output = bench.harness.output(.out)
        #expect(output.count == expected.count)
        for (index, pair) in zip(output, expected).enumerated() {
            #expect(pair.0 == pair.1, "ICMP error #\(index)")
        }
        #expect(bench.harness.counter(.icmpError) == 4)
        #expect(bench.harness.counter(.inbound) == 4)
        #expect(bench.harness.counter(.picked) == 3)
        try Self.assertWellFormed(output)
        try bench.harness.finish()
    }

    @Test("ICMP errors from a backend: outer source (when it is the backend) and quoted destination become the VIP's")
    func icmpErrorsReply() throws {
        let bench = try TranslateBench()
        let echoBackend = Self.ip("10.1.0.3")
        let echo6Backend = Self.ip("fd00:1::2")
        let insideRouter = Self.ip("10.9.9.9")
        // 1. The backend itself: port unreachable about client → 10.1.0.3:7700.
        let portUnreachable = Frames.icmpv4DestinationUnreachable(
            source: echoBackend, destination: Self.client, code: 3,
            original: Self.quotedUDP4(source: Self.client, destination: echoBackend, sourcePort: 5000,
                                      destinationPort: 7700))
        // 2. A router inside the cluster: time exceeded about client → 10.1.0.1:8080, 28 bytes quoted.
        let timeExceeded = Frames.icmpv4TimeExceeded(
            source: insideRouter, destination: Self.client,
            original: Self.quotedTCP4(source: Self.client, destination: Self.ip("10.1.0.1"), sourcePort: 40000,
                                      destinationPort: 8080),
            originalLength: 28)
        // 3. ICMPv6 port unreachable from the backend about client → [fd00:1::2]:7700.
        let quoted6 = Frames.withoutEthernet(Frames.ipv6UDP(source: Self.client6, destination: echo6Backend,
                                                            sourcePort: 5000, destinationPort: 7700,
                                                            payload: Self.payload))
        let unreachable6 = Frames.icmpv6DestinationUnreachable(source: echo6Backend, destination: Self.client6, code: 4,
                                                               original: quoted6)
        bench.push([
            (portUnreachable, bench.reply(portUnreachable, service: "echo", backend: "10.1.0.3", 7700, icmpError: true)),
            (timeExceeded, bench.reply(timeExceeded, service: "web", backend: "10.1.0.1", 8080, icmpError: true)),
            (unreachable6, bench.reply(unreachable6, service: "echo6", backend: "fd00:1::2", 7700, icmpError: true)),
        ])
        let expected = [
            Frames.icmpv4DestinationUnreachable(
                source: Self.vip, destination: Self.client, code: 3,
                original: Self.quotedUDP4(source: Self.client, destination: Self.vip, sourcePort: 5000,
                                          destinationPort: 7000)),
            Frames.icmpv4TimeExceeded(
                source: insideRouter, destination: Self.client,
                original: Self.quotedTCP4(source: Self.client, destination: Self.vip, sourcePort: 40000,
                                          destinationPort: 80),
                originalLength: 28),
            Frames.icmpv6DestinationUnreachable(
                source: Self.vip6, destination: Self.client6, code: 4,
                original: Frames.withoutEthernet(Frames.ipv6UDP(source: Self.client6, destination: Self.vip6,
                                                                sourcePort: 5000, destinationPort: 7000,
                                                                payload: Self.payload))),
        ]
        let output = bench.harness.output(.out)
        #expect(output.count == expected.count)
        for (index, pair) in zip(output, expected).enumerated() {
            #expect(pair.0 == pair.1, "ICMP error #\(index)")
        }
        #expect(bench.harness.counter(.icmpError) == 3)
        #expect(bench.harness.counter(.reply) == 3)
        try Self.assertWellFormed(output)
        try bench.harness.finish()
    }

    @Test("passive health signals: an RST answering a SYN and ICMP unreachables from a backend are counted per backend")
    func passiveHealthSignals() throws {
        let bench = try TranslateBench()
        let web = Self.ip("10.1.0.1"), echo = Self.ip("10.1.0.3")
        let refusal = Frames.ipv4TCP(source: web, destination: Self.client, sourcePort: 8080, destinationPort: 40000,
                                     flags: [.rst, .ack], sequence: 0, acknowledgment: 1)
        let reset = Frames.ipv4TCP(source: web, destination: Self.client, sourcePort: 8080, destinationPort: 40001,
                                   flags: [.rst, .ack], sequence: 5000, acknowledgment: 1)
        let portUnreachable = Frames.icmpv4DestinationUnreachable(
            source: echo, destination: Self.client, code: 3,
            original: Self.quotedUDP4(source: Self.client, destination: echo, sourcePort: 5000, destinationPort: 7700))
        let timeExceeded = Frames.icmpv4TimeExceeded(
            source: Self.ip("10.9.9.9"), destination: Self.client,
            original: Self.quotedTCP4(source: Self.client, destination: web, sourcePort: 40000, destinationPort: 8080),
            originalLength: 28)
        bench.push([
            (refusal, bench.reply(refusal, service: "web", backend: "10.1.0.1", 8080)),
            (reset, bench.reply(reset, service: "web", backend: "10.1.0.1", 8080)),
            (portUnreachable, bench.reply(portUnreachable, service: "echo", backend: "10.1.0.3", 7700, icmpError: true)),
            (timeExceeded, bench.reply(timeExceeded, service: "web", backend: "10.1.0.1", 8080, icmpError: true)),
        ])
        #expect(bench.harness.counter(.backendRefused) == 1, "an RST with a real sequence number ends a connection, it refuses none")
        #expect(bench.harness.counter(.backendUnreachable) == 1, "time exceeded is not unreachable")
        let webIndex = Int(bench.backend("10.1.0.1", 8080)) - 1, echoIndex = Int(bench.backend("10.1.0.3", 7700)) - 1
        #expect(bench.view.passiveSignals[2 * webIndex] == 1 && bench.view.passiveSignals[2 * webIndex + 1] == 0)
        #expect(bench.view.passiveSignals[2 * echoIndex] == 0 && bench.view.passiveSignals[2 * echoIndex + 1] == 1)
        #expect(bench.harness.output(.out).count == 4)
        try bench.harness.finish()
    }

    @Test("an ICMP error about a flow picks the backend the flow's own packets pick")
    func icmpErrorFollowsTheFlow() throws {
        let bench = try TranslateBench()
        var frames: [(frame: [UInt8], meta: sy_meta)] = []
        for port in UInt16(41000)..<41032 {
            let syn = Frames.ipv4TCP(source: Self.client, destination: Self.vip, sourcePort: port, destinationPort: 80)
            let error = Frames.icmpv4DestinationUnreachable(
                source: Self.router, destination: Self.vip, code: 4, nextHopMTU: 1400,
                original: Self.quotedTCP4(source: Self.vip, destination: Self.client, sourcePort: 80,
                                          destinationPort: port),
                originalLength: 28)
            frames += [(syn, bench.inbound(syn, service: "web")), (error, bench.inbound(error, service: "web", icmpError: true))]
        }
        bench.push(frames)
        let output = bench.harness.output(.out)
        #expect(output.count == 64)
        var backends = Set<[UInt8]>()
        for pair in stride(from: 0, to: output.count, by: 2) {
            let synDestination = Array(output[pair][30..<34])
            let errorDestination = Array(output[pair + 1][30..<34])
            let quotedSource = Array(output[pair + 1][14 + 20 + 8 + 12..<14 + 20 + 8 + 16])
            #expect(synDestination == errorDestination)
            #expect(quotedSource == synDestination)
            backends.insert(synDestination)
        }
        #expect(backends.count == 2, "32 flows over two backends reach both")
        try bench.harness.finish()
    }

    // MARK: - Choice of the backend

    @Test("a target from the connection table wins over the consistent-hashing pick")
    func targetRespected() throws {
        let bench = try TranslateBench()
        // A flow whose Maglev pick is 10.1.0.1:8080, sent to its table target 10.1.0.2:8081.
        var frame: [UInt8] = []
        var meta = sy_meta()
        for port in UInt16(40000)..<41000 {
            frame = Frames.ipv4TCP(source: Self.client, destination: Self.vip, sourcePort: port, destinationPort: 80,
                                   flags: [.ack])
            meta = bench.inbound(frame, service: "web", target: ("10.1.0.2", 8081))
            if bench.picked(service: "web", hash: meta.flow_hash).port == 8080 { break }
        }
        #expect(bench.picked(service: "web", hash: meta.flow_hash).port == 8080)
        let port = UInt16(frame[34]) << 8 | UInt16(frame[35])
        bench.push([(frame, meta)])
        #expect(bench.harness.output(.out) == [
            Frames.ipv4TCP(source: Self.client, destination: Self.ip("10.1.0.2"), sourcePort: port,
                           destinationPort: 8081, flags: [.ack]),
        ])
        #expect(bench.harness.counter(.picked) == 0)
        #expect(bench.harness.counter(.inbound) == 1)
        try Self.assertWellFormed(bench.harness.output(.out))
        try bench.harness.finish()
    }

    @Test("a pick is recorded in the metadata: backend index + 1 and the target tuple")
    func pickRecordedInMetadata() throws {
        let bench = try TranslateBench()
        let frame = Frames.ipv4TCP(source: Self.client, destination: Self.vip, sourcePort: 40000, destinationPort: 80)
        let meta = bench.inbound(frame, service: "web")
        let chosen = bench.picked(service: "web", hash: meta.flow_hash)
        // Run the stage directly on one mbuf, to read its metadata afterwards.
        let parameters = try TupleTranslate.Parameters(
            from: ConfigDocument.parse("{}", file: "<direct>"),
            stage: StageParameterContext(instanceName: "direct", portNames: [], hasClusterSection: true))
        var stage = try TupleTranslate(parameters: parameters, context: StageContext(
            instanceName: "direct", lcoreID: 0, socketID: 0, burstSize: 32, ports: [], cluster: bench.harness.cluster))
        let mbuf = try #require(sy_pktmbuf_alloc(bench.harness.pool))
        let data = try #require(sy_pktmbuf_append(mbuf, UInt16(frame.count)))
        frame.withUnsafeBytes { UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        sy_mbuf_meta(mbuf).pointee = meta
        let mbufs = MbufVector.allocate(capacity: 1)
        let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: TupleTranslate.Counter.allCases.count)
        defer {
            mbufs.deallocate()
            dispositions.deallocate()
            counters.deallocate()
        }
        mbufs[0] = mbuf
        dispositions[0] = 0xff
        counters.initialize(repeating: 0, count: TupleTranslate.Counter.allCases.count)
        stage.process(PacketBurst(mbufs: mbufs, count: 1), BurstOutput(dispositions: dispositions, counters: counters))
        let after = sy_mbuf_meta(mbuf).pointee
        sy_pktmbuf_free(mbuf)

        #expect(dispositions[0] == TupleTranslate.Disposition.out.rawValue)
        #expect(after.backend == bench.backend(IPAddress(bytes: chosen.address).description, chosen.port))
        #expect(after.has_target == 1)
        #expect(after.target_high == IPAddress(bytes: chosen.address).high)
        #expect(after.target_low == 0)
        #expect(after.target_port == chosen.port.bigEndian)
        #expect(counters[TupleTranslate.Counter.picked.index] == 1)
        try bench.harness.finish()
    }

    @Test("consistent hashing: weights 1:1:2 over 10000 flows within 2 points of 25/25/50 %, the same flow always the same backend")
    func consistentHashing() throws {
        let bench = try TranslateBench()
        let vip: [UInt8] = [198, 51, 100, 30]
        var flows: [[UInt8]] = []
        for index in 0..<10000 {
            flows.append(Frames.ipv4TCP(source: [198, 18, UInt8(index / 250), UInt8(index % 250 + 1)], destination: vip,
                                        sourcePort: UInt16(20000 + index % 40000), destinationPort: 80))
        }
        bench.push(flows.map { ($0, bench.inbound($0, service: "weighted")) })
        // Again, in another order, with the packets of another harness's stage instance.
        let second = try TranslateBench()
        second.push(flows.reversed().map { ($0, second.inbound($0, service: "weighted")) })

        let first = bench.harness.output(.out)
        #expect(first.count == 10000)
        #expect(Array(second.harness.output(.out).reversed()) == first)
        var counts: [[UInt8]: Int] = [:]
        for frame in first { counts[Array(frame[30..<34]), default: 0] += 1 }
        let shares = [[10, 2, 0, 1], [10, 2, 0, 2], [10, 2, 0, 3]].map { Double(counts[$0] ?? 0) / 10000 }
        // Measured: 0.2492, 0.2473, 0.5035 (largest deviation 0.35 points); tolerance 2 points (4 standard
        // deviations of sampling 10000 flows at p = 0.5).
        for (share, expected) in zip(shares, [0.25, 0.25, 0.5]) {
            #expect(abs(share - expected) < 0.02, "shares \(shares)")
        }
        #expect(counts.count == 3)
        #expect(bench.harness.counter(.picked) == 10000)
        try bench.harness.finish()
        try second.harness.finish()
    }

    // MARK: - Drops and setup

    @Test("no backend when every weight is 0; not classified without a service or a reply's backend")
    func drops() throws {
        let bench = try TranslateBench()
        let drained = Frames.ipv4TCP(source: Self.client, destination: [198, 51, 100, 20], sourcePort: 40000,
                                     destinationPort: 80)
        let plain = Frames.ipv4TCP(source: Self.client, destination: [198, 19, 0, 1], sourcePort: 40000,
                                   destinationPort: 80)
        var replyWithoutBackend = bench.reply(plain, service: "web", backend: "10.1.0.1", 8080)
        replyWithoutBackend.backend = 0
        var wrongFamily = bench.inbound(plain, service: "web6")
        wrongFamily.family = 4
        var icmpEcho = HandClassify.layout(Frames.icmpv4EchoRequest(source: Self.client, destination: Self.vip))
        icmpEcho.service = bench.service("web")
        bench.push([
            (drained, bench.inbound(drained, service: "drained")),
            (plain, HandClassify.layout(plain)),
            (plain, replyWithoutBackend),
            (plain, wrongFamily),
            (Frames.icmpv4EchoRequest(source: Self.client, destination: Self.vip), icmpEcho),
        ])
        #expect(bench.harness.output(.out).isEmpty)
        #expect(bench.harness.output(.drop).count == 5)
        #expect(bench.harness.counter(.noBackend) == 1)
        #expect(bench.harness.counter(.notClassified) == 4)
        #expect(bench.harness.output(.drop)[0] == drained, "drops are left untouched")
        try bench.harness.finish()
    }

    @Test("headers past the first segment or the IP packet are dropped as truncated, never read")
    func truncated() throws {
        let bench = try TranslateBench()
        let frame = Frames.ipv4TCP(source: Self.client, destination: Self.vip, sourcePort: 40000, destinationPort: 80)
        let meta = bench.inbound(frame, service: "web")
        var shortIP = meta
        shortIP.l3_end = shortIP.l3 + 19
        var shortTCP = meta
        shortTCP.l3_end = shortTCP.l4 + 17
        var noTransport = meta
        noTransport.l4 = 0
        let error = Frames.icmpv4TimeExceeded(
            source: Self.router, destination: Self.vip,
            original: Self.quotedTCP4(source: Self.vip, destination: Self.client, sourcePort: 80, destinationPort: 40000),
            originalLength: 28)
        let errorMeta = bench.inbound(error, service: "web", icmpError: true)
        var errorWithoutPorts = errorMeta
        errorWithoutPorts.l3_end = errorWithoutPorts.inner_l4 + 3
        bench.push([
            (Array(frame[0..<40]), meta), // l3_end says 54, the frame has 40 bytes
            (frame, shortIP),
            (frame, shortTCP),
            (frame, noTransport),
            (Array(error[0..<60]), errorMeta),
            (error, errorWithoutPorts),
        ])
        #expect(bench.harness.output(.out).isEmpty)
        #expect(bench.harness.counter(.truncated) == 6)
        try bench.harness.finish()
    }

    @Test("needs the cluster section and takes no parameters")
    func setup() throws {
        let missing = #expect(throws: ConfigError.self) { try StageHarness<TupleTranslate>() }
        #expect(missing?.key == "kind")
        #expect(throws: (any Error).self) {
            try StageHarness<TupleTranslate>(parameters: "backends: 3", cluster: TranslateBench.cluster)
        }
        #expect(TupleTranslate.descriptor.counters.map(\.name)
            == ["inbound", "reply", "icmp-error", "picked", "no-backend", "not-classified", "truncated",
                "backend-refused", "backend-unreachable"])
        #expect(TupleTranslate.descriptor.dispositions == ["drop", "out"])
    }
}
