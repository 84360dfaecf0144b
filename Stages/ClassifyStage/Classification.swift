import CDPDK
import SwitchyardCluster
import SwitchyardCore
import SwitchyardHeaders

extension Classify {
    /// Not ours: `other` on the wire, a drop inside a tunnel.
    @inline(__always) var notOurs: Outcome { fromTunnel ? .drop(.tunnelNotVIP) : .send(.other) }

    /// Parses one packet, fills its metadata and decides its disposition.
    ///
    ///     Ethernet ─► [802.1Q] ─┬─ ARP ──────────────────────────► answer / local / other
    ///                           ├─ IPv4 / IPv6 ─► transport check ─┬─ ND (ICMPv6 133-137) ──► answer / local / other
    ///                           │                                   ├─ to a VIP ─────────────► vip / answer / drop
    ///                           │                                   ├─ to this host ─────────► tunnel / answer / local
    ///                           │                                   └─ from a backend tuple ─► reply (side: backends), else other
    ///                           └─ anything else ───────────────────────────────────────────► other (non-ip)
    @inline(__always)
    func classify(_ packet: Packet, _ out: BurstOutput<Classify>) -> Outcome {
        let meta = packet.meta
        if fromTunnel {
            // decapsulate's two fields survive; everything else describes the inner frame.
            let fromPeer = meta.pointee.flags & UInt8(SY_META_FROM_PEER | SY_META_HANDED_ON)
            let peer = meta.pointee.peer
            meta.pointee = sy_meta()
            meta.pointee.flags = fromPeer
            meta.pointee.peer = peer
        } else {
            meta.pointee = sy_meta()
        }
        let frame = Frame(packet)

        guard let ethernet = frame.packet.ethernet() else {
            return frame.short(.truncatedEthernet, needs: EthernetHeader.size)
        }
        if filtersMAC {
            // Group (broadcast, multicast) frames are for everyone.
            if !ethernet.isGroupDestination && ethernet.destination != portMAC(packet) { return .drop(.notOurMAC) }
        }
        var l3 = EthernetHeader.size
        var etherType = ethernet.etherType
        if etherType == EtherType.vlan {
            meta.pointee.flags |= UInt8(SY_META_VLAN)
            guard let tag = frame.packet.header(VLANTag.self, at: VLANTag.offset) else {
                return frame.short(.truncatedVLAN, needs: VLANTag.offset + VLANTag.size)
            }
            etherType = tag.etherType
            l3 = VLANTag.offset + VLANTag.size
        }
        let parsed: (IPLayer?, Outcome?)
        switch etherType {
        case EtherType.ipv4:
            parsed = parseIPv4(frame, l3: l3, out)
        case EtherType.ipv6:
            parsed = parseIPv6(frame, l3: l3, out)
        case EtherType.arp:
            return fromTunnel ? .drop(.tunnelNotVIP) : arp(packet, frame, l3: l3, out)
        case EtherType.vlan, EtherType.serviceVLAN, EtherType.legacyQinQ:
            // QinQ: the metadata has room for one tag, and the uplink carries single-tagged frames.
            out.count(.vlanStacked)
            return notOurs
        default:
            out.count(.nonIP)
            return notOurs
        }
        guard let ip = parsed.0 else { return parsed.1.unsafelyUnwrapped }

        meta.pointee.l3 = UInt16(truncatingIfNeeded: ip.l3)
        meta.pointee.l4 = UInt16(truncatingIfNeeded: ip.l4)
        meta.pointee.l3_end = UInt16(truncatingIfNeeded: ip.end)
        meta.pointee.family = ip.family
        meta.pointee.protocol = ip.protocolNumber
        if ip.isFragment { meta.pointee.flags |= UInt8(SY_META_FRAGMENT) }
        if ip.l4 != 0, let failure = checkTransport(frame, ip, meta) { return failure }

        let destination = frame.address(ip.destinationOffset, family: ip.family)
        let destinationKind = services.classify(address: destination.high, low: destination.low, family: ip.family)

        // Neighbour discovery goes to solicited-node multicast as often as to the address itself.
        if ip.family == 6 && ip.protocolNumber == IPProtocol.icmpv6 && ip.l4 != 0 && !ip.isFragment {
            let type = frame.icmp(ip).type
            if ICMPv6Type.isNeighborDiscovery(type) {
                return fromTunnel ? .drop(.tunnelNotVIP) : neighborDiscovery(packet, frame, ip, type: type, out)
            }
        }
        // RFC 1122 3.3.6: an IP unicast datagram in a link-layer broadcast or multicast frame is
        // discarded. On a shared segment every host takes such a frame; acting on it would make
        // duplicates. Checked for what the cluster acts on (a VIP, this host, a backend's reply);
        // inside a tunnel the peer already checked the outer frame.
        let linkGroup = !fromTunnel && ethernet.isGroupDestination
        switch destinationKind?.kind {
        case .vip:
            if linkGroup { return .drop(.linkBroadcastToUnicastIP) }
            return toVIP(packet, frame, ip, destination: destination, meta, out)
        case .localHost:
            if fromTunnel {
                return isTunnelPort(frame, ip) ? .drop(.nestedTunnel) : .drop(.tunnelNotVIP)
            }
            if linkGroup { return .drop(.linkBroadcastToUnicastIP) }
            return toLocalHost(packet, frame, ip, meta, out)
        case .peerHost:
            // A peer host's own traffic (its health checks to backends, say): never a reply to translate.
            return notOurs
        case nil:
            if let egress = toEgress(frame, ip, destination: destination, meta) {
                return linkGroup ? .drop(.linkBroadcastToUnicastIP) : egress
            }
            if fromTunnel { return .drop(.tunnelNotVIP) }
            guard let fromBackend = fromBackend(frame, ip, meta) else { return .send(.other) }
            // Only the backends side may speak from a bypass tuple: anything else would leave as the VIP.
            if !repliesAllowed { return .drop(.backendSourceOnUplink) }
            if linkGroup { return .drop(.linkBroadcastToUnicastIP) }
            return fromBackend
        }
    }

    @inline(__always)
    func isTunnelPort(_ frame: Frame, _ ip: IPLayer) -> Bool {
        ip.protocolNumber == IPProtocol.udp && ip.l4 != 0 && frame.ports(ip.l4).destinationPort == tunnelPort
    }

    /// Traffic to a VIP: a service flow, an ICMP error about one, an echo request, or a drop.
    @inline(__always)
    func toVIP(_ packet: Packet, _ frame: Frame, _ ip: IPLayer, destination: (high: UInt64, low: UInt64),
               _ meta: UnsafeMutablePointer<sy_meta>, _ out: BurstOutput<Classify>) -> Outcome
    {
        // No reassembly here. With `fragments: vip` TCP/UDP fragments go on as `vip` (flag
        // SY_META_FRAGMENT): the first with its service and flow like any packet, later ones (no
        // ports, service 0) for the fragments stage to give them the first one's flow.
        if ip.isFragment {
            guard fragmentsToVIP, ip.isTCPOrUDP else { return .drop(.fragment) }
            out.count(.fragmentToVIP)
            if ip.l4 == 0 { return .send(.vip) }
        }
        if ip.isTCPOrUDP {
            let port = frame.ports(ip.l4).destinationPort
            guard let service = services.servicesByTuple.find(
                high: destination.high, low: destination.low,
                tag: TupleTable.tag(family: ip.family, protocol: ip.protocolNumber, port: port))
            else { return toEgress(frame, ip, destination: destination, meta) ?? .drop(.noService) }
            meta.pointee.service = UInt16(truncatingIfNeeded: service + 1)
            meta.pointee.flow_hash = flowHash(frame, meta)
            return .send(.vip)
        }
        guard ip.isICMP else { return .drop(.vipProtocol) }
        let type = frame.icmp(ip).type
        if ICMPType.isEchoRequest(type, family: ip.family) {
            if fromTunnel { return .drop(.tunnelNotVIP) }
            return answers ? echoReply(packet, frame, ip, out) : .send(.other)
        }
        guard ICMPType.isError(type, family: ip.family) else { return .drop(.vipICMPType) }

        // The quoted packet went VIP → client: its source tuple must be a service of this VIP.
        let quote = parseQuote(frame, ip)
        if let failure = quote.failure { return .drop(failure.counter) }
        guard IPProtocol.isTCPOrUDP(quote.protocolNumber) else { return .drop(.icmpErrorUnmatched) }
        let quotedSource = frame.address(quote.l3 + IPLayer.sourceOffset(family: ip.family), family: ip.family)
        guard quotedSource == destination,
              let service = services.servicesByTuple.find(
                  high: quotedSource.high, low: quotedSource.low,
                  tag: TupleTable.tag(family: ip.family, protocol: quote.protocolNumber,
                                      port: frame.ports(quote.l4).sourcePort))
        else { return toEgress(frame, ip, destination: destination, meta) ?? .drop(.icmpErrorUnmatched) }
        meta.pointee.flags |= UInt8(SY_META_ICMP_ERROR)
        meta.pointee.inner_l3 = UInt16(truncatingIfNeeded: quote.l3)
        meta.pointee.inner_l4 = UInt16(truncatingIfNeeded: quote.l4)
        meta.pointee.protocol = quote.protocolNumber
        meta.pointee.service = UInt16(truncatingIfNeeded: service + 1)
        meta.pointee.flow_hash = flowHash(frame, meta)
        return .send(.vip)
    }

    /// A reply of an outbound connection (`cluster.egress`): TCP/UDP to an egress address and a
    /// port of some host's range, or an ICMP error quoting a packet from one. Goes to `other`, also
    /// from a tunnel, marked SY_META_EGRESS with its flow key and hash (egress-return takes it);
    /// nil when the packet is none of these (the caller decides as before).
    @inline(__always)
    func toEgress(_ frame: Frame, _ ip: IPLayer, destination: (high: UInt64, low: UInt64),
                  _ meta: UnsafeMutablePointer<sy_meta>) -> Outcome?
    {
        guard let index = services.egressIndex(high: destination.high, low: destination.low, family: ip.family),
              ip.l4 != 0, !ip.isFragment
        else { return nil }
        let owners = services.egress[index].owners
        if ip.isTCPOrUDP {
            guard owners[Int(frame.ports(ip.l4).destinationPort)] != 0 else { return nil }
        } else {
            guard ip.isICMP, ICMPType.isError(frame.icmp(ip).type, family: ip.family) else { return nil }
            let quote = parseQuote(frame, ip)
            guard quote.failure == nil, IPProtocol.isTCPOrUDP(quote.protocolNumber) else { return nil }
            let quotedSource = frame.address(quote.l3 + IPLayer.sourceOffset(family: ip.family), family: ip.family)
            guard quotedSource == destination, owners[Int(frame.ports(quote.l4).sourcePort)] != 0 else { return nil }
            meta.pointee.flags |= UInt8(SY_META_ICMP_ERROR)
            meta.pointee.inner_l3 = UInt16(truncatingIfNeeded: quote.l3)
            meta.pointee.inner_l4 = UInt16(truncatingIfNeeded: quote.l4)
            meta.pointee.protocol = quote.protocolNumber
        }
        meta.pointee.flags |= UInt8(SY_META_EGRESS)
        meta.pointee.flow_hash = flowHash(frame, meta)
        return .send(.other)
    }

    /// Traffic to this host's address: a tunnel packet from a peer, an echo request, or local.
    @inline(__always)
    func toLocalHost(_ packet: Packet, _ frame: Frame, _ ip: IPLayer, _ meta: UnsafeMutablePointer<sy_meta>,
                     _ out: BurstOutput<Classify>) -> Outcome
    {
        if isTunnelPort(frame, ip) {
            let source = frame.address(ip.sourceOffset, family: ip.family)
            guard let sender = services.classify(address: source.high, low: source.low, family: ip.family),
                  sender.kind == .peerHost
            else { return .drop(.tunnelUnknownPeer) }
            // A fragmented tunnel packet: the kernel can reassemble it, decapsulate cannot.
            if ip.isFragment { return .send(.local) }
            meta.pointee.peer = sender.hostID
            return .send(.tunnel)
        }
        if answers && ip.isICMP && ip.l4 != 0 && !ip.isFragment
            && ICMPType.isEchoRequest(frame.icmp(ip).type, family: ip.family)
        {
            return echoReply(packet, frame, ip, out)
        }
        return .send(.local)
    }

    /// A reply from a backend tuple, or an ICMP error a backend sent about a packet to its tuple;
    /// nil when the packet is neither.
    @inline(__always)
    func fromBackend(_ frame: Frame, _ ip: IPLayer, _ meta: UnsafeMutablePointer<sy_meta>) -> Outcome? {
        guard ip.l4 != 0 else { return nil }
        let source = frame.address(ip.sourceOffset, family: ip.family)
        if ip.isTCPOrUDP {
            guard let backend = services.backendsByTuple.find(
                high: source.high, low: source.low,
                tag: TupleTable.tag(family: ip.family, protocol: ip.protocolNumber,
                                    port: frame.ports(ip.l4).sourcePort))
            else { return nil }
            // Later fragments could not be translated (no ports): send none of the datagram out.
            guard !ip.isFragment else { return .drop(.fragment) }
            markReply(backend: backend, meta)
            return .send(.reply)
        }
        guard ip.isICMP, !ip.isFragment, ICMPType.isError(frame.icmp(ip).type, family: ip.family) else { return nil }
        // The quoted packet went client → backend tuple, and the backend itself reports on it.
        let quote = parseQuote(frame, ip)
        guard quote.failure == nil, IPProtocol.isTCPOrUDP(quote.protocolNumber) else { return nil }
        let quotedDestination = frame.address(quote.l3 + IPLayer.destinationOffset(family: ip.family), family: ip.family)
        guard quotedDestination == source,
              let backend = services.backendsByTuple.find(
                  high: source.high, low: source.low,
                  tag: TupleTable.tag(family: ip.family, protocol: quote.protocolNumber,
                                      port: frame.ports(quote.l4).destinationPort))
        else { return nil }
        meta.pointee.flags |= UInt8(SY_META_ICMP_ERROR)
        meta.pointee.inner_l3 = UInt16(truncatingIfNeeded: quote.l3)
        meta.pointee.inner_l4 = UInt16(truncatingIfNeeded: quote.l4)
        meta.pointee.protocol = quote.protocolNumber
        markReply(backend: backend, meta)
        return .send(.reply)
    }

    @inline(__always)
    func markReply(backend: UInt32, _ meta: UnsafeMutablePointer<sy_meta>) {
        meta.pointee.flags |= UInt8(SY_META_REPLY)
        meta.pointee.backend = UInt16(truncatingIfNeeded: backend + 1)
        meta.pointee.service = services.backends[Int(backend)].service &+ 1
    }

    /// The client-side flow key, kept in the metadata for ownership-lookup, and its hash.
    @inline(__always)
    func flowHash(_ frame: Frame, _ meta: UnsafeMutablePointer<sy_meta>) -> UInt32 {
        let key = sy_meta_key(meta)!
        FlowKeys.fill(key, frame: frame.bytes, meta: meta)
        return FlowKeys.hash(key)
    }
}
