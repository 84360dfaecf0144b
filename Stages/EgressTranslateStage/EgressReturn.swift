import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// egress-return: replies of outbound connections (and ICMP errors quoting them), on the uplink.
/// Classify marks them (SY_META_EGRESS: to an egress address and a port of some host's range) and
/// sends them to `other`; this stage takes classify's and classify-tunnel's `other`.
///
///     classify ─other─► egress-return ─out────► to-backends     (owner here: destination → the resource's tuple)
///                             ├─remote─► encap          (owner is a peer, known from the port: meta.peer)
///                             ├─pass───► port:exception (not marked egress: unchanged)
///                             └─drop                    (no-connection, peer-loop, truncated)
///
///     203.0.113.5:443 → 198.19.0.1:20417    becomes    203.0.113.5:443 → 198.18.100.10:41000
///
/// The owner of a reply is the host whose range holds its destination port (for an ICMP error, the
/// quoted source port): every host computes it from `cluster.egress` alone, with no lookup. The
/// owner finds the connection's entry under the packet's flow key (classify filled it) and
/// translates to the resource; a packet from a peer is never sent on again (`peer-loop`).
public struct EgressReturn: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// Owned here, translated to the resource's tuple: on to the backends.
        case out
        /// Owned by a peer (`meta.peer`): on to encapsulate.
        case remote
        /// Not a reply of an outbound connection: unchanged.
        case pass
    }

    public enum Counter: Int, StageCounter {
        case translated
        case toOwner
        case icmpError
        case fin
        case rst
        case notEgress
        case noConnection
        case peerLoop
        case truncated

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .translated: .info("translated", "replies translated to the resource that opened the connection (ICMP errors among them)")
            case .toOwner: .info("to-owner", "replies whose port belongs to a peer's range: sent to that host (remote)")
            case .icmpError: .info("icmp-error", "ICMP errors quoting an outbound connection, whatever became of them")
            case .fin: .info("fin", "FIN from the server: entry set to closing")
            case .rst: .info("rst", "RST from the server: entry removed, closed event emitted")
            case .notEgress: .info("not-egress", "packets classify did not mark as egress replies: passed on unchanged")
            case .noConnection: .drop("no-connection", "replies to a port of this host's range without a connection entry")
            case .peerLoop: .drop("peer-loop", "from a peer, but the port belongs to yet another host: never sent on again")
            case .truncated: .drop("truncated", "the headers to rewrite are not all within the first segment and the IP packet")
            }
        }
    }

    /// No keys of its own; the stage needs `cluster.egress`.
    public struct Parameters: StageParameters {
        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            let cluster = try stage.requireCluster(map, kind: EgressReturn.kind)
            if let cluster, cluster.egress.isEmpty {
                throw map.error("egress-return needs `cluster.egress` (the egress addresses and port ranges)", key: "kind")
            }
        }
    }

    public static let kind = "egress-return"
    public static let summary = "replies to an egress address: to the resource (owner here) or to the owning host (by port range)"

    let runtime: ClusterRuntime
    @usableFromInline let services: ServiceView
    @usableFromInline let table: ConnectionView
    @usableFromInline let localHost: UInt16
    @usableFromInline let tscPerMillisecond: UInt64

    public init(parameters: Parameters, context: StageContext) throws {
        runtime = try context.requireCluster(kind: Self.kind)
        services = runtime.directory.view
        table = runtime.connections.view
        localHost = services.localHostID
        tscPerMillisecond = sy_tsc_hz() / 1000
    }

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<EgressReturn>) {
        let now = sy_rdtsc()
        var translated: UInt64 = 0
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            let flags = meta.pointee.flags
            guard flags & UInt8(SY_META_EGRESS) != 0 else {
                out.send(index, to: .pass)
                out.count(.notEgress)
                continue
            }
            let isError = flags & UInt8(SY_META_ICMP_ERROR) != 0
            if isError { out.count(.icmpError) }
            // The flow key: (server, server port, egress address, egress port, protocol).
            let key = sy_meta_key(meta)!
            let family = meta.pointee.family
            let egressAddress = IPAddress(family: family, at: UnsafeRawPointer(key) + 16)
            guard let egress = services.egressIndex(high: egressAddress.high, low: egressAddress.low, family: family) else {
                out.send(index, to: .pass)
                out.count(.notEgress)
                continue
            }
            let owner = services.egressOwner(egress, portNetworkOrder: key.pointee.dst_port)
            guard owner == localHost else {
                if flags & UInt8(SY_META_FROM_PEER) != 0 {
                    out.drop(index, reason: .peerLoop)
                } else {
                    meta.pointee.peer = owner
                    out.count(.toOwner)
                    out.send(index, to: .remote)
                }
                continue
            }
            let hash = meta.pointee.flow_hash
            let position = sy_flow_table_lookup(table.hash, key, hash)
            guard position >= 0 else {
                out.drop(index, reason: .noConnection)
                continue
            }
            let entry = table.entries + Int(position)
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control), FlowEntry.owner(control) == localHost else {
                out.drop(index, reason: .noConnection)
                continue
            }
            let layout = RewriteLayout(meta: meta, contiguousLength: packet.contiguousLength)
            guard isError ? layout.fitsError : layout.fitsPacketWithPorts else {
                out.drop(index, reason: .truncated)
                continue
            }
            let resource = IPAddress(family: family, high: entry.pointee.backendHigh, low: entry.pointee.backendLow)
            let port = FlowEntry.backendPort(control)
            meta.pointee.has_target = 1
            meta.pointee.target_high = resource.high
            meta.pointee.target_low = resource.low
            meta.pointee.target_port = port
            if now &- sy_relaxed_load_u64(&entry.pointee.lastSeen) > tscPerMillisecond {
                sy_relaxed_store_u64(&entry.pointee.lastSeen, now)
            }
            if isError {
                HeaderRewrite.errorToQuotedSource(packet.bytes, layout, address: resource, port: port)
            } else {
                HeaderRewrite.packet(packet.bytes, layout, source: false, address: resource, port: port)
                if meta.pointee.protocol == IPProtocol.tcp {
                    switch followTCP(table, entry: entry, control: control, key: key, hash: hash, position: position,
                                     flags: meta.pointee.tcp_flags)
                    {
                    case 1: out.count(.fin)
                    case 2: out.count(.rst)
                    default: break
                    }
                }
            }
            translated &+= 1
            out.send(index, to: .out)
        }
        if translated > 0 { out.count(.translated, translated) }
    }
}
