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

        public var help: String { "dropped by configuration" }
        public var severity: CounterSeverity { .drop }
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
