import CDPDK
import MssClampStage
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// A TCP segment with `options` (padded to 4 bytes), its checksum computed here from scratch.
func tcpWithOptions(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                    flags: UInt8, options: [UInt8]) -> [UInt8]
{
    var options = options
    while options.count % 4 != 0 { options.append(0) }
    func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    var segment = be16(sourcePort) + be16(destinationPort) + [0, 0, 0, 1, 0, 0, 0, 0]
        + [UInt8((20 + options.count) / 4) << 4, flags] + be16(65535) + [0, 0, 0, 0] + options
    var pseudo = source + destination
    pseudo += source.count == 4 ? [0, 6] + be16(UInt16(segment.count)) : [0, 0] + be16(UInt16(segment.count)) + [0, 0, 0, 6]
    var sum: UInt32 = 0
    let all = pseudo + segment + (segment.count % 2 == 1 ? [0] : [])
    for i in stride(from: 0, to: all.count, by: 2) { sum += UInt32(all[i]) << 8 | UInt32(all[i + 1]) }
    while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
    let check = ~UInt16(sum)
    segment[16] = UInt8(check >> 8)
    segment[17] = UInt8(check & 0xff)
    let packet = source.count == 4
        ? Frames.ipv4Packet(source: source, destination: destination, protocol: 6, payload: segment)
        : Frames.ipv6Packet(source: source, destination: destination, nextHeader: 6, payload: segment)
    return Frames.ipFrame(packet)
}

/// MSS option bytes.
func mss(_ value: UInt16) -> [UInt8] { [2, 4, UInt8(value >> 8), UInt8(value & 0xff)] }

final class MssClampBench {
    static let cluster = """
        host: 1
        hosts:
          - { id: 1, address: 192.0.2.1 }
          - { id: 2, address: 192.0.2.2 }
        connections: { capacity: 1024 }
        services:
          - { name: web, vip: 198.51.100.10, protocol: tcp, port: 80, mss_clamp: 1200,
              backends: [{ host: 1, address: 10.1.0.1, port: 8080 }] }
          - { name: plain, vip: 198.51.100.10, protocol: tcp, port: 81,
              backends: [{ host: 1, address: 10.1.0.1, port: 8081 }] }
          - { name: web6, vip: "fd00:100::10", protocol: tcp, port: 443, mss_clamp: 1220,
              backends: [{ host: 1, address: "fd00:1::1", port: 8443 }] }
        """
    let queue = MetaQueue()
    let harness: StageHarness<MssClamp>

    init() throws {
        let queue = self.queue
        harness = try StageHarness<MssClamp>(cluster: Self.cluster, prepare: { packet in
            packet.meta.pointee = queue.take()
        })
    }

    /// Pushes `frame` with the metadata classify gives it: service `service` (index + 1), a reply or not.
    func push(_ frames: [(frame: [UInt8], service: UInt16, reply: Bool)]) {
        queue.pending += frames.map { item in
            var meta = HandClassify.layout(item.frame)
            meta.service = item.service
            if item.reply { meta.flags |= UInt8(SY_META_REPLY) }
            return meta
        }
        harness.push(frames.map(\.frame))
    }
}

@Suite("mss-clamp stage")
struct MssClampTests {
    static let client: [UInt8] = [198, 18, 0, 1]
    static let vip: [UInt8] = [198, 51, 100, 10]
    static let client6 = IPAddress("fd00:200::1")!.bytes
    static let backend6 = IPAddress("fd00:1::1")!.bytes
    static let syn: UInt8 = 0x02, synAck: UInt8 = 0x12, ack: UInt8 = 0x10

    @Test("a SYN's MSS above mss_clamp is lowered (even offset), byte-exact and checksum-valid for tshark")
    func clampsSYN() throws {
        let bench = try MssClampBench()
        func frame(_ value: UInt16) -> [UInt8] {
            tcpWithOptions(source: Self.client, destination: Self.vip, sourcePort: 40000, destinationPort: 80,
                           flags: Self.syn, options: mss(value) + [1, 1, 4, 2, 1, 3, 3, 7])
        }
        bench.push([(frame(1460), 1, false)])
        #expect(bench.harness.output(.out) == [frame(1200)])
        #expect(bench.harness.counter(.clamped) == 1)
        try Tshark.assertWellFormed(frames: bench.harness.output(.out))
        try bench.harness.finish()
    }

    @Test("an IPv6 SYN-ACK from a backend with the MSS at an odd offset: lowered, byte-exact, checksum-valid")
    func clampsSYNACKOddOffset() throws {
        let bench = try MssClampBench()
        func frame(_ value: UInt16) -> [UInt8] {
            tcpWithOptions(source: Self.backend6, destination: Self.client6, sourcePort: 8443, destinationPort: 40000,
                           flags: Self.synAck, options: [1] + mss(value) + [1, 1, 1])
        }
        bench.push([(frame(8940), 3, true)])
        #expect(bench.harness.output(.out) == [frame(1220)])
        #expect(bench.harness.counter(.clamped) == 1)
        try Tshark.assertWellFormed(frames: bench.harness.output(.out))
        try bench.harness.finish()
    }

    @Test("left alone: MSS already small, no MSS option, not a SYN, a service without mss_clamp, bad options")
    func leftAlone() throws {
        let bench = try MssClampBench()
        func frame(flags: UInt8, options: [UInt8], port: UInt16 = 80) -> [UInt8] {
            tcpWithOptions(source: Self.client, destination: Self.vip, sourcePort: 40000, destinationPort: port,
                           flags: flags, options: options)
        }
        let frames = [
            frame(flags: Self.syn, options: mss(1000)),
            frame(flags: Self.syn, options: [1, 1, 4, 2]),
            frame(flags: Self.ack, options: mss(1460)),
            frame(flags: Self.syn, options: mss(1460), port: 81),
            frame(flags: Self.syn, options: [1, 8, 0, 0] + mss(1460)), // a length-0 option: cannot be walked
        ]
        bench.push([(frames[0], 1, false), (frames[1], 1, false), (frames[2], 1, false), (frames[3], 2, false),
                    (frames[4], 1, false)])
        #expect(bench.harness.output(.out) == frames)
        #expect(bench.harness.counter(.belowClamp) == 1)
        #expect(bench.harness.counter(.noMSSOption) == 1)
        #expect(bench.harness.counter(.badOptions) == 1)
        #expect(bench.harness.counter(.clamped) == 0)
        try bench.harness.finish()
    }

    @Test("mss_clamp: TCP services only, 536...9000; errors name the file, line and key")
    func configurationErrors() throws {
        func parse(_ service: String) throws {
            _ = try ClusterConfiguration.parse(sectionBody: """
                host: 1
                hosts: [{ id: 1, address: 192.0.2.1 }]
                services:
                  - \(service)
                """, file: "c.yaml")
        }
        let backend = "backends: [{ host: 1, address: 10.1.0.1, port: 53 }]"
        for (service, message) in [
            ("{ name: d, vip: 198.51.100.10, protocol: udp, port: 53, mss_clamp: 1200, \(backend) }", "TCP services only"),
            ("{ name: w, vip: 198.51.100.10, protocol: tcp, port: 80, mss_clamp: 100, \(backend) }", "536"),
            ("{ name: w, vip: 198.51.100.10, protocol: tcp, port: 80, mss_clamp: 9001, \(backend) }", "9000"),
        ] {
            do {
                try parse(service)
                Issue.record("accepted: \(service)")
            } catch {
                let text = "\(error)"
                #expect(text.contains("c.yaml:5:") && text.contains("mss_clamp") && text.contains(message), "\(text)")
            }
        }
        try parse("{ name: w, vip: 198.51.100.10, protocol: tcp, port: 80, mss_clamp: 1400, \(backend) }")
    }
}
