import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// tuple-translate: rewrites classified packets between the public tuple (VIP, port) and the
/// bypass tuple (backend address, port) of the global address translation map (seeds 000/001),
/// keeping every checksum correct by incremental updates (RFC 1624).
///
///                  client ─► VIP:80                                   client ─► 10.1.0.1:8080
///     inbound      meta.has_target ? target : Maglev pick(flow_hash) ──► dst address, dst port
///
///                  10.1.0.1:8080 ─► client                            VIP:80 ─► client
///     reply        meta.backend ─► its service's VIP and port ───────► src address, src port
///
///     ICMP error   inbound: outer dst VIP → backend, quoted src VIP:80 → backend:8080
///                  reply:   outer src backend → VIP, quoted dst backend:8080 → VIP:80
///
///     in ──► out    (translated; IPv4 header, TCP/UDP, quoted and ICMP checksums updated)
///        └─► drop   (not-classified, no-backend, truncated)
public struct TupleTranslate: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// The translated packet.
        case out
    }

    public enum Counter: Int, StageCounter {
        case inbound
        case reply
        case icmpError
        case picked
        case noBackend
        case notClassified
        case truncated
        case backendRefused
        case backendUnreachable

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .inbound: .info("inbound", "packets translated from the VIP to a backend (ICMP errors among them)")
            case .reply: .info("reply", "packets translated from a backend back to the VIP (ICMP errors among them)")
            case .icmpError: .info("icmp-error", "ICMP errors translated by the tuple they quote (both directions)")
            case .picked: .info("picked", "inbound packets whose backend was chosen here by consistent hashing")
            case .noBackend: .drop("no-backend", "inbound packets of a service whose backends all have weight 0")
            case .notClassified: .drop("not-classified", "packets without a service (or a reply without a backend) in their metadata")
            case .truncated: .drop("truncated", "the headers to rewrite are not all within the first segment and the IP packet")
            case .backendRefused: .info("backend-refused", "replies that are a backend's RST answering a SYN (RST+ACK, sequence 0): a passive health signal")
            case .backendUnreachable: .info("backend-unreachable", "ICMP / ICMPv6 destination-unreachable errors from a backend: a passive health signal")
            }
        }
    }

    public static let kind = "tuple-translate"
    public static let summary = "rewrite between the public tuple (VIP, port) and a backend's bypass tuple"

    /// Keeps the memory `view` points into alive.
    @usableFromInline let directory: ServiceDirectory
    @usableFromInline let view: ServiceView
    @usableFromInline let serviceCount: Int
    @usableFromInline let backendCount: Int

    /// No keys of its own; the stage needs the `cluster:` section (the translation map).
    public struct Parameters: StageParameters {
        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            _ = try stage.requireCluster(map, kind: TupleTranslate.kind)
        }
    }

    public init(parameters: Parameters, context: StageContext) throws {
        directory = try context.requireCluster(kind: Self.kind).directory
        view = directory.view
        serviceCount = directory.serviceCount
        backendCount = directory.backendCount
    }

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<TupleTranslate>) {
        var inbound: UInt64 = 0, replies: UInt64 = 0, errors: UInt64 = 0, picked: UInt64 = 0
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            let service = Int(meta.pointee.service)
            let family = meta.pointee.family
            let protocolNumber = meta.pointee.protocol
            guard service != 0, service <= serviceCount, IPProtocol.isTCPOrUDP(protocolNumber),
                  view.services[service - 1].vip.family == family
            else {
                out.drop(index, reason: .notClassified)
                continue
            }
            let flags = meta.pointee.flags
            // The common case: an inbound TCP/UDP packet, not an ICMP error, a fragment or a reply,
            // whose bypass tuple ownership-lookup set: the same checks and bytes as below, fewer branches.
            if flags & UInt8(SY_META_ICMP_ERROR | SY_META_REPLY | SY_META_FRAGMENT) == 0 && meta.pointee.has_target == 1 {
                let layout = Layout(meta: meta, contiguousLength: packet.contiguousLength)
                guard layout.fitsPacketWithPorts else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                HeaderRewrite.packet(packet.bytes, layout, source: false,
                                     address: IPAddress(family: layout.family, high: meta.pointee.target_high,
                                                        low: meta.pointee.target_low),
                                     port: meta.pointee.target_port)
                inbound &+= 1
                out.send(index, to: .out)
                continue
            }
            let isError = flags & UInt8(SY_META_ICMP_ERROR) != 0
            let isReply = flags & UInt8(SY_META_REPLY) != 0
            let backend = Int(meta.pointee.backend)
            if isReply, backend == 0 || backend > backendCount || view.backends[backend - 1].address.family != family {
                out.drop(index, reason: .notClassified)
                continue
            }
            let layout = Layout(meta: meta, contiguousLength: packet.contiguousLength)
            guard isError ? layout.fitsError : layout.fitsPacketOrLaterFragment else {
                out.drop(index, reason: .truncated)
                continue
            }
            let frame = packet.bytes

            if isReply {
                let record = view.backends[backend - 1]
                // Passive health signals for the backend's owner (docs/configuration.md, health_check):
                // an RST answering a SYN (RST+ACK with sequence 0, RFC 9293 3.10.7.1), an ICMP unreachable.
                if isError {
                    let type = ICMPHeader(unchecked: frame + Int(meta.pointee.l4)).type
                    if type == ICMPType.destinationUnreachable(family: family) {
                        _ = sy_fetch_add_u64(view.passiveSignals + 2 * (backend - 1) + 1, 1)
                        out.count(.backendUnreachable)
                    }
                } else if protocolNumber == IPProtocol.tcp, meta.pointee.l4 != 0,
                          meta.pointee.tcp_flags & (TCPHeader.rst | TCPHeader.ack) == TCPHeader.rst | TCPHeader.ack,
                          TCPHeader(unchecked: frame + Int(meta.pointee.l4)).sequence == 0
                {
                    _ = sy_fetch_add_u64(view.passiveSignals + 2 * (backend - 1), 1)
                    out.count(.backendRefused)
                }
                let owner = view.services[Int(record.service)]
                if isError {
                    Self.translateErrorReply(frame, layout, backend: record.address, vip: owner.vip,
                                             port: owner.portNetworkOrder)
                    errors &+= 1
                } else {
                    HeaderRewrite.packet(frame, layout, source: true, address: owner.vip, port: owner.portNetworkOrder)
                }
                replies &+= 1
                out.send(index, to: .out)
                continue
            }

            let address: IPAddress, port: UInt16
            if meta.pointee.has_target == 1 {
                address = IPAddress(family: family, high: meta.pointee.target_high, low: meta.pointee.target_low)
                port = meta.pointee.target_port
            } else {
                guard let chosen = view.pick(service: service - 1, flowHash: meta.pointee.flow_hash) else {
                    out.drop(index, reason: .noBackend)
                    continue
                }
                let record = view.backends[Int(chosen)]
                address = record.address
                port = record.portNetworkOrder
                meta.pointee.backend = UInt16(truncatingIfNeeded: chosen + 1)
                meta.pointee.target_high = address.high
                meta.pointee.target_low = address.low
                meta.pointee.target_port = port
                meta.pointee.has_target = 1
                picked &+= 1
            }
            if isError {
                HeaderRewrite.errorToQuotedSource(frame, layout, address: address, port: port)
                errors &+= 1
            } else {
                HeaderRewrite.packet(frame, layout, source: false, address: address, port: port)
            }
            inbound &+= 1
            out.send(index, to: .out)
        }
        if inbound > 0 { out.count(.inbound, inbound) }
        if replies > 0 { out.count(.reply, replies) }
        if errors > 0 { out.count(.icmpError, errors) }
        if picked > 0 { out.count(.picked, picked) }
    }

    // MARK: - Layout

    /// Where the headers to rewrite are (the shared `RewriteLayout` of SwitchyardCluster).
    @usableFromInline typealias Layout = RewriteLayout

    // MARK: - Rewrites

    /// An ICMP error from a backend about a packet client → backend:port: the outer source (when
    /// it is the backend itself) and the quoted destination become the VIP's.
    @inlinable @inline(__always)
    static func translateErrorReply(_ frame: UnsafeMutableRawPointer, _ layout: Layout, backend: IPAddress,
                                    vip: IPAddress, port: UInt16)
    {
        let ip = frame + layout.l3
        var outer: AddressEdit?
        if IPAddress(family: layout.family, at: ip + layout.sourceOffset) == backend {
            outer = HeaderRewrite.address(ip: ip, offset: layout.sourceOffset, to: vip)
        }
        let quoted = HeaderRewrite.address(ip: frame + layout.innerL3, offset: layout.destinationOffset, to: vip)
        let quotedPort = HeaderRewrite.port(transport: frame + layout.innerL4, offset: TransportPorts.destinationPortOffset, to: port,
                                            layout: layout,
                                     checksumPresent: layout.quotedChecksumPresent, oldAddress: quoted.old, newAddress: vip)
        HeaderRewrite.icmpChecksum(frame, layout, outer: layout.family == 6 ? outer : nil, outerNew: vip, quoted: quoted,
                        quotedNew: vip, port: quotedPort, portNew: port)
    }
}
