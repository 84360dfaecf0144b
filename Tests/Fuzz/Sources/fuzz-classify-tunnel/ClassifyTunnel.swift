import CDPDK
import ClassifyStage
import FuzzSupport
import SwitchyardCore
import SwitchyardPcap

/// classify with `input: tunnel`: the inner frames decapsulate hands on (marked FROM_PEER, peer 2).
///
/// Invariants beyond StageBench's and PacketBench's: only `vip` or `drop` (everything else inside
/// a tunnel is `tunnel-not-vip` or `nested-tunnel`); FROM_PEER and `peer` survive; a `vip` packet
/// carries a service and offsets inside the packet, and is never a REPLY.
final class Target {
    let packets = PacketBench()
    let runtime = FuzzCluster.runtime()
    let bench: StageBench<Classify>

    init() {
        bench = StageBench<Classify>("classify-tunnel", parameters: "input: tunnel", ports: FuzzCluster.ports, cluster: runtime)
    }

    func run(_ input: FuzzInput) {
        let packet = packets.load(input.frame, layout: input.layout, port: 0)
        let meta = sy_mbuf_meta(packet.mbuf)!
        meta.pointee.flags = UInt8(SY_META_FROM_PEER)
        meta.pointee.peer = 2
        let disposition = bench.run(packet.mbuf)
        packets.check(packet, stage: bench.name)
        let after = meta.pointee
        if after.flags & UInt8(SY_META_FROM_PEER) == 0 || after.peer != 2 { violated("classify-tunnel: FROM_PEER or peer lost") }
        switch disposition {
        case .drop: break
        case .vip:
            guard after.service != 0, after.family == 4 || after.family == 6, after.l3 >= 14,
                  Int(after.l3_end) <= Int(sy_mbuf_data_len(packet.mbuf)), after.l3 < after.l3_end,
                  after.flags & UInt8(SY_META_REPLY) == 0
            else { violated("classify-tunnel: vip with inconsistent metadata \(after)") }
            FuzzOutput.derived(input: input.frame, output: packets.bytes(packet))
        default:
            violated("classify-tunnel: \(disposition.name) from inside a tunnel")
        }
        packets.release(packet)
        packets.checkPool()
        bench.checkTotals()
    }
}

nonisolated(unsafe) var target: Target?

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    FuzzMain.initialize(target: "classify-tunnel") {
        // Inner frames: what a peer would tunnel (client → VIP), and what must never come out of a tunnel.
        let inner = Seeds.uplink() + Seeds.backends()
        let l = Frames.Link(source: FuzzCluster.routerMAC, destination: FuzzCluster.uplinkMAC)
        let nested = Frames.vxlan(outerSource: Seeds.peer, outerDestination: Seeds.host, vni: 7,
                                  inner: Frames.ipv4TCP(source: Seeds.client, destination: Seeds.vip, sourcePort: 1, destinationPort: 80), link: l)
        return (inner + [nested]).map { [0] + $0 }
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
