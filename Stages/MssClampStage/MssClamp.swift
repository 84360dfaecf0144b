import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// mss-clamp: lowers the MSS option of TCP SYNs and SYN-ACKs of services with `mss_clamp` (in
/// `cluster.services`), so that neither end sends segments larger than the path inside the cluster
/// can carry (a tunnel adds 50 or 70 bytes), without relying on PMTU discovery.
///
///     vip (SYN, client → VIP)        ─┐                        ┌─ MSS option > mss_clamp: lowered, TCP checksum
///     reply (SYN-ACK, backend → client)─┴─► mss-clamp ─► out ──┤    updated incrementally (RFC 1624)   (clamped)
///                                                              ├─ MSS ≤ mss_clamp ─► unchanged          (below-clamp)
///     anything else (not a SYN, no mss_clamp, ICMP error) ─────┴─ no MSS option ─► unchanged           (no-mss-option)
///
/// It reads the service from the packet metadata (classify sets it for `vip` and `reply`), so it
/// goes after classify: on the uplink before ownership-lookup (the SYN is clamped on the host the
/// router chose, before any encapsulation), and on the backends side before translate-out.
/// Nothing is dropped: options it cannot walk go on unchanged (`bad-options`).
public struct MssClamp: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// Every packet, SYNs of clamped services with their MSS lowered.
        case out
    }

    public enum Counter: Int, StageCounter {
        case clamped
        case belowClamp
        case noMSSOption
        case badOptions

        public var declaration: CounterDeclaration {
            switch self {
            case .clamped: .info("clamped", "SYNs and SYN-ACKs whose MSS option was lowered to the service's mss_clamp")
            case .belowClamp: .info("below-clamp", "SYNs and SYN-ACKs of a clamped service whose MSS was already at most mss_clamp")
            case .noMSSOption: .info("no-mss-option", "SYNs and SYN-ACKs of a clamped service without an MSS option (left as they are)")
            case .badOptions: .info("bad-options", "SYNs and SYN-ACKs of a clamped service whose TCP options could not be walked (left as they are)")
            }
        }
    }

    public struct Parameters: StageParameters {
        public init() {}
        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            _ = try stage.requireCluster(map, kind: MssClamp.kind)
        }
    }

    public static let kind = "mss-clamp"
    public static let summary = "lower the TCP MSS option of SYNs and SYN-ACKs to the service's mss_clamp"

    /// Keeps the service directory alive; the hot path reads `services`.
    let runtime: ClusterRuntime
    let services: UnsafeMutablePointer<ServiceRecord>
    let serviceCount: Int

    public init(parameters: Parameters, context: StageContext) throws {
        runtime = try context.requireCluster(kind: Self.kind)
        services = runtime.directory.services
        serviceCount = runtime.directory.serviceCount
    }

    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<MssClamp>) {
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            let service = Int(meta.pointee.service)
            // A SYN (or SYN-ACK) of a TCP service with a clamp, not an ICMP error about one.
            if meta.pointee.protocol == IPProtocol.tcp, meta.pointee.tcp_flags & TCPHeader.syn != 0, meta.pointee.l4 != 0,
               meta.pointee.flags & UInt8(SY_META_ICMP_ERROR) == 0, service != 0, service <= serviceCount
            {
                let clamp = services[service - 1].mssClamp
                if clamp != 0 {
                    let end = min(Int(meta.pointee.l3_end), packet.contiguousLength)
                    out.count(Self.clamp(packet.bytes, l4: Int(meta.pointee.l4), end: end, to: clamp))
                }
            }
            out.send(index, to: .out)
        }
    }

    /// Finds the MSS option of the TCP header at `l4` and lowers it to `clamp`; what happened.
    @inline(__always)
    static func clamp(_ frame: UnsafeMutableRawPointer, l4: Int, end: Int, to clamp: UInt16) -> Counter {
        guard let tcp = PacketBytes(frame, count: end).header(TCPHeader.self, at: l4) else { return .badOptions }
        let headerLength = tcp.headerLength
        guard headerLength >= TCPHeader.size, l4 + headerLength <= end else { return .badOptions }
        guard let option = tcp.findOption(TCPHeader.optionMSS, headerLength: headerLength) else { return .noMSSOption }
        guard !option.malformed, option.length == 4 else { return .badOptions }
        let value = option.offset + 2
        guard tcp.be16(at: value) > clamp else { return .belowClamp }
        // The checksum sums 16-bit words from the start of the TCP header: a value at an odd
        // offset straddles two words, so the update covers the 32 bits around it.
        let change = tcp.replace16(at: value, with: clamp)
        tcp.checksum = change.wide
            ? Checksum.adjust(tcp.checksum, old: change.old, new: change.new)
            : Checksum.adjust(tcp.checksum, old: UInt16(truncatingIfNeeded: change.old),
                              new: UInt16(truncatingIfNeeded: change.new))
        return .clamped
    }
}
