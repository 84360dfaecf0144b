import CDPDK
import SwitchyardCluster
import SwitchyardCore
import SwitchyardPcap
import SwitchyardTesting

/// What the encapsulate / decapsulate tests share: the cluster, a stand-in for classify that fills
/// `sy_meta` the way the contract says, per-packet metadata overrides, and a direct runner that
/// shows the metadata a stage leaves behind.
enum TunnelFixtures {
    static let host1: [UInt8] = [198, 18, 0, 1]
    static let host2: [UInt8] = [198, 18, 0, 2]
    static let host3: [UInt8] = [198, 18, 0, 3]
    static let host7: [UInt8] = [198, 18, 0, 7]
    /// The same hosts on an IPv6 underlay (`cluster(ipv6: true)`): fd00::1, ::2, ::3, ::7.
    static let host1v6 = ipv6Host(1)
    static let host2v6 = ipv6Host(2)
    static let host3v6 = ipv6Host(3)
    static let host7v6 = ipv6Host(7)
    static func ipv6Host(_ id: UInt8) -> [UInt8] { [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, id] }
    /// Host 2's `mac`: the inner destination of VXLAN frames sent to it.
    static let host2MAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x02, 0x02]
    static let client: [UInt8] = [198, 51, 100, 10]
    static let vip: [UInt8] = [203, 0, 113, 80]
    static let client6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]
    static let vip6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]
    static let routerMAC: [UInt8] = [0x02, 0xaa, 0, 0, 0, 0x01]
    static let ourMAC: [UInt8] = [0x02, 0xbb, 0, 0, 0, 0x01]
    static let zeroMAC: [UInt8] = [0, 0, 0, 0, 0, 0]
    /// A client's frame as it reaches us from the upstream router.
    static let clientLink = Frames.Link(source: routerMAC, destination: ourMAC)

    /// The body of a `cluster:` section: hosts 1, 2 (with a mac), 3 and 7; `local` is this host.
    static func cluster(local: Int = 1, kind: String = "vxlan", port: UInt16? = nil, vni: UInt32? = 42,
                        host2MAC: [UInt8]? = TunnelFixtures.host2MAC, ipv6: Bool = false) -> String
    {
        let prefix = ipv6 ? "fd00::" : "198.18.0."
        var tunnel = "{kind: \(kind)"
        if let port { tunnel += ", port: \(port)" }
        if kind == "vxlan", let vni { tunnel += ", vni: \(vni)" }
        tunnel += "}"
        let mac = host2MAC.map { ", mac: \"\(macText($0))\"" } ?? ""
        return """
            host: \(local)
            hosts:
              - {id: 1, address: "\(prefix)1"}
              - {id: 2, address: "\(prefix)2"\(mac)}
              - {id: 3, address: "\(prefix)3"}
              - {id: 7, address: "\(prefix)7"}
            tunnel: \(tunnel)
            connections: {capacity: 1024}
            """
    }

    static func macText(_ mac: [UInt8]) -> String {
        mac.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            .joined(separator: ":")
    }

    /// Fills `sy_meta` from the frame as classify (input: wire) would for a VIP flow: offsets,
    /// family, protocol, VLAN and fragment flags, TCP flags and the FlowKeys flow hash. IPv6
    /// extension headers are not walked (these tests use none).
    static func describe(_ packet: Packet) {
        let bytes = packet.bytes
        let length = packet.contiguousLength
        let meta = packet.meta
        meta.pointee = sy_meta()
        guard length >= 14 else { return }
        func be16(_ offset: Int) -> Int { Int(bytes.load(fromByteOffset: offset, as: UInt8.self)) << 8
            | Int(bytes.load(fromByteOffset: offset + 1, as: UInt8.self)) }
        var l3 = 14
        var type = be16(12)
        if type == 0x8100, length >= 18 {
            l3 = 18
            type = be16(16)
            meta.pointee.flags |= UInt8(SY_META_VLAN)
        }
        meta.pointee.l3 = UInt16(l3)
        if type == 0x0800, length >= l3 + 20 {
            let headerLength = Int(bytes.load(fromByteOffset: l3, as: UInt8.self) & 0x0f) * 4
            meta.pointee.family = 4
            meta.pointee.protocol = bytes.load(fromByteOffset: l3 + 9, as: UInt8.self)
            meta.pointee.l3_end = UInt16(l3 + be16(l3 + 2))
            let fragment = be16(l3 + 6) & 0x3fff
            if fragment != 0 { meta.pointee.flags |= UInt8(SY_META_FRAGMENT) }
            meta.pointee.l4 = fragment & 0x1fff == 0 ? UInt16(l3 + headerLength) : 0
        } else if type == 0x86dd, length >= l3 + 40 {
            meta.pointee.family = 6
            meta.pointee.protocol = bytes.load(fromByteOffset: l3 + 6, as: UInt8.self)
            meta.pointee.l3_end = UInt16(l3 + 40 + be16(l3 + 4))
            meta.pointee.l4 = UInt16(l3 + 40)
        } else {
            return
        }
        if meta.pointee.protocol == 6, meta.pointee.l4 != 0, length >= Int(meta.pointee.l4) + 14 {
            meta.pointee.tcp_flags = bytes.load(fromByteOffset: Int(meta.pointee.l4) + 13, as: UInt8.self)
        }
        var key = sy_flow_key()
        FlowKeys.fill(&key, frame: bytes, meta: meta)
        meta.pointee.flow_hash = FlowKeys.hash(&key)
    }

    /// Fills `sy_meta` for an outer tunnel packet as classify's `tunnel` disposition leaves it.
    static func describeTunnel(_ packet: Packet, peer: UInt16) {
        describe(packet)
        packet.meta.pointee.flow_hash = 0
        packet.meta.pointee.peer = peer
    }

    /// The outer IPv4 header of a tunnel frame built by `Frames` (id 1, no DF) as encapsulate
    /// writes it: identification 0, DF set, header checksum recomputed. UDP checksums do not cover
    /// these fields.
    static func withDontFragment(_ frame: [UInt8], l3: Int = 14) -> [UInt8] {
        var patched = frame
        patched[l3 + 4] = 0
        patched[l3 + 5] = 0
        patched[l3 + 6] |= 0x40
        let sum = Frames.ipv4Checksum(Array(patched[l3..<(l3 + 20)]))
        patched[l3 + 10] = UInt8(sum >> 8)
        patched[l3 + 11] = UInt8(sum & 0xff)
        return patched
    }

    /// The expected encapsulate output for VXLAN: `Frames.vxlan` with encapsulate's outer fields.
    static func expectedVXLAN(to peer: [UInt8], flowHash: UInt32, vni: UInt32 = 42, port: UInt16 = 4789,
                              inner: [UInt8], udpChecksum: Frames.UDPChecksum = .zero) -> [UInt8]
    {
        withDontFragment(Frames.vxlan(outerSource: host1, outerDestination: peer,
                                      sourcePort: UInt16(0xc000 | (flowHash & 0x3fff)), destinationPort: port,
                                      vni: vni, inner: inner, udpChecksum: udpChecksum,
                                      link: .init(source: zeroMAC, destination: zeroMAC)))
    }

    /// The expected encapsulate output over an IPv6 underlay (from fd00::1): `Frames.vxlan` or
    /// `Frames.gue` with an IPv6 outer header (hop limit 64, flow label 0) and the UDP checksum computed.
    static func expectedIPv6(kind: String = "vxlan", to peer: [UInt8], flowHash: UInt32, port: UInt16? = nil,
                             vni: UInt32 = 42, inner: [UInt8]) -> [UInt8]
    {
        let sourcePort = UInt16(0xc000 | (flowHash & 0x3fff))
        let link = Frames.Link(source: zeroMAC, destination: zeroMAC)
        return kind == "vxlan"
            ? Frames.vxlan(outerSource: host1v6, outerDestination: peer, sourcePort: sourcePort,
                           destinationPort: port ?? 4789, vni: vni, inner: inner, udpChecksum: .computed, link: link)
            : Frames.gue(outerSource: host1v6, outerDestination: peer, sourcePort: sourcePort,
                         destinationPort: port ?? 6080, inner: Frames.withoutEthernet(inner), udpChecksum: .computed,
                         link: link)
    }

    /// The expected encapsulate output for GUE: `Frames.gue` around the inner IP packet.
    static func expectedGUE(to peer: [UInt8], flowHash: UInt32, port: UInt16 = 6080, innerFrame: [UInt8],
                            udpChecksum: Frames.UDPChecksum = .zero) -> [UInt8]
    {
        withDontFragment(Frames.gue(outerSource: host1, outerDestination: peer,
                                    sourcePort: UInt16(0xc000 | (flowHash & 0x3fff)), destinationPort: port,
                                    inner: Frames.withoutEthernet(innerFrame), udpChecksum: udpChecksum,
                                    link: .init(source: zeroMAC, destination: zeroMAC)))
    }

    /// `frame` with its Ethernet destination replaced.
    static func withDestination(_ frame: [UInt8], _ mac: [UInt8]) -> [UInt8] { mac + Array(frame[6...]) }
}

/// Metadata overrides applied in push order, after `TunnelFixtures.describe`: the harness's
/// `prepare` runs once per packet in the order the frames were pushed.
final class MetaScript {
    struct Entry {
        var peer: UInt16
        var flowHash: UInt32?
        var setFlags: UInt8 = 0
        var port: UInt16?
        var edit: ((Packet) -> Void)?
    }

    private var entries: [Entry] = []
    private var next = 0
    /// Used when the script has run out.
    var defaultPeer: UInt16

    init(defaultPeer: UInt16 = 2) { self.defaultPeer = defaultPeer }

    func add(peer: UInt16, flowHash: UInt32? = nil, setFlags: UInt8 = 0, port: UInt16? = nil,
             edit: ((Packet) -> Void)? = nil)
    {
        entries.append(Entry(peer: peer, flowHash: flowHash, setFlags: setFlags, port: port, edit: edit))
    }

    /// For `prepare:`: classify-like metadata, then the next override.
    func apply(_ packet: Packet) {
        TunnelFixtures.describe(packet)
        let entry = next < entries.count ? entries[next] : Entry(peer: defaultPeer)
        next += 1
        packet.meta.pointee.peer = entry.peer
        if let hash = entry.flowHash { packet.meta.pointee.flow_hash = hash }
        packet.meta.pointee.flags |= entry.setFlags
        if let port = entry.port { sy_mbuf_set_port(packet.mbuf, port) }
        entry.edit?(packet)
    }
}

/// Runs a stage instance directly on mbufs and returns every packet's disposition, bytes and the
/// metadata the stage left (the harness does not show metadata).
struct DirectRun<S: Stage> {
    struct Result {
        var disposition: UInt8
        var bytes: [UInt8]
        var meta: sy_meta
    }

    static func run(_ stage: inout S, frames: [[UInt8]], prepare: (Packet) -> Void) -> [Result] {
        let pool = TestEAL.makePool(size: 255)
        defer { rte_mempool_free(pool) }
        let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        counters.initialize(repeating: 0, count: 64)
        let mbufs = MbufVector.allocate(capacity: frames.count)
        let dispositions = UnsafeMutablePointer<UInt8>.allocate(capacity: frames.count)
        defer {
            counters.deallocate()
            mbufs.deallocate()
            dispositions.deallocate()
        }
        for (index, frame) in frames.enumerated() {
            let mbuf = sy_pktmbuf_alloc(pool)!
            let data = sy_pktmbuf_append(mbuf, UInt16(frame.count))!
            frame.withUnsafeBytes { UnsafeMutableRawPointer(data).copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
            sy_mbuf_meta(mbuf).initialize(to: sy_meta())
            mbufs[index] = mbuf
            prepare(Packet(mbuf))
        }
        stage.process(PacketBurst(mbufs: mbufs, count: frames.count),
                      BurstOutput<S>(dispositions: dispositions, counters: counters))
        var results: [Result] = []
        for index in 0..<frames.count {
            let mbuf = mbufs[index]!
            var bytes = [UInt8](repeating: 0, count: Int(sy_mbuf_pkt_len(mbuf)))
            if !bytes.isEmpty { _ = sy_pktmbuf_read(mbuf, 0, UInt32(bytes.count), &bytes) }
            results.append(Result(disposition: dispositions[index], bytes: bytes, meta: sy_mbuf_meta(mbuf).pointee))
            sy_pktmbuf_free(mbuf)
        }
        return results
    }
}

/// Packet surgery for tests: less headroom, or a second segment.
enum MbufSurgery {
    /// Moves the frame to the front of the buffer so that only `headroom` bytes stay in front of it.
    static func leaveHeadroom(_ packet: Packet, _ headroom: Int) {
        let shift = packet.headroom - headroom
        guard shift > 0 else { return }
        let length = packet.contiguousLength
        let start = UnsafeMutableRawPointer(sy_pktmbuf_prepend(packet.mbuf, UInt16(shift))!)
        start.copyMemory(from: start + shift, byteCount: length)
        precondition(sy_pktmbuf_trim(packet.mbuf, UInt16(shift)) == 0)
        precondition(packet.headroom == headroom)
    }

    /// Splits the packet after its first `firstLength` bytes into a second segment (same pool).
    static func split(_ packet: Packet, after firstLength: Int) {
        let total = packet.contiguousLength
        let tailLength = total - firstLength
        let tail = sy_pktmbuf_alloc(sy_mbuf_pool(packet.mbuf))!
        let data = UnsafeMutableRawPointer(sy_pktmbuf_append(tail, UInt16(tailLength))!)
        data.copyMemory(from: packet.bytes + firstLength, byteCount: tailLength)
        precondition(sy_pktmbuf_trim(packet.mbuf, UInt16(tailLength)) == 0)
        precondition(rte_pktmbuf_chain(packet.mbuf, tail) == 0)
        precondition(packet.segmentCount == 2 && packet.length == total && packet.contiguousLength == firstLength)
    }
}
