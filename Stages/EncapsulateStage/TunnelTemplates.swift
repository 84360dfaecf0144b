import SwitchyardCluster
import SwitchyardHeaders

/// The precomputed outer headers, one per peer host (seed 004's "pre-computed header template"),
/// in raw memory the hot path reads without reference counting.
///
///     slotOfHost[host id] ──► slot (0: no template) ──► templates + (slot - 1) * 128
///
///     slot: 0 ──────────────────────────────── 46…70 ──── 112 ─────────── 118 ──── 119
///           │ outer Eth | IPv4/IPv6 | UDP | VXLAN/GUE │ pad │ inner dst MAC │ has MAC │
///
/// An IPv4 header of a template has total length 0 and a checksum computed with it; the stage
/// adjusts the checksum for the real length (RFC 1624). An IPv6 header has payload length 0, flow
/// label 0, hop limit 64. UDP ports, lengths and checksum are 0.
@frozen
public struct TunnelTemplates {
    public static let slotSize = 128
    @usableFromInline static let macOffset = 112
    @usableFromInline static let hasMACOffset = 118

    /// Host id (0...4095) → slot + 1; 0 for this host, unknown ids and id 0.
    @usableFromInline let slotOfHost: UnsafeMutablePointer<UInt16>
    @usableFromInline let slots: UnsafeMutableRawPointer

    /// The template for host `id`, or nil when it is not a peer host.
    @inlinable @inline(__always)
    func template(forHost id: UInt16) -> UnsafeMutableRawPointer? {
        guard id < 4096 else { return nil }
        let slot = Int(slotOfHost[Int(id)])
        return slot == 0 ? nil : slots + (slot - 1) * Self.slotSize
    }

    /// VXLAN: a kernel VXLAN device takes only frames for its own MAC, so a peer with a configured
    /// `mac` gets it as the inner destination.
    @inlinable @inline(__always)
    func replaceInnerDestination(in frame: UnsafeMutableRawPointer, template: UnsafeMutableRawPointer) {
        guard template.load(fromByteOffset: Self.hasMACOffset, as: UInt8.self) != 0 else { return }
        // The 8 bytes at macOffset (8-aligned): the MAC, then the has-MAC byte; the view writes 6.
        EthernetHeader(unchecked: frame).destination = template.load(fromByteOffset: Self.macOffset, as: UInt64.self)
    }

    /// The outer header to `destination` from `source` (both IPv4 or both IPv6), as the template holds it.
    public static func outerHeader(tunnel: TunnelSettings, source: IPAddress, destination: IPAddress) -> [UInt8] {
        precondition(source.family == destination.family, "one underlay family per cluster")
        let port = tunnel.port
        var header = [UInt8](repeating: 0, count: 12)
        func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
        if source.isIPv4 {
            // Version 4, IHL 5; total length per packet; id 0, DF; TTL 64; UDP.
            var ip: [UInt8] = [0x45, 0x00, 0, 0, 0, 0, 0x40, 0x00, 64, IPProtocol.udp, 0, 0] + source.bytes + destination.bytes
            ip.withUnsafeMutableBytes {
                let view = IPv4Header(unchecked: $0.baseAddress!)
                view.checksum = Checksum.complete(view.raw, count: IPv4Header.size)
            }
            header += be16(EtherType.ipv4) + ip
        } else {
            // Version 6, traffic class 0, flow label 0; payload length per packet; UDP; hop limit 64.
            header += be16(EtherType.ipv6) + [0x60, 0, 0, 0, 0, 0, IPProtocol.udp, 64] + source.bytes + destination.bytes
        }
        header += [0, 0, UInt8(port >> 8), UInt8(port & 0xff), 0, 0, 0, 0]
        switch tunnel.kind {
        case .vxlan:
            let vni = tunnel.vni
            header += [0x08, 0, 0, 0, UInt8((vni >> 16) & 0xff), UInt8((vni >> 8) & 0xff), UInt8(vni & 0xff), 0]
        case .gue:
            header += [0, 0, 0, 0] // version 0, C 0, hlen 0; proto (4 or 41) is set per packet; flags 0
        }
        return header
    }

    /// Owns the memory of the templates of one stage instance.
    final class Storage {
        let templates: TunnelTemplates
        let peerCount: Int

        init(_ cluster: ClusterConfiguration) {
            let peers = cluster.hosts.filter { $0.id != cluster.localHostID }
            peerCount = peers.count
            let slotOfHost = UnsafeMutablePointer<UInt16>.allocate(capacity: 4096)
            slotOfHost.initialize(repeating: 0, count: 4096)
            let slots = UnsafeMutableRawPointer.allocate(byteCount: max(peers.count, 1) * TunnelTemplates.slotSize,
                                                         alignment: 64)
            slots.initializeMemory(as: UInt8.self, repeating: 0, count: max(peers.count, 1) * TunnelTemplates.slotSize)
            let source = cluster.localHost.address
            for (index, peer) in peers.enumerated() {
                let slot = slots + index * TunnelTemplates.slotSize
                let header = TunnelTemplates.outerHeader(tunnel: cluster.tunnel, source: source, destination: peer.address)
                header.withUnsafeBytes { slot.copyMemory(from: $0.baseAddress!, byteCount: header.count) }
                if let mac = peer.mac {
                    mac.store(to: slot + TunnelTemplates.macOffset)
                    slot.storeBytes(of: UInt8(1), toByteOffset: TunnelTemplates.hasMACOffset, as: UInt8.self)
                }
                slotOfHost[peer.id] = UInt16(index + 1)
            }
            templates = TunnelTemplates(slotOfHost: slotOfHost, slots: slots)
        }

        deinit {
            templates.slotOfHost.deallocate()
            templates.slots.deallocate()
        }
    }
}
