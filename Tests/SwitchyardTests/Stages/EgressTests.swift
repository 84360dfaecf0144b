import CDPDK
import Foundation
import SwitchyardEngine
import SwitchyardClusterPlugin
import SwitchyardStages
import ClassifyStage
import DecapsulateStage
import EgressTranslateStage
import EncapsulateStage
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// Outbound connections from the single IP (cluster.egress): egress-translate on the backends side,
/// egress-return on the uplink, each behind a real classify (its `other` disposition).
///
///     host 1 198.18.0.11 (this host, ports 20000-29999)   host 2 198.18.0.12 (ports 30000-39999)
///     egress 198.19.0.1 (the VIP of `web`) for 198.18.100.0/24 → 203.0.113.0/24, 0.0.0.0/0 minus nothing
///     egress fd00:19::1 (the IPv6 VIP) for fd00:18:100::/48 → ::/0
enum EgressNet {
    static func cluster(host1: String = "20000-29999", host2: String = "30000-39999") -> String {
        Net.cluster + """

        egress:
          - address: 198.19.0.1
            resources: [198.18.100.0/23]
            destinations: [203.0.113.0/24]
            ports: { 1: "\(host1)", 2: "\(host2)" }
          - address: "fd00:19::1"
            resources: ["fd00:18:100::/48"]
            destinations: ["::/0"]
            ports: { 1: "\(host1)", 2: "\(host2)" }
        """
    }

    static let server = Net.ip("203.0.113.5")
    static let server6 = Net.ip("2001:db8::5")
    static let resource = Net.backend1
    static let resource6 = Net.backend6
    static let resourceMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x10, 0x10]
    /// Frames from a resource to the backends port, and from the router to the uplink.
    static let fromResource = Frames.Link(source: resourceMAC, destination: Net.backendPortMAC)
    static let fromRouter = Net.fromRouter

    static func classifier(_ cluster: ClusterRuntime, side: String, input: String = "wire") throws -> Classify {
        let yaml = input == "tunnel" ? "{ input: tunnel }" : "{ side: \(side) }"
        let map = try ConfigDocument.parse(yaml, file: "<classify>")
        let context = StageParameterContext(instanceName: "classify", portNames: Net.ports.map(\.name),
                                            cluster: cluster.configuration)
        return try Classify(parameters: Classify.Parameters(from: map, stage: context),
                            context: StageContext(instanceName: "classify", lcoreID: 0, socketID: 0, burstSize: 32,
                                                  ports: Net.ports, cluster: cluster))
    }

    static func be16(_ bytes: [UInt8], _ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }
}

/// egress-translate and egress-return on one cluster runtime; every packet runs through classify
/// first (`side: backends` for the first, the uplink for the second), as in the pipeline.
final class EgressBench {
    let outbound: StageHarness<EgressTranslate>
    let inbound: StageHarness<EgressReturn>
    var cluster: ClusterRuntime { outbound.cluster! }
    final class Holder { var backends: Classify?; var uplink: Classify?; var fromPeer = false; var seen: [Classify.Disposition] = [] }
    let holder = Holder()

    init(cluster: String = EgressNet.cluster()) throws {
        let holder = self.holder
        outbound = try StageHarness<EgressTranslate>(ports: Net.ports, cluster: cluster, prepare: { packet in
            sy_mbuf_set_port(packet.mbuf, 1)
            holder.seen.append(holder.backends!.classify(single: packet).disposition)
        })
        inbound = try StageHarness<EgressReturn>(ports: Net.ports, sharedCluster: outbound.cluster, prepare: { packet in
            sy_mbuf_set_port(packet.mbuf, 0)
            holder.seen.append(holder.uplink!.classify(single: packet).disposition)
            if holder.fromPeer { packet.meta.pointee.flags |= UInt8(SY_META_FROM_PEER) }
        })
        holder.backends = try EgressNet.classifier(outbound.cluster!, side: "backends")
        holder.uplink = try EgressNet.classifier(outbound.cluster!, side: "uplink")
    }

    func finish() throws {
        try outbound.finish()
        try inbound.finish()
        #expect(holder.seen.allSatisfy { $0 == .other }, "classify sent every test packet to other")
    }
}

@Suite("egress-translate and egress-return", .serialized)
struct EgressTests {
    init() { TestEAL.start() }

    @Test("IPv4 TCP: the SYN leaves as VIP:port of host 1's range, the SYN-ACK comes back to the resource, byte-exact")
    func tcpRoundTrip() throws {
        let bench = try EgressBench()
        let syn = Frames.ipv4TCP(source: EgressNet.resource, destination: EgressNet.server, sourcePort: 41000,
                                 destinationPort: 443, flags: [.syn], sequence: 100, link: EgressNet.fromResource)
        bench.outbound.push([syn])
        let sent = bench.outbound.output(.out)
        try #require(sent.count == 1)
        let port = EgressNet.be16(sent[0], 34)
        #expect((20000...29999).contains(port))
        let expected = Frames.ipv4TCP(source: Net.vip, destination: EgressNet.server, sourcePort: port,
                                      destinationPort: 443, flags: [.syn], sequence: 100, link: EgressNet.fromResource)
        #expect(sent[0] == expected)
        #expect(bench.outbound.counter(.opened) == 1)
        #expect(bench.cluster.connections.count == 1)
        let events = bench.cluster.connections.takeEvents()
        #expect(events.count == 1 && events[0].kind == UInt8(SY_FLOW_OPENED))

        // A retransmitted SYN finds the same connection (same port, no second entry).
        bench.outbound.push([syn])
        #expect(bench.outbound.output(.out).last == expected)
        #expect(bench.outbound.counter(.opened) == 1)

        let synAck = Frames.ipv4TCP(source: EgressNet.server, destination: Net.vip, sourcePort: 443, destinationPort: port,
                                    flags: [.syn, .ack], sequence: 900, acknowledgment: 101, link: EgressNet.fromRouter)
        bench.inbound.push([synAck])
        let back = bench.inbound.output(.out)
        try #require(back.count == 1)
        let expectedBack = Frames.ipv4TCP(source: EgressNet.server, destination: EgressNet.resource, sourcePort: 443,
                                          destinationPort: 41000, flags: [.syn, .ack], sequence: 900, acknowledgment: 101,
                                          link: EgressNet.fromRouter)
        #expect(back[0] == expectedBack)
        let decoded = try Tshark.assertWellFormed(frames: [sent[0], back[0]])
        #expect(decoded[0].field("ip.src") == "198.19.0.1")
        #expect(decoded[0].field("tcp.srcport") == String(port))
        #expect(decoded[1].field("ip.dst") == "198.18.100.10")
        #expect(decoded[1].field("tcp.dstport") == "41000")

        // The resource's ACK establishes; its RST removes the entry (closed event).
        bench.outbound.push([Frames.ipv4TCP(source: EgressNet.resource, destination: EgressNet.server, sourcePort: 41000,
                                            destinationPort: 443, flags: [.ack], link: EgressNet.fromResource)])
        bench.outbound.push([Frames.ipv4TCP(source: EgressNet.resource, destination: EgressNet.server, sourcePort: 41000,
                                            destinationPort: 443, flags: [.rst], link: EgressNet.fromResource)])
        #expect(bench.outbound.counter(.rst) == 1)
        #expect(bench.cluster.connections.count == 0)
        #expect(bench.cluster.connections.takeEvents().map(\.kind) == [UInt8(SY_FLOW_CLOSED)])
        // Now a reply to that port has no connection, and a resource's ACK none either.
        bench.inbound.push([synAck])
        #expect(bench.inbound.counter(.noConnection) == 1)
        bench.outbound.push([Frames.ipv4TCP(source: EgressNet.resource, destination: EgressNet.server, sourcePort: 41000,
                                            destinationPort: 443, flags: [.ack], link: EgressNet.fromResource)])
        #expect(bench.outbound.counter(.noConnection) == 1)
        try bench.finish()
    }

    @Test("a reply to a port of host 2's range goes to host 2 unchanged; from a peer it is a peer-loop")
    func replyToPeerRange() throws {
        let bench = try EgressBench()
        let reply = Frames.ipv4UDP(source: EgressNet.server, destination: Net.vip, sourcePort: 53, destinationPort: 30123,
                                   payload: [1, 2, 3], link: EgressNet.fromRouter)
        bench.inbound.push([reply])
        #expect(bench.inbound.output(.remote) == [reply])
        #expect(bench.inbound.outputMeta(.remote)[0].peer == 2)
        #expect(bench.inbound.counter(.toOwner) == 1)
        bench.holder.fromPeer = true
        bench.inbound.push([reply])
        #expect(bench.inbound.counter(.peerLoop) == 1)
        try bench.finish()
    }

    @Test("IPv6 UDP out and back, and an ICMPv4 error quoting an IPv4 connection, byte-exact and checked by tshark")
    func udpSixAndICMPError() throws {
        let bench = try EgressBench()
        let datagram = Frames.ipv6UDP(source: EgressNet.resource6, destination: EgressNet.server6, sourcePort: 5000,
                                      destinationPort: 7000, payload: Array("query".utf8), link: EgressNet.fromResource)
        bench.outbound.push([datagram])
        let sent = try #require(bench.outbound.output(.out).first)
        let port = EgressNet.be16(sent, 54)
        #expect((20000...29999).contains(port))
        #expect(sent == Frames.ipv6UDP(source: Net.vip6, destination: EgressNet.server6, sourcePort: port,
                                       destinationPort: 7000, payload: Array("query".utf8), link: EgressNet.fromResource))
        let answer = Frames.ipv6UDP(source: EgressNet.server6, destination: Net.vip6, sourcePort: 7000, destinationPort: port,
                                    payload: Array("answer".utf8), link: EgressNet.fromRouter)
        bench.inbound.push([answer])
        let back = try #require(bench.inbound.output(.out).first)
        #expect(back == Frames.ipv6UDP(source: EgressNet.server6, destination: EgressNet.resource6, sourcePort: 7000,
                                       destinationPort: 5000, payload: Array("answer".utf8), link: EgressNet.fromRouter))

        // IPv4: a UDP datagram out, then a router's port unreachable about it comes back.
        let query = Frames.ipv4UDP(source: EgressNet.resource, destination: EgressNet.server, sourcePort: 6000,
                                   destinationPort: 7000, payload: Array("q4".utf8), link: EgressNet.fromResource)
        bench.outbound.push([query])
        let sent4 = try #require(bench.outbound.output(.out).last)
        let port4 = EgressNet.be16(sent4, 34)
        let router = Net.ip("203.0.113.1")
        let error = Frames.icmpv4DestinationUnreachable(source: router, destination: Net.vip, code: 3,
                                                        original: Frames.withoutEthernet(sent4), link: EgressNet.fromRouter)
        bench.inbound.push([error])
        let original = Frames.withoutEthernet(query)
        let expected = Frames.icmpv4DestinationUnreachable(source: router, destination: EgressNet.resource, code: 3,
                                                           original: original, link: EgressNet.fromRouter)
        #expect(bench.inbound.output(.out).last == expected)
        #expect(bench.inbound.counter(.icmpError) == 1)
        #expect(port4 != 0)
        let decoded = try Tshark.assertWellFormed(frames: [sent, back, sent4, bench.inbound.output(.out).last!])
        #expect(decoded[0].field("ipv6.src") == "fd00:19::1")
        #expect(decoded[1].field("ipv6.dst") == "fd00:18:100::10")
        #expect(decoded[3].field("icmp.type") == "3")
        try bench.finish()
    }

    @Test("ports: a live connection's port is never reused; when every probed port is taken, ports-exhausted")
    func exhaustion() throws {
        let bench = try EgressBench(cluster: EgressNet.cluster(host1: "20000-20001"))
        var ports: [UInt16] = []
        for sourcePort in [7001, 7002, 7003] as [UInt16] {
            bench.outbound.push([Frames.ipv4UDP(source: EgressNet.resource, destination: EgressNet.server,
                                                sourcePort: sourcePort, destinationPort: 53, link: EgressNet.fromResource)])
        }
        for frame in bench.outbound.output(.out) { ports.append(EgressNet.be16(frame, 34)) }
        #expect(Set(ports) == [20000, 20001])
        #expect(bench.outbound.counter(.exhausted) == 1)
        // Another destination may use the same ports (the reply keys differ).
        bench.outbound.push([Frames.ipv4UDP(source: EgressNet.resource, destination: Net.ip("203.0.113.6"),
                                            sourcePort: 7003, destinationPort: 53, link: EgressNet.fromResource)])
        #expect(bench.outbound.output(.out).count == 3)
        try bench.finish()
    }

    @Test("not egress traffic passes unchanged: a destination outside, a source that is no resource, the uplink's others")
    func passes() throws {
        let bench = try EgressBench()
        let outside = Frames.ipv4TCP(source: EgressNet.resource, destination: Net.ip("192.0.2.9"), sourcePort: 41000,
                                     destinationPort: 443, link: EgressNet.fromResource)
        let stranger = Frames.ipv4TCP(source: Net.ip("198.18.200.1"), destination: EgressNet.server, sourcePort: 41000,
                                      destinationPort: 443, link: EgressNet.fromResource)
        bench.outbound.push([outside, stranger])
        #expect(bench.outbound.output(.pass) == [outside, stranger])
        let toSomeoneElse = Frames.ipv4UDP(source: EgressNet.server, destination: Net.ip("198.18.9.9"), sourcePort: 53,
                                           destinationPort: 20000, link: EgressNet.fromRouter)
        bench.inbound.push([toSomeoneElse])
        #expect(bench.inbound.output(.pass) == [toSomeoneElse])
        #expect(bench.inbound.counter(.notEgress) == 1)
        try bench.finish()
    }
}

/// Two hosts, each its own cluster runtime: a resource behind host 2 opens a connection; the reply
/// reaches host 1 (ECMP), which sends it to host 2 in VXLAN; host 2 decapsulates it and translates
/// it to the resource.
///
///     host 2: classify-backends ─other─► egress-translate ─out─► (to the server, from VIP:3xxxx)
///     host 1: classify ─other─► egress-return ─remote─► encapsulate ─► (VXLAN to 198.18.0.12)
///     host 2: classify ─tunnel─► decapsulate ─inner─► classify (tunnel) ─other─► egress-return ─out─► resource
@Suite("egress across two hosts", .serialized)
struct EgressTwoHostTests {
    init() { TestEAL.start() }

    final class Metas { var pending: [sy_meta] = []; var next = 0
        func restore(_ packet: Packet) { packet.meta.pointee = pending[next]; next += 1 }
    }

    @Test("a reply delivered to the non-owner is encapsulated to the owner and translated back there, byte-exact")
    func replyThroughThePeer() throws {
        let cluster2 = EgressNet.cluster().replacingOccurrences(of: "host: 1\n", with: "host: 2\n")
        let resource = Net.ip("198.18.101.10")
        let host2 = try EgressBench(cluster: cluster2)
        let syn = Frames.ipv4TCP(source: resource, destination: EgressNet.server, sourcePort: 41000,
                                 destinationPort: 443, flags: [.syn], link: EgressNet.fromResource)
        host2.outbound.push([syn])
        let sent = try #require(host2.outbound.output(.out).first)
        let port = EgressNet.be16(sent, 34)
        #expect((30000...39999).contains(port))

        // The SYN-ACK reaches host 1: its port is host 2's.
        let host1 = try EgressBench()
        let synAck = Frames.ipv4TCP(source: EgressNet.server, destination: Net.vip, sourcePort: 443, destinationPort: port,
                                    flags: [.syn, .ack], acknowledgment: 2, link: EgressNet.fromRouter)
        host1.inbound.push([synAck])
        #expect(host1.inbound.output(.remote) == [synAck])
        let metas = Metas()
        metas.pending = host1.inbound.outputMeta(.remote)
        let encapsulate = try StageHarness<Encapsulate>(ports: Net.ports, sharedCluster: host1.cluster,
                                                        prepare: { metas.restore($0) })
        encapsulate.push(host1.inbound.output(.remote))
        let tunnelled = try #require(encapsulate.output(.out).first)

        // Host 2 takes it out of the tunnel and translates it to its resource.
        let wire = try EgressNet.classifier(host2.cluster, side: "uplink")
        let decapsulate = try StageHarness<Decapsulate>(ports: Net.ports, sharedCluster: host2.cluster, prepare: {
            sy_mbuf_set_port($0.mbuf, 0)
            _ = wire.classify(single: $0)
        })
        decapsulate.push([tunnelled.with(0, Net.wireMAC)])
        let inner = try #require(decapsulate.output(.inner).first)
        let innerMetas = Metas()
        innerMetas.pending = decapsulate.outputMeta(.inner)
        let tunnel = try EgressNet.classifier(host2.cluster, side: "uplink", input: "tunnel")
        let back = try StageHarness<EgressReturn>(ports: Net.ports, sharedCluster: host2.cluster, prepare: {
            innerMetas.restore($0)
            #expect(tunnel.classify(single: $0).disposition == .other)
        })
        back.push([inner])
        let expected = Frames.ipv4TCP(source: EgressNet.server, destination: resource, sourcePort: 443,
                                      destinationPort: 41000, flags: [.syn, .ack], acknowledgment: 2,
                                      link: EgressNet.fromRouter)
        #expect(back.output(.out) == [expected])
        try Tshark.assertWellFormed(frames: [sent, tunnelled, expected])
        try encapsulate.finish()
        try decapsulate.finish()
        try back.finish()
        try host1.finish()
        try host2.finish()
    }
}

/// A host restarted (SIGKILL, then `switchyard run` again) gets its own connections back from
/// its peers' copies (the gossip's full sync writes them as local entries). Its resources' next
/// packets must find them: the restarted egress-translate probes the same ports for a connection
/// as before, so its port choice cannot depend on a seed drawn anew by each process.
@Suite("egress after a restart", .serialized)
struct EgressRestartTests {
    init() { TestEAL.start() }

    static let gossipCluster = EgressNet.cluster() + """

        gossip: { key: "\(String(repeating: "5f", count: 32))" }
        """

    @Test("the restarted host translates its resource's next packet with the connection's port (from the gossiped entry)")
    func restartedHostFindsGossipedConnection() throws {
        let before = try EgressBench(cluster: Self.gossipCluster)
        before.outbound.push([Frames.ipv4TCP(source: EgressNet.resource, destination: EgressNet.server, sourcePort: 41000,
                                             destinationPort: 443, flags: [.syn], link: EgressNet.fromResource)])
        let port = EgressNet.be16(try #require(before.outbound.output(.out).first), 34)
        let opened = try #require(before.cluster.connections.takeEvents().first)

        // The same host after its restart: a new process (new runtime), the entry restored as the
        // gossip writes an own claim (GossipNode.write: local, established).
        let after = try EgressBench(cluster: Self.gossipCluster)
        #expect(after.cluster.connections.egressSeed == before.cluster.connections.egressSeed,
                "the egress seed of a gossiping host is the same in every process")
        var key = opened.key
        let control = FlowEntry.makeControl(state: .established, family: 4, owner: 1,
                                            backendPortNetworkOrder: opened.backend_port)
        let resource = IPAddress("198.18.100.10")!
        #expect(after.cluster.connections.view.insert(key: &key, hash: FlowKeys.hash(&key), control: control,
                                                      backendHigh: resource.high, backendLow: resource.low,
                                                      now: sy_rdtsc()) != nil)
        let ack = Frames.ipv4TCP(source: EgressNet.resource, destination: EgressNet.server, sourcePort: 41000,
                                 destinationPort: 443, flags: [.ack], sequence: 5000, link: EgressNet.fromResource)
        after.outbound.push([ack])
        #expect(after.outbound.counter(.noConnection) == 0)
        #expect(after.outbound.output(.out) == [Frames.ipv4TCP(source: Net.vip, destination: EgressNet.server,
                                                               sourcePort: port, destinationPort: 443, flags: [.ack],
                                                               sequence: 5000, link: EgressNet.fromResource)])
        try before.finish()
        try after.finish()
    }
}

@Suite("cluster.egress configuration")
struct EgressConfigurationTests {
    static func parse(_ egress: String) throws -> ClusterConfiguration {
        try ClusterConfiguration.parse(sectionBody: Net.cluster + "\negress:\n" + egress, file: "x.yaml")
    }

    static func error(_ egress: String) -> String {
        do {
            _ = try parse(egress)
            return "no error"
        } catch {
            return String(describing: error)
        }
    }

    @Test("a valid item, and a warning for a small range")
    func valid() throws {
        let configuration = try Self.parse("""
              - address: 198.19.0.1
                resources: [198.18.100.0/24]
                destinations: [0.0.0.0/0]
                ports: { 1: "20000-29999", 2: "30000-30099" }
            """)
        #expect(configuration.egress.count == 1)
        #expect(configuration.egress[0].range(host: 2)?.count == 100)
        #expect(configuration.warnings == ["warning: x.yaml:34:37: cluster egress #1: key 'ports': host 2 has 100 ports (30000-30099): at most 100 connections to one destination at a time, fewer than 1024"])
    }

    @Test("errors name the item, the key and the line")
    func errors() {
        #expect(Self.error("""
              - address: 198.19.0.1
                resources: [198.18.100.0/24]
                destinations: [0.0.0.0/0]
                ports: { 1: "20000-29999", 2: "29000-39999" }
            """) == "x.yaml:34:37: cluster egress #1: key 'ports': host 2's ports 29000-39999 overlap host 1's 20000-29999 (line 34): the owner of a reply is known from its port alone")
        #expect(Self.error("""
              - address: 198.19.0.1
                resources: [198.18.100.0/24]
                destinations: [0.0.0.0/0]
                ports: { 1: "20000-29999" }
            """) == "x.yaml:34:14: cluster egress #1: key 'ports': host 2 has no port range: every host needs its own (\"2\": \"LOW-HIGH\")")
        #expect(Self.error("""
              - address: 198.18.0.11
                resources: [198.18.100.0/24]
                destinations: [0.0.0.0/0]
                ports: { 1: "20000-29999", 2: "30000-39999" }
            """) == "x.yaml:31:16: cluster egress #1: key 'address': 198.18.0.11 is the address of host 1: an egress address is a VIP or an address of its own")
        #expect(Self.error("""
              - address: 198.19.0.1
                resources: [198.19.0.0/16]
                destinations: [0.0.0.0/0]
                ports: { 1: "20000-29999", 2: "30000-39999" }
            """) == "x.yaml:32:19: cluster egress #1: key 'resources': 198.19.0.0/16 holds the VIP 198.19.0.1 of 'web': resources are addresses on the backends' side")
        #expect(Self.error("""
              - address: 198.19.0.1
                resources: [198.18.100.0/24]
                destinations: [0.0.0.0/0]
                ports: { 1: "1-100", 2: "30000-39999" }
            """) == "x.yaml:34:19: cluster egress #1: key 'ports': 1-100 holds port 80 of service 'web' on the same address")
        #expect(Self.error("""
              - address: 198.19.0.1
                resources: [fd00::/8]
                destinations: [0.0.0.0/0]
                ports: { 1: "20000-29999", 2: "30000-39999" }
            """) == "x.yaml:32:19: cluster egress #1: key 'resources': fd00::/8 is IPv6 but the egress address is IPv4: translation keeps the family")
    }
}

@Suite("cluster.egress in the documented single-IP-image configuration")
struct EgressDocsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The golden host-1 configuration with docs/configuration.md's "Outbound connections" blocks
    /// applied: the `egress:` block under `cluster:`, and each stage of the second block replacing
    /// the golden stage of the same name (or added to the end of `stages:`).
    static func documentedConfiguration() throws -> String {
        let golden = try String(contentsOfFile: root.path + "/Tests/Golden/host1/config.yaml", encoding: .utf8)
        let docs = try String(contentsOfFile: root.path + "/docs/configuration.md", encoding: .utf8)
        let section = try #require(docs.components(separatedBy: "#### Outbound connections (`cluster.egress`)").last)
        let blocks = section.components(separatedBy: "```yaml\n").dropFirst().prefix(2)
            .map { $0.components(separatedBy: "```")[0] }
        try #require(blocks.count == 2)
        var text = golden.replacingOccurrences(of: "\ncluster:\n", with: "\ncluster:\n" + blocks[0])
        let items = blocks[1].components(separatedBy: "  - name: ").dropFirst()
        for item in items {
            let name = String(item.prefix { $0 != " " && $0 != "\n" })
            let lcores = try #require(text.range(of: "\nlcores:")).lowerBound
            if let start = text.range(of: "\n  - name: \(name)\n") ?? text.range(of: "\n  - name: \(name) "),
               start.lowerBound < lcores
            {
                let rest = text[start.upperBound...]
                let end = [rest.range(of: "\n  - name: ")?.lowerBound, rest.range(of: "\nlcores:")?.lowerBound,
                           rest.range(of: "\n\n")?.lowerBound].compactMap { $0 }.min()!
                text.replaceSubrange(start.lowerBound..<end, with: "\n  - name: " + item.trimmingCharacters(in: .newlines))
            }
        }
        for item in items {
            let name = String(item.prefix { $0 != " " && $0 != "\n" })
            if text.range(of: "\n  - name: \(name)") == nil {
                let lcores = try #require(text.range(of: "\nlcores:")).lowerBound
                text.insert(contentsOf: "\n  - name: " + item.trimmingCharacters(in: .newlines), at: lcores)
            }
        }
        return text
    }

    @Test("the documented wiring is a valid configuration of the golden host, without warnings")
    func documentedWiringIsValid() throws {
        let text = try Self.documentedConfiguration()
        let configuration = try EngineConfiguration.parse(text, file: "documented.yaml", stages: builtinStages, plugins: standardPlugins)
        #expect(configuration.cluster?.egress.count == 1)
        #expect(configuration.cluster?.warnings == [])
        // classify, classify-tunnel and classify-backends were replaced, not added twice.
        #expect(text.components(separatedBy: "other: egress-").count == 4)
        #expect(text.components(separatedBy: "\n  - name: classify\n").count
            + text.components(separatedBy: "\n  - name: classify ").count == 3)
        for name in ["egress-in", "egress-in-tunnel", "egress-out"] {
            #expect(configuration.stages.contains { $0.name == name }, "\(name)")
        }
    }
}
