import CDPDK
import ClassifyStage
import FuzzSupport
import SwitchyardCore

/// classify on frames from a NIC (`input: wire`): four instances, chosen by selector bits 1-2.
///
///     0 side: uplink               port uplink     1 side: uplink, filter_mac: true   port uplink
///     2 side: backends             port backends   3 side: backends, filter_mac: true port backends
///
/// Invariants beyond StageBench's and PacketBench's: only a `side: backends` instance gives
/// `reply`; no frame with a group destination MAC (broadcast, multicast) is `vip` or `reply`;
/// `vip` and `reply` carry a service, an IP family and offsets inside the packet; `tunnel`
/// carries an L4 offset; an answer is sent from the input port's MAC.
final class Target {
    let packets = PacketBench()
    let runtime = FuzzCluster.runtime()
    let instances: [(bench: StageBench<Classify>, port: UInt16, backends: Bool)]

    init() {
        let runtime = self.runtime
        instances = [("side: uplink", 0, false), ("{ side: uplink, filter_mac: true }", 0, false),
                     ("side: backends", 1, true), ("{ side: backends, filter_mac: true }", 1, true)].map {
            (StageBench<Classify>("classify \($0.0)", parameters: $0.0, ports: FuzzCluster.ports, cluster: runtime), $0.1, $0.2)
        }
    }

    func run(_ input: FuzzInput) {
        let instance = instances[Int(input.selector >> 1) & 3]
        let packet = packets.load(input.frame, layout: input.layout, port: instance.port)
        let groupDestination = input.frame.count >= 1 && input.frame[0] & 1 == 1
        let disposition = instance.bench.run(packet.mbuf)
        packets.check(packet, stage: instance.bench.name)
        let meta = sy_mbuf_meta(packet.mbuf)!.pointee
        let length = Int(sy_mbuf_data_len(packet.mbuf))
        switch disposition {
        case .vip, .reply:
            if disposition == .reply && !instance.backends { violated("\(instance.bench.name): reply on the uplink side") }
            if groupDestination { violated("\(instance.bench.name): a group-addressed frame went to \(disposition.name)") }
            guard meta.service != 0, meta.family == 4 || meta.family == 6, meta.l3 >= 14, Int(meta.l3_end) <= length,
                  meta.l3 < meta.l3_end, meta.l4 == 0 || (meta.l4 > meta.l3 && meta.l4 < meta.l3_end)
            else { violated("\(instance.bench.name): \(disposition.name) with inconsistent metadata \(meta)") }
            if disposition == .reply && meta.flags & UInt8(SY_META_REPLY) == 0 {
                violated("\(instance.bench.name): reply without the REPLY flag")
            }
        case .tunnel:
            guard meta.l4 > meta.l3, Int(meta.l4) + 8 <= length else { violated("\(instance.bench.name): tunnel without a UDP header in the packet") }
        case .answer:
            let bytes = packets.bytes(packet)
            let portMAC = instance.port == 0 ? FuzzCluster.uplinkMAC : FuzzCluster.backendsMAC
            if bytes.count < 14 || Array(bytes[6..<12]) != portMAC {
                violated("\(instance.bench.name): an answer not sent from the input port's MAC")
            }
        default:
            break
        }
        if FuzzOutput.enabled && disposition != .drop {
            let bytes = packets.bytes(packet)
            if disposition == .answer { FuzzOutput.built(bytes) } else { FuzzOutput.derived(input: input.frame, output: bytes) }
        }
        packets.release(packet)
        packets.checkPool()
        instance.bench.checkTotals()
    }
}

nonisolated(unsafe) var target: Target?

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    FuzzMain.initialize(target: "classify-wire") {
        // Selector 0: uplink; 4: backends (bit 0, the layout, is left to the fuzzer).
        Seeds.uplink().map { [0] + $0 } + FuzzMain.golden("uplink-in.pcap").map { [0] + $0 }
            + Seeds.backends().map { [4] + $0 } + FuzzMain.golden("backends-in.pcap").map { [4] + $0 }
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
