import CDPDK
import ClassifyStage
import FuzzSupport
import OwnershipLookupStage
import SwitchyardCore
import SwitchyardPcap
import TupleTranslateStage

/// The ICMP-error paths of ownership-lookup and tuple-translate, behind the real classify:
///
///     selector bit 1 = 0: uplink   classify ─vip──► ownership-lookup ─local─► tuple-translate (inbound)
///     selector bit 1 = 1: backends classify ─reply─────────────────────────► tuple-translate (reply)
///
/// The seeds are ICMP and ICMPv6 errors quoting VIP flows (and the flows themselves); the fuzzer
/// mutates them. Invariants beyond StageBench's and PacketBench's:
/// - ownership-lookup counts `icmp-error` exactly once for each ICMP error it is given, never otherwise;
/// - a packet tuple-translate passes on keeps every checksum that was right before right after:
///   the IPv4 header, the ICMP/ICMPv6 (or TCP/UDP) checksum over the whole message, and, in an
///   ICMP error, the quoted IPv4 header's (all recomputed from scratch here).
final class Target {
    let packets = PacketBench()
    let runtime = FuzzCluster.runtime()
    let uplink: StageBench<Classify>
    let backends: StageBench<Classify>
    let owner: StageBench<OwnershipLookup>
    let translate: StageBench<TupleTranslate>

    init() {
        let runtime = self.runtime
        uplink = StageBench<Classify>("classify", parameters: "{}", ports: FuzzCluster.ports, cluster: runtime)
        backends = StageBench<Classify>("classify-backends", parameters: "side: backends", ports: FuzzCluster.ports, cluster: runtime)
        owner = StageBench<OwnershipLookup>("ownership-lookup", ports: FuzzCluster.ports, cluster: runtime)
        translate = StageBench<TupleTranslate>("tuple-translate", ports: FuzzCluster.ports, cluster: runtime)
    }

    func run(_ input: FuzzInput) {
        let fromBackends = input.selector & 2 != 0
        let packet = packets.load(input.frame, layout: input.layout, port: fromBackends ? 1 : 0)
        defer {
            packets.release(packet)
            packets.checkPool()
            for bench in [uplink, backends] { bench.checkTotals() }
            owner.checkTotals()
            translate.checkTotals()
        }
        let classified = (fromBackends ? backends : uplink).run(packet.mbuf)
        packets.check(packet, stage: "classify")
        let isError = sy_mbuf_meta(packet.mbuf)!.pointee.flags & UInt8(SY_META_ICMP_ERROR) != 0
        if classified == .vip {
            let before = owner.counter(.icmpError)
            let owned = owner.run(packet.mbuf)
            packets.check(packet, stage: owner.name)
            if owner.counter(.icmpError) - before != (isError ? 1 : 0) {
                violated("ownership-lookup: icmp-error went up by \(owner.counter(.icmpError) - before) for a packet with ICMP_ERROR \(isError)")
            }
            guard owned == .local else { return }
        } else if classified != .reply {
            return
        }
        let meta = sy_mbuf_meta(packet.mbuf)!.pointee
        let original = packets.bytes(packet)
        let beforeValid = validity(original, meta)
        let translated = translate.run(packet.mbuf)
        packets.check(packet, stage: translate.name)
        guard translated == .out else { return }
        let bytes = packets.bytes(packet)
        let afterValid = validity(bytes, meta)
        for (index, name) in ["IPv4 header", "transport/ICMP", "quoted IPv4 header"].enumerated()
        where beforeValid[index] == true && afterValid[index] != true {
            violated("tuple-translate: the \(name) checksum was right before and is wrong after (meta \(meta))")
        }
        FuzzOutput.derived(input: input.frame, output: bytes)
    }

    /// Whether each checksum is right: the IPv4 header, the transport or ICMP message (nil when not
    /// all of it is in the packet, or a fragment), the quoted IPv4 header of an ICMP error.
    func validity(_ bytes: [UInt8], _ meta: sy_meta) -> [Bool?] {
        let l3 = Int(meta.l3), l4 = Int(meta.l4), end = Int(meta.l3_end)
        let isError = meta.flags & UInt8(SY_META_ICMP_ERROR) != 0
        let fragment = meta.flags & UInt8(SY_META_FRAGMENT) != 0
        let header: Bool? = meta.family == 4 ? Checksums.ipv4HeaderValid(bytes, l3: l3) : nil
        var transport: Bool? = nil
        if !fragment && l4 > 0 {
            let proto: UInt8 = isError ? (meta.family == 4 ? 1 : 58) : meta.protocol
            transport = Checksums.transportValid(bytes, l3: l3, l4: l4, end: end, family: meta.family, proto: proto)
        }
        var quoted: Bool? = nil
        if isError && meta.family == 4 && meta.inner_l3 > 0 { quoted = Checksums.ipv4HeaderValid(bytes, l3: Int(meta.inner_l3)) }
        return [header, transport, quoted]
    }
}

nonisolated(unsafe) var target: Target?

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    FuzzMain.initialize(target: "icmp-errors") {
        let s = Seeds.self
        let router = FuzzCluster.ip("198.51.100.1")
        let q4 = Frames.withoutEthernet(Frames.ipv4TCP(source: s.vip, destination: s.client, sourcePort: 80, destinationPort: 40000, flags: [.syn, .ack], payload: [1, 2, 3, 4]))
        let qUDP = Frames.withoutEthernet(Frames.ipv4UDP(source: s.vip, destination: s.client, sourcePort: 7000, destinationPort: 5000, payload: [7, 7]))
        let q6 = Frames.withoutEthernet(Frames.ipv6TCP(source: s.vip6, destination: s.client6, sourcePort: 80, destinationPort: 40000, flags: [.ack]))
        let qRemote = Frames.withoutEthernet(Frames.ipv4TCP(source: s.vip2, destination: s.client, sourcePort: 443, destinationPort: 40000, flags: [.ack]))
        let qBackend = Frames.withoutEthernet(Frames.ipv4TCP(source: s.client, destination: s.backend, sourcePort: 40000, destinationPort: 8080, flags: [.ack]))
        let qBackend6 = Frames.withoutEthernet(Frames.ipv6TCP(source: s.client6, destination: s.backend6, sourcePort: 40000, destinationPort: 8080, flags: [.ack]))
        let up = s.toUplink, back = s.toBackends
        let uplink: [[UInt8]] = [
            Frames.icmpv4DestinationUnreachable(source: router, destination: s.vip, code: 4, original: q4, link: up),
            Frames.icmpv4DestinationUnreachable(source: router, destination: s.vip, code: 4, original: q4, originalLength: 28, link: up),
            Frames.icmpv4TimeExceeded(source: router, destination: s.vip, original: qUDP, link: up),
            Frames.icmpv4DestinationUnreachable(source: router, destination: s.vip2, code: 3, original: qRemote, link: up),
            Frames.icmpv6PacketTooBig(source: s.router6, destination: s.vip6, mtu: 1280, original: q6, link: up),
            Frames.icmpv6DestinationUnreachable(source: s.router6, destination: s.vip6, code: 1, original: q6, link: up),
            Frames.ipv4TCP(source: s.client, destination: s.vip, sourcePort: 40000, destinationPort: 80, flags: [.syn], link: up),
        ]
        let backends: [[UInt8]] = [
            Frames.icmpv4DestinationUnreachable(source: s.backend, destination: s.client, code: 3, original: qBackend, link: back),
            Frames.icmpv6DestinationUnreachable(source: s.backend6, destination: s.client6, code: 4, original: qBackend6, link: back),
            Frames.ipv4TCP(source: s.backend, destination: s.client, sourcePort: 8080, destinationPort: 40000, flags: [.syn, .ack], link: back),
        ]
        return uplink.map { [0] + $0 } + backends.map { [2] + $0 }
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
