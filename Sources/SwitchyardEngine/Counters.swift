import CDPDK
import Foundation
import SwitchyardCore

/// The counters of one scope (a stage instance, an rx queue, a tx edge, a ring) on one lcore.
///
/// Written by exactly one lcore with relaxed atomic stores; read by anyone (the stats table,
/// exporters) at any time while lcores run. Blocks live as long as the engine.
public final class CounterBlock: @unchecked Sendable {
    /// "rx wire/0", "rx ring:handoff", "stage swap", "tx wire", "tx ring:handoff", "engine".
    public let scope: String
    /// The stage kind, or "rx", "tx", "ring-in", "ring-out", "engine".
    public let kind: String
    public let lcore: Int
    public let counters: [CounterDescription]
    public let values: UnsafeMutablePointer<UInt64>
    /// The first `alwaysShown` counters are printed even at zero; later ones only when not zero.
    public let alwaysShown: Int

    init(scope: String, kind: String, lcore: Int, counters: [CounterDescription], alwaysShown: Int? = nil) {
        self.scope = scope
        self.kind = kind
        self.lcore = lcore
        self.counters = counters
        self.alwaysShown = alwaysShown ?? counters.count
        values = .allocate(capacity: max(counters.count, 1))
        values.initialize(repeating: 0, count: max(counters.count, 1))
    }

    deinit { values.deallocate() }

    public func value(_ index: Int) -> UInt64 { sy_counter_read(values + index) }
    public func value(named name: String) -> UInt64? {
        counters.firstIndex { $0.name == name }.map(value)
    }
    func add(_ index: Int, _ amount: UInt64) { sy_counter_add(values + index, amount) }
    /// For gauges (written by the control thread only).
    func set(_ index: Int, _ value: UInt64) { sy_counter_add(values + index, value &- sy_counter_read(values + index)) }
}

/// Every counter block of the engine, in creation order.
public final class CounterRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var blocks: [CounterBlock] = []

    public init() {}

    public func makeBlock(scope: String, kind: String, lcore: Int, counters: [CounterDescription],
                          alwaysShown: Int? = nil) -> CounterBlock
    {
        let block = CounterBlock(scope: scope, kind: kind, lcore: lcore, counters: counters, alwaysShown: alwaysShown)
        lock.withLock { blocks.append(block) }
        return block
    }

    public var allBlocks: [CounterBlock] { lock.withLock { blocks } }

    /// Sum over lcores of one counter of one scope.
    public func total(scope: String, counter: String) -> UInt64 {
        allBlocks.filter { $0.scope == scope }.reduce(0) { $0 + ($1.value(named: counter) ?? 0) }
    }

    /// A readable table: one row per scope and counter, one column per lcore, and the total.
    /// `in` and the dispositions are always shown; a stage's own counters only when not zero.
    public func table() -> String {
        let blocks = allBlocks
        let lcores = Array(Set(blocks.map(\.lcore))).sorted()
        var scopes: [(scope: String, kind: String)] = []
        for block in blocks where !scopes.contains(where: { $0.scope == block.scope }) {
            scopes.append((block.scope, block.kind))
        }
        // In the order packets meet them: rx (ports, rings), stages, tx (ports, rings).
        func rank(_ scope: String) -> Int {
            ["rx ", "stage ", "tx ", "engine", "cluster"].firstIndex { scope.hasPrefix($0) } ?? 5
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

    static func format(_ rows: [[String]]) -> String {
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

    /// Every counter as JSON: `[{"scope", "kind", "lcore", "counters": {name: value}, "dispositions": [name]}]`
    /// (`dispositions` names a stage's disposition counters; empty for other scopes).
    public func json() -> String {
        let items: [[String: Any]] = allBlocks.map { block in
            var values: [String: UInt64] = [:]
            for (index, counter) in block.counters.enumerated() { values[counter.name] = block.value(index) }
            let dispositions = block.scope.hasPrefix("stage ") ? block.counters[1..<block.alwaysShown].map(\.name) : []
            return ["scope": block.scope, "kind": block.kind, "lcore": block.lcore, "counters": values,
                    "dispositions": dispositions]
        }
        let data = try? JSONSerialization.data(withJSONObject: items, options: [.prettyPrinted, .sortedKeys])
        return data.flatMap { String(data: $0, encoding: .utf8) } ?? "[]"
    }
}

/// Counter names of the engine's own scopes.
enum EngineCounters {
    static let rx = [CounterDescription(name: "packets", help: "packets received from the rx queue", severity: .info)]
    static let ringIn = [CounterDescription(name: "packets", help: "packets dequeued from the ring", severity: .info)]
    static let tx = [
        CounterDescription(name: "sent", help: "packets the NIC took", severity: .info),
        CounterDescription(name: "tx-full", help: "packets the NIC did not take after retries, freed", severity: .drop),
    ]
    static let ringOut = [
        CounterDescription(name: "enqueued", help: "packets put on the ring", severity: .info),
        CounterDescription(name: "ring-full", help: "packets the full ring refused, freed", severity: .drop),
    ]
    static let engine = [
        CounterDescription(name: "shutdown-flushed", help: "packets left in rings at shutdown, freed", severity: .drop)
    ]

    static let cluster = [
        CounterDescription(name: "flows-opened", help: "opened events from the lcores (new connections owned here)", severity: .info),
        CounterDescription(name: "flows-closed", help: "closed events (FIN, RST or idle timeout)", severity: .info),
        CounterDescription(name: "flows-expired", help: "connections removed by the idle-timeout scan", severity: .info),
        CounterDescription(name: "connections", help: "entries in the connection table now (gauge)", severity: .info),
        CounterDescription(name: "events-refused", help: "events the full events ring refused (gauge, total)", severity: .info),
        CounterDescription(name: "inserts-refused", help: "new connections the full table refused (gauge, total)", severity: .info),
    ]

    /// A stage instance's block: `in`, one per disposition, then the stage's own counters.
    static func stage(_ descriptor: StageDescriptor) -> [CounterDescription] {
        [CounterDescription(name: "in", help: "packets given to the stage", severity: .info)]
            + descriptor.dispositions.map {
                CounterDescription(name: $0, help: "packets with disposition \($0)", severity: .info)
            }
            + descriptor.counters
    }
}
