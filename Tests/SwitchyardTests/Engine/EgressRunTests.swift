import Foundation
import SwitchyardPcap
import Testing

/// Outbound connections between two `switchyard run` hosts, each running the documented
/// single-IP-image configuration with `cluster.egress` (docs/configuration.md, "Outbound
/// connections", applied to the golden host; host 2's range is the one port 30000, so the test
/// knows it in advance):
///
///     host 1: uplink rx: SYN-ACK 203.0.113.5:443 → 198.19.0.1:30000 (the router chose host 1)
///             ─► classify ─other─► egress-in ─remote─► encap ─► uplink tx: VXLAN to 198.18.0.12
///     host 2: backends rx: SYN 198.18.101.10:41000 → 203.0.113.5:443
///             ─► classify-backends ─other─► egress-out ─► uplink tx: 198.19.0.1:30000 → 203.0.113.5:443
///             uplink rx: host 1's VXLAN frame ─► decap ─► classify-tunnel ─other─► egress-in-tunnel
///             ─► to-backends ─► backends tx: 203.0.113.5:443 → 198.18.101.10:41000
///
/// The hosts run one after the other (host 1's output is host 2's input); host 2 polls its
/// backends port first, so the SYN is handled before the reply, as on a real network.
@Suite("egress between two switchyard run hosts", .serialized)
struct EgressRunTests {
    static let server: [UInt8] = [203, 0, 113, 5]
    static let vip: [UInt8] = [198, 19, 0, 1]
    static let resource: [UInt8] = [198, 18, 101, 10]
    static let routerMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x01]
    static let resourceMAC: [UInt8] = [0x02, 0, 0, 0, 0x10, 0x20]

    static func configuration(host: Int, input: String, output: String) throws -> String {
        var text = try EgressDocsTests.documentedConfiguration()
            .replacingOccurrences(of: "GOLDEN_DIR", with: input)
            .replacingOccurrences(of: "OUT_DIR", with: output)
            .replacingOccurrences(of: "2: \"30000-39999\"", with: "2: \"30000-30000\"")
        text = text.replacingOccurrences(of: "\n  host: 1\n", with: "\n  host: \(host)\n")
        // Host 2's resource, a neighbour of its backends port.
        text = text.replacingOccurrences(of: "      - { address: 198.18.100.10, mac: \"02:00:00:00:10:10\" }\n",
                                         with: "      - { address: 198.18.100.10, mac: \"02:00:00:00:10:10\" }\n      - { address: 198.18.101.10, mac: \"02:00:00:00:10:20\" }\n")
        let uplinkPoll = "      - { port: uplink, queue: 0, to: classify }\n"
        let backendsPoll = "      - { port: backends, queue: 0, to: classify-backends }\n"
        text = text.replacingOccurrences(of: uplinkPoll + backendsPoll, with: backendsPoll + uplinkPoll)
        return text
    }

    static func run(host: Int, directory: TemporaryDirectory, uplink: [[UInt8]], backends: [[UInt8]]) throws
        -> (uplink: [[UInt8]], backends: [[UInt8]], counters: CounterSnapshot, output: String)
    {
        let input = directory.file("host\(host)-in"), output = directory.file("host\(host)-out")
        try FileManager.default.createDirectory(atPath: input, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try Pcap.write(uplink, to: input + "/uplink-in.pcap")
        try Pcap.write(backends, to: input + "/backends-in.pcap")
        let config = try directory.write("host\(host).yaml", try configuration(host: host, input: input, output: output))
        let stats = directory.file("host\(host).json")
        let result = try SwitchyardBinary.run(["run", "--config", config, "--duration", "2", "--stats-json", stats])
        try #require(result.status == 0, "host \(host): \(result.output)")
        return (try Pcap.read(output + "/uplink-out.pcap"), try Pcap.read(output + "/backends-out.pcap"),
                try CounterSnapshot(path: stats), result.output)
    }

    @Test func aReplyDeliveredToTheNonOwnerIsEncapsulatedToTheOwnerAndTranslatedBack() throws {
        let directory = try TemporaryDirectory()
        let synAck = Frames.ipv4TCP(source: Self.server, destination: Self.vip, sourcePort: 443, destinationPort: 30000,
                                    flags: [.syn, .ack], sequence: 500, acknowledgment: 101,
                                    link: .init(source: Self.routerMAC, destination: Frames.netPcapMAC(0)))
        let host1 = try Self.run(host: 1, directory: directory, uplink: [synAck], backends: [])
        #expect(host1.counters.total("stage egress-in", "to-owner") == 1, "\(host1.output)")
        try #require(host1.uplink.count == 1, "\(host1.output)")
        let tunnelled = host1.uplink[0]
        let decoded = try Tshark.assertWellFormed(frames: [tunnelled])
        #expect(decoded[0].protocols == "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp")
        #expect(decoded[0].values("ip.dst") == ["198.18.0.12", "198.19.0.1"])
        #expect(decoded[0].field("tcp.dstport") == "30000")

        // Host 2: the segment delivers the VXLAN frame to its uplink port.
        var delivered = tunnelled
        delivered.replaceSubrange(0..<6, with: Frames.netPcapMAC(0))
        let syn = Frames.ipv4TCP(source: Self.resource, destination: Self.server, sourcePort: 41000, destinationPort: 443,
                                 flags: [.syn], sequence: 100,
                                 link: .init(source: Self.resourceMAC, destination: Frames.netPcapMAC(1)))
        let host2 = try Self.run(host: 2, directory: directory, uplink: [delivered], backends: [syn])
        #expect(host2.output.contains("warning: ") && host2.output.contains("host 2 has 1 ports (30000-30000)"),
                "\(host2.output)")
        #expect(host2.counters.total("stage egress-out", "opened") == 1, "\(host2.output)")
        #expect(host2.counters.total("stage egress-in-tunnel", "translated") == 1, "\(host2.output)")
        let out = try #require(host2.uplink.first { $0.count > 23 && $0[23] == 6 }, "\(host2.output)")
        let back = try #require(host2.backends.first { $0.count > 23 && $0[23] == 6 }, "\(host2.output)")
        let frames = try Tshark.assertWellFormed(frames: [out, back])
        #expect(frames[0].field("ip.src") == "198.19.0.1")
        #expect(frames[0].field("tcp.srcport") == "30000")
        #expect(frames[0].field("ip.dst") == "203.0.113.5")
        #expect(frames[1].field("ip.src") == "203.0.113.5")
        #expect(frames[1].field("ip.dst") == "198.18.101.10")
        #expect(frames[1].field("tcp.dstport") == "41000")
        #expect(frames[1].field("tcp.flags") == "0x0012")
        // Byte for byte, the IP packet is the server's, addressed to the resource.
        let expected = Frames.ipv4TCP(source: Self.server, destination: Self.resource, sourcePort: 443,
                                      destinationPort: 41000, flags: [.syn, .ack], sequence: 500, acknowledgment: 101)
        #expect(Array(back.dropFirst(14)) == Array(expected.dropFirst(14)))
    }
}
