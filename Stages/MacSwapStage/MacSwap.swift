import SwitchyardCore
import SwitchyardHeaders

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
            guard packet.contiguousLength >= EthernetHeader.size else {
                out.drop(index, reason: .truncated)
                continue
            }
            EthernetHeader(unchecked: packet.bytes).swapAddresses()
            out.send(index, to: .out)
        }
    }
}
