import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore

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
            if meta.pointee.protocol == 6, meta.pointee.tcp_flags & 0x02 != 0, meta.pointee.l4 != 0,
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
        guard l4 + 20 <= end else { return .badOptions }
        let headerLength = Int(frame.load(fromByteOffset: l4 + 12, as: UInt8.self) >> 4) * 4
        let optionsEnd = l4 + headerLength
        guard headerLength >= 20, optionsEnd <= end else { return .badOptions }
        var offset = l4 + 20
        while offset < optionsEnd {
            let kind = frame.load(fromByteOffset: offset, as: UInt8.self)
            if kind == 0 { break } // end of options
            if kind == 1 { offset += 1; continue } // no-operation
            guard offset + 1 < optionsEnd else { return .badOptions }
            let length = Int(frame.load(fromByteOffset: offset + 1, as: UInt8.self))
            guard length >= 2, offset + length <= optionsEnd else { return .badOptions }
            if kind == 2 {
                guard length == 4 else { return .badOptions }
                let value = offset + 2
                let old = UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: value, as: UInt16.self))
                guard old > clamp else { return .belowClamp }
                // The checksum sums 16-bit words from the start of the TCP header: a value at an odd
                // offset straddles two words, so the update covers the 32 bits around it.
                let checkOffset = l4 + 16
                var check = frame.loadUnaligned(fromByteOffset: checkOffset, as: UInt16.self)
                if (value - l4) & 1 == 0 {
                    let before = frame.loadUnaligned(fromByteOffset: value, as: UInt16.self)
                    frame.storeBytes(of: clamp.bigEndian, toByteOffset: value, as: UInt16.self)
                    check = Checksum.adjust(check, old: before, new: clamp.bigEndian)
                } else {
                    let before = frame.loadUnaligned(fromByteOffset: value - 1, as: UInt32.self)
                    frame.storeBytes(of: clamp.bigEndian, toByteOffset: value, as: UInt16.self)
                    let after = frame.loadUnaligned(fromByteOffset: value - 1, as: UInt32.self)
                    check = Checksum.adjust(check, old: before, new: after)
                }
                frame.storeBytes(of: check, toByteOffset: checkOffset, as: UInt16.self)
                return .clamped
            }
            offset += length
        }
        return .noMSSOption
    }
}
