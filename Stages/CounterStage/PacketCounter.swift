import SwitchyardCore

/// counter: counts packets and bytes by size class and passes every packet on unchanged.
/// Put one on any edge to see what flows there.
///
///     in ──► (packets, bytes, size class) ──► out
public struct PacketCounter: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        case out
    }

    public enum Counter: Int, StageCounter {
        case bytes
        case upTo64
        case upTo128
        case upTo512
        case upTo1518
        case jumbo
        case multiSegment

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .bytes: .info("bytes", "bytes seen (whole packets, all segments)")
            case .upTo64: .info("size-64", "packets of at most 64 bytes")
            case .upTo128: .info("size-65-128", "packets of 65 to 128 bytes")
            case .upTo512: .info("size-129-512", "packets of 129 to 512 bytes")
            case .upTo1518: .info("size-513-1518", "packets of 513 to 1518 bytes")
            case .jumbo: .info("size-1519-up", "packets of more than 1518 bytes")
            case .multiSegment: .info("multi-segment", "packets in more than one mbuf segment")
            }
        }
    }

    public static let kind = "counter"
    public static let summary = "count packets, bytes and size classes; pass everything on"

    public init(parameters: NoParameters, context: StageContext) {}

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<PacketCounter>) {
        // Sum locally, publish once per burst: one counter write per class, not per packet.
        var bytes = 0, small = 0, medium = 0, large = 0, full = 0, jumbo = 0, segmented = 0
        for index in 0..<burst.count {
            let packet = burst[index]
            let length = packet.length
            bytes &+= length
            if length <= 64 { small &+= 1 } else if length <= 128 { medium &+= 1 } else if length <= 512 {
                large &+= 1
            } else if length <= 1518 { full &+= 1 } else { jumbo &+= 1 }
            if packet.segmentCount > 1 { segmented &+= 1 }
        }
        out.sendAll(burst.count, to: .out)
        out.count(.bytes, UInt64(bytes))
        if small > 0 { out.count(.upTo64, UInt64(small)) }
        if medium > 0 { out.count(.upTo128, UInt64(medium)) }
        if large > 0 { out.count(.upTo512, UInt64(large)) }
        if full > 0 { out.count(.upTo1518, UInt64(full)) }
        if jumbo > 0 { out.count(.jumbo, UInt64(jumbo)) }
        if segmented > 0 { out.count(.multiSegment, UInt64(segmented)) }
    }
}
