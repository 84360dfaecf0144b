import ArgumentParser
import Foundation
import SwitchyardEngine

/// `switchyard ctl preview FILE` (and `switchyard validate --against SOCKET FILE`): what a reload
/// of FILE would move, asked of the running engine, which applies nothing (docs/operations.md).
struct CtlPreview: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "preview",
        abstract: "What a reload of FILE would move: per service, live connections whose pick changes and that only their entry keeps, and the share of new flows that moves per backend and host. Applies nothing.")
    @OptionGroup var socket: CtlSocketOption
    @Argument(help: "The configuration file to compare with the running one (default: the file the engine runs).") var file: String?
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            let answer = try Self.request(socket: socket, file: file)
            if json { printJSON(answer); return }
            print(Self.format(answer))
        }
    }

    static func request(socket: CtlSocketOption, file: String?) throws -> [String: Any] {
        var args: [String: Any] = [:]
        if let file { args["file"] = URL(fileURLWithPath: file).standardizedFileURL.path } // the engine's cwd is not ours
        guard let answer = try socket.request("preview", args, timeout: 60) as? [String: Any] else {
            throw CtlFailure("unexpected answer")
        }
        return answer
    }

    static func format(_ answer: [String: Any]) -> String {
        var lines = ["preview of \(answer["file"] ?? "?") (nothing applied): \(answer["connections"] ?? 0) connection(s) in the table"
            + ((answer["unmatched"] as? Int ?? 0) > 0 ? ", \(answer["unmatched"]!) of no service" : "")]
        let changes = answer["changes"] as? [String] ?? []
        lines.append(changes.isEmpty ? "changes: none to services or stages" : "changes:")
        for change in changes { lines.append("  " + change) }
        for service in answer["services"] as? [[String: Any]] ?? [] {
            let picks = service["pick_changes"] as? [String: Any] ?? [:]
            let held = service["held_by_entry"] as? [String: Any] ?? [:]
            let byState = (held["by_state"] as? [String: Any] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            let flows = service["new_flows"] as? [String: Any] ?? [:]
            lines.append("")
            lines.append("service \(service["service"] ?? "?")  \(service["protocol"] ?? "?") \(service["vip"] ?? "?")  \(service["status"] ?? "?")")
            lines.append("  connections     \(service["connections"] ?? 0) (\(service["local"] ?? 0) owned here, \(service["remote"] ?? 0) by peers)")
            lines.append("  pick changes    backend \(picks["backend"] ?? 0), host \(picks["host"] ?? 0)")
            lines.append("  held by entry   backend \(held["backend"] ?? 0), host \(held["host"] ?? 0)"
                + (byState.isEmpty ? "" : " (\(byState.joined(separator: ", ")))"))
            lines.append("  new flows move  backend \(percent(flows["backend_moved"])), host \(percent(flows["host_moved"]))"
                + ((flows["exact"] as? Bool ?? true) ? " (\(flows["slots"] ?? 0) slots)" : " (sampled: the table size changes)"))
            var rows = [["backend", "host", "weight", "share", "lost", "gained"]]
            for backend in flows["backends"] as? [[String: Any]] ?? [] {
                rows.append(["\(backend["backend"] ?? "?")", "\(backend["host"] ?? "?")",
                             "\(weight(backend["weight_before"])) -> \(weight(backend["weight_after"]))",
                             "\(percent(backend["share_before"])) -> \(percent(backend["share_after"]))",
                             percent(backend["lost"]), percent(backend["gained"])])
            }
            rows.append(["host", "", "", "share", "lost", "gained"])
            for host in flows["hosts"] as? [[String: Any]] ?? [] {
                rows.append(["\(host["host"] ?? "?")", "", "", "\(percent(host["share_before"])) -> \(percent(host["share_after"]))",
                             percent(host["lost"]), percent(host["gained"])])
            }
            lines.append(CounterRegistry.format(rows).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        }
        return lines.joined(separator: "\n")
    }

    private static func percent(_ value: Any?) -> String {
        String(format: "%.2f %%", ((value as? Double) ?? 0) * 100)
    }

    private static func weight(_ value: Any?) -> String {
        (value as? Int).map(String.init) ?? "-"
    }
}

extension CtlPreview {
    /// `switchyard validate --against SOCKET FILE`, once FILE is valid here.
    static func againstEngine(socket path: String, file: String, json: Bool) throws {
        let answer: Any
        do {
            answer = try ControlClient.request(socket: path, command: "preview",
                                               args: ["file": URL(fileURLWithPath: file).standardizedFileURL.path], timeout: 60)
        } catch let error as ControlClientError {
            FileHandle.standardError.write(Data("switchyard validate: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
        if json { printJSON(answer); return }
        print(format(answer as? [String: Any] ?? [:]))
    }
}
