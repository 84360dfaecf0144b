import ArgumentParser
import Foundation

/// `switchyard ctl listen | unlisten | backends` (docs/operations.md, "Listeners"): register and
/// withdraw backends of this host while it runs, and show every backend of every service.
struct CtlListen: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "listen",
        abstract: "Register a backend of this host for a service (gossiped to every host; new flows reach it by its weight).")
    @OptionGroup var socket: CtlSocketOption
    @Argument(help: "The service (its `name` in cluster.services).") var service: String
    @Argument(help: "The bypass tuple: ADDRESS:PORT ([ADDRESS]:PORT for IPv6), or ADDRESS alone for the service's port.")
    var endpoint: String
    @Option(help: "The backend's weight (0...65535; 0: registered but takes no new flow).") var weight: Int = 1
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            var args = try CtlListen.arguments(service: service, endpoint: endpoint)
            args["weight"] = weight
            let answer = try socket.request("listen", args, timeout: 30)
            if json { printJSON(answer); return }
            let result = answer as? [String: Any] ?? [:]
            let changed = result["changed"] as? Bool ?? true
            print((changed ? "listening: " : "already listening: ")
                + "\(result["service"] ?? service) \(result["backend"] ?? endpoint) weight \(result["weight"] ?? weight)"
                + ", generation \(result["generation"] ?? "?")")
        }
    }

    /// `{service, address, port?}` from SERVICE and ADDRESS[:PORT].
    static func arguments(service: String, endpoint: String) throws -> [String: Any] {
        var args: [String: Any] = ["service": service]
        if endpoint.hasPrefix("[") {
            guard let close = endpoint.firstIndex(of: "]") else { throw CtlFailure("'\(endpoint)' is not [ADDRESS]:PORT") }
            args["address"] = String(endpoint[endpoint.index(after: endpoint.startIndex)..<close])
            let rest = endpoint[endpoint.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()) else { throw CtlFailure("'\(endpoint)' is not [ADDRESS]:PORT") }
                args["port"] = port
            }
        } else if endpoint.filter({ $0 == ":" }).count == 1 {
            let parts = endpoint.split(separator: ":", omittingEmptySubsequences: false)
            guard let port = Int(parts[1]) else { throw CtlFailure("'\(endpoint)' is not ADDRESS:PORT") }
            args["address"] = String(parts[0])
            args["port"] = port
        } else {
            args["address"] = endpoint // IPv4 or IPv6 without a port
        }
        return args
    }
}

struct CtlUnlisten: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unlisten",
        abstract: "Withdraw a backend of this host: no new flow goes to it, established ones stay until they end.")
    @OptionGroup var socket: CtlSocketOption
    @Argument(help: "The service (its `name` in cluster.services).") var service: String
    @Argument(help: "The bypass tuple: ADDRESS:PORT ([ADDRESS]:PORT for IPv6), or ADDRESS alone for the service's port.")
    var endpoint: String
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            let args = try CtlListen.arguments(service: service, endpoint: endpoint)
            let answer = try socket.request("unlisten", args, timeout: 30)
            if json { printJSON(answer); return }
            let result = answer as? [String: Any] ?? [:]
            print("withdrawn: \(result["service"] ?? service) \(result["backend"] ?? endpoint)"
                + " (removed once no connection uses it), generation \(result["generation"] ?? "?")")
        }
    }
}

struct CtlBackends: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "backends",
        abstract: "Every backend of every service: host, origin (config or listen), weight, state, generation.")
    @OptionGroup var socket: CtlSocketOption
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            let answer = try socket.request("backends")
            if json { printJSON(answer); return }
            guard let table = answer as? [String: Any] else { throw CtlFailure("unexpected answer") }
            print(Self.format(table))
        }
    }

    /// "up 12.3 s: connected (40 checks, 0 failed)", "-" for a backend this host does not check.
    static func health(_ value: Any?) -> String {
        guard let h = value as? [String: Any] else { return "-" }
        var text = "\(h["state"] ?? "?") " + String(format: "%.1f s", h["since_s"] as? Double ?? 0)
            + ": \(h["last"] ?? "?") (\(h["checks"] ?? 0) checks, \(h["failed"] ?? 0) failed"
        let refused = (h["passive_refused"] as? NSNumber)?.uint64Value ?? 0
        let unreachable = (h["passive_unreachable"] as? NSNumber)?.uint64Value ?? 0
        if refused + unreachable > 0 { text += ", passive: \(refused) refused, \(unreachable) unreachable" }
        return text + ")"
    }

    static func format(_ table: [String: Any]) -> String {
        let header = ["service", "backend", "host", "origin", "source", "weight", "state", "generation", "since", "health"]
        var rows = [header]
        for row in table["backends"] as? [[String: Any]] ?? [] {
            let since = (row["since_s"] as? Double).map { String(format: "%.1f s", $0) } ?? "-"
            rows.append(["\(row["service"] ?? "?")", "\(row["backend"] ?? "?")", "\(row["host"] ?? "?")",
                         "\(row["origin"] ?? "?")", "\(row["source"] ?? "-")", "\(row["weight"] ?? "?")",
                         "\(row["state"] ?? "?")", "\(row["generation"] ?? "?")", since, Self.health(row["health"])])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = rows.map { row in
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        for skip in table["skipped"] as? [[String: Any]] ?? [] {
            lines.append("left out: host \(skip["host"] ?? "?") \(skip["backend"] ?? "?"): \(skip["reason"] ?? "?")")
        }
        lines.append("generation \(table["generation"] ?? "?") (host:version), digest \(table["digest"] ?? "?")")
        return lines.joined(separator: "\n")
    }
}
