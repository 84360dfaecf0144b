import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// encapsulate: sends a packet of a flow that another host owns to that host (seed 004), inside
/// an outer IPv4/UDP header copied from a template precomputed for that peer.
///
///     in (meta.peer = owner) ──► template[peer] ──► [ outer Eth | IPv4 | UDP | VXLAN | inner frame ] ──► out
///                                                   [ outer Eth | IPv4 | UDP | GUE | inner IP packet ]
///                            ├─ outer IP > mtu, DF ─► ICMP frag-needed / ICMPv6 too-big to the client ──► too-big
///                            └─► drop (loop, unknown-peer, no-headroom, too-big, too-big-fragmentable, malformed)
///
/// Outer header, VXLAN (50 bytes; GUE has 46: a 4-byte GUE header instead of VXLAN's 8):
///
///      0            6            12     14                                       34        42
///     ┌────────────┬────────────┬──────┬───────────────────────────────────────┬─────────┬─────────────┐
///     │ dst MAC 0  │ src MAC 0  │ 0800 │ IPv4 45 00 len id=0 DF ttl=64 17 cksum │ UDP sp  │ VXLAN 08    │
///     │ (forward   │ (forward   │      │ src = this host, dst = peer host       │ dp len 0│ 000000 VNI 0│
///     │  fills)    │  fills)    │      │                                        │         │             │
///     └────────────┴────────────┴──────┴───────────────────────────────────────┴─────────┴─────────────┘
///
/// Per packet: copy the peer's template in front of the packet (the headroom), set the IPv4 total
/// length and checksum (incrementally from the template's), the UDP length, the UDP source port
/// (49152 | flow_hash & 0x3fff: one flow keeps one ECMP/RSS path) and the UDP checksum (0 unless
/// `udp_checksum: true`). Ethernet padding after the inner IP packet is not carried.
public struct Encapsulate: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// The encapsulated packet, outer Ethernet addresses zero (the forward stage writes them).
        case out
        /// An ICMP fragmentation-needed or ICMPv6 packet-too-big error for the client, built in place.
        case tooBig

        public var name: String { self == .tooBig ? "too-big" : String(describing: self) }
    }

    public enum Counter: Int, StageCounter {
        case encapsulated
        case bytesAdded
        case icmpTooBig
        case loop
        case unknownPeer
        case noHeadroom
        case tooBig
        case tooBigFragmentable
        case malformed
        case handedOn

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .encapsulated: .info("encapsulated", "packets sent to a peer host inside the tunnel")
            case .bytesAdded: .info("bytes-added", "bytes added to encapsulated packets (outer headers less the inner Ethernet header GUE drops)")
            case .icmpTooBig: .info("icmp-too-big", "ICMP fragmentation-needed / ICMPv6 packet-too-big errors sent back to clients")
            case .loop: .drop("loop", "came from a peer host (SY_META_FROM_PEER): never sent back into the tunnel")
            case .unknownPeer: .drop("unknown-peer", "meta.peer is 0, this host, or not in cluster.hosts")
            case .noHeadroom: .drop("no-headroom", "not enough mbuf headroom for the outer headers")
            case .tooBig: .drop("too-big-dropped", "larger than the mtu after encapsulation, with too_big: drop (or no error allowed about it)")
            case .tooBigFragmentable: .drop("too-big-fragmentable", "larger than the mtu after encapsulation, IPv4 without DF: not fragmented")
            case .malformed: .drop("malformed", "metadata and headers disagree: not an IPv4/IPv6 packet where classify said")
            case .handedOn: .info("handed-on", "of the encapsulated packets: handed on by daisy chaining, marked in the tunnel header (VXLAN byte 1 bit 0, GUE byte 3 bit 0)")
            }
        }
    }

    /// What happens to a packet that would exceed the mtu once encapsulated (DF set, or IPv6).
    public enum TooBigAction: String, Sendable {
        /// Answer the client with ICMP fragmentation-needed / ICMPv6 packet-too-big (path MTU discovery).
        case icmp
        /// Drop it, counted as `too-big`.
        case drop
    }

    public struct Parameters: StageParameters {
        /// The largest outer IP packet (bytes, outer IPv4 header included).
        public var mtu: Int
        public var tooBig: TooBigAction
        /// Compute the outer UDP checksum instead of sending 0 (RFC 7348 allows 0 over IPv4).
        public var udpChecksum: Bool

        public init(mtu: Int = 1500, tooBig: TooBigAction = .icmp, udpChecksum: Bool = false) {
            self.mtu = mtu
            self.tooBig = tooBig
            self.udpChecksum = udpChecksum
        }

        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            _ = try stage.requireCluster(map, kind: Encapsulate.kind)
            mtu = try map.int("mtu", default: 1500, in: 576...65535)
            tooBig = TooBigAction(rawValue: try map.choice("too_big", ["icmp", "drop"], default: "icmp"))!
            udpChecksum = try map.bool("udp_checksum", default: false)
            if stage.cluster?.underlayFamily == 6, map.has("udp_checksum"), !udpChecksum {
                throw map.error("the hosts are IPv6: the outer UDP checksum is always computed (RFC 8200 forbids 0 over IPv6)",
                                key: "udp_checksum")
            }
            guard stage.cluster != nil else {
                throw map.error("stage '\(stage.instanceName)' (encapsulate) needs the `cluster:` section (hosts and tunnel)")
            }
        }
    }

    public static let kind = "encapsulate"
    public static let summary = "send a packet to the peer host that owns its flow, in a VXLAN or GUE tunnel over IPv4 or IPv6"

    /// One 128-byte slot per peer: the outer header, then the inner destination MAC (VXLAN).
    @usableFromInline let templates: TunnelTemplates
    /// The underlay family and tunnel kind: which specialised loop `process` runs.
    @usableFromInline let layout: TunnelLayoutKind
    /// Outer header bytes: 50 / 46 (IPv4 VXLAN / GUE) or 70 / 66 (IPv6).
    @usableFromInline let headerLength: Int
    @usableFromInline let isGUE: Bool
    @usableFromInline let mtu: Int
    @usableFromInline let sendsTooBigErrors: Bool
    /// Always true over IPv6 (RFC 8200 8.1: a zero UDP checksum is not allowed there).
    @usableFromInline let udpChecksum: Bool
    /// Owns the template memory.
    let storage: TunnelTemplates.Storage

    public init(parameters: Parameters, context: StageContext) throws {
        let cluster = try context.requireCluster(kind: Self.kind).configuration
        storage = TunnelTemplates.Storage(cluster)
        templates = storage.templates
        layout = TunnelLayoutKind(cluster)
        headerLength = layout.headerLength
        isGUE = cluster.tunnel.kind == .gue
        mtu = parameters.mtu
        sendsTooBigErrors = parameters.tooBig == .icmp
        udpChecksum = parameters.udpChecksum || cluster.underlayFamily == 6
    }

    /// One branch per burst on the layout; the loop itself is specialised for it.
    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Encapsulate>) {
        switch layout {
        case .ipv4VXLAN: encapsulate(burst, out, IPv4VXLAN.self)
        case .ipv4GUE: encapsulate(burst, out, IPv4GUE.self)
        case .ipv6VXLAN: encapsulate(burst, out, IPv6VXLAN.self)
        case .ipv6GUE: encapsulate(burst, out, IPv6GUE.self)
        }
    }

    @inlinable
    func encapsulate<L: TunnelLayout>(_ burst: PacketBurst, _ out: BurstOutput<Encapsulate>, _: L.Type) {
        var encapsulated: UInt64 = 0, bytesAdded: UInt64 = 0, handedOn: UInt64 = 0
        let udp = L.udpOffset
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            if meta.pointee.flags & UInt8(SY_META_FROM_PEER) != 0 {
                out.drop(index, reason: .loop)
                continue
            }
            guard let template = templates.template(forHost: meta.pointee.peer) else {
                out.drop(index, reason: .unknownPeer)
                continue
            }

            // The inner IP packet where classify found it; its own length field bounds it.
            let bytes = packet.bytes
            let frame = PacketBytes(bytes, count: packet.contiguousLength)
            let family = meta.pointee.family
            let l3 = Int(meta.pointee.l3)
            let minimumHeader = family == 4 ? IPv4Header.size : IPv6Header.size
            guard family == 4 || family == 6, l3 >= EthernetHeader.size, l3 <= L.headerLength,
                  frame.fits(l3, minimumHeader), IPv4Header(unchecked: bytes + l3).version == family
            else {
                out.drop(index, reason: .malformed)
                continue
            }
            let ipLength = family == 4 ? Int(IPv4Header(unchecked: bytes + l3).totalLength)
                : IPv6Header.size + Int(IPv6Header(unchecked: bytes + l3).payloadLength)
            let frameLength = l3 + ipLength
            guard ipLength >= minimumHeader, frameLength <= packet.length else {
                out.drop(index, reason: .malformed)
                continue
            }

            // VXLAN carries the inner Ethernet frame, GUE only the IP packet.
            let outerIPLength = L.headerLength - 14 + (L.isGUE ? ipLength : frameLength)
            if outerIPLength > mtu {
                handleTooBig(packet, index, out, family: family, l3: l3, ipLength: ipLength)
                continue
            }
            let added = L.isGUE ? L.headerLength - l3 : L.headerLength
            guard packet.headroom >= added else {
                out.drop(index, reason: .noHeadroom)
                continue
            }
            let padding = packet.length - frameLength
            if padding > 0 && sy_pktmbuf_trim(packet.mbuf, UInt16(truncatingIfNeeded: padding)) != 0 {
                out.drop(index, reason: .malformed)
                continue
            }
            if !L.isGUE { templates.replaceInnerDestination(in: bytes, template: template) }
            guard let start = packet.prepend(added) else {
                out.drop(index, reason: .noHeadroom)
                continue
            }

            start.copyMemory(from: template, byteCount: L.headerLength)
            let udpLength = outerIPLength - L.ipHeaderLength
            if L.outerIPv6 {
                IPv6Header(unchecked: start + EthernetHeader.size).payloadLength = UInt16(truncatingIfNeeded: udpLength)
            } else {
                let ip = IPv4Header(unchecked: start + EthernetHeader.size)
                let ipTotal = UInt16(truncatingIfNeeded: outerIPLength)
                ip.totalLength = ipTotal
                let templateCheck = IPv4Header(unchecked: template + EthernetHeader.size).checksum
                ip.checksum = Checksum.adjust(templateCheck, old: UInt16(0), new: ipTotal.bigEndian)
            }
            let udpHeader = UDPHeader(unchecked: start + udp)
            udpHeader.sourcePort = UInt16(truncatingIfNeeded: 0xc000 | (meta.pointee.flow_hash & 0x3fff))
            udpHeader.length = UInt16(truncatingIfNeeded: udpLength)
            if L.isGUE {
                GUEHeader(unchecked: start + udp + UDPHeader.size).protocolNumber = IPProtocol.encapsulated(family: family)
            }
            if meta.pointee.flags & UInt8(SY_META_HANDED_ON) != 0 {
                // Daisy chaining: the receiver must never hand this packet on again (docs/gossip.md).
                start.storeBytes(of: UInt8(1), toByteOffset: udp + (L.isGUE ? 11 : 9), as: UInt8.self)
                handedOn &+= 1
            }
            if L.outerIPv6 || udpChecksum {
                // Over the pseudo header, the UDP header (checksum 0) and the payload, every segment.
                var payloadSum: UInt16 = 0
                _ = sy_pktmbuf_raw_checksum(packet.mbuf, UInt32(udp), UInt32(udpLength), &payloadSum)
                let pseudo = Checksum.pseudoHeader(ip: start + EthernetHeader.size, family: L.outerFamily,
                                                   protocolNumber: IPProtocol.udp, length: udpLength)
                var check = ~Checksum.fold(pseudo &+ UInt64(payloadSum))
                if check == 0 { check = 0xffff }
                udpHeader.checksum = check
            }

            // The metadata now describes the outer packet (peer, service, flow hash stay).
            meta.pointee.l3 = UInt16(EthernetHeader.size)
            meta.pointee.l4 = UInt16(truncatingIfNeeded: udp)
            meta.pointee.inner_l3 = 0
            meta.pointee.inner_l4 = 0
            meta.pointee.l3_end = UInt16(truncatingIfNeeded: EthernetHeader.size + outerIPLength)
            meta.pointee.family = L.outerFamily
            meta.pointee.protocol = IPProtocol.udp
            meta.pointee.flags = 0
            meta.pointee.tcp_flags = 0
            out.send(index, to: .out)
            encapsulated &+= 1
            bytesAdded &+= UInt64(added)
        }
        if handedOn > 0 { out.count(.handedOn, handedOn) }
        if encapsulated > 0 {
            out.count(.encapsulated, encapsulated)
            out.count(.bytesAdded, bytesAdded)
        }
    }

    /// A packet too big for the tunnel: IPv4 without DF is dropped (we do not fragment); otherwise,
    /// with `too_big: icmp`, it becomes an ICMP error to the client, built in place:
    ///
    ///     before  [ Eth (VLAN) | IP client → VIP | transport … (too big) ]
    ///     after   [ Eth swapped | IP VIP → client, TTL 64 | ICMP 3/4 or ICMPv6 2, MTU | quote ]
    ///
    /// The quote is the original IP header + 8 bytes (IPv4), or as much of the original as keeps
    /// the ICMPv6 packet within 1280 bytes. No error answers an ICMP error or a non-first fragment
    /// (RFC 1122 3.2.2, RFC 4443 2.4): those are dropped as `too-big`.
    @inlinable @inline(__always)
    func handleTooBig(_ packet: Packet, _ index: Int, _ out: BurstOutput<Encapsulate>, family: UInt8, l3: Int,
                      ipLength: Int)
    {
        let meta = packet.meta
        let bytes = packet.bytes
        let ip = bytes + l3
        var isFirstFragment = true
        if family == 4 {
            let header = IPv4Header(unchecked: ip)
            if !header.dontFragment {
                out.drop(index, reason: .tooBigFragmentable)
                return
            }
            isFirstFragment = header.fragmentOffset == 0
        } else {
            isFirstFragment = meta.pointee.flags & UInt8(SY_META_FRAGMENT) == 0 || meta.pointee.l4 != 0
        }
        guard sendsTooBigErrors, isFirstFragment, meta.pointee.flags & UInt8(SY_META_ICMP_ERROR) == 0 else {
            out.drop(index, reason: .tooBig)
            return
        }
        // The largest inner IP packet that fits: mtu less the outer IP/UDP/tunnel headers, and for
        // VXLAN the inner Ethernet header (with its VLAN tag) as well.
        let nextHopMTU = mtu - (headerLength - EthernetHeader.size) - (isGUE ? 0 : l3)
        let available = packet.contiguousLength - l3

        if family == 4 {
            let header = IPv4Header(unchecked: ip)
            let headerBytes = header.headerLength
            guard headerBytes >= IPv4Header.size else {
                out.drop(index, reason: .malformed)
                return
            }
            let errorHeaders = IPv4Header.size + ICMPHeader.size
            let quote = min(headerBytes + 8, ipLength, available)
            let client = header.source
            let vip = header.destination
            guard sy_pktmbuf_set_length(packet.mbuf, UInt16(truncatingIfNeeded: l3 + errorHeaders + quote)) else {
                out.drop(index, reason: .tooBig)
                return
            }
            (ip + errorHeaders).copyMemory(from: ip, byteCount: quote) // memmove: the regions overlap
            header.setVersionNoOptions()
            header.totalLength = UInt16(truncatingIfNeeded: errorHeaders + quote)
            header.identification = 0
            header.flagsAndFragmentOffset = IPv4Header.dontFragmentBit
            header.ttl = 64
            header.protocolNumber = IPProtocol.icmp
            header.checksum = 0
            header.source = vip
            header.destination = client
            header.checksum = Checksum.complete(ip, count: IPv4Header.size)
            let icmp = ICMPHeader(unchecked: ip + IPv4Header.size)
            icmp.start(type: ICMPType.destinationUnreachable, code: ICMPType.fragmentationNeededCode)
            icmp.rest = UInt32(truncatingIfNeeded: nextHopMTU)
            icmp.checksum = Checksum.complete(icmp.raw, count: ICMPHeader.size + quote)
            meta.pointee.l4 = UInt16(truncatingIfNeeded: l3 + IPv4Header.size)
            meta.pointee.inner_l3 = UInt16(truncatingIfNeeded: l3 + errorHeaders)
            meta.pointee.inner_l4 = quote >= headerBytes + 8 ? UInt16(truncatingIfNeeded: l3 + errorHeaders + headerBytes) : 0
            meta.pointee.l3_end = UInt16(truncatingIfNeeded: l3 + errorHeaders + quote)
        } else {
            // RFC 4443 2.4: an ICMPv6 error carries as much of the packet as fits in 1280 bytes.
            let errorHeaders = IPv6Header.size + ICMPHeader.size
            let quote = min(ipLength, 1280 - errorHeaders, available)
            let header = IPv6Header(unchecked: ip)
            let clientHigh = header.sourceHigh, clientLow = header.sourceLow
            let vipHigh = header.destinationHigh, vipLow = header.destinationLow
            let originalL4 = Int(meta.pointee.l4)
            guard sy_pktmbuf_set_length(packet.mbuf, UInt16(truncatingIfNeeded: l3 + errorHeaders + quote)) else {
                out.drop(index, reason: .tooBig)
                return
            }
            (ip + errorHeaders).copyMemory(from: ip, byteCount: quote)
            header.setVersionNoClassNoFlow()
            header.payloadLength = UInt16(truncatingIfNeeded: ICMPHeader.size + quote)
            header.nextHeader = IPProtocol.icmpv6
            header.hopLimit = 64
            header.sourceHigh = vipHigh
            header.sourceLow = vipLow
            header.destinationHigh = clientHigh
            header.destinationLow = clientLow
            let icmp = ICMPHeader(unchecked: ip + IPv6Header.size)
            icmp.start(type: ICMPv6Type.packetTooBig, code: 0)
            icmp.rest = UInt32(truncatingIfNeeded: max(1280, nextHopMTU))
            let pseudo = Checksum.pseudoHeader(ip: ip, family: 6, protocolNumber: IPProtocol.icmpv6,
                                               length: ICMPHeader.size + quote)
            icmp.checksum = Checksum.complete(icmp.raw, count: ICMPHeader.size + quote, initial: pseudo)
            meta.pointee.l4 = UInt16(truncatingIfNeeded: l3 + IPv6Header.size)
            meta.pointee.inner_l3 = UInt16(truncatingIfNeeded: l3 + errorHeaders)
            let quotedL4 = originalL4 - l3
            meta.pointee.inner_l4 = originalL4 > l3 && quotedL4 + 8 <= quote
                ? UInt16(truncatingIfNeeded: l3 + errorHeaders + quotedL4) : 0
            meta.pointee.l3_end = UInt16(truncatingIfNeeded: l3 + errorHeaders + quote)
        }
        // Back where it came from: swap the Ethernet addresses (a VLAN tag stays as it was).
        EthernetHeader(unchecked: bytes).swapAddresses()
        meta.pointee.flags = (meta.pointee.flags & UInt8(SY_META_VLAN)) | UInt8(SY_META_ICMP_ERROR)
        meta.pointee.tcp_flags = 0
        meta.pointee.peer = 0
        out.send(index, to: .tooBig)
        out.count(.icmpTooBig)
    }
}
