import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// decapsulate: takes a packet a peer host tunnelled to us (classify's `tunnel` disposition),
/// checks it came from a known peer, and hands on the inner packet as if it had arrived on the
/// wire, marked SY_META_FROM_PEER so it is never tunnelled again. The outer family (IPv4 or IPv6,
/// that of `cluster.hosts`) and the tunnel kind are fixed per instance (`TunnelLayout`).
///
///     VXLAN  [ Eth | IPv4/6 | UDP | VXLAN I VNI | inner Eth … ] ──► [ inner Eth … ]             ──► inner
///     GUE    [ Eth | IPv4/6 | UDP | GUE v0 (opts) | inner IP … ] ──► [ port MAC | outer src | type | inner IP … ]
///                                  └─► drop (unknown-peer, truncated, wrong-vni, gue-*, zero-checksum, malformed)
///
///      l3 (outer IP)       l4 (UDP)          l4+8                     l4+16 (VXLAN) / l4+12+hlen*4 (GUE)
///      │ src must be a     │ dst port =       │ VXLAN: 08 000000        │ inner
///      │ peer host         │ tunnel port      │ VNI(3) 00               │
///      │                   │                  │ GUE:  ver|C|hlen proto  │
///      │                   │                  │ flags, options          │
///
/// The metadata is reset: flags = SY_META_FROM_PEER, peer = the source host id; everything else is
/// for the next classify (input: tunnel) to fill. Outer Ethernet padding is removed with the rest.
public struct Decapsulate: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// The inner Ethernet frame, for a classify stage with `input: tunnel`.
        case inner
    }

    public enum Counter: Int, StageCounter {
        case decapsulated
        case unknownPeer
        case truncated
        case wrongVNI
        case gueVersion
        case gueControl
        case gueProtocol
        case malformed
        case zeroChecksum

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .decapsulated: .info("decapsulated", "inner packets handed on")
            case .unknownPeer: .drop("unknown-peer", "outer source address is not a peer host of cluster.hosts")
            case .truncated: .drop("truncated", "shorter than its outer headers, tunnel header and inner header")
            case .wrongVNI: .drop("wrong-vni", "VXLAN header without the I flag or with another VNI than cluster.tunnel.vni")
            case .gueVersion: .drop("gue-version", "GUE version other than 0")
            case .gueControl: .drop("gue-control", "GUE control message (C bit set)")
            case .gueProtocol: .drop("gue-protocol", "GUE proto is not 4 (IPv4) or 41 (IPv6), or does not match the inner IP version")
            case .malformed: .drop("malformed", "not an unfragmented IPv4/UDP (or IPv6/UDP without extension headers) datagram of the underlay family to the tunnel port where the metadata says")
            case .zeroChecksum: .drop("zero-checksum", "IPv6 outer UDP checksum 0 (RFC 8200 forbids it; encapsulate always computes it)")
            }
        }
    }

    /// No keys of its own; the tunnel kind, port and VNI come from `cluster.tunnel`.
    public struct Parameters: StageParameters {
        public init() {}
        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            _ = try stage.requireCluster(map, kind: Decapsulate.kind)
        }
    }

    public static let kind = "decapsulate"
    public static let summary = "remove the VXLAN or GUE tunnel of a packet from a known peer host"

    @usableFromInline let view: ServiceView
    /// The underlay family and tunnel kind: which specialised loop `process` runs.
    @usableFromInline let layout: TunnelLayoutKind
    /// The tunnel's UDP port, network order.
    @usableFromInline let tunnelPort: UInt16
    /// VXLAN: the VNI as the 4 bytes after the flags word read from memory (VNI, reserved 0), masked.
    @usableFromInline let vniWord: UInt32
    @usableFromInline let vniMask: UInt32
    /// GUE: 8 bytes per port id (0...255): the MAC of that port, or of the first port, as a MAC
    /// word (6 bytes, then 2 zero bytes).
    @usableFromInline let portMACs: UnsafeMutableRawPointer
    @usableFromInline let fallbackMAC: UnsafeMutableRawPointer
    /// Keeps the address table and the MAC table alive.
    let storage: Storage

    final class Storage {
        let directory: ServiceDirectory
        let portMACs: UnsafeMutableRawPointer

        init(directory: ServiceDirectory, ports: [PortDescription]) {
            self.directory = directory
            portMACs = .allocate(byteCount: 257 * 8, alignment: 8)
            portMACs.initializeMemory(as: UInt8.self, repeating: 0, count: 257 * 8)
            if let first = ports.first {
                for slot in 0...256 { MACAddress(first.mac).store(to: portMACs + slot * 8) }
            }
            for port in ports where port.portID < 256 {
                MACAddress(port.mac).store(to: portMACs + Int(port.portID) * 8)
            }
        }

        deinit { portMACs.deallocate() }
    }

    public init(parameters: Parameters, context: StageContext) throws {
        let cluster = try context.requireCluster(kind: Self.kind)
        storage = Storage(directory: cluster.directory, ports: context.ports)
        view = cluster.directory.view
        let tunnel = cluster.configuration.tunnel
        layout = TunnelLayoutKind(cluster.configuration)
        tunnelPort = tunnel.port.bigEndian
        vniWord = VXLANHeader.vniWordRaw(tunnel.vni)
        vniMask = VXLANHeader.vniMaskRaw
        portMACs = storage.portMACs
        fallbackMAC = storage.portMACs + 256 * 8
    }

    /// One branch per burst on the layout; the loop itself is specialised for it.
    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Decapsulate>) {
        switch layout {
        case .ipv4VXLAN: decapsulate(burst, out, IPv4VXLAN.self)
        case .ipv4GUE: decapsulate(burst, out, IPv4GUE.self)
        case .ipv6VXLAN: decapsulate(burst, out, IPv6VXLAN.self)
        case .ipv6GUE: decapsulate(burst, out, IPv6GUE.self)
        }
    }

    @inlinable
    func decapsulate<L: TunnelLayout>(_ burst: PacketBurst, _ out: BurstOutput<Decapsulate>, _: L.Type) {
        var decapsulated: UInt64 = 0
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            let frame = PacketBytes(packet.bytes, count: packet.contiguousLength)
            let l3 = Int(meta.pointee.l3), l4 = Int(meta.pointee.l4)

            // The outer IPv4/UDP or IPv6/UDP headers where classify found them: IPv4 unfragmented,
            // IPv6 without extension headers.
            guard meta.pointee.family == L.outerFamily, l3 >= EthernetHeader.size,
                  L.outerIPv6 ? l4 == l3 + IPv6Header.size : l4 >= l3 + IPv4Header.size
            else {
                out.drop(index, reason: .malformed)
                continue
            }
            // The UDP header fits, and so the IP header before it.
            guard let udp = frame.header(UDPHeader.self, at: l4) else {
                out.drop(index, reason: .truncated)
                continue
            }
            let ipLength: Int
            let sender: (kind: ServiceDirectory.AddressKind, hostID: UInt16)?
            if L.outerIPv6 {
                let ip = IPv6Header(unchecked: frame.base + l3)
                guard ip.version == 6, ip.nextHeader == IPProtocol.udp, udp.destinationPortRaw == tunnelPort else {
                    out.drop(index, reason: .malformed)
                    continue
                }
                ipLength = IPv6Header.size + Int(ip.payloadLength)
                // Only from a known peer host, whatever the metadata says.
                sender = view.classify(address: ip.sourceHigh, low: ip.sourceLow, family: 6)
            } else {
                let ip = IPv4Header(unchecked: frame.base + l3)
                guard ip.version == 4, ip.protocolNumber == IPProtocol.udp, !ip.isFragment,
                      udp.destinationPortRaw == tunnelPort
                else {
                    out.drop(index, reason: .malformed)
                    continue
                }
                ipLength = Int(ip.totalLength)
                sender = view.classify(address: UInt64(ip.source), low: 0, family: 4)
            }
            guard let sender, sender.kind == .peerHost else {
                out.drop(index, reason: .unknownPeer)
                continue
            }

            let udpLength = Int(udp.length)
            let payloadEnd = l4 + udpLength
            guard l3 + ipLength <= packet.length, udpLength >= UDPHeader.size, payloadEnd <= l3 + ipLength else {
                out.drop(index, reason: .truncated)
                continue
            }
            // RFC 8200 8.1: over IPv6 a UDP checksum of 0 is invalid (RFC 6935/6936 not enabled).
            if L.outerIPv6 && udp.checksum == 0 {
                out.drop(index, reason: .zeroChecksum)
                continue
            }

            let tunnel = l4 + UDPHeader.size
            // Daisy chaining's mark (docs/gossip.md): handed on once already, never again.
            var handedOn = false
            var innerStart: Int
            if !L.isGUE {
                // The VXLAN header and at least an inner Ethernet header.
                innerStart = tunnel + VXLANHeader.size
                guard innerStart + EthernetHeader.size <= payloadEnd, frame.fits(innerStart, EthernetHeader.size) else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                handedOn = (frame.base + tunnel + 1).load(as: UInt8.self) & 1 != 0 // VXLAN byte 1, bit 0
                let vxlan = VXLANHeader(unchecked: frame.base + tunnel)
                guard vxlan.hasValidVNI, vxlan.vniWordRaw & vniMask == vniWord else {
                    out.drop(index, reason: .wrongVNI)
                    continue
                }
            } else {
                guard tunnel + GUEHeader.size <= payloadEnd, let gue = frame.header(GUEHeader.self, at: tunnel) else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                handedOn = (frame.base + tunnel + 3).load(as: UInt8.self) & 1 != 0 // GUE byte 3, bit 0
                guard gue.version == 0 else {
                    out.drop(index, reason: .gueVersion)
                    continue
                }
                guard !gue.isControl else {
                    out.drop(index, reason: .gueControl)
                    continue
                }
                innerStart = tunnel + gue.headerLength // past the options
                guard innerStart < payloadEnd, frame.fits(innerStart, 1) else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                // Only the version nibble is read before the length check below.
                let version = IPv4Header(unchecked: frame.base + innerStart).version
                let proto = gue.protocolNumber
                guard (proto == IPProtocol.ipip && version == 4) || (proto == IPProtocol.ipv6 && version == 6) else {
                    out.drop(index, reason: .gueProtocol)
                    continue
                }
                guard innerStart + (version == 4 ? IPv4Header.size : IPv6Header.size) <= payloadEnd else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                // A fresh Ethernet header right in front of the inner packet (over the GUE/UDP bytes,
                // well past the outer Ethernet header): to the input port's MAC, from the outer source MAC.
                let port = Int(packet.inputPort)
                let destination = port < 256 ? portMACs + port * 8 : fallbackMAC
                innerStart -= EthernetHeader.size
                let ethernet = EthernetHeader(unchecked: frame.base + innerStart)
                ethernet.destination = destination.load(as: UInt64.self)
                ethernet.source = EthernetHeader(unchecked: frame.base).source
                ethernet.etherType = EtherType.ip(family: version)
            }

            // Drop the outer headers in front and anything after the UDP payload (padding).
            let trailing = packet.length - payloadEnd
            if trailing > 0 && sy_pktmbuf_trim(packet.mbuf, UInt16(truncatingIfNeeded: trailing)) != 0 {
                out.drop(index, reason: .malformed)
                continue
            }
            guard packet.removeFront(innerStart) != nil else {
                out.drop(index, reason: .truncated)
                continue
            }
            meta.pointee = sy_meta()
            meta.pointee.flags = UInt8(SY_META_FROM_PEER) | (handedOn ? UInt8(SY_META_HANDED_ON) : 0)
            meta.pointee.peer = sender.hostID
            out.send(index, to: .inner)
            decapsulated &+= 1
        }
        if decapsulated > 0 { out.count(.decapsulated, decapsulated) }
    }
}
