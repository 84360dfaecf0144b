import Foundation
import SwitchyardEngine

/// How `switchyard ctl` prints the engine's JSON answers for people.
enum CtlFormat {
    static func status(_ s: [String: Any]) -> String {
        var lines: [String] = []
        let uptime = s["uptime_s"] as? Double ?? 0
        lines.append("engine \(s["name"] ?? "?")  pid \(s["pid"] ?? "?")  up \(duration(uptime))  DPDK \(s["dpdk"] ?? "?")")
        if let config = s["config"] as? [String: Any] {
            lines.append("config \(config["file"] ?? "?")  sha256 \(config["sha256"] ?? "?")")
        }
        if let memory = s["memory"] as? String { lines.append(memory) }
        if let socket = s["control_socket"] { lines.append("control socket \(socket)") }
        for lcore in s["lcores"] as? [[String: Any]] ?? [] {
            let stages = (lcore["stages"] as? [String] ?? []).joined(separator: " ")
            let polls = (lcore["polls"] as? [String] ?? []).joined(separator: ", ")
            lines.append("lcore \(lcore["id"] ?? "?") on cpu \(lcore["cpu"] ?? "?")\((lcore["running"] as? Bool ?? true) ? "" : " (stopped)"): polls \(polls); stages \(stages)")
        }
        for port in s["ports"] as? [[String: Any]] ?? [] {
            var link = "link unknown"
            if let l = port["link"] as? [String: Any] {
                link = (l["up"] as? Bool ?? false) ? "link up \(l["speed_mbps"] ?? 0) Mbps" : "link down"
            }
            lines.append("port \(port["name"] ?? "?") (port \(port["port_id"] ?? "?"), \(port["mac"] ?? "?"), \(port["rx_queues"] ?? 0) rx / \(port["tx_queues"] ?? 0) tx queues): \(link)  \(port["device"] ?? "")")
        }
        if let cluster = s["cluster"] as? [String: Any] {
            lines.append("cluster host \(cluster["host"] ?? "?"): services \((cluster["services"] as? [String] ?? []).joined(separator: ", ")); connections \(cluster["connections"] ?? 0) of \(cluster["capacity"] ?? 0)"
                + ((cluster["departing"] as? [Int]).flatMap { $0.isEmpty ? nil : "; departing host(s) \($0.map(String.init).joined(separator: ", "))" } ?? ""))
        }
        if let gossip = s["gossip"] as? [String: Any] {
            lines.append("gossip host \(gossip["host"] ?? "?") synchronised \(gossip["synchronised"] ?? false)  owned \(gossip["owned_flows"] ?? 0)  remote \(gossip["remote_flows"] ?? 0)")
            var rows = [["peer", "endpoint", "state", "synchronised", "silence_ms", "flows"]]
            for peer in gossip["peers"] as? [[String: Any]] ?? [] {
                rows.append(["\(peer["host"] ?? "?")", "\(peer["endpoint"] ?? "?")", "\(peer["state"] ?? "?")",
                             "\(peer["synchronised"] ?? false)", "\(peer["silence_ms"] ?? -1)", "\(peer["flows"] ?? 0)"])
            }
            lines.append(CounterRegistry.format(rows).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        }
        return lines.joined(separator: "\n")
    }

    /// Totals over lcores per scope and counter, with the rate of the last second.
    static func stats(_ s: [String: Any], all: Bool) -> String {
        var lines: [String] = []
        lines.append("up \(duration(s["uptime_s"] as? Double ?? 0))   rates over the last \(String(format: "%.1f", s["rate_interval_s"] as? Double ?? 0)) s")
        for lcore in s["lcores"] as? [[String: Any]] ?? [] {
            let busy = (lcore["busy_share"] as? Double ?? 0) * 100
            lines.append(String(format: "lcore %@: busy %.0f%% of polls, %.2f Mpps, %.0f cycles/packet",
                                "\(lcore["lcore"] ?? "?")", busy, (lcore["packets_per_second"] as? Double ?? 0) / 1e6,
                                lcore["cycles_per_packet"] as? Double ?? 0))
        }
        struct Row { var scope: String; var counter: String; var total: UInt64; var rate: Double; var order: Int }
        var rows: [Row] = []
        var index: [String: Int] = [:]
        for block in s["blocks"] as? [[String: Any]] ?? [] {
            let kind = block["kind"] as? String ?? ""
            if ["lcore", "histogram"].contains(kind) { continue }
            let scope = block["scope"] as? String ?? "?"
            let counters = block["counters"] as? [String: Any] ?? [:]
            let rates = block["rates"] as? [String: Any] ?? [:]
            for name in counters.keys.sorted(by: { order($0, in: block) < order($1, in: block) }) {
                if name.hasPrefix("xstat ") { continue }
                let value = (counters[name] as? NSNumber)?.uint64Value ?? 0
                let rate = (rates[name] as? NSNumber)?.doubleValue ?? 0
                let key = scope + "\u{0}" + name
                if let at = index[key] {
                    rows[at].total += value
                    rows[at].rate += rate
                } else {
                    index[key] = rows.count
                    rows.append(Row(scope: scope, counter: name, total: value, rate: rate, order: rank(scope)))
                }
            }
        }
        let visible = rows.enumerated()
            .filter { all || $0.element.total != 0 }
            .sorted { ($0.element.order, $0.offset) < ($1.element.order, $1.offset) }.map(\.element)
        var table = [["scope", "counter", "total", "per second"]]
        var lastScope = ""
        for row in visible {
            table.append([row.scope == lastScope ? "" : row.scope, row.counter, String(row.total), rateText(row.rate)])
            lastScope = row.scope
        }
        lines.append(CounterRegistry.format(table))
        return lines.joined(separator: "\n")
    }

    static func ports(_ ports: [[String: Any]], all: Bool) -> String {
        var lines: [String] = []
        for port in ports {
            var link = "link unknown"
            if let l = port["link"] as? [String: Any] {
                link = (l["up"] as? Bool ?? false) ? "link up \(l["speed_mbps"] ?? 0) Mbps" : "link down"
            }
            lines.append("port \(port["name"] ?? "?") (port \(port["port_id"] ?? "?")): \(link)")
            let stats = port["stats"] as? [String: Any] ?? [:]
            let rates = port["rates"] as? [String: Any] ?? [:]
            var rows = [["  counter", "total", "per second"]]
            for name in ["ipackets", "opackets", "ibytes", "obytes", "imissed", "ierrors", "oerrors", "rx_nombuf"] {
                rows.append(["  " + name, "\(stats[name] ?? 0)", rateText((rates[name] as? NSNumber)?.doubleValue ?? 0)])
            }
            let xstats = port["xstats"] as? [String: Any] ?? [:]
            for name in xstats.keys.sorted() {
                let value = (xstats[name] as? NSNumber)?.uint64Value ?? 0
                if all || value != 0 { rows.append(["  xstat " + name, String(value), ""]) }
            }
            lines.append(CounterRegistry.format(rows))
        }
        return lines.joined(separator: "\n")
    }

    static func connections(_ t: [String: Any]) -> String {
        var rows = [["client", "vip", "proto", "service", "owner", "backend", "state", "idle_s"]]
        for c in t["connections"] as? [[String: Any]] ?? [] {
            rows.append(["\(c["client"] ?? "")", "\(c["vip"] ?? "")", "\(c["protocol"] ?? "")", "\(c["service"] ?? "")",
                         "\(c["owner"] ?? "")", "\(c["backend"] ?? "")", "\(c["state"] ?? "")",
                         String(format: "%.1f", c["idle_s"] as? Double ?? 0)])
        }
        let shown = rows.count - 1
        return CounterRegistry.format(rows)
            + "\n\(shown) shown of \(t["matched"] ?? 0) matching; \(t["table_entries"] ?? 0) entries in a table of \(t["capacity"] ?? 0)"
    }

    private static func order(_ name: String, in block: [String: Any]) -> Int {
        if name == "in" { return -1 }
        if let dispositions = block["dispositions"] as? [String], let at = dispositions.firstIndex(of: name) { return at }
        return 1000 + (name.hasPrefix("drop") ? 1 : 0)
    }

    private static func rank(_ scope: String) -> Int {
        ["port ", "rx ", "stage ", "tx ", "engine", "cluster", "gossip", "capture"].firstIndex { scope.hasPrefix($0) } ?? 8
    }

    private static func rateText(_ rate: Double) -> String {
        switch rate {
        case 0: "0"
        case 1e6...: String(format: "%.2fM", rate / 1e6)
        case 1e3...: String(format: "%.1fk", rate / 1e3)
        default: String(format: "%.1f", rate)
        }
    }

    private static func duration(_ seconds: Double) -> String {
        seconds < 60 ? String(format: "%.1f s", seconds)
            : seconds < 3600 ? String(format: "%dm%02ds", Int(seconds) / 60, Int(seconds) % 60)
            : String(format: "%dh%02dm", Int(seconds) / 3600, Int(seconds) % 3600 / 60)
    }
}
