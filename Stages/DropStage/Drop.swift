import SwitchyardCore

/// drop: a sink. Every packet is freed and counted; nothing goes further.
///
///     in ──► drop (counted under `dropped`)
public struct Drop: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
    }

    public enum Counter: Int, StageCounter {
        case dropped

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .dropped: .drop("dropped", "dropped by configuration")
            }
        }
    }

    public static let kind = "drop"
    public static let summary = "free every packet, counted"

    public init(parameters: NoParameters, context: StageContext) {}

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Drop>) {
        out.sendAll(burst.count, to: .drop)
        out.count(.dropped, UInt64(burst.count))
    }
}
