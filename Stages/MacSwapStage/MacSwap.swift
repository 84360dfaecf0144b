import SwitchyardCore

/// mac-swap: exchanges the Ethernet source and destination addresses, so a packet can go back
/// out of the port it came in on (a reflector, as testpmd's macswap mode).
///
///     in ──► [ dst | src | type ... ] ──► [ src | dst | type ... ] ──► out
///                                    └─► drop (truncated: shorter than an Ethernet header)
public struct MacSwap: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// The swapped packet.
        case out
    }

    public enum Counter: Int, StageCounter {
        case truncated

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .truncated: .drop("truncated", "shorter than an Ethernet header (14 bytes)")
            }
        }
    }

    public static let kind = "mac-swap"
    public static let summary = "swap Ethernet source and destination addresses"

    public init(parameters: NoParameters, context: StageContext) {}

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<MacSwap>) {
        for index in 0..<burst.count {
            let packet = burst[index]
            guard packet.contiguousLength >= 14 else {
                out.drop(index, reason: .truncated)
                continue
            }
            let bytes = packet.bytes
            // Two 6-byte addresses: swap as a 4-byte and a 2-byte word each.
            let dst4 = bytes.loadUnaligned(as: UInt32.self)
            let dst2 = bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
            let src4 = bytes.loadUnaligned(fromByteOffset: 6, as: UInt32.self)
            let src2 = bytes.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
            bytes.storeBytes(of: src4, as: UInt32.self)
            bytes.storeBytes(of: src2, toByteOffset: 4, as: UInt16.self)
            bytes.storeBytes(of: dst4, toByteOffset: 6, as: UInt32.self)
            bytes.storeBytes(of: dst2, toByteOffset: 10, as: UInt16.self)
            out.send(index, to: .out)
        }
    }
}
