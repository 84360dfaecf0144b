import CDPDK
import ClassifyStage
import FragmentStage
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing
import TupleTranslateStage
import Foundation

/// A UDP datagram to a VIP, cut into IP fragments of at most `chunk` payload bytes (a multiple of 8).
enum Fragmenter {
    static func udp(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                    payload: [UInt8], identification: UInt32, chunk: Int = 64) -> [[UInt8]]
    {
        let datagram = Frames.udpDatagram(source: source, destination: destination, sourcePort: sourcePort,
                                          destinationPort: destinationPort, payload: payload, checksum: .computed)
        var frames: [[UInt8]] = []
        var offset = 0
        while offset < datagram.count {
            let piece = Array(datagram[offset..<min(offset + chunk, datagram.count)])
            let more = offset + chunk < datagram.count
            if source.count == 4 {
                frames.append(Frames.ipFrame(Frames.ipv4Packet(
                    source: source, destination: destination, protocol: 17, payload: piece,
                    fields: .init(identification: UInt16(truncatingIfNeeded: identification), moreFragments: more,
                                  fragmentOffset: UInt16(offset / 8)))))
            } else {
                frames.append(Frames.ipFrame(Frames.ipv6Packet(
                    source: source, destination: destination, nextHeader: 17, payload: piece,
                    fields: .init(extensionHeaders: [.fragment(offset: UInt16(offset / 8), moreFragments: more,
                                                               identification: identification)]))))
            }
            offset += chunk
        }
        return frames
    }
}

/// The fragments stage on the harness, after a real classify (`fragments: vip`) in `prepare`.
final class FragmentBench {
    static let cluster = """
        host: 1
        hosts:
          - { id: 1, address: 198.18.0.11 }
          - { id: 2, address: 198.18.0.12 }
        connections: { capacity: 1024 }
        services:
          - name: dns
            vip: 198.19.0.1
            protocol: udp
            port: 53
            backends: [{ host: 1, address: 198.18.100.10, port: 5353 }]
          - name: dns6
            vip: "fd00:19::1"
            protocol: udp
            port: 53
            backends: [{ host: 1, address: "fd00:18:100::10", port: 5353 }]
        """
    let classify: TypedStageRunner<Classify>
    let harness: StageHarness<Fragments>
    let cluster: ClusterRuntime

    init(_ parameters: String = "{}") throws {
        TestEAL.start()
        let settings = try ClusterConfiguration.parse(sectionBody: Self.cluster, file: "<test cluster>")
        let cluster = try ClusterRuntime(configuration: settings, name: "syfrag\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        self.cluster = cluster
        let context = StageContext(instanceName: "c", lcoreID: 0, socketID: 0, burstSize: 32, ports: [], cluster: cluster)
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        counters.initialize(repeating: 0, count: 64)
        let classify = TypedStageRunner<Classify>(
            stage: try Classify(parameters: .init(answer: false, learnNeighbors: false, fragments: .vip), context: context),
            counters: counters)
        self.classify = classify
        harness = try StageHarness<Fragments>(parameters: parameters, sharedCluster: cluster, prepare: { packet in
            let result = classify.stage.classify(single: packet)
            precondition(result.disposition == .vip, "classify did not give vip: \(String(describing: result.dropReason))")
        })
    }
}

let clientA = IPAddress("198.18.1.1")!.bytes
let clientB = IPAddress("198.18.1.2")!.bytes
let vip4 = IPAddress("198.19.0.1")!.bytes
let clientA6 = IPAddress("fd00:18:1::1")!.bytes
let vip6Address = IPAddress("fd00:19::1")!.bytes

func payload(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) &+ seed } }

@Suite("fragments stage")
struct FragmentTests {
    /// The flow key classify gives a whole (unfragmented) datagram of the same flow.
    func wholeFlow(_ bench: FragmentBench, source: [UInt8], destination: [UInt8], sourcePort: UInt16) -> sy_meta {
        let frame = source.count == 4
            ? Frames.ipv4UDP(source: source, destination: destination, sourcePort: sourcePort, destinationPort: 53)
            : Frames.ipv6UDP(source: source, destination: destination, sourcePort: sourcePort, destinationPort: 53)
        let pool = bench.harness.pool
        let mbuf = sy_pktmbuf_alloc(pool)!
        defer { sy_pktmbuf_free(mbuf) }
        let data = sy_pktmbuf_append(mbuf, UInt16(frame.count))!
        frame.withUnsafeBytes { UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
        sy_mbuf_meta(mbuf).initialize(to: sy_meta())
        _ = bench.classify.stage.classify(single: Packet(mbuf))
        return sy_mbuf_meta(mbuf).pointee
    }

    func sameFlow(_ a: sy_meta, _ b: sy_meta) -> Bool {
        var x = a.key, y = b.key
        return a.service == b.service && a.flow_hash == b.flow_hash
            && withUnsafeBytes(of: &x) { Array($0) } == withUnsafeBytes(of: &y) { Array($0) }
    }

    @Test("IPv4 and IPv6 fragments in order: bytes unchanged, every fragment carries the whole datagram's flow")
    func inOrder() throws {
        for (source, destination) in [(clientA, vip4), (clientA6, vip6Address)] {
            let bench = try FragmentBench()
            let frames = Fragmenter.udp(source: source, destination: destination, sourcePort: 40000, destinationPort: 53,
                                        payload: payload(300, seed: 1), identification: 77)
            #expect(frames.count == 5)
            bench.harness.push(frames)
            #expect(bench.harness.output(.flow) == frames)
            let whole = wholeFlow(bench, source: source, destination: destination, sourcePort: 40000)
            #expect(whole.service != 0 && whole.flow_hash != 0)
            #expect(bench.harness.outputMeta(.flow).allSatisfy { sameFlow($0, whole) })
            #expect(bench.harness.counter(.firstFragments) == 1)
            #expect(bench.harness.counter(.laterFragments) == 4)
            #expect(bench.harness.counter(.held) == 0)
            try bench.harness.finish()
        }
    }

    @Test("reversed order: later fragments are held, then released right after their first fragment")
    func reversed() throws {
        for (source, destination) in [(clientA, vip4), (clientA6, vip6Address)] {
            let bench = try FragmentBench()
            let frames = Fragmenter.udp(source: source, destination: destination, sourcePort: 40001, destinationPort: 53,
                                        payload: payload(300, seed: 2), identification: 0x1_0002)
            // One burst per fragment, as they would arrive.
            for frame in frames.reversed() { bench.harness.push([frame]) }
            let out = bench.harness.output(.flow)
            // The first fragment, then the held ones in their arrival order.
            #expect(out == [frames[0]] + frames[1...].reversed())
            let whole = wholeFlow(bench, source: source, destination: destination, sourcePort: 40001)
            #expect(bench.harness.outputMeta(.flow).allSatisfy { sameFlow($0, whole) })
            #expect(bench.harness.counter(.held) == 4)
            #expect(bench.harness.counter(.released) == 4)
            #expect(bench.harness.held == 0)
            try bench.harness.finish()
        }
    }

    @Test("interleaved with other flows and unfragmented packets in one burst: each fragment gets its own flow")
    func interleaved() throws {
        let bench = try FragmentBench()
        let a = Fragmenter.udp(source: clientA, destination: vip4, sourcePort: 1111, destinationPort: 53,
                               payload: payload(200, seed: 3), identification: 5)
        // Same addresses and id, another source port: a different datagram only by... the client.
        let b = Fragmenter.udp(source: clientB, destination: vip4, sourcePort: 2222, destinationPort: 53,
                               payload: payload(200, seed: 4), identification: 5)
        let whole = Frames.ipv4UDP(source: clientA, destination: vip4, sourcePort: 3333, destinationPort: 53,
                                   payload: [1, 2, 3])
        // b's later fragments come before b's first; a is in order.
        let burst = [a[0], b[2], a[1], whole, b[1], a[2], b[0], a[3], b[3]]
        bench.harness.push(burst)
        let out = bench.harness.output(.flow)
        #expect(out.count == burst.count)
        #expect(Array(out.prefix(7)) == [a[0], a[1], whole, a[2], b[0], a[3], b[3]])
        #expect(Array(out.suffix(2)) == [b[2], b[1]])
        let flowA = wholeFlow(bench, source: clientA, destination: vip4, sourcePort: 1111)
        let flowB = wholeFlow(bench, source: clientB, destination: vip4, sourcePort: 2222)
        let metas = bench.harness.outputMeta(.flow)
        for (frame, meta) in zip(out, metas) where frame != whole {
            #expect(sameFlow(meta, a.contains(frame) ? flowA : flowB))
        }
        #expect(bench.harness.counter(.held) == 2 && bench.harness.counter(.released) == 2)
        try bench.harness.finish()
    }

    @Test("holding area full: the extra later fragment is dropped as hold-full; the rest are freed at teardown")
    func overflow() throws {
        let bench = try FragmentBench("hold_size: 2")
        let frames = (0..<3).map { id in
            Fragmenter.udp(source: clientA, destination: vip4, sourcePort: 5000, destinationPort: 53,
                           payload: payload(100, seed: 5), identification: UInt32(100 + id))[1]
        }
        bench.harness.push(frames)
        #expect(bench.harness.output(.drop) == [frames[2]])
        #expect(bench.harness.counter(.holdFull) == 1)
        #expect(bench.harness.held == 2)
        try bench.harness.finish()
        #expect(bench.harness.releasedAtTeardown == 2)
        #expect(bench.harness.counter(.holdTeardown) == 2)
    }

    @Test("a held fragment whose first fragment never comes is dropped as hold-timeout by a later burst")
    func timeout() throws {
        let bench = try FragmentBench("hold_timeout_ms: 5")
        let lonely = Fragmenter.udp(source: clientA, destination: vip4, sourcePort: 6000, destinationPort: 53,
                                    payload: payload(100, seed: 6), identification: 9)
        bench.harness.push([lonely[1]])
        #expect(bench.harness.held == 1)
        usleep(20_000)
        let other = Frames.ipv4UDP(source: clientB, destination: vip4, sourcePort: 6001, destinationPort: 53, payload: [9])
        bench.harness.push([other])
        #expect(bench.harness.output(.drop) == [lonely[1]])
        #expect(bench.harness.output(.flow) == [other])
        #expect(bench.harness.counter(.holdTimeout) == 1)
        // Its first fragment now comes too late for it, but still finds its way.
        bench.harness.push([lonely[0]])
        #expect(bench.harness.output(.flow).count == 2)
        try bench.harness.finish()
    }

    @Test("parameters: table_size must be a power of two; hold_size within 0...256")
    func parameters() throws {
        #expect(throws: ConfigError.self) { _ = try FragmentBench("table_size: 1000") }
        #expect(throws: ConfigError.self) { _ = try FragmentBench("hold_size: 300") }
        #expect(throws: ConfigError.self) { _ = try FragmentBench("hold_time: 3") }
    }

    @Test("through tuple-translate: later fragments get only their IP destination rewritten, byte-exact")
    func translated() throws {
        for (source, destination, backend) in [(clientA, vip4, "198.18.100.10"), (clientA6, vip6Address, "fd00:18:100::10")] {
            let bench = try FragmentBench()
            let frames = Fragmenter.udp(source: source, destination: destination, sourcePort: 40000, destinationPort: 53,
                                        payload: payload(250, seed: 8), identification: 31)
            bench.harness.push(frames.reversed())
            let metas = bench.harness.outputMeta(.flow)
            let fragments = bench.harness.output(.flow)
            let queue = MetaQueue()
            let address = IPAddress(backend)!
            queue.pending = metas.map { meta in
                var meta = meta
                meta.has_target = 1
                meta.target_high = address.high
                meta.target_low = address.low
                meta.target_port = UInt16(5353).bigEndian
                meta.backend = source.count == 4 ? 1 : 2
                return meta
            }
            let translate = try StageHarness<TupleTranslate>(sharedCluster: bench.cluster, prepare: { packet in
                packet.meta.pointee = queue.take()
            })
            translate.push(fragments)
            // What the backend would get had the client sent to it directly, fragment for fragment.
            let expected = Fragmenter.udp(source: source, destination: address.bytes, sourcePort: 40000,
                                          destinationPort: 5353, payload: payload(250, seed: 8), identification: 31)
            #expect(translate.output(.out) == [expected[0]] + expected[1...].reversed())
            try translate.finish()
            try bench.harness.finish()
        }
    }
}
