import CDPDK
import ClassifyStage
import CounterStage
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// The cluster every classify test runs in (198.18.0.0/15 and fd00::/8 only).
///
///     host 1 198.18.0.11 (this host)   host 2 198.18.0.12 (peer)   VXLAN port 4789
///     web   198.19.0.1   tcp 80   → 198.18.100.10:8080 (host 1), 198.18.100.20:8080 (host 2)
///     dns   198.19.0.1   udp 53   → 198.18.100.10:5353 (host 1)
///     web6  fd00:19::1   tcp 443  → [fd00:18:100::10]:8443 (host 1), [fd00:18:100::20]:8443 (host 2)
enum Net {
    static let cluster = """
        host: 1
        hosts:
          - { id: 1, address: 198.18.0.11 }
          - { id: 2, address: 198.18.0.12 }
        tunnel: { kind: vxlan, port: 4789, vni: 7 }
        lookup_table_size: 251
        connections: { capacity: 1024 }
        services:
          - name: web
            vip: 198.19.0.1
            protocol: tcp
            port: 80
            backends:
              - { host: 1, address: 198.18.100.10, port: 8080 }
              - { host: 2, address: 198.18.100.20, port: 8080 }
          - name: dns
            vip: 198.19.0.1
            protocol: udp
            port: 53
            backends:
              - { host: 1, address: 198.18.100.10, port: 5353 }
          - name: web6
            vip: "fd00:19::1"
            protocol: tcp
            port: 443
            backends:
              - { host: 1, address: "fd00:18:100::10", port: 8443 }
              - { host: 2, address: "fd00:18:100::20", port: 8443 }
        """

    static func ip(_ text: String) -> [UInt8] { IPAddress(text)!.bytes }

    static let vip = ip("198.19.0.1")
    static let vip6 = ip("fd00:19::1")
    static let host = ip("198.18.0.11")
    static let peer = ip("198.18.0.12")
    static let client = ip("198.18.1.1")
    static let client6 = ip("fd00:18:1::1")
    static let router = ip("198.18.0.1")
    static let router6 = ip("fd00:18::1")
    static let stranger = ip("198.18.9.9")
    static let backend1 = ip("198.18.100.10")
    static let backend2 = ip("198.18.100.20")
    static let backend6 = ip("fd00:18:100::10")

    static let wireMAC: [UInt8] = [0x02, 0x53, 0x59, 0x00, 0x00, 0x01]
    static let backendPortMAC: [UInt8] = [0x02, 0x53, 0x59, 0x00, 0x00, 0x02]
    static let routerMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x0a, 0x01]
    static let clientMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x0b, 0x01]

    static func tuple(_ mac: [UInt8]) -> (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) {
        (mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
    }

    static let ports = [
        PortDescription(name: "wire", portID: 0, mac: tuple(wireMAC), socketID: 0),
        PortDescription(name: "backends", portID: 1, mac: tuple(backendPortMAC), socketID: 0),
    ]

    /// The client-side flow hash, computed here from the flow's fields (not from a frame).
    static func flowHash(client: [UInt8], clientPort: UInt16, vip: [UInt8], vipPort: UInt16, protocol: UInt8) -> UInt32 {
        var key = sy_flow_key()
        withUnsafeMutableBytes(of: &key) { raw in
            for (index, byte) in client.enumerated() { raw[index] = byte }
            for (index, byte) in vip.enumerated() { raw[16 + index] = byte }
        }
        key.src_port = clientPort.bigEndian
        key.dst_port = vipPort.bigEndian
        key.protocol = `protocol`
        key.family = client.count == 4 ? 4 : 6
        return sy_hash_crc(&key, 40, 0)
    }

    /// An Ethernet link from the router to our wire port.
    static let fromRouter = Frames.Link(source: routerMAC, destination: wireMAC)
}

/// What classify did to one packet: disposition, drop reason, metadata and bytes afterwards.
struct ClassifyRecord {
    var disposition: Classify.Disposition
    var reason: Classify.Counter?
    var meta: sy_meta
    var bytes: [UInt8]

    var flags: Int { Int(meta.flags) }
}

/// classify on a test bench.
///
///     push(frames) ─┬─► StageHarness<Classify>   the real stage: outputs, counters, finish() (conservation)
///                   └─► StageHarness<counter>    whose `prepare` runs a second Classify (same cluster
///                                                runtime) and records each packet's sy_meta
///
/// `finish()` also checks that both instances gave every packet the same disposition and bytes.
final class ClassifyBench {
    let harness: StageHarness<Classify>
    private let probe: StageHarness<PacketCounter>
    private let recorder: Recorder
    private(set) var records: [ClassifyRecord] = []

    var cluster: ClusterRuntime { harness.cluster! }

    final class Recorder {
        var classifier: Classify?
        var records: [ClassifyRecord] = []
    }

    /// `inputPort`: the port id every packet arrives on; `prepare` runs before classify (e.g. the
    /// metadata decapsulate leaves).
    init(parameters: String = "{}", inputPort: UInt16 = 0, burstSize: Int = 32,
         prepare: ((Packet) -> Void)? = nil) throws
    {
        let setUp: (Packet) -> Void = { packet in
            sy_mbuf_set_port(packet.mbuf, inputPort)
            prepare?(packet)
        }
        harness = try StageHarness<Classify>(parameters: parameters, burstSize: burstSize, ports: Net.ports,
                                             cluster: Net.cluster, prepare: setUp)
        let recorder = Recorder()
        self.recorder = recorder
        probe = try StageHarness<PacketCounter>(burstSize: burstSize, ports: Net.ports, sharedCluster: harness.cluster,
                                                prepare: { packet in
                                                    setUp(packet)
                                                    let result = recorder.classifier!.classify(single: packet)
                                                    var bytes = [UInt8](repeating: 0, count: packet.length)
                                                    if !bytes.isEmpty {
                                                        _ = sy_pktmbuf_read(packet.mbuf, 0, UInt32(bytes.count), &bytes)
                                                    }
                                                    recorder.records.append(ClassifyRecord(
                                                        disposition: result.disposition, reason: result.dropReason,
                                                        meta: packet.meta.pointee, bytes: bytes))
                                                })
        let map = try ConfigDocument.parse(parameters, file: "<probe parameters>")
        let context = StageParameterContext(instanceName: "probe", portNames: Net.ports.map(\.name),
                                            cluster: harness.cluster?.configuration)
        recorder.classifier = try Classify(
            parameters: Classify.Parameters(from: map, stage: context),
            context: StageContext(instanceName: "probe", lcoreID: 0, socketID: 0, burstSize: burstSize, ports: Net.ports,
                                  cluster: harness.cluster))
    }

    /// Runs `frames` through classify; returns what happened to each, in order.
    @discardableResult
    func push(_ frames: [[UInt8]]) -> [ClassifyRecord] {
        harness.push(frames)
        recorder.records = []
        probe.push(frames)
        records += recorder.records
        return recorder.records
    }

    /// One frame through classify.
    func push(_ frame: [UInt8]) -> ClassifyRecord { push([frame])[0] }

    func output(_ disposition: Classify.Disposition) -> [[UInt8]] { harness.output(disposition) }
    func counter(_ counter: Classify.Counter) -> UInt64 { harness.counter(counter) }

    /// Conservation (the harness) and agreement between the stage and the recorded instance.
    func finish() throws {
        try harness.finish()
        for disposition in Classify.Disposition.allCases {
            #expect(records.filter { $0.disposition == disposition }.map(\.bytes) == harness.output(disposition),
                    "disposition \(disposition): the recorded instance disagrees with the stage")
        }
    }

    /// The neighbour table's entries as (address, MAC) pairs.
    var neighbors: [(IPAddress, MACAddress)] { cluster.neighbors.entries.map { ($0.0, $0.1) } }

    func neighbor(_ address: [UInt8]) -> [UInt8]? {
        cluster.neighbors.entries.first { $0.0 == IPAddress(bytes: address) }?.1.array
    }
}

extension Array where Element == UInt8 {
    /// A copy with `bytes` written at `offset`.
    func with(_ offset: Int, _ bytes: [UInt8]) -> [UInt8] {
        var copy = self
        copy.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        return copy
    }

    /// A copy of an IPv4 frame (IP header at `l3`) with its header checksum recomputed.
    func fixingIPv4Checksum(l3: Int = 14) -> [UInt8] {
        let headerLength = Int(self[l3] & 0x0f) * 4
        let sum = Frames.ipv4Checksum(Array(self[l3..<l3 + headerLength]))
        return with(l3 + 10, [UInt8(sum >> 8), UInt8(sum & 0xff)])
    }
}
