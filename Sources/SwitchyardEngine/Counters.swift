import CDPDK
import Foundation
import SwitchyardCore

/// The counters of one scope (a stage instance, an rx queue, a tx port, a ring, a NIC, the gossip)
/// on one lcore: the one vocabulary every exporter reads.
///
///     lcores (relaxed atomic stores) ──► CounterBlock.values ◄── control thread (gauges, NIC, gossip)
///                                              │
///            CounterRegistry.allBlocks ────────┼──► table (run's output)   ──► --stats-json
///                                              ├──► samples() ──► Prometheus, ctl stats, telemetry
///                                              └──► json()
///
/// Each block has one identity: (scope, kind, lcore). Asking the registry again for a block of the
/// same identity (a second edge to the same tx port, a hot reload) returns the same block, so a
/// consumer that sums blocks never counts a packet twice.
public final class CounterBlock: @unchecked Sendable {
    /// "rx wire/0", "rx ring:handoff", "stage swap", "tx wire", "tx ring:handoff", "engine", "port wire".
    public let scope: String
    /// The stage kind, or "rx", "tx", "ring-in", "ring-out", "engine", "cluster", "lcore", "port",
    /// "gossip", "gossip-peer", "capture".
    public let kind: String
    public let lcore: Int
    /// The Prometheus name stem of this scope's counters (`switchyard_<family>_<counter>`).
    public let family: String
    /// Labels that tell this block apart from the others of its family: lcore, stage, stage_kind,
    /// port, queue, ring, peer.
    public let labels: [(String, String)]
    public let counters: [CounterDescription]
    public let values: UnsafeMutablePointer<UInt64>
    /// The first `alwaysShown` counters are printed even at zero; later ones only when not zero.
    public let alwaysShown: Int
    /// A histogram block: its metric, bucket bounds (in the exported unit) and unit scale.
    public let histogram: HistogramLayout?

    init(scope: String, kind: String, lcore: Int, family: String, labels: [(String, String)],
         counters: [CounterDescription], alwaysShown: Int? = nil, histogram: HistogramLayout? = nil)
    {
        self.histogram = histogram
        self.scope = scope
        self.kind = kind
        self.lcore = lcore
        self.family = family
        self.labels = labels
        self.counters = counters
        self.alwaysShown = alwaysShown ?? counters.count
        // Lines of its own: an lcore adds to its blocks every burst (see CacheLines).
        values = CacheLines.allocate(UInt64.self, count: counters.count, initializedTo: 0)
    }

    deinit { values.deallocate() }

    public func value(_ index: Int) -> UInt64 { sy_counter_read(values + index) }
    public func value(named name: String) -> UInt64? {
        counters.firstIndex { $0.name == name }.map(value)
    }
    /// Every value, read from the last counter to the first: the lcore adds a stage's `in` before its
    /// dispositions, so read this way while it runs `in` is never below the sum of the dispositions.
    public func valuesLastToFirst() -> [UInt64] {
        var read = [UInt64](repeating: 0, count: counters.count)
        for index in counters.indices.reversed() { read[index] = value(index) }
        return read
    }
    public func add(_ index: Int, _ amount: UInt64) { sy_counter_add(values + index, amount) }
    /// For gauges and for values copied from elsewhere (NIC, gossip): control thread only.
    public func set(_ index: Int, _ value: UInt64) { sy_counter_add(values + index, value &- sy_counter_read(values + index)) }
}

/// How a histogram block's counters map to Prometheus: one counter per bucket (not cumulative;
/// the last is +Inf), then the sum (in `1/scale` of the unit) and the count.
public struct HistogramLayout: Sendable {
    /// `switchyard_gossip_propagation_seconds`
    public var name: String
    public var help: String
    /// Upper bounds, in the exported unit (seconds).
    public var bounds: [Double]
    /// Recorded values are in `1/scale` units (1e6: microseconds).
    public var scale: Double
}

/// One exported value: a Prometheus sample (name by Prometheus conventions, labels, value).
/// A histogram gives several: `<name>_bucket` (cumulative, with `le`), `<name>_sum`, `<name>_count`,
/// each with `kind == .histogram` and `family` the histogram's name.
public struct MetricSample: Sendable {
    /// `switchyard_<family>_<counter>`, with `_total` for counters.
    public var name: String
    public var help: String
    public var kind: CounterKind
    public var labels: [(String, String)]
    public var value: Double
    /// The metric family (the `# TYPE` line's name): `name`, except for histogram samples.
    public var family: String
}

/// Every counter block of the engine, in creation order.
public final class CounterRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var blocks: [CounterBlock] = []

    public init() {}

    /// The block of this identity (scope, kind, lcore), made on first use.
    ///
    /// `family` and `labels` default from the scope's kind (see `LabelledScope`); the counters of a
    /// second request for the same identity must be the same list (a stage that changed kind under
    /// the same name on reload is another kind, so another block).
    public func makeBlock(scope: String, kind: String, lcore: Int, counters: [CounterDescription],
                          alwaysShown: Int? = nil, family: String? = nil, labels: [(String, String)] = []) -> CounterBlock
    {
        lock.withLock {
            if let existing = blocks.first(where: { $0.scope == scope && $0.kind == kind && $0.lcore == lcore }),
               existing.counters == counters
            {
                return existing
            }
            let block = CounterBlock(scope: scope, kind: kind, lcore: lcore, family: family ?? Self.family(of: kind),
                                     labels: [("lcore", String(lcore))] + labels, counters: counters,
                                     alwaysShown: alwaysShown)
            blocks.append(block)
            return block
        }
    }

    private static func family(of kind: String) -> String {
        switch kind {
        case "rx": "rx"
        case "tx": "tx"
        case "ring-in": "ring_in"
        case "ring-out": "ring_out"
        case "gossip-peer": "gossip_peer"
        case "engine", "cluster", "lcore", "port", "gossip", "capture", "bgp": kind
        default: "stage"
        }
    }

    /// A histogram: `bounds` (exported unit) and observations recorded in `1/scale` of it.
    /// Fill it with `set` from the control thread (bucket i, then sum, then count).
    public func makeHistogram(scope: String, name: String, help: String, bounds: [Double], scale: Double,
                              labels: [(String, String)] = []) -> CounterBlock
    {
        lock.withLock {
            if let existing = blocks.first(where: { $0.scope == scope && $0.histogram?.name == name }) { return existing }
            let counters = bounds.map { CounterDescription(name: "le-\($0)", help: help, severity: .info, kind: .histogram) }
                + [CounterDescription(name: "le-inf", help: help, severity: .info, kind: .histogram),
                   CounterDescription(name: "sum", help: help, severity: .info, kind: .histogram),
                   CounterDescription(name: "count", help: help, severity: .info, kind: .histogram)]
            let block = CounterBlock(scope: scope, kind: "histogram", lcore: 0, family: "histogram",
                                     labels: [("lcore", "0")] + labels, counters: counters,
                                     histogram: HistogramLayout(name: name, help: help, bounds: bounds, scale: scale))
            blocks.append(block)
            return block
        }
    }

    public var allBlocks: [CounterBlock] { lock.withLock { blocks } }

    /// Sum over lcores of one counter of one scope.
    public func total(scope: String, counter: String) -> UInt64 {
        allBlocks.filter { $0.scope == scope }.reduce(0) { $0 + ($1.value(named: counter) ?? 0) }
    }

    /// Every counter as a Prometheus sample. Any thread.
    public func samples() -> [MetricSample] {
        var samples: [MetricSample] = []
        for block in allBlocks {
            if let histogram = block.histogram {
                var cumulative: UInt64 = 0
                for (index, bound) in (histogram.bounds + [Double.infinity]).enumerated() {
                    cumulative += block.value(index)
                    samples.append(MetricSample(
                        name: histogram.name + "_bucket", help: histogram.help, kind: .histogram,
                        labels: block.labels + [("le", bound.isInfinite ? "+Inf" : String(bound))],
                        value: Double(cumulative), family: histogram.name))
                }
                let sum = Double(block.value(histogram.bounds.count + 1)) / histogram.scale
                samples.append(MetricSample(name: histogram.name + "_sum", help: histogram.help, kind: .histogram,
                                            labels: block.labels, value: sum, family: histogram.name))
                samples.append(MetricSample(name: histogram.name + "_count", help: histogram.help, kind: .histogram,
                                            labels: block.labels, value: Double(block.value(histogram.bounds.count + 2)),
                                            family: histogram.name))
                continue
            }
            let values = block.valuesLastToFirst()
            for (index, counter) in block.counters.enumerated() {
                let metric = counter.metric(family: block.family)
                samples.append(MetricSample(name: metric.name, help: metric.help, kind: counter.kind,
                                            labels: block.labels + metric.labels,
                                            value: Double(values[index]) / (counter.metric?.scale ?? 1),
                                            family: metric.name))
            }
        }
        return samples
    }

    /// A readable table: one row per scope and counter, one column per lcore, and the total.
    /// `in` and the dispositions are always shown; a stage's own counters only when not zero.
    /// NIC, lcore and gossip blocks are left out (`switchyard ctl ports`, `ctl stats` show them).
    public func table() -> String {
        let blocks = allBlocks.filter { !["port", "lcore", "gossip", "gossip-peer", "histogram"].contains($0.kind) }
        let lcores = Array(Set(blocks.map(\.lcore))).sorted()
        var scopes: [(scope: String, kind: String)] = []
        for block in blocks where !scopes.contains(where: { $0.scope == block.scope }) {
            scopes.append((block.scope, block.kind))
        }
        // In the order packets meet them: rx (ports, rings), stages, tx (ports, rings).
        func rank(_ scope: String) -> Int {
            ["rx ", "stage ", "tx ", "engine", "cluster", "capture"].firstIndex { scope.hasPrefix($0) } ?? 6
        }
        scopes = scopes.enumerated().sorted { (rank($0.element.scope), $0.offset) < (rank($1.element.scope), $1.offset) }
            .map(\.element)
        var rows: [[String]] = [["scope", "counter"] + lcores.map { $0 == 0 ? "main" : "lcore \($0)" } + ["total"]]
        for (scope, kind) in scopes {
            let members = blocks.filter { $0.scope == scope }
            guard let first = members.first else { continue }
            var label = kind == scope || kind.isEmpty ? scope : "\(scope) (\(kind))"
            for (index, counter) in first.counters.enumerated() {
                var perLcore: [String] = []
                var total: UInt64 = 0
                for lcore in lcores {
                    let values = members.filter { $0.lcore == lcore }.map { $0.value(index) }
                    if values.isEmpty {
                        perLcore.append("-")
                    } else {
                        let sum = values.reduce(0, +)
                        total += sum
                        perLcore.append(String(sum))
                    }
                }
                if index >= first.alwaysShown && total == 0 { continue }
                let name = counter.severity == .drop ? "drop: \(counter.name)" : counter.name
                rows.append([label, name] + perLcore + [String(total)])
                label = ""
            }
        }
        return Self.format(rows)
    }

    public static func format(_ rows: [[String]]) -> String {
        guard let header = rows.first else { return "" }
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                return i < 2 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// Every block as a JSON-ready object:
    /// `{"scope", "kind", "lcore", "family", "labels": {..}, "counters": {name: value}, "dispositions": [name]}`
    /// (`dispositions` names a stage's disposition counters; empty for other scopes).
    public func jsonObjects() -> [[String: Any]] {
        allBlocks.map { block in
            var values: [String: UInt64] = [:]
            // Last to first: the lcore adds a stage's `in` before its dispositions, so read this way a
            // snapshot taken while lcores run never shows more packets out than in.
            for (index, counter) in block.counters.enumerated().reversed() { values[counter.name] = block.value(index) }
            let dispositions = block.family == "stage" ? block.counters[1..<block.alwaysShown].map(\.name) : []
            return ["scope": block.scope, "kind": block.kind, "lcore": block.lcore, "family": block.family,
                    "labels": Dictionary(block.labels, uniquingKeysWith: { $1 }), "counters": values,
                    "dispositions": dispositions]
        }
    }

    /// `jsonObjects()` as text: what `--stats-json` writes.
    public func json() -> String {
        let data = try? JSONSerialization.data(withJSONObject: jsonObjects(), options: [.prettyPrinted, .sortedKeys])
        return data.flatMap { String(data: $0, encoding: .utf8) } ?? "[]"
    }
}

extension CounterDescription {
    /// The Prometheus name, help and labels of this counter in a block of `family`.
    ///
    /// Stage blocks: `in` is `switchyard_stage_received_packets_total`; dispositions are
    /// `switchyard_stage_packets_total{disposition=...}`; drop reasons are
    /// `switchyard_stage_dropped_packets_total{reason=...}`; other stage counters are
    /// `switchyard_stage_events_total{counter=...}`. Elsewhere a counter named `a-b` in family
    /// `f` is `switchyard_f_a_b_total` (gauges have no `_total`), unless it names its own `metric`.
    func metric(family: String) -> (name: String, help: String, labels: [(String, String)]) {
        let suffix = kind == .counter ? "_total" : ""
        if let metric {
            return ("switchyard_\(family)_\(metric.name)\(suffix)", metric.help ?? help,
                    metric.label.map { [$0] } ?? [])
        }
        return ("switchyard_\(family)_\(Self.snake(name))\(suffix)", help, [])
    }

    static func snake(_ name: String) -> String {
        String(name.map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }
}

/// Counter lists of the engine's own scopes.
enum EngineCounters {
    static let rx = [CounterDescription(name: "packets", help: "packets received from the rx queue", severity: .info)]
    static let ringIn = [CounterDescription(name: "packets", help: "packets dequeued from the ring", severity: .info)]
    static let tx = [
        CounterDescription(name: "sent", help: "packets the NIC took", severity: .info,
                           metric: .init(name: "packets", help: "packets the NIC took")),
        CounterDescription(name: "tx-full", help: "packets the NIC did not take after retries, freed", severity: .drop,
                           metric: .init(name: "dropped_packets", help: "packets not sent, freed, by reason",
                                         label: ("reason", "tx-full"))),
    ]
    static let ringOut = [
        CounterDescription(name: "enqueued", help: "packets put on the ring", severity: .info,
                           metric: .init(name: "packets", help: "packets put on the ring")),
        CounterDescription(name: "ring-full", help: "packets the full ring refused, freed", severity: .drop,
                           metric: .init(name: "dropped_packets", help: "packets not enqueued, freed, by reason",
                                         label: ("reason", "ring-full"))),
    ]
    static let engine = [
        CounterDescription(name: "shutdown-flushed", help: "packets left in rings at shutdown, freed", severity: .drop)
    ]

    /// Per worker lcore, written by the lcore itself once per loop iteration.
    static let lcore = [
        CounterDescription(name: "polls", help: "iterations of the poll loop", severity: .info),
        CounterDescription(name: "busy-polls", help: "iterations that received at least one packet", severity: .info),
        CounterDescription(name: "packets", help: "packets received from ports and rings", severity: .info),
        CounterDescription(name: "busy-cycles", help: "TSC cycles spent in iterations that received packets", severity: .info),
    ]

    /// A stage instance's block: `in`, one per disposition, then the stage's own counters.
    static func stage(_ descriptor: StageDescriptor) -> [CounterDescription] {
        [CounterDescription(name: "in", help: "packets given to the stage", severity: .info,
                            metric: .init(name: "received_packets", help: "packets given to the stage"))]
            + descriptor.dispositions.map {
                CounterDescription(name: $0, help: "packets with disposition \($0)", severity: .info,
                                   metric: .init(name: "packets", help: "packets leaving the stage, by disposition",
                                                 label: ("disposition", $0)))
            }
            + descriptor.counters.map { counter in
                var counter = counter
                counter.metric = counter.severity == .drop
                    ? .init(name: "dropped_packets", help: "packets the stage dropped, by reason",
                            label: ("reason", counter.name))
                    : .init(name: "events", help: "the stage's own counters", label: ("counter", counter.name))
                return counter
            }
    }
}
