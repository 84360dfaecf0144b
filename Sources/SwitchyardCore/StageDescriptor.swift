import SwitchyardConfig

/// Whether a value only grows (a counter) or goes up and down (a gauge), as Prometheus says.
public enum CounterKind: String, Sendable {
    case counter
    case gauge
    /// Buckets of observations (`_bucket{le=...}`, `_sum`, `_count`); see `CounterRegistry.makeHistogram`.
    case histogram
}

/// A named counter, as printed and exported: declared once, read by every exporter.
public struct CounterDescription: Sendable, Equatable {
    /// The name in tables, JSON and `ctl` (`tx-full`, `malformed`).
    public var name: String
    public var help: String
    public var severity: CounterSeverity
    public var kind: CounterKind
    /// How Prometheus names it, when not `switchyard_<family>_<name>` (see `MetricName`).
    public var metric: MetricName?

    public init(name: String, help: String, severity: CounterSeverity, kind: CounterKind = .counter,
                metric: MetricName? = nil)
    {
        self.name = name
        self.help = help
        self.severity = severity
        self.kind = kind
        self.metric = metric
    }
}

/// A counter's Prometheus name within its family (`dropped_packets`), the family's help, and the
/// label that tells this counter apart from the family's others (`reason="tx-full"`).
public struct MetricName: Sendable, Equatable {
    public var name: String
    public var help: String?
    public var label: (String, String)?
    /// The counter holds `1/scale` of the exported unit: 1e3 for milliseconds exported as seconds
    /// (Prometheus wants base units), so the exported value is the counter divided by `scale`.
    public var scale: Double

    public init(name: String, help: String? = nil, label: (String, String)? = nil, scale: Double = 1) {
        self.name = name
        self.help = help
        self.label = label
        self.scale = scale
    }

    public static func == (a: MetricName, b: MetricName) -> Bool {
        a.name == b.name && a.help == b.help && a.label?.0 == b.label?.0 && a.label?.1 == b.label?.1 && a.scale == b.scale
    }
}

/// Everything the engine needs to know about a stage kind, with its concrete type erased.
///
/// Built once per kind (`MacSwap.descriptor`); the catalog lists them by `kind`.
public struct StageDescriptor: @unchecked Sendable {
    public let kind: String
    public let summary: String
    /// Disposition names by raw value; index 0 is "drop".
    public let dispositions: [String]
    /// The stage's own counters, by index.
    public let counters: [CounterDescription]
    /// Reads and checks the parameters of one stage instance (no DPDK needed).
    public let parseParameters: (ConfigMap, StageParameterContext) throws -> any StageParameters
    /// Builds one instance for one lcore. `counters` points at the instance's own counter slots.
    public let makeRunner: (any StageParameters, StageContext, UnsafeMutablePointer<UInt64>) throws -> StageRunner
}

extension Stage {
    public static var descriptor: StageDescriptor {
        let cases = Array(Disposition.allCases)
        for (index, disposition) in cases.enumerated() {
            precondition(Int(disposition.rawValue) == index,
                         "\(kind): dispositions must have raw values 0, 1, 2, ... in order")
        }
        precondition(cases.first?.name == "drop", "\(kind): disposition 0 must be named drop")
        let counters = Array(Counter.allCases)
        for (index, counter) in counters.enumerated() {
            precondition(counter.index == index, "\(kind): counter indices must run 0, 1, 2, ... in order")
            // One block holds `in`, the dispositions and the counters: their names must not collide.
            precondition(counter.name != "in" && !cases.contains { $0.name == counter.name },
                         "\(kind): counter '\(counter.name)' has the name of a disposition or of `in`")
        }
        precondition(Set(counters.map(\.name)).count == counters.count, "\(kind): counter names must be unique")
        return StageDescriptor(
            kind: kind,
            summary: summary,
            dispositions: cases.map(\.name),
            counters: counters.map { CounterDescription(name: $0.name, help: $0.help, severity: $0.severity) },
            parseParameters: { map, context in try Parameters(from: map, stage: context) },
            makeRunner: { parameters, context, counters in
                guard let typed = parameters as? Parameters else {
                    preconditionFailure("\(kind): parameters of the wrong type")
                }
                return TypedStageRunner<Self>(stage: try Self(parameters: typed, context: context),
                                              counters: counters)
            })
    }
}

/// One stage instance on one lcore, behind the single dynamic dispatch per burst.
///
/// The engine keeps runners as `Unmanaged` references and calls `run` once per burst:
/// no retain, no release, no existential boxing on the hot path.
open class StageRunner {
    public init() {}

    /// Fills `dispositions[0..<burst.count]` and returns the burst's count afterwards: the same
    /// count, except for a holding stage (`Stage.holdsPackets`), which may take packets out of the
    /// burst and append released ones. The vector `burst.mbufs` must have room for
    /// `maximumBurstSize` packets.
    @discardableResult
    open func run(_ burst: PacketBurst, dispositions: UnsafeMutablePointer<UInt8>) -> Int {
        preconditionFailure("StageRunner.run must be overridden")
    }

    /// The stage is torn down: a holding stage frees (and counts) what it holds; returns how many.
    /// The engine calls it once, when the lcore's graph is released (shutdown or reload).
    open func releaseAll() -> Int { 0 }
}

/// The concrete runner: holds the stage value and its counter slots.
public final class TypedStageRunner<S: Stage>: StageRunner {
    public var stage: S
    @usableFromInline let counters: UnsafeMutablePointer<UInt64>

    public init(stage: S, counters: UnsafeMutablePointer<UInt64>) {
        self.stage = stage
        self.counters = counters
    }

    @discardableResult
    public override func run(_ burst: PacketBurst, dispositions: UnsafeMutablePointer<UInt8>) -> Int {
        stage.process(burst, BurstOutput<S>(dispositions: dispositions, counters: counters))
        // A static constant: for every stage that does not hold packets this folds away.
        guard S.holdsPackets else { return burst.count }
        // Take the held packets out of the burst (keeping order), then let the stage append.
        var kept = 0
        for index in 0..<burst.count where dispositions[index] != heldDisposition {
            burst.mbufs[kept] = burst.mbufs[index]
            dispositions[kept] = dispositions[index]
            kept += 1
        }
        var count = kept
        withUnsafeMutablePointer(to: &count) { count in
            stage.flush(HeldPackets<S>(mbufs: burst.mbufs, dispositions: dispositions, count: count,
                                       capacity: maximumBurstSize, counters: counters))
        }
        return count
    }

    public override func releaseAll() -> Int {
        guard S.holdsPackets else { return 0 }
        return stage.releaseAll(BurstOutput<S>(dispositions: scratch, counters: counters))
    }

    /// A disposition slot for `releaseAll` (its `drop` writes one).
    private let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)

    deinit { scratch.deallocate() }
}
