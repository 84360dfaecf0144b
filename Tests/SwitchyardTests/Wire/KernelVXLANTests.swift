import EncapsulateStage
import Foundation
import SwitchyardPcap
import SwitchyardTesting
import Testing

/// The Linux kernel is the independent receiver: frames the real encapsulate stage produced are
/// injected from namespace A, a kernel VXLAN device in namespace B decapsulates them, and a UDP
/// socket in B must receive every inner payload.
///
///     namespace a                                   namespace b
///     veth0 198.18.0.1 ── veth ─────────────────── veth0 198.18.0.2
///           (fd00:18::1)                                 (fd00:18::2 with an IPv6 underlay)
///       ▲ inject(encapsulate output,                 │ vx0 (VNI 42, dstport 4789) 198.19.100.2/24
///       │ outer MACs filled as forward would)        └─► UDP socket 198.19.100.2:9999
///
/// Over IPv6 the kernel's VXLAN device checks the outer UDP checksum (it accepts 0 only with
/// udp6zerocsumrx, which is off): delivery proves encapsulate's checksum right.
@Suite("kernel VXLAN receives encapsulate's output", .serialized)
struct KernelVXLANTests {
    static let flows = 16

    /// Builds the namespaces, encapsulates `flows` inner UDP packets with `vni` for host 2 (B),
    /// injects them from A and returns what B's socket received.
    /// Without `configureMAC`, host 2 has no `mac` and the inner frames keep a destination MAC that
    /// is not vx0's.
    static func sendThroughKernel(vni: UInt32, udpChecksum: Bool, configureMAC: Bool = true, ipv6: Bool = false,
                                  zeroTheChecksum: Bool = false, expectDelivery: Bool) throws -> (sent: [String], received: [String])
    {
        let net = try NetworkTopology()
        defer { net.tearDown() }
        let (hostA, hostB) = ipv6 ? ("fd00:18::1", "fd00:18::2") : ("198.18.0.1", "198.18.0.2")
        try net.addNamespace("a")
        try net.addNamespace("b")
        try net.addVethPair("veth0", in: "a", "veth0", in: "b")
        try net.addAddress(hostA + (ipv6 ? "/64" : "/24"), to: "veth0", in: "a")
        try net.addAddress(hostB + (ipv6 ? "/64" : "/24"), to: "veth0", in: "b")
        try net.addVXLAN("vx0", vni: 42, local: hostB, port: 4789, address: "198.19.100.2/24", in: "b")
        let vethA = try net.macAddress(of: "veth0", in: "a")
        let vethB = try net.macAddress(of: "veth0", in: "b")
        let vxlanB = try net.macAddress(of: "vx0", in: "b")

        // Host 2 is B: its address is B's veth, its `mac` the VXLAN device's (the inner destination).
        let cluster = """
            host: 1
            hosts:
              - {id: 1, address: "\(hostA)"}
              - {id: 2, address: "\(hostB)"\(configureMAC ? ", mac: \"\(TunnelFixtures.macText(vxlanB))\"" : "")}
            tunnel: {kind: vxlan, port: 4789, vni: \(vni)}
            connections: {capacity: 1024}
            """
        let harness = try StageHarness<Encapsulate>(parameters: "udp_checksum: \(udpChecksum)", cluster: cluster,
                                                    prepare: { MetaScript(defaultPeer: 2).apply($0) })
        let payloads = (0..<flows).map { "flow-\($0)-checksum-\(udpChecksum)-ipv6-\(ipv6)" }
        // The inner destination MAC is not vx0's: encapsulate must put host 2's `mac` there.
        let inners = payloads.enumerated().map { index, text in
            Frames.ipv4UDP(source: [198, 19, 100, 1], destination: [198, 19, 100, 2], sourcePort: UInt16(5000 + index),
                           destinationPort: 9999, payload: Array(text.utf8),
                           link: .init(source: [0x02, 0, 0, 0, 0x64, 0x01], destination: TunnelFixtures.ourMAC))
        }
        harness.push(inners)
        try harness.finish()
        let encapsulated = harness.output(.out)
        guard encapsulated.count == flows else {
            throw NetworkTopology.SetupError(message: "encapsulate emitted \(encapsulated.count) of \(flows) frames")
        }
        let udp = ipv6 ? 54 : 34
        #expect(Set(encapsulated.map { [$0[udp], $0[udp + 1]] }).count > 1, "flows should use several outer source ports")
        // What the forward stage does in the pipeline: next-hop and own MAC on the outer frame.
        var frames = encapsulated.map { vethB + vethA + Array($0[12...]) }
        let decoded = try Tshark.assertWellFormed(frames: frames)
        if zeroTheChecksum { frames = frames.map { var f = $0; f[udp + 6] = 0; f[udp + 7] = 0; return f } }
        #expect(decoded.allSatisfy { $0.field("vxlan.vni") == String(vni) })
        let innerDestination = TunnelFixtures.macText(configureMAC ? vxlanB : TunnelFixtures.ourMAC)
        #expect(decoded.allSatisfy { $0.values("eth.dst").last == innerDestination })

        let receiver = try net.startUDPReceiver(in: "b", address: "198.19.100.2", port: 9999, count: flows,
                                                timeout: expectDelivery ? 10 : 2)
        try net.inject(frames, in: "a", interface: "veth0")
        return (payloads, try receiver.texts())
    }

    @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
          arguments: [false, true])
    func kernelDecapsulatesEveryFlow(udpChecksum: Bool) throws {
        let (sent, received) = try Self.sendThroughKernel(vni: 42, udpChecksum: udpChecksum, expectDelivery: true)
        #expect(received.sorted() == sent.sorted())
    }

    /// The IPv6 underlay: IPv6 outer headers with the UDP checksum the kernel insists on.
    @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"))
    func kernelDecapsulatesIPv6Underlay() throws {
        let (sent, received) = try Self.sendThroughKernel(vni: 42, udpChecksum: true, ipv6: true, expectDelivery: true)
        #expect(received.sorted() == sent.sorted())
    }

    /// Why encapsulate computes it: without udp6zerocsumrx the kernel drops a zero checksum over IPv6.
    @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"))
    func zeroChecksumOverIPv6DeliversNothing() throws {
        let (_, received) = try Self.sendThroughKernel(vni: 42, udpChecksum: true, ipv6: true, zeroTheChecksum: true,
                                                       expectDelivery: false)
        #expect(received.isEmpty)
    }

    @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"))
    func wrongVNIDeliversNothing() throws {
        let (_, received) = try Self.sendThroughKernel(vni: 43, udpChecksum: false, expectDelivery: false)
        #expect(received.isEmpty)
    }

    /// Why `cluster.hosts[].mac` exists: a kernel VXLAN device drops inner frames for other MACs.
    @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"))
    func innerFrameForAnotherMACDeliversNothing() throws {
        let (_, received) = try Self.sendThroughKernel(vni: 42, udpChecksum: false, configureMAC: false,
                                                       expectDelivery: false)
        #expect(received.isEmpty)
    }
}
