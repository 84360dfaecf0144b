import CDPDK
import Foundation
import FragmentStage
import SwitchyardCluster
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting
import Testing
import TupleTranslateStage

/// The Linux kernel reassembles what the pipeline made of a fragmented datagram: a UDP datagram
/// larger than the MTU, cut into fragments that arrive out of order, goes through the real classify
/// (`fragments: vip`), `fragments` and `tuple-translate` stages on the harness; the translated
/// fragments are injected into the backend's namespace, whose kernel must reassemble them and
/// deliver the whole payload to its UDP socket (the UDP checksum is checked on the whole datagram).
///
///     namespace a                               namespace b (the backend)
///     veth0 ── veth ───────────────────────────► veth0 198.18.100.10, fd00:18:100::10
///       ▲ inject(translated fragments,              └─► UDP socket :5353 (kernel reassembly)
///       │ in the order the stage emits them)
///     client fragments (order 2, 0, 1) ─► classify ─► fragments ─► tuple-translate
@Suite("kernel reassembles fragments translated by the pipeline", .serialized,
       .enabled(if: NetworkTopology.unavailableReason == nil))
struct FragmentKernelTests {
    static func deliver(ipv6: Bool) throws {
        let bench = try FragmentBench()
        let source = ipv6 ? clientA6 : clientA
        let destination = ipv6 ? vip6Address : vip4
        let backend = IPAddress(ipv6 ? "fd00:18:100::10" : "198.18.100.10")!
        let data = payload(3000, seed: ipv6 ? 61 : 41)
        let fragments = Fragmenter.udp(source: source, destination: destination, sourcePort: 40000,
                                       destinationPort: 53, payload: data, identification: ipv6 ? 0xabcd_0001 : 4242,
                                       chunk: 1400)
        #expect(fragments.count == 3)
        // They arrive last first: two wait in the holding area until the first one comes.
        for index in [2, 0, 1] { bench.harness.push([fragments[index]]) }
        let metas = bench.harness.outputMeta(.flow)
        #expect(metas.count == 3 && bench.harness.counter(.held) == 1 && bench.harness.counter(.released) == 1)

        let queue = MetaQueue()
        queue.pending = metas.map { meta in
            var meta = meta
            meta.has_target = 1
            meta.target_high = backend.high
            meta.target_low = backend.low
            meta.target_port = UInt16(5353).bigEndian
            meta.backend = ipv6 ? 2 : 1
            return meta
        }
        let translate = try StageHarness<TupleTranslate>(sharedCluster: bench.cluster, prepare: { packet in
            packet.meta.pointee = queue.take()
        })
        translate.push(bench.harness.output(.flow))
        var translated = translate.output(.out)
        #expect(translated.count == 3)
        try translate.finish()
        try bench.harness.finish()

        let net = try NetworkTopology()
        defer { net.tearDown() }
        try net.addNamespace("a")
        try net.addNamespace("b")
        try net.addVethPair("veth0", in: "a", "veth0", in: "b")
        try net.addAddress(ipv6 ? "fd00:18:100::10/64" : "198.18.100.10/24", to: "veth0", in: "b")
        try net.run(in: "b", ["ip"] + (ipv6 ? ["-6"] : []) + ["route", "add", "default", "dev", "veth0"])
        let mac = try net.macAddress(of: "veth0", in: "b")
        for index in translated.indices { translated[index].replaceSubrange(0..<6, with: mac) }
        let receiver = try net.startUDPReceiver(in: "b", address: backend.description, port: 5353,
                                                count: 1, timeout: 5)
        try net.inject(translated, in: "a", interface: "veth0")
        #expect(try receiver.datagrams() == [data])
    }

    @Test("IPv4: a 3000-byte UDP datagram in 3 fragments, reordered, arrives whole at the backend's socket")
    func ipv4() throws { try Self.deliver(ipv6: false) }

    @Test("IPv6: the same with Fragment headers")
    func ipv6() throws { try Self.deliver(ipv6: true) }
}
