import CDPDK
import Foundation
import ForwardStage
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// The forward stage on the harness: next-hop MACs from static and learned neighbours, longest-prefix
/// routes, ARP requests and neighbour solicitations built in place (byte-exact and checked by tshark),
/// the per-next-hop rate limit, drops, and configuration errors that name their key.
@Suite("forward stage", .serialized)
struct ForwardTests {
    static let portMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0xaa, 0x01]
    static let port = PortDescription(name: "uplink", portID: 0, mac: (0x02, 0x00, 0x00, 0x00, 0xaa, 0x01), socketID: 0)
    static let otherPort = PortDescription(name: "backends", portID: 1, mac: (0x02, 0x00, 0x00, 0x00, 0xbb, 0x02),
                                           socketID: 0)
    /// This host is 198.18.0.10: the sender of ARP requests. A small connection table: forward needs none.
    static let cluster = """
        host: 1
        hosts:
          - {id: 1, address: 198.18.0.10}
          - {id: 2, address: 198.18.0.11}
        connections: {capacity: 1024}
        """
    static let localHost: [UInt8] = [198, 18, 0, 10]
    static let client: [UInt8] = [198, 51, 100, 7]
    static let client6: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]
    /// The MAC the incoming test frames carry (it must be replaced).
    static let staleLink = Frames.Link(source: [0x02, 0, 0, 0, 0, 0x51], destination: [0x02, 0, 0, 0, 0, 0x52])

    static func v6(_ text: String) -> [UInt8] { IPAddress(text)!.bytes }

    static func harness(_ parameters: String, ports: [PortDescription] = [port]) throws -> StageHarness<Forward> {
        try StageHarness<Forward>(parameters: parameters, ports: ports, cluster: cluster)
    }

    /// A UDP frame from the client to `destination` (IPv4 or IPv6), with `link`.
    static func udp(to destination: [UInt8], payload: [UInt8] = Array("forward me".utf8),
                    link: Frames.Link = staleLink) -> [UInt8]
    {
        destination.count == 4
            ? Frames.ipv4UDP(source: client, destination: destination, sourcePort: 40000, destinationPort: 53,
                             payload: payload, link: link)
            : Frames.ipv6UDP(source: client6, destination: destination, sourcePort: 40000, destinationPort: 53,
                             payload: payload, link: link)
    }

    /// `frame` with its MACs replaced: what `out` must carry.
    static func addressed(_ frame: [UInt8], to mac: [UInt8], from source: [UInt8] = portMAC) -> [UInt8] {
        mac + source + Array(frame[12...])
    }

    // MARK: - Known neighbours

    @Test("IPv4 and IPv6 to static neighbours: destination = neighbour, source = port, nothing else changes")
    func staticNeighbors() throws {
        let harness = try Self.harness("""
            port: uplink
            neighbors:
              - {address: 198.19.0.5, mac: "02:00:00:00:00:05"}
              - {address: "fd00::5", mac: "02:00:00:00:00:06"}
            """)
        let v4 = Self.udp(to: [198, 19, 0, 5])
        let v6 = Self.udp(to: Self.v6("fd00::5"))
        harness.push([v4, v6])
        #expect(harness.output(.out) == [Self.addressed(v4, to: [2, 0, 0, 0, 0, 5]),
                                         Self.addressed(v6, to: [2, 0, 0, 0, 0, 6])])
        #expect(harness.counter(.forwarded) == 2)
        #expect(harness.counter(.neighborMiss) == 0)
        try harness.finish()
    }

    @Test("a VLAN-tagged frame keeps its tag; the IP header after it is read")
    func vlan() throws {
        let harness = try Self.harness("""
            port: uplink
            neighbors:
              - {address: 198.19.0.5, mac: "02:00:00:00:00:05"}
              - {address: "fd00::5", mac: "02:00:00:00:00:06"}
            """)
        let tagged = Frames.Link(source: Self.staleLink.source, destination: Self.staleLink.destination, vlan: 100)
        let v4 = Self.udp(to: [198, 19, 0, 5], link: tagged)
        let v6 = Self.udp(to: Self.v6("fd00::5"), link: tagged)
        harness.push([v4, v6])
        #expect(harness.output(.out) == [
            Self.udp(to: [198, 19, 0, 5], link: .init(source: Self.portMAC, destination: [2, 0, 0, 0, 0, 5], vlan: 100)),
            Self.udp(to: Self.v6("fd00::5"), link: .init(source: Self.portMAC, destination: [2, 0, 0, 0, 0, 6], vlan: 100)),
        ])
        try harness.finish()
    }

    @Test("the source MAC is the configured port's, not the first port's")
    func portChoice() throws {
        let harness = try Self.harness("""
            port: backends
            neighbors: [{address: 198.19.0.5, mac: "02:00:00:00:00:05"}]
            """, ports: [Self.port, Self.otherPort])
        let frame = Self.udp(to: [198, 19, 0, 5])
        harness.push([frame])
        #expect(harness.output(.out) == [Self.addressed(frame, to: [2, 0, 0, 0, 0, 5], from: [2, 0, 0, 0, 0xbb, 2])])
        try harness.finish()
    }

    @Test("a neighbour learned after start (as classify learns from ARP/ND) is used from the next packet on")
    func learnedNeighbor() throws {
        let harness = try Self.harness("port: uplink\nresolve: false")
        let v4 = Self.udp(to: [198, 19, 0, 9])
        let v6 = Self.udp(to: Self.v6("fd00::9"))
        harness.push([v4, v6])
        #expect(harness.counter(.neighborUnresolved) == 2)
        let neighbors = harness.cluster!.neighbors.view
        let mac4: [UInt8] = [2, 0, 0, 0, 0, 9], mac6: [UInt8] = [2, 0, 0, 0, 6, 9]
        for (address, mac) in [(IPAddress(bytes: [198, 19, 0, 9]), mac4), (IPAddress("fd00::9")!, mac6)] {
            let learned = mac.withUnsafeBytes {
                neighbors.learn(family: address.family, high: address.high, low: address.low, macPointer: $0.baseAddress!)
            }
            #expect(learned)
        }
        harness.push([v4, v6])
        #expect(harness.output(.out) == [Self.addressed(v4, to: mac4), Self.addressed(v6, to: mac6)])
        #expect(harness.counter(.forwarded) == 2)
        #expect(harness.output(.drop).count == 2)
        try harness.finish()
    }

    @Test("static neighbours go into the cluster's table as static entries")
    func staticEntries() throws {
        let harness = try Self.harness("""
            port: uplink
            neighbors: [{address: "fd00::5", mac: "02:00:00:00:00:06"}]
            """)
        let entries = harness.cluster!.neighbors.entries
        #expect(entries.count == 1)
        #expect(entries.first?.0 == IPAddress("fd00::5"))
        #expect(entries.first?.1 == MACAddress("02:00:00:00:00:06"))
        #expect(entries.first?.isStatic == true)
        try harness.finish()
    }

    // MARK: - Routes

    @Test("longest prefix wins: a gateway route's next hop is the gateway, a connected route's the destination")
    func longestPrefix() throws {
        // Listed shortest first on purpose: the stage sorts.
        let harness = try Self.harness("""
            port: uplink
            routes:
              - {prefix: 0.0.0.0/0, via: 198.18.0.254}
              - {prefix: 198.19.0.0/16, via: 198.18.0.1}
              - {prefix: 198.19.100.0/24}
              - {prefix: "fd00::/8", via: "fd00::1"}
              - {prefix: "fd00:5::/64"}
            neighbors:
              - {address: 198.18.0.254, mac: "02:00:00:00:00:fe"}
              - {address: 198.18.0.1, mac: "02:00:00:00:00:01"}
              - {address: 198.19.100.7, mac: "02:00:00:00:01:07"}
              - {address: 198.19.0.7, mac: "02:00:00:00:00:07"}
              - {address: "fd00::1", mac: "02:00:00:00:06:01"}
              - {address: "fd00:5::7", mac: "02:00:00:00:06:07"}
              - {address: "fd00:6::7", mac: "02:00:00:00:06:99"}
            """)
        let frames = [
            Self.udp(to: [198, 19, 100, 7]), // /24 connected: the destination itself
            Self.udp(to: [198, 19, 0, 7]), // /16 via 198.18.0.1 (not its own neighbour entry)
            Self.udp(to: [203, 0, 113, 1]), // default via 198.18.0.254
            Self.udp(to: Self.v6("fd00:5::7")), // /64 connected
            Self.udp(to: Self.v6("fd00:6::7")), // /8 via fd00::1
        ]
        harness.push(frames)
        #expect(harness.output(.out) == [
            Self.addressed(frames[0], to: [2, 0, 0, 0, 1, 7]),
            Self.addressed(frames[1], to: [2, 0, 0, 0, 0, 1]),
            Self.addressed(frames[2], to: [2, 0, 0, 0, 0, 0xfe]),
            Self.addressed(frames[3], to: [2, 0, 0, 0, 6, 7]),
            Self.addressed(frames[4], to: [2, 0, 0, 0, 6, 1]),
        ])
        try harness.finish()
    }

    @Test("a destination that matches no route is dropped as no-route (per family)")
    func noRoute() throws {
        let harness = try Self.harness("""
            port: uplink
            routes: [{prefix: 198.19.0.0/16, via: 198.18.0.1}]
            neighbors: [{address: 198.18.0.1, mac: "02:00:00:00:00:01"}]
            """)
        harness.push([Self.udp(to: [198, 20, 0, 1]), Self.udp(to: Self.v6("fd00::1")), Self.udp(to: [198, 19, 255, 255])])
        #expect(harness.counter(.noRoute) == 2)
        #expect(harness.output(.out).count == 1)
        try harness.finish()
    }

    // MARK: - Drops

    @Test("frames that are not IPv4 or IPv6 are dropped as not-ip")
    func notIP() throws {
        let harness = try Self.harness("port: uplink")
        var wrongVersion = Self.udp(to: [198, 19, 0, 5])
        wrongVersion[14] = 0x65 // says IPv4, carries version 6
        var qinq = Self.udp(to: [198, 19, 0, 5], link: .init(vlan: 10))
        qinq.insert(contentsOf: [0x81, 0x00, 0x00, 0x14], at: 12) // a second tag
        let arp = Frames.arpRequest(senderMAC: [2, 0, 0, 0, 0, 1], senderIP: Self.client, targetIP: Self.localHost)
        let other = Frames.ethernet(etherType: 0x88cc, payload: [UInt8](repeating: 0, count: 46)) // LLDP
        harness.push([wrongVersion, qinq, arp, other])
        #expect(harness.counter(.notIP) == 4)
        #expect(harness.output(.drop).count == 4)
        try harness.finish()
    }

    @Test("frames shorter than their Ethernet, VLAN or IP header are dropped as truncated")
    func truncated() throws {
        let harness = try Self.harness("""
            port: uplink
            neighbors: [{address: 198.19.0.5, mac: "02:00:00:00:00:05"}]
            """)
        let v4 = Self.udp(to: [198, 19, 0, 5])
        let v6 = Self.udp(to: Self.v6("fd00::5"))
        let tagged = Self.udp(to: [198, 19, 0, 5], link: .init(vlan: 7))
        harness.push([
            [], Array(v4.prefix(13)), Array(tagged.prefix(17)), Array(v4.prefix(14 + 19)), Array(v6.prefix(14 + 39)),
            Array(tagged.prefix(18 + 19)),
            Array(v4.prefix(14 + 20)), // a whole IPv4 header is enough to forward
        ])
        #expect(harness.counter(.truncated) == 6)
        #expect(harness.output(.out) == [Self.addressed(Array(v4.prefix(14 + 20)), to: [2, 0, 0, 0, 0, 5])])
        try harness.finish()
    }

    // MARK: - Resolution

    @Test("an IPv4 miss becomes a broadcast ARP request for the next hop, byte-exact and well formed")
    func arpRequest() throws {
        let harness = try Self.harness("""
            port: uplink
            routes:
              - {prefix: 198.19.0.0/16, via: 198.18.0.1}
              - {prefix: 198.19.100.0/24}
            """)
        let long = Self.udp(to: [198, 19, 0, 7], payload: [UInt8](repeating: 0x5a, count: 1200))
        let short = Frames.withoutEthernet(Self.udp(to: [198, 19, 100, 7])).prefix(20) // a bare IPv4 header: 34 bytes
        let tagged = Self.udp(to: [198, 19, 100, 8], link: .init(vlan: 300))
        harness.push([long, Frames.ipFrame(Array(short), link: Self.staleLink), tagged])
        let expected = [
            Frames.arpRequest(senderMAC: Self.portMAC, senderIP: Self.localHost, targetIP: [198, 18, 0, 1]),
            Frames.arpRequest(senderMAC: Self.portMAC, senderIP: Self.localHost, targetIP: [198, 19, 100, 7]),
            Frames.arpRequest(senderMAC: Self.portMAC, senderIP: Self.localHost, targetIP: [198, 19, 100, 8], vlan: 300),
        ]
        #expect(harness.output(.resolve) == expected)
        #expect(harness.counter(.neighborMiss) == 3)
        #expect(harness.counter(.arpRequest) == 3)
        #expect(harness.counter(.ndRequest) == 0)
        let decoded = try Tshark.assertWellFormed(frames: harness.output(.resolve))
        #expect(decoded.map(\.protocols) == ["eth:ethertype:arp", "eth:ethertype:arp", "eth:ethertype:vlan:ethertype:arp"])
        #expect(decoded.map { $0.field("arp.opcode") } == ["1", "1", "1"])
        #expect(decoded[2].field("vlan.id") == "300")
        try harness.finish()
    }

    @Test("an IPv6 miss becomes a neighbour solicitation to the solicited-node address, byte-exact and well formed")
    func neighborSolicitation() throws {
        let harness = try Self.harness("""
            port: uplink
            source_ipv6: "fe80::aa01"
            routes:
              - {prefix: "fd00::/8", via: "fd00::1:2:3"}
              - {prefix: "fd00:5::/64"}
            """)
        let source = Self.v6("fe80::aa01")
        let small = Self.udp(to: Self.v6("fd00:5::12:3456"), payload: []) // 62 bytes: the request is longer
        let large = Self.udp(to: Self.v6("fd00:6::1"), payload: [UInt8](repeating: 0xa5, count: 1400))
        let tagged = Self.udp(to: Self.v6("fd00:5::ab:cdef"), link: .init(vlan: 4000))
        harness.push([small, large, tagged])
        let expected = [
            Frames.icmpv6NeighborSolicitation(source: source, target: Self.v6("fd00:5::12:3456"), sourceMAC: Self.portMAC),
            Frames.icmpv6NeighborSolicitation(source: source, target: Self.v6("fd00::1:2:3"), sourceMAC: Self.portMAC),
            Frames.icmpv6NeighborSolicitation(source: source, target: Self.v6("fd00:5::ab:cdef"), sourceMAC: Self.portMAC,
                                              vlan: 4000),
        ]
        #expect(harness.output(.resolve) == expected)
        #expect(harness.output(.resolve).first.map { Array($0[0..<6]) } == [0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        #expect(harness.counter(.ndRequest) == 3)
        #expect(harness.counter(.arpRequest) == 0)
        let decoded = try Tshark.assertWellFormed(frames: harness.output(.resolve),
                                                  fields: ["icmpv6.nd.ns.target_address", "ipv6.hlim"])
        #expect(decoded.map { $0.field("icmpv6.type") } == ["135", "135", "135"])
        #expect(decoded.map { $0.field("icmpv6.nd.ns.target_address") } == ["fd00:5::12:3456", "fd00::1:2:3", "fd00:5::ab:cdef"])
        #expect(decoded.map { $0.field("ipv6.hlim") } == ["255", "255", "255"])
        #expect(decoded[2].field("vlan.id") == "4000")
        try harness.finish()
    }

    @Test("at most one request per next hop per 100 ms; the others are dropped as neighbor-unresolved")
    func rateLimit() throws {
        let harness = try Self.harness("port: uplink\nsource_ipv6: \"fe80::aa01\"")
        let first = Self.udp(to: [198, 19, 0, 7])
        let other = Self.udp(to: [198, 19, 0, 8])
        let first6 = Self.udp(to: Self.v6("fd00::7"))
        harness.push([first, first, other, first6, first6, first])
        #expect(harness.output(.resolve) == [
            Frames.arpRequest(senderMAC: Self.portMAC, senderIP: Self.localHost, targetIP: [198, 19, 0, 7]),
            Frames.arpRequest(senderMAC: Self.portMAC, senderIP: Self.localHost, targetIP: [198, 19, 0, 8]),
            Frames.icmpv6NeighborSolicitation(source: Self.v6("fe80::aa01"), target: Self.v6("fd00::7"),
                                              sourceMAC: Self.portMAC),
        ])
        #expect(harness.counter(.neighborUnresolved) == 3)
        #expect(harness.counter(.neighborMiss) == 6)
        // A later burst within the interval is still limited ...
        harness.push([first])
        #expect(harness.counter(.neighborUnresolved) == 4)
        // ... and after 100 ms the next packet asks again.
        Thread.sleep(forTimeInterval: 0.15)
        harness.push([first, first])
        #expect(harness.output(.resolve).count == 4)
        #expect(harness.counter(.arpRequest) == 3)
        #expect(harness.counter(.neighborUnresolved) == 5)
        try harness.finish()
    }

    @Test("resolve: false, or an IPv6 next hop without source_ipv6, drops misses as neighbor-unresolved")
    func noResolution() throws {
        let quiet = try Self.harness("port: uplink\nresolve: false")
        quiet.push([Self.udp(to: [198, 19, 0, 7]), Self.udp(to: Self.v6("fd00::7"))])
        #expect(quiet.output(.resolve).isEmpty)
        #expect(quiet.counter(.neighborUnresolved) == 2)
        #expect(quiet.counter(.arpRequest) == 0)
        try quiet.finish()

        let noSource = try Self.harness("port: uplink")
        noSource.push([Self.udp(to: Self.v6("fd00::7")), Self.udp(to: [198, 19, 0, 7])])
        #expect(noSource.counter(.neighborUnresolved) == 1)
        #expect(noSource.counter(.ndRequest) == 0)
        #expect(noSource.counter(.arpRequest) == 1)
        try noSource.finish()
    }

    @Test("a chained (multi-segment) packet becomes a one-segment request; the other segments are freed")
    func chainedPacket() throws {
        TestEAL.start()
        let pool = TestEAL.makePool(size: 63)
        defer { rte_mempool_free(pool) }
        let document = try ConfigDocument.parse("port: uplink", file: "<test>")
        let clusterDocument = try ConfigDocument.parse(
            "cluster:\n  host: 1\n  hosts: [{id: 1, address: 198.18.0.10}]\n  connections: {capacity: 1024}", file: "<test>")
        let settings = try ClusterConfiguration.parse(try clusterDocument.required("cluster"))
        let runtime = try ClusterRuntime(configuration: settings, name: "sytest\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        let parameters = try Forward.Parameters(from: document, stage: StageParameterContext(
            instanceName: "test", portNames: ["uplink"], cluster: settings))
        var stage = try Forward(parameters: parameters, context: StageContext(
            instanceName: "test", lcoreID: 0, socketID: 0, burstSize: 32, ports: [Self.port], cluster: runtime))

        let frame = Self.udp(to: [198, 19, 0, 7], payload: [UInt8](repeating: 1, count: 300))
        let head = try #require(sy_pktmbuf_alloc(pool)), tail = try #require(sy_pktmbuf_alloc(pool))
        let split = 60
        for (mbuf, part) in [(head, Array(frame[..<split])), (tail, Array(frame[split...]))] {
            let data = try #require(sy_pktmbuf_append(mbuf, UInt16(part.count)))
            part.withUnsafeBytes { UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: part.count) }
        }
        #expect(rte_pktmbuf_chain(head, tail) == 0)
        #expect(Packet(head).segmentCount == 2 && Packet(head).length == frame.count)

        let mbufs = MbufVector.allocate(capacity: 1)
        let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: Forward.Counter.allCases.count)
        defer { mbufs.deallocate(); dispositions.deallocate(); counters.deallocate() }
        counters.initialize(repeating: 0, count: Forward.Counter.allCases.count)
        mbufs[0] = head
        stage.process(PacketBurst(mbufs: mbufs, count: 1), BurstOutput<Forward>(dispositions: dispositions, counters: counters))

        #expect(dispositions[0] == Forward.Disposition.resolve.rawValue)
        let packet = Packet(head)
        #expect(packet.segmentCount == 1)
        var bytes = [UInt8](repeating: 0, count: packet.length)
        _ = sy_pktmbuf_read(head, 0, UInt32(bytes.count), &bytes)
        #expect(bytes == Frames.arpRequest(senderMAC: Self.portMAC, senderIP: Self.localHost, targetIP: [198, 19, 0, 7]))
        #expect(sy_mempool_avail(pool) == sy_mempool_size(pool) - 1) // the tail is back already
        sy_pktmbuf_free(head)
        #expect(sy_mempool_avail(pool) == sy_mempool_size(pool))
    }

    @Test("counters and dispositions have the documented names")
    func names() {
        let descriptor = Forward.descriptor
        #expect(descriptor.kind == "forward")
        #expect(descriptor.dispositions == ["drop", "out", "resolve"])
        #expect(descriptor.counters.map(\.name) == ["forwarded", "neighbor-miss", "arp-request", "nd-request", "truncated",
                                                    "not-ip", "no-route", "neighbor-unresolved"])
        #expect(descriptor.counters.filter { $0.severity == .drop }.map(\.name)
            == ["truncated", "not-ip", "no-route", "neighbor-unresolved"])
    }

    // MARK: - Configuration errors

    /// The ConfigError thrown for `parameters` (parsed as the engine parses them, with ports uplink
    /// and backends), checked to name `key` and to say `fragment`.
    static func configError(_ parameters: String, key: String, saying fragment: String,
                            sourceLocation: SourceLocation = #_sourceLocation)
    {
        let error = #expect(throws: ConfigError.self, sourceLocation: sourceLocation) {
            let map = try ConfigDocument.parse(parameters, file: "<test parameters>")
            _ = try Forward.Parameters(from: map, stage: StageParameterContext(
                instanceName: "test", portNames: ["uplink", "backends"], hasClusterSection: true))
            try map.finish()
        }
        #expect(error?.key == key, "\(String(describing: error))", sourceLocation: sourceLocation)
        #expect(error?.message.contains(fragment) == true, "\(String(describing: error))", sourceLocation: sourceLocation)
    }

    @Test("configuration errors name the key")
    func configurationErrors() {
        Self.configError("resolve: true", key: "port", saying: "required key is missing")
        Self.configError("port: wire", key: "port", saying: "port 'wire' does not exist (ports: uplink, backends)")
        Self.configError("port: uplink\nroutes: []", key: "routes", saying: "empty list")
        Self.configError("port: uplink\nroutes: [{prefix: 198.18.0.0}]", key: "prefix", saying: "is not a prefix")
        Self.configError("port: uplink\nroutes: [{prefix: banana/8}]", key: "prefix", saying: "is not a prefix")
        Self.configError("port: uplink\nroutes: [{prefix: 198.18.0.0/33}]", key: "prefix", saying: "0...32")
        Self.configError("port: uplink\nroutes: [{prefix: \"fd00::/129\"}]", key: "prefix", saying: "0...128")
        Self.configError("port: uplink\nroutes: [{prefix: 198.18.0.1/16}]", key: "prefix",
                         saying: "host bits set (did you mean 198.18.0.0/16?)")
        Self.configError("port: uplink\nroutes: [{prefix: 198.18.0.0/16}, {prefix: 198.18.0.0/16, via: 198.18.0.1}]",
                         key: "prefix", saying: "routed twice")
        Self.configError("port: uplink\nroutes: [{prefix: 198.18.0.0/16, via: \"fd00::1\"}]", key: "via",
                         saying: "the prefix is IPv4 but the gateway fd00::1 is IPv6")
        Self.configError("port: uplink\nroutes: [{prefix: \"fd00::/8\", via: 198.18.0.1}]", key: "via",
                         saying: "the prefix is IPv6 but the gateway 198.18.0.1 is IPv4")
        Self.configError("port: uplink\nroutes: [{prefix: 198.18.0.0/16, via: 224.0.0.1}]", key: "via",
                         saying: "not a unicast address")
        Self.configError("port: uplink\nroutes: [{prefix: 198.18.0.0/16, gateway: 198.18.0.1}]", key: "gateway",
                         saying: "unknown key")
        Self.configError("port: uplink\nneighbors: [{address: 198.18.0.1, mac: \"02:00:00:00:00\"}]", key: "mac",
                         saying: "is not a MAC address")
        Self.configError("port: uplink\nneighbors: [{address: 198.18.0.1, mac: \"ff:ff:ff:ff:ff:ff\"}]", key: "mac",
                         saying: "multicast or broadcast")
        Self.configError("port: uplink\nneighbors: [{address: 198.18.0.300, mac: \"02:00:00:00:00:01\"}]", key: "address",
                         saying: "is not an IPv4 or IPv6 address")
        Self.configError("port: uplink\nneighbors: [{address: 198.18.0.1}]", key: "mac", saying: "required key is missing")
        Self.configError("""
            port: uplink
            neighbors: [{address: 198.18.0.1, mac: "02:00:00:00:00:01"}, {address: 198.18.0.1, mac: "02:00:00:00:00:02"}]
            """, key: "address", saying: "listed twice")
        Self.configError("port: uplink\nsource_ipv6: 198.18.0.10", key: "source_ipv6", saying: "not an IPv6 address")
        Self.configError("port: uplink\nsource_ipv6: \"::\"", key: "source_ipv6", saying: "unspecified")
        Self.configError("port: uplink\nresolve: false\nsource_ipv6: \"fe80::1\"", key: "source_ipv6",
                         saying: "resolve is false")
        Self.configError("port: uplink\nresolve: maybe", key: "resolve", saying: "expected true or false")
    }

    @Test("the README's example parses; routes are sorted longest prefix first, masks precomputed")
    func readmeExample() throws {
        let map = try ConfigDocument.parse("""
            port: uplink
            source_ipv6: "fe80::2"
            routes:
              - {prefix: 0.0.0.0/0, via: 198.18.0.1}
              - {prefix: 198.18.0.0/24}
              - {prefix: "::/0", via: "fe80::1"}
            neighbors:
              - {address: 198.18.0.1, mac: "02:00:00:00:00:01"}
            """, file: "<readme>")
        let parameters = try Forward.Parameters(from: map, stage: StageParameterContext(instanceName: "to-uplink",
                                                                                      portNames: ["uplink"],
                                                                                      hasClusterSection: true))
        try map.finish()
        #expect(parameters.routes.map(\.length) == [24, 0, 0])
        #expect(parameters.routes[0].maskHigh == IPAddress("255.255.255.0")!.high)
        #expect(parameters.routes[0].hasGateway == false)
        #expect(parameters.routes[2].family == 6 && parameters.routes[2].gatewayHigh == IPAddress("fe80::1")!.high)
        #expect(parameters.sourceIPv6 == IPAddress("fe80::2"))
        #expect(parameters.resolve)
    }

    @Test("without a cluster section the configuration is refused, naming the stage's kind key")
    func needsCluster() {
        let error = #expect(throws: ConfigError.self) {
            _ = try StageHarness<Forward>(parameters: "port: uplink", ports: [Self.port])
        }
        #expect(error?.key == "kind")
        #expect(error?.description.contains("needs the `cluster:` section") == true)
    }
}
