import Foundation
import SwitchyardCore
import SwitchyardClusterPlugin
import SwitchyardEngine
import SwitchyardStages

/// What one host of the two-host example did, read from what its `switchyard run` wrote at exit:
/// `--stats-json` (every counter block, the `gossip` block among them) and its standard output
/// (the run time and the mempool lines).
struct HostReport {
    var host: Int
    var status: Int32
    var seconds: Double?
    var received: UInt64 = 0
    var sent: UInt64 = 0
    /// `flows-opened` of the cluster scope: connections this host owns.
    var flowsOpened: UInt64 = 0
    /// `translate-in` out: packets of flows owned here, sent to a backend.
    var translated: UInt64 = 0
    /// `decap` inner: of those, packets the peer encapsulated to us.
    var decapsulated: UInt64 = 0
    /// `encap` out: packets of the peer's flows, sent to it in VXLAN.
    var encapsulated: UInt64 = 0
    /// `translate-out` out: backends' replies, translated back to the VIP.
    var replies: UInt64 = 0
    /// Opens and closes announced to the peer.
    var gossipSent: UInt64 = 0
    /// Opens and closes announced by the peer and applied to our table.
    var gossipApplied: UInt64 = 0
    /// The peer's flows in our table at the end (from its announcements or a sync): gossip `remote-flows`.
    var peerFlows: UInt64 = 0
    /// Non-zero drops: "STAGE: REASON", "STAGE: DISPOSITION (wired to drop)", "tx PORT: tx-full", "gossip: REASON".
    var drops: [(reason: String, count: UInt64)] = []
    /// From the mempool lines: mbufs back in the pools, and their size.
    var mbufsBack = 0
    var mbufsTotal = 0

    /// One block of `--stats-json`.
    struct Block: Decodable {
        var scope: String
        var kind: String
        var counters: [String: UInt64]
        var dispositions: [String]
    }

    /// Reads what host `host` left behind; missing files leave the numbers at zero.
    init(host: Int, status: Int32, configuration: String, statsJSON: String, stdout: String) {
        self.host = host
        self.status = status
        let output = (try? String(contentsOfFile: stdout, encoding: .utf8)) ?? ""
        for line in output.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.hasPrefix("counters after "), words.count > 2 { seconds = Double(words[2]) }
            // "mempool sy_mbufs_s0: 16383 of 16383 mbufs back in the pool"
            if line.hasPrefix("mempool "), words.count > 4, let back = Int(words[2]), let total = Int(words[4]) {
                mbufsBack += back
                mbufsTotal += total
            }
        }
        if let data = FileManager.default.contents(atPath: statsJSON),
           let blocks = try? JSONDecoder().decode([Block].self, from: data)
        {
            read(blocks, wiring: try? EngineConfiguration.load(path: configuration, stages: builtinStages, plugins: standardPlugins))
        }
    }

    private mutating func read(_ blocks: [Block], wiring: EngineConfiguration?) {
        func total(_ scope: String, _ counter: String) -> UInt64 {
            blocks.filter { $0.scope == scope }.reduce(0) { $0 + ($1.counters[counter] ?? 0) }
        }
        received = blocks.filter { $0.kind == "rx" }.reduce(0) { $0 + ($1.counters["packets"] ?? 0) }
        sent = blocks.filter { $0.kind == "tx" }.reduce(0) { $0 + ($1.counters["sent"] ?? 0) }
        flowsOpened = total("cluster", "flows-opened")
        translated = total("stage translate-in", "out")
        decapsulated = total("stage decap", "inner")
        encapsulated = total("stage encap", "out")
        replies = total("stage translate-out", "out")
        gossipSent = total("gossip", "opens-sent") + total("gossip", "closes-sent")
        gossipApplied = total("gossip", "opens-applied") + total("gossip", "closes-applied")
        peerFlows = total("gossip", "remote-flows")
        var reasons: [String: UInt64] = [:]
        for block in blocks {
            if block.kind == "gossip" {
                for (name, count) in block.counters where name.hasPrefix("dropped-") {
                    reasons["gossip: " + name.dropFirst("dropped-".count), default: 0] += count
                }
                continue
            }
            let scope = block.scope.hasPrefix("stage ") ? String(block.scope.dropFirst("stage ".count)) : block.scope
            var names = block.kind == "port" ? ["imissed", "ierrors", "oerrors", "rx_nombuf"]
                : ["tx-full", "ring-full", "shutdown-flushed"]
            if let descriptor = builtinStages.first(where: { $0.kind == block.kind }) {
                names = descriptor.counters.filter { $0.severity == .drop }.map(\.name)
                let instance = wiring?.stage(named: scope)
                for (index, disposition) in descriptor.dispositions.enumerated()
                where index > 0 && instance?.next[index] == .drop {
                    reasons["\(scope): \(disposition) (wired to drop)", default: 0] += block.counters[disposition] ?? 0
                }
            }
            for name in names { reasons["\(scope): \(name)", default: 0] += block.counters[name] ?? 0 }
        }
        drops += reasons.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The summary table: one column per host.
    static func table(_ reports: [HostReport]) -> String {
        func row(_ label: String, _ value: (HostReport) -> String) -> [String] { [label] + reports.map(value) }
        var rows: [[String]] = [[""] + reports.map { "host \($0.host)" }]
        rows.append(row("packets received") { report in
            let rate = report.seconds.map { String(format: " (%.2f Mpps)", Double(report.received) / max($0, 1e-9) / 1e6) }
            return "\(report.received)\(rate ?? "")"
        })
        rows.append(row("flows opened (owned here)") { "\($0.flowsOpened)" })
        rows.append(row("translated to a backend") { "\($0.translated)" })
        rows.append(row("  of them from the peer (VXLAN)") { "\($0.decapsulated)" })
        rows.append(row("encapsulated to the peer") { "\($0.encapsulated)" })
        rows.append(row("replies translated to the VIP") { "\($0.replies)" })
        rows.append(row("gossip events sent / applied") { "\($0.gossipSent) / \($0.gossipApplied)" })
        rows.append(row("flows the peer owns, known here") { "\($0.peerFlows)" })
        let dropLines = reports.map { $0.drops.isEmpty ? ["none"] : $0.drops.map { "\($0.reason) \($0.count)" } }
        for line in 0..<(dropLines.map(\.count).max() ?? 1) {
            rows.append([line == 0 ? "drops" : ""] + dropLines.map { line < $0.count ? $0[line] : "" })
        }
        rows.append(row("mbufs back in the pool") { report in
            report.mbufsTotal == 0 ? "unknown (exit status \(report.status))"
                : report.mbufsBack == report.mbufsTotal ? "all \(report.mbufsTotal)"
                : "\(report.mbufsBack) of \(report.mbufsTotal)"
        })
        var widths = [Int](repeating: 0, count: rows[0].count)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            row.enumerated().map { index, cell in
                let pad = String(repeating: " ", count: widths[index] - cell.count)
                return index == 0 ? cell + pad : pad + cell
            }.joined(separator: "   ")
        }.joined(separator: "\n")
    }
}
