import ArgumentParser
import Foundation

/// `switchyard ctl bgp | drain | undrain` (docs/bgp.md).
struct CtlBgp: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bgp",
        abstract: "The BGP speaker: BIRD's state, its sessions, each VIP announced or withdrawn, why and since when.")
    @OptionGroup var socket: CtlSocketOption
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            let answer = try socket.request("bgp")
            if json { printJSON(answer); return }
            guard let bgp = answer as? [String: Any] else { throw CtlFailure("unexpected answer") }
            print(Self.format(bgp))
        }
    }

    static func format(_ bgp: [String: Any]) -> String {
        let peers = (bgp["peers"] as? [[String: Any]] ?? []).map { "\($0["address"] ?? "?") (AS \($0["as"] ?? "?"))" }
        var lines = [
            "speaker     \(bgp["speaker"] ?? "?")" + ((bgp["pid"]).map { " (BIRD pid \($0))" } ?? "")
                + ((bgp["drained"] as? Bool) == true ? ", drained (ctl drain)" : ""),
            "local AS    \(bgp["local_as"] ?? "?"), router id \(bgp["router_id"] ?? "?"), next hop \(bgp["next_hop"] ?? "?")"
                + ((bgp["next_hop6"] as? String).map { $0 == "none" ? "" : ", next hop6 \($0)" } ?? ""),
            "peers       \(peers.joined(separator: ", "))",
        ]
        for session in bgp["sessions"] as? [[String: String]] ?? [] {
            lines.append("session     \(session["name"] ?? "?"): \(session["state"] ?? "?") \(session["info"] ?? "") since \(session["since"] ?? "?")")
        }
        if let problem = bgp["last_problem"] as? [String: Any] {
            lines.append("problem     \(problem["text"] ?? "") (" + String(format: "%.0f", problem["age_s"] as? Double ?? 0) + " s ago)")
        }
        lines.append("")
        lines.append("vip              state        since     reason")
        for vip in bgp["vips"] as? [[String: Any]] ?? [] {
            let since = vip["since_s"] as? Double ?? 0
            lines.append(pad("\(vip["vip"] ?? "?")", 16) + " " + pad("\(vip["state"] ?? "?")", 12) + " "
                + String(format: "%7.1f s", since) + " " + "\(vip["reason"] ?? "")")
        }
        return lines.joined(separator: "\n")
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

struct CtlDrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "drain",
        abstract: "Withdraw every VIP from BGP and keep serving (the router moves new flows away); undo with undrain.")
    @OptionGroup var socket: CtlSocketOption
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            let answer = try socket.request("drain")
            if json { printJSON(answer); return }
            guard let bgp = answer as? [String: Any] else { throw CtlFailure("unexpected answer") }
            print(CtlBgp.format(bgp))
        }
    }
}

struct CtlUndrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "undrain",
        abstract: "End a drain: announce again every VIP the rule allows.")
    @OptionGroup var socket: CtlSocketOption
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            let answer = try socket.request("undrain")
            if json { printJSON(answer); return }
            guard let bgp = answer as? [String: Any] else { throw CtlFailure("unexpected answer") }
            print(CtlBgp.format(bgp))
        }
    }
}
