import ArgumentParser
import Foundation

/// `switchyard ctl capture`: copies the packets crossing one edge of a running engine into a
/// pcapng file (docs/operations.md, "Capture").
///
///     capture.start ─► poll capture.status every 0.2 s ─► done (count, seconds) ─► one-line summary
///                          Ctrl-C ─► capture.stop ─┘
struct CtlCapture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Copy the packets that cross one edge of the running engine into a pcapng file.",
        discussion: """
            Exactly one of --at, --rx, --tx. Without --count and --seconds, stops after 100 packets; \
            Ctrl-C stops the capture early (the file keeps what was written).
            """)

    @OptionGroup var socket: CtlSocketOption

    @Option(help: ArgumentHelp("Packets leaving stage instance STAGE (every disposition), or only those given DISPOSITION.",
                               valueName: "STAGE[:DISPOSITION]"))
    var at: String?

    @Option(help: ArgumentHelp("Packets received from PORT (every queue).", valueName: "PORT"))
    var rx: String?

    @Option(help: ArgumentHelp("Packets handed to PORT's tx, including those the NIC then refuses.", valueName: "PORT"))
    var tx: String?

    @Option(help: ArgumentHelp("Keep only packets matching this BPF expression (tcpdump syntax).", valueName: "EXPRESSION"))
    var filter: String?

    @Option(help: "Stop after writing this many packets (default 100 when --seconds is not given).")
    var count: Int?

    @Option(help: "Stop after this many seconds.")
    var seconds: Double?

    @Option(help: "Copy at most this many bytes of each packet (1-65535).")
    var snaplen: Int?

    @Option(help: ArgumentHelp("The pcapng file to write (created by the engine).", valueName: "FILE.pcapng"))
    var output: String

    func validate() throws {
        if [at, rx, tx].compactMap({ $0 }).count != 1 { throw ValidationError("give exactly one of --at, --rx, --tx") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let seconds, !(seconds > 0) { throw ValidationError("--seconds must be more than 0") }
        if let snaplen, !(1...65535).contains(snaplen) { throw ValidationError("--snaplen must be 1-65535") }
    }

    func run() throws {
        try reportingFailure { try capture() }
    }

    private func capture() throws {
        var args: [String: Any] = ["output": URL(fileURLWithPath: output).standardizedFileURL.path]
        if let at { args["at"] = at }
        if let rx { args["rx"] = rx }
        if let tx { args["tx"] = tx }
        if let filter { args["filter"] = filter }
        if let count { args["count"] = count }
        if let seconds { args["seconds"] = seconds }
        if let snaplen { args["snaplen"] = snaplen }
        func request(_ command: String, _ args: [String: Any]) throws -> [String: Any] {
            try socket.request(command, args, timeout: 5) as? [String: Any] ?? [:]
        }
        guard let id = try request("capture.start", args)["id"] as? Int else {
            throw CtlFailure("capture.start answered without an id")
        }
        CaptureInterrupt.install()
        var status: [String: Any] = [:]
        var stopSent = false
        while true {
            if CaptureInterrupt.requested && !stopSent {
                stopSent = true
                status = try request("capture.stop", ["id": id])
            } else {
                status = try request("capture.status", ["id": id])
            }
            if status["state"] as? String != "running" { break }
            usleep(200_000)
        }
        let state = status["state"] as? String ?? "?"
        var line = "capture \(id) at \(status["edge"] ?? "?"): \(state), \(status["written"] ?? 0) packets written to "
            + "\(status["file"] ?? output) (\(status["captured"] ?? 0) copied, \(status["filtered"] ?? 0) filtered, "
            + "\(status["copy_dropped"] ?? 0) copies lost)"
        if let error = status["error"] { line += ": \(error)" }
        print(line)
        if state != "done" { throw ExitCode(1) }
    }
}

/// Ctrl-C during a capture asks the engine to stop it (a second one exits at once).
private enum CaptureInterrupt {
    nonisolated(unsafe) static var flag: sig_atomic_t = 0

    static func install() {
        signal(SIGINT) { _ in
            if CaptureInterrupt.flag != 0 { _exit(130) }
            CaptureInterrupt.flag = 1
        }
    }

    static var requested: Bool { flag != 0 }
}
