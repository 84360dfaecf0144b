import CDPDK
import ClassifyStage
import DecapsulateStage
import FuzzSupport
import SwitchyardCore
import SwitchyardPcap

/// decapsulate, VXLAN (VNI 7, port 4789) or GUE (port 6080) by selector bit 1, on frames from the
/// uplink. classify (`input: wire`) fills the metadata first, as in the pipeline; with selector
/// bit 2 set decapsulate also gets the packets classify did not call `tunnel` (its own checks of
/// "where the metadata says" must hold). An inner packet then goes through classify (`input: tunnel`).
///
/// Invariants beyond StageBench's and PacketBench's, for `inner`: FROM_PEER set, `peer` 2 (the
/// only peer host), and the bytes are the input's own: VXLAN, exactly the inner frame
/// `input[l4 + 16 ..< l4 + UDP length]`; GUE, a 14-byte Ethernet header (the input port's MAC,
/// the outer source MAC, the EtherType of the inner IP version) before `input[... ..< l4 + UDP length]`.
final class Target {
    let packets = PacketBench()
    let tunnels: [(classify: StageBench<Classify>, decap: StageBench<Decapsulate>, inner: StageBench<Classify>, gue: Bool)]

    init() {
        tunnels = [("{ kind: vxlan, port: 4789, vni: 7 }", false), ("{ kind: gue, port: 6080 }", true)].map { tunnel, gue in
            let runtime = FuzzCluster.runtime(FuzzCluster.yaml(tunnel: tunnel))
            return (StageBench<Classify>("classify", parameters: "{}", ports: FuzzCluster.ports, cluster: runtime),
                    StageBench<Decapsulate>(gue ? "decapsulate-gue" : "decapsulate-vxlan", ports: FuzzCluster.ports, cluster: runtime),
                    StageBench<Classify>("classify-tunnel", parameters: "input: tunnel", ports: FuzzCluster.ports, cluster: runtime),
                    gue)
        }
    }

    func run(_ input: FuzzInput) {
        let tunnel = tunnels[Int(input.selector >> 1) & 1]
        let always = input.selector & 4 != 0
        let packet = packets.load(input.frame, layout: input.layout, port: 0)
        let classified = tunnel.classify.run(packet.mbuf)
        if classified == .tunnel || always {
            let before = sy_mbuf_meta(packet.mbuf)!.pointee
            let original = packets.bytes(packet)
            let disposition = tunnel.decap.run(packet.mbuf)
            packets.check(packet, stage: tunnel.decap.name)
            if disposition == .inner {
                check(packet, original: original, before: before, gue: tunnel.gue, name: tunnel.decap.name)
                if tunnel.inner.run(packet.mbuf) != .drop { packets.check(packet, stage: "classify-tunnel") }
            }
        } else {
            packets.check(packet, stage: "classify")
        }
        packets.release(packet)
        packets.checkPool()
        tunnel.decap.checkTotals()
    }

    func check(_ packet: PacketBench.Loaded, original: [UInt8], before: sy_meta, gue: Bool, name: String) {
        let meta = sy_mbuf_meta(packet.mbuf)!.pointee
        // FROM_PEER, and HANDED_ON when the tunnel header carries the daisy-chaining mark; nothing else.
        if meta.flags & ~UInt8(SY_META_HANDED_ON) != UInt8(SY_META_FROM_PEER) || meta.peer != 2 { violated("\(name): inner without FROM_PEER and peer 2 (or flags other than HANDED_ON): \(meta)") }
        let bytes = packets.bytes(packet)
        // The UDP payload's end: the inner packet ends there (Ethernet padding and bytes past the
        // UDP length are not the peer's).
        let l4 = Int(before.l4)
        guard l4 + 8 <= original.count else { violated("\(name): inner from a packet without its UDP header") }
        let end = l4 + (Int(original[l4 + 4]) << 8 | Int(original[l4 + 5]))
        guard end <= original.count else { violated("\(name): UDP payload end \(end) past the packet of \(original.count)") }
        if !gue {
            let start = Int(before.l4) + 16
            guard start <= end, bytes[...] == original[start..<end] else {
                violated("\(name): the inner frame is not input[\(start)..<\(end)] (\(bytes.count) bytes)")
            }
        } else {
            guard bytes.count >= 14 + 20, bytes.count - 14 <= end else { violated("\(name): GUE inner of \(bytes.count) bytes") }
            let innerStart = end - (bytes.count - 14)
            let portMAC = FuzzCluster.uplinkMAC
            let type: [UInt8] = bytes[14] >> 4 == 4 ? [0x08, 0x00] : [0x86, 0xdd]
            guard bytes[14...] == original[innerStart..<end], Array(bytes[0..<6]) == portMAC,
                  bytes[6..<12] == original[6..<12], Array(bytes[12..<14]) == type
            else { violated("\(name): the GUE inner frame is not [port MAC | outer source | type] + input[\(innerStart)..<\(end)]") }
        }
        FuzzOutput.derived(input: UnsafeRawBufferPointer(start: original, count: original.count), output: bytes)
    }
}

nonisolated(unsafe) var target: Target?

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    FuzzMain.initialize(target: "decapsulate") {
        let l = Seeds.toUplink
        let inners = [
            Frames.ipv4TCP(source: Seeds.client, destination: Seeds.vip, sourcePort: 40000, destinationPort: 80, flags: [.ack]),
            Frames.ipv4UDP(source: Seeds.client, destination: Seeds.vip, sourcePort: 5000, destinationPort: 7000, payload: [1, 2]),
            Frames.ipv6TCP(source: Seeds.client6, destination: Seeds.vip6, sourcePort: 40000, destinationPort: 80, flags: [.syn]),
            Frames.ipv4TCP(source: Seeds.client, destination: Seeds.vip, sourcePort: 40000, destinationPort: 80,
                           link: Frames.Link(vlan: 5)),
        ]
        var seeds: [[UInt8]] = []
        for inner in inners {
            seeds.append([0] + Frames.vxlan(outerSource: Seeds.peer, outerDestination: Seeds.host, vni: 7, inner: inner, link: l))
            seeds.append([2] + Frames.gue(outerSource: Seeds.peer, outerDestination: Seeds.host, destinationPort: 6080,
                                          inner: Frames.withoutEthernet(inner), link: l))
        }
        // Wrong VNI, and a tunnel packet from a stranger.
        seeds.append([0] + Frames.vxlan(outerSource: Seeds.peer, outerDestination: Seeds.host, vni: 8, inner: inners[0], link: l))
        seeds.append([6] + Frames.vxlan(outerSource: Seeds.client, outerDestination: Seeds.host, vni: 7, inner: inners[0], link: l))
        return seeds
    }
    target = Target()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let input = FuzzInput(data, size) else { return 0 }
    target!.run(input)
    return 0
}
