import CDPDK
import SwitchyardConfig

/// A stage processes a burst of packets and gives each packet exactly one disposition.
///
///     burst ──► process(burst, out) ──► out.send(i, to: .someDisposition)   (one per packet)
///                                   └─► out.drop(i, reason: .malformed)      (disposition 0 + named counter)
///
/// The engine then moves the packets of each disposition along the edge that the configuration
/// wires to it: another stage, a port, a ring, or drop. A stage never knows its successors.
///
/// Rules of the hot path: `process` allocates nothing, retains nothing, and keeps no pointer to
/// a packet after it returns. The engine calls it once per burst through one dynamic dispatch;
/// everything inside is concrete and inlined.
public protocol Stage {
    /// Where packets can go. Raw values run 0, 1, 2, ... and case 0 is `drop`.
    associatedtype Disposition: StageDisposition
    /// Named counters of this stage, drop reasons among them.
    associatedtype Counter: StageCounter = NoCounter
    /// Typed configuration, parsed (and validated) without DPDK running.
    associatedtype Parameters: StageParameters = NoParameters

    /// The name of this stage kind in the configuration file (`kind: mac-swap`).
    static var kind: String { get }
    /// One line for `switchyard stages` and the docs.
    static var summary: String { get }

    /// One instance per lcore: the engine builds it when the lcore's graph is built.
    init(parameters: Parameters, context: StageContext) throws

    mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Self>)

    /// Holding stages only (see `HeldPackets`): true when `process` may `hold` packets and `flush`
    /// may emit them later. False by default, and then the engine's per-burst path is unchanged.
    static var holdsPackets: Bool { get }

    /// Holding stages only: called once per burst right after `process`. Emits packets the stage
    /// holds and now releases, into `held` (which appends them to the burst). Default: nothing.
    mutating func flush(_ held: HeldPackets<Self>)

    /// Holding stages only: the stage is being torn down (shutdown, or its graph was replaced by a
    /// reload). Frees every packet it still holds, counts each under a drop reason, and returns how
    /// many it freed. Default: 0.
    mutating func releaseAll(_ out: BurstOutput<Self>) -> Int
}

extension Stage {
    public static var holdsPackets: Bool { false }
    public mutating func flush(_ held: HeldPackets<Self>) {}
    public mutating func releaseAll(_ out: BurstOutput<Self>) -> Int { 0 }
}

/// The dispositions of a stage: a small enum, `UInt8` raw values from 0, case 0 drop.
public protocol StageDisposition: RawRepresentable, CaseIterable where RawValue == UInt8 {
    /// The configuration name, used as the key under `next:` (defaults to the case name).
    var name: String { get }
}

extension StageDisposition {
    public var name: String { String(describing: self) }
}

/// Whether a counter is a drop reason (the packet went to disposition 0 because of it) or information.
public enum CounterSeverity: String, Sendable {
    case info
    case drop
}

/// One counter of a stage: its name (in tables, JSON, labels), severity and help, in one line.
public struct CounterDeclaration: Sendable {
    public var name: String
    public var severity: CounterSeverity
    public var help: String

    public init(name: String, severity: CounterSeverity, help: String) {
        self.name = name
        self.severity = severity
        self.help = help
    }

    /// A counter for information.
    public static func info(_ name: String, _ help: String) -> CounterDeclaration {
        CounterDeclaration(name: name, severity: .info, help: help)
    }

    /// A drop reason: the packet went to disposition 0 because of it.
    public static func drop(_ name: String, _ help: String) -> CounterDeclaration {
        CounterDeclaration(name: name, severity: .drop, help: help)
    }
}

/// A stage's named counters: an enum whose `declaration` switch has one line per counter, giving
/// its name, severity and help (VPP's `foreach_..._error` list):
///
///     public enum Counter: Int, StageCounter {
///         case malformed, tooBig
///         public var declaration: CounterDeclaration {
///             switch self {
///             case .malformed: .drop("malformed", "frames shorter than their headers say")
///             case .tooBig: .info("too-big", "packets over the MTU, answered with ICMP")
///             }
///         }
///     }
public protocol StageCounter: CaseIterable {
    /// Index of this counter in the stage's counter block: 0, 1, 2, ...
    var index: Int { get }
    var declaration: CounterDeclaration { get }
}

extension StageCounter where Self: RawRepresentable, RawValue == Int {
    @inlinable public var index: Int { rawValue }
}

extension StageCounter {
    public var name: String { declaration.name }
    public var help: String { declaration.help }
    public var severity: CounterSeverity { declaration.severity }
}

/// For stages with no counters of their own.
public enum NoCounter: StageCounter {
    public var index: Int { switch self {} }
    public var declaration: CounterDeclaration { switch self {} }
}

/// Stage configuration: read from the stage's entry in the configuration file.
/// Read every key you accept from `map`; the engine rejects keys nobody read.
public protocol StageParameters: Sendable {
    init(from map: ConfigMap, stage: StageParameterContext) throws
}

/// What a stage's parameter parser may know about the rest of the configuration.
public struct StageParameterContext: Sendable {
    public var instanceName: String
    public var portNames: [String]
    /// The top-level sections the file has (valid or not), for "needs the `x:` section" errors.
    public var sections: Set<String>
    /// What the engine's plug-ins offer the parsers (docs/plugins.md).
    public var services: StageServices

    public init(instanceName: String, portNames: [String], sections: Set<String> = [],
                services: StageServices = StageServices())
    {
        self.instanceName = instanceName
        self.portNames = portNames
        self.sections = sections
        self.services = services
    }

    /// The service of type `T`, when a plug-in offers one.
    public func service<T>(_ type: T.Type) -> T? { services[type] }
}

/// For stages without parameters.
public struct NoParameters: StageParameters {
    public init() {}
    public init(from map: ConfigMap, stage: StageParameterContext) throws {}
}

/// What a stage instance learns about where it runs.
public struct StageContext {
    public var instanceName: String
    public var lcoreID: Int
    public var socketID: Int32
    public var burstSize: Int
    public var ports: [PortDescription]
    /// What the engine's plug-ins offer the stages (docs/plugins.md).
    public var services: StageServices

    public init(instanceName: String, lcoreID: Int, socketID: Int32, burstSize: Int, ports: [PortDescription],
                services: StageServices = StageServices())
    {
        self.instanceName = instanceName
        self.lcoreID = lcoreID
        self.socketID = socketID
        self.burstSize = burstSize
        self.ports = ports
        self.services = services
    }

    /// The service of type `T`, when a plug-in offers one.
    public func service<T>(_ type: T.Type) -> T? { services[type] }
}

/// Typed services the engine's plug-ins offer the stages, one value per type, looked up by type:
///
///     plug-in ──services[SomeRuntime.self] = runtime──► StageServices ──► StageContext
///     stage:   context.service(SomeRuntime.self)   (nil: no plug-in offers it)
///
/// Core names no service type: each is declared by the module that offers it, so a stage depends
/// on that module, never the engine or the core on the stage's world. Looked up when a stage is
/// built (control thread), never per packet.
public struct StageServices: @unchecked Sendable {
    private var values: [ObjectIdentifier: Any] = [:]

    public init() {}

    public subscript<T>(_ type: T.Type) -> T? {
        get { values[ObjectIdentifier(type)] as? T }
        set {
            if let newValue { values[ObjectIdentifier(type)] = newValue } else { values[ObjectIdentifier(type)] = nil }
        }
    }

    /// The services of `self`, with those of `other` added (`other` wins on the same type).
    public func merging(_ other: StageServices) -> StageServices {
        var merged = self
        merged.values.merge(other.values) { _, new in new }
        return merged
    }

    public var isEmpty: Bool { values.isEmpty }
}

public struct StageSetupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A started port, as stages see it.
public struct PortDescription: Sendable {
    public var name: String
    public var portID: UInt16
    public var mac: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
    public var socketID: Int32

    public init(name: String, portID: UInt16, mac: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8), socketID: Int32) {
        self.name = name
        self.portID = portID
        self.mac = mac
        self.socketID = socketID
    }
}

/// Where a stage writes its results for one burst: one disposition per packet, and its counters.
@frozen
public struct BurstOutput<S: Stage> {
    @usableFromInline let dispositions: UnsafeMutablePointer<UInt8>
    @usableFromInline let counters: UnsafeMutablePointer<UInt64>

    @inlinable @inline(__always)
    public init(dispositions: UnsafeMutablePointer<UInt8>, counters: UnsafeMutablePointer<UInt64>) {
        self.dispositions = dispositions
        self.counters = counters
    }

    /// Packet `index` goes to `disposition`.
    @inlinable @inline(__always)
    public func send(_ index: Int, to disposition: S.Disposition) {
        dispositions[index] = disposition.rawValue
    }

    /// Packet `index` is dropped (disposition 0), counted under `reason`.
    @inlinable @inline(__always)
    public func drop(_ index: Int, reason: S.Counter) {
        dispositions[index] = 0
        sy_counter_add(counters + reason.index, 1)
    }

    /// Adds `amount` to one of the stage's counters.
    @inlinable @inline(__always)
    public func count(_ counter: S.Counter, _ amount: UInt64 = 1) {
        sy_counter_add(counters + counter.index, amount)
    }

    /// Holding stages only: the stage took packet `index` into its own bounded buffer; it leaves
    /// the burst now and comes back later through `flush` (or is freed and counted by the stage).
    @inlinable @inline(__always)
    public func hold(_ index: Int) {
        assert(S.holdsPackets, "\(S.kind): hold() needs `static var holdsPackets: Bool { true }`")
        dispositions[index] = heldDisposition
    }

    /// Every packet of the burst goes to `disposition` (a stage that treats all alike).
    @inlinable @inline(__always)
    public func sendAll(_ count: Int, to disposition: S.Disposition) {
        dispositions.update(repeating: disposition.rawValue, count: count)
    }
}

/// The disposition slot value of a held packet (never a real disposition: those are < 255).
public let heldDisposition: UInt8 = 0xff

/// Where a holding stage emits the packets it releases, once per burst (after `process`):
///
///     burst: [p0 p1 p2 p3]      process: p1 held (out.hold)       flush: emit(h, .flow)
///              │                        │                                  │
///              ▼                        ▼                                  ▼
///     runner compacts:  [p0 p2 p3]  ──────────────────────► appended: [p0 p2 p3 h]  ──► engine
///
/// The burst's vector has room for `maximumBurstSize` packets; `room` says how many more fit.
/// A stage that cannot emit everything now keeps the rest for the next burst.
@frozen
public struct HeldPackets<S: Stage> {
    @usableFromInline let mbufs: MbufVector
    @usableFromInline let dispositions: UnsafeMutablePointer<UInt8>
    @usableFromInline let count: UnsafeMutablePointer<Int>
    @usableFromInline let capacity: Int
    /// The stage's counters (as `BurstOutput` writes them).
    public let out: BurstOutput<S>

    @inlinable @inline(__always)
    public init(mbufs: MbufVector, dispositions: UnsafeMutablePointer<UInt8>, count: UnsafeMutablePointer<Int>,
                capacity: Int, counters: UnsafeMutablePointer<UInt64>)
    {
        self.mbufs = mbufs
        self.dispositions = dispositions
        self.count = count
        self.capacity = capacity
        out = BurstOutput(dispositions: dispositions, counters: counters)
    }

    /// How many more packets can be emitted into this burst.
    @inlinable @inline(__always)
    public var room: Int { capacity - count.pointee }

    /// Appends `packet` to the burst with `disposition`. The caller checks `room` first.
    @inlinable @inline(__always)
    public func emit(_ packet: Packet, to disposition: S.Disposition) {
        let index = count.pointee
        mbufs[index] = packet.mbuf
        dispositions[index] = disposition.rawValue
        count.pointee = index + 1
    }
}
