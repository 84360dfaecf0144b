import Foundation
import SwitchyardPcap
import Testing

/// A port's `mtu`: checked against the device's limits and the mbuf data room when the engine
/// starts (errors name the port and the limit), and a jumbo run: 9000-byte frames to a VIP owned by
/// the peer host pass through encapsulate over an IPv6 underlay without a single ICMP error.
@Suite("port mtu and jumbo frames", .serialized)
struct PortMTUTests {
    /// One uplink on net_pcap; PORT_KEYS and POOL_KEYS are replaced per test.
    static let jumbo = """
        eal:
          hugepages: off
          memory_mb: 256
        mempool:
          mbufs: 4095
        POOL_KEYS
        ports:
          - name: uplink
            device: net_pcap0,rx_pcap=IN,tx_pcap=OUT
            rx_descriptors: 256
            tx_descriptors: 256
        PORT_KEYS
        stages:
          - name: classify
            kind: classify
            next: { vip: owner, reply: drop, tunnel: drop, answer: drop, local: drop, other: drop }
          - name: owner
            kind: ownership-lookup
            next: { local: drop, remote: encap }
          - name: encap
            kind: encapsulate
            mtu: 9216
            next: { out: to-uplink, too-big: to-uplink }
          - name: to-uplink
            kind: forward
            port: uplink
            routes:
              - { prefix: "fd00:18::/64" }
            neighbors:
              - { address: "fd00:18::12", mac: "02:00:00:00:00:12" }
            next: { out: port:uplink, resolve: port:uplink }
        lcores:
          - id: 1
            cpu: 1
            idle: backoff
            poll:
              - { port: uplink, queue: 0, to: classify }
        cluster:
          host: 1
          hosts:
            - { id: 1, address: "fd00:18::11" }
            - { id: 2, address: "fd00:18::12" }
          tunnel: { kind: vxlan, port: 4789, vni: 7 }
          services:
            - name: big4
              vip: 198.19.0.2
              protocol: udp
              port: 7000
              backends: [{ host: 2, address: 198.18.101.10, port: 7700 }]
            - name: big6
              vip: "fd00:19::2"
              protocol: udp
              port: 7000
              backends: [{ host: 2, address: "fd00:101::10", port: 7700 }]
          connections:
            capacity: 4096

        """

    static func config(port: String, pool: String = "", in directory: TemporaryDirectory) throws -> String {
        try directory.write("switchyard.yaml", jumbo
            .replacingOccurrences(of: "POOL_KEYS", with: pool)
            .replacingOccurrences(of: "PORT_KEYS", with: port)
            .replacingOccurrences(of: "IN", with: directory.file("in.pcap"))
            .replacingOccurrences(of: "OUT", with: directory.file("out.pcap")))
    }

    /// 9000-byte frames (IPv4 and IPv6 UDP to the VIPs), from many clients.
    static func jumboFrames(count: Int) -> [[UInt8]] {
        let link = Frames.Link(source: [0x02, 0xaa, 0, 0, 0, 1], destination: [0x02, 0xbb, 0, 0, 0, 1])
        return (0..<count).map { index in
            let fill = Array(repeating: UInt8(truncatingIfNeeded: index), count: 9000 - 14 - 28)
            if index % 2 == 0 {
                return Frames.ipv4UDP(source: [198, 51, 100, UInt8(index)], destination: [198, 19, 0, 2],
                                      sourcePort: UInt16(10000 + index), destinationPort: 7000, payload: fill,
                                      ip: .init(dontFragment: true), link: link)
            }
            return Frames.ipv6UDP(source: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(index)],
                                  destination: [0xfd, 0, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                                  sourcePort: UInt16(10000 + index), destinationPort: 7000,
                                  payload: Array(fill.dropFirst(20)), link: link)
        }
    }

    @Test("mtu 9216 on net_pcap with a 9600-byte data room: 9000-byte frames are encapsulated over IPv6, no ICMP")
    func jumboThroughEncapsulate() throws {
        let directory = try TemporaryDirectory()
        let input = Self.jumboFrames(count: 20)
        #expect(input.allSatisfy { $0.count == 9000 })
        try Pcap.write(input, to: directory.file("in.pcap"))
        let config = try Self.config(port: "    mtu: 9216", pool: "  data_room: 9600", in: directory)
        let run = try SwitchyardBinary.run(["run", "--config", config, "--duration", "1.5",
                                            "--stats-json", directory.file("stats.json")])
        try #require(run.status == 0, "switchyard failed: \(run.output)")
        #expect(run.output.contains("mtu 9216"), "\(run.stdout)")
        let counters = try CounterSnapshot(path: directory.file("stats.json"))
        let output = try Pcap.read(directory.file("out.pcap"))
        #expect(output.count == input.count)
        #expect(counters.total("stage encap", "encapsulated") == UInt64(input.count))
        #expect(counters.total("stage encap", "icmp-too-big") == 0)
        #expect(counters.total("stage encap", "too-big-dropped") == 0)
        // Each is the inner frame behind a 70-byte IPv6/UDP/VXLAN header: 9070 bytes, outer IP 9056.
        #expect(output.map(\.count) == Array(repeating: 9070, count: input.count))
        #expect(Set(output.map { Array($0[70...]) }) == Set(input))
        let decoded = try Tshark.assertWellFormed(frames: output)
        #expect(decoded.allSatisfy { $0.values("ipv6.dst").first == "fd00:18::12" && $0.field("vxlan.vni") == "7" })
        #expect(decoded.allSatisfy { $0.values("udp.checksum.status").first == "1" })
        #expect(counters.conservationError() == nil, "\(counters.conservationError() ?? "")")
        #expect(CounterSnapshot.allMbufsReturned(run.stdout), "\(run.stdout)")
    }

    @Test("mtu larger than one mbuf on a device without scattered receive: the error names the port and the data room")
    func dataRoomTooSmall() throws {
        let directory = try TemporaryDirectory()
        try Pcap.write(Self.jumboFrames(count: 1), to: directory.file("in.pcap"))
        let config = try Self.config(port: "    mtu: 9000", in: directory)
        let run = try SwitchyardBinary.run(["run", "--config", config, "--duration", "1"])
        #expect(run.status == 2, "\(run.output)")
        #expect(run.output.contains("port 'uplink': mtu 9000 needs 9018-byte frames but an mbuf holds 2048"), "\(run.output)")
        #expect(run.output.contains("set mempool.data_room to at least 9146"), "\(run.output)")
    }

    @Test("mtu above the device's limit (net_memif: 1500) names the port and the limit")
    func aboveDeviceLimit() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write("memif.yaml", """
            eal:
              hugepages: off
              memory_mb: 256
            mempool:
              mbufs: 4095
            ports:
              - name: fabric
                device: net_memif0,role=server,socket=\(directory.file("memif.sock"))
                mtu: 9000
            stages:
              - name: count
                kind: counter
                next: { out: drop }
            lcores:
              - id: 1
                cpu: 1
                idle: backoff
                poll:
                  - { port: fabric, queue: 0, to: count }

            """)
        let run = try SwitchyardBinary.run(["run", "--config", config, "--duration", "1"])
        #expect(run.status == 2, "\(run.output)")
        #expect(run.output.contains("port 'fabric': mtu 9000 is above the maximum of net_memif: 1500"), "\(run.output)")
    }

    @Test("mtu is a number in 68...65535; other values are configuration errors naming the key")
    func configurationRange() throws {
        let directory = try TemporaryDirectory()
        let config = try Self.config(port: "    mtu: 40", in: directory)
        let run = try SwitchyardBinary.run(["validate", config])
        #expect(run.status == 1)
        #expect(run.output.contains("key 'mtu'"), "\(run.output)")
    }
}
