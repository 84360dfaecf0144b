import ArgumentParser
import Foundation
import SwitchyardEngine

/// `switchyard ctl`: talk to a running engine through its control socket (docs/operations.md).
struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk to a running engine through its control socket.",
        subcommands: [CtlStatus.self, CtlStats.self, CtlPorts.self, CtlConnections.self, CtlReload.self, CtlPreview.self,
                      CtlCapture.self, CtlBgp.self, CtlDrain.self, CtlUndrain.self, CtlRequest.self,
                      CtlListen.self, CtlUnlisten.self, CtlBackends.self])

    /// `switchyard ctl --socket PATH status`: the subcommands declare the same group and see it.
    @OptionGroup var socket: CtlSocketOption
}

/// Which engine: `--socket PATH`, `--name NAME` (/run/switchyard/NAME.sock), or the only socket there.
struct CtlSocketOption: ParsableArguments {
    @Option(help: "The engine's control socket (default: the only one in /run/switchyard).")
    var socket: String?

    @Option(help: "The engine's name (its `name:` key or configuration file's base name): /run/switchyard/NAME.sock.")
    var name: String?

    func path() throws -> String {
        if let socket { return socket }
        if let name { return ControlSettings.defaultSocket(name: name) }
        let directory = "/run/switchyard"
        let sockets = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".sock") }.sorted()
        switch sockets.count {
        case 1: return directory + "/" + sockets[0]
        case 0: throw CtlFailure("no engine is running: no control socket in \(directory) (give --socket PATH)")
        default:
            throw CtlFailure("several engines run (\(sockets.map { String($0.dropLast(5)) }.joined(separator: ", "))): give --name NAME or --socket PATH")
        }
    }

    /// One request; failures print one line and exit 1.
    func request(_ command: String, _ args: [String: Any] = [:], timeout: Double = 10) throws -> Any {
        let path = try path()
        do {
            return try ControlClient.request(socket: path, command: command, args: args, timeout: timeout)
        } catch let error as ControlClientError {
            throw CtlFailure(error.description)
        }
    }
}

/// A one-line failure of `ctl` (exit status 1).
struct CtlFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension ParsableCommand {
    /// Runs `body`, turning a `CtlFailure` into one line on stderr and exit status 1.
    func reportingFailure(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let failure as CtlFailure {
            FileHandle.standardError.write(Data("switchyard ctl: \(failure.description)\n".utf8))
            throw ExitCode(1)
        }
    }
}

func printJSON(_ value: Any) {
    guard JSONSerialization.isValidJSONObject(value) || value is NSNull || value is String || value is NSNumber,
          let data = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed])
    else { print(value); return }
    print(String(decoding: data, as: UTF8.self))
}

struct CtlStatus: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status",
        abstract: "Uptime, configuration and its hash, lcores, ports and their link, gossip peers.")
    @OptionGroup var socket: CtlSocketOption
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            let answer = try socket.request("status")
            if json { printJSON(answer); return }
            guard let status = answer as? [String: Any] else { throw CtlFailure("unexpected answer") }
            print(CtlFormat.status(status))
        }
    }
}

struct CtlStats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats",
        abstract: "Counters and per-second rates per stage, disposition, drop reason, port, queue and lcore.")
    @OptionGroup var socket: CtlSocketOption
    @Option(help: "Redraw every this many seconds until Ctrl-C, like top.") var watch: Double?
    @Flag(help: "Print the engine's JSON answer.") var json = false
    @Flag(help: "Show counters that are zero too.") var all = false

    func run() throws {
        try reportingFailure {
            guard let interval = watch else {
                let answer = try socket.request("stats")
                if json { printJSON(answer); return }
                guard let stats = answer as? [String: Any] else { throw CtlFailure("unexpected answer") }
                print(CtlFormat.stats(stats, all: all))
                return
            }
            guard interval > 0 else { throw CtlFailure("--watch must be more than 0 seconds") }
            while true {
                let answer = try socket.request("stats")
                if json {
                    printJSON(answer)
                } else if let stats = answer as? [String: Any] {
                    // Home, clear the screen, draw.
                    print("\u{1B}[H\u{1B}[2J" + CtlFormat.stats(stats, all: all), terminator: "\n")
                }
                fflush(stdout)
                usleep(UInt32(interval * 1_000_000))
            }
        }
    }
}

struct CtlPorts: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ports",
        abstract: "NIC statistics per port and queue: basic stats (imissed, rx_nombuf, oerrors) and xstats.")
    @OptionGroup var socket: CtlSocketOption
    @Flag(help: "Print the engine's JSON answer.") var json = false
    @Flag(help: "Show xstats that are zero too.") var all = false

    func run() throws {
        try reportingFailure {
            let answer = try socket.request("ports")
            if json { printJSON(answer); return }
            guard let ports = answer as? [[String: Any]] else { throw CtlFailure("unexpected answer") }
            print(CtlFormat.ports(ports, all: all))
        }
    }
}

struct CtlConnections: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "connections",
        abstract: "The connection table: client, VIP, owner host, backend (bypass tuple), state, idle time.")
    @OptionGroup var socket: CtlSocketOption
    @Option(help: "Only this service (its `name` in cluster.services).") var service: String?
    @Option(help: "Only connections owned by this host id.") var owner: Int?
    @Option(help: "Show at most this many (the count of all matches is printed too).") var limit: Int = 100
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            var args: [String: Any] = ["limit": limit]
            if let service { args["service"] = service }
            if let owner { args["owner"] = owner }
            let answer = try socket.request("connections", args, timeout: 30)
            if json { printJSON(answer); return }
            guard let table = answer as? [String: Any] else { throw CtlFailure("unexpected answer") }
            print(CtlFormat.connections(table))
        }
    }
}

/// Any command by name, with JSON arguments: for scripts and for commands without a subcommand.
struct CtlRequest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "request",
        abstract: "Send one command with JSON arguments and print the JSON answer (`request help` lists commands).")
    @OptionGroup var socket: CtlSocketOption
    @Argument(help: "The command (help, status, stats, ports, connections, capture.start, ...).") var command: String
    @Argument(help: "Arguments as one JSON object.") var args: String = "{}"

    func run() throws {
        try reportingFailure {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(args.utf8)) as? [String: Any] else {
                throw CtlFailure("arguments must be one JSON object, for example '{\"limit\": 10}'")
            }
            printJSON(try socket.request(command, parsed))
        }
    }
}

struct CtlReload: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reload",
        abstract: "Re-read the configuration (or FILE) and apply what can change live; errors change nothing.")
    @OptionGroup var socket: CtlSocketOption
    @Argument(help: "Another configuration file to apply (default: the one the engine runs).") var file: String?
    @Flag(help: "Print the engine's JSON answer.") var json = false

    func run() throws {
        try reportingFailure {
            var args: [String: Any] = [:]
            if let file {
                args["file"] = URL(fileURLWithPath: file).standardizedFileURL.path // the engine's cwd is not ours
            }
            let answer = try socket.request("reload", args, timeout: 60)
            if json { printJSON(answer); return }
            let result = answer as? [String: Any] ?? [:]
            let changes = result["changes"] as? [String] ?? []
            print("reloaded \(result["file"] ?? "?")" + (changes.isEmpty ? ": no change to services or stages" : ":"))
            for change in changes { print("  " + change) }
        }
    }
}
