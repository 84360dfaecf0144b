import Foundation

/// The control-socket commands of the capture service (docs/operations.md, "Capture"):
///
///     capture.start  {"at": "STAGE[:DISPOSITION]" | "rx": PORT | "tx": PORT, "output": ABSOLUTE PATH,
///                     "filter"?: BPF, "count"?: N, "seconds"?: S, "snaplen"?: B}   → {"id": N}
///     capture.status {"id"?: N}  → {"id", "state", "edge", "captured", "filtered", "copy_dropped", "written", "file", "error"?}
///     capture.stop   {"id"?: N}  → the final status
extension CaptureService {
    /// (name, summary, handler) for each command, to register with the engine's control socket.
    /// Handlers throw `ControlError` with a one-line message.
    var commands: [(name: String, summary: String, handler: ([String: Any]) throws -> Any)] {
        [
            ("capture.start", "copy the packets crossing an edge (at: STAGE[:DISPOSITION], rx: PORT or tx: PORT) into a pcapng file",
             { [unowned self] args in try Self.answer { ["id": try self.start(Self.request(from: args))] } }),
            ("capture.status", "state and counts of a capture (the latest without id)",
             { [unowned self] args in try Self.answer { Self.json(try self.status(id: Self.id(args))) } }),
            ("capture.stop", "stop a capture (the running one without id); returns its final status",
             { [unowned self] args in try Self.answer { Self.json(try self.stop(id: Self.id(args))) } }),
        ]
    }

    private static func answer(_ body: () throws -> Any) throws -> Any {
        do {
            return try body()
        } catch let error as CaptureError {
            throw ControlError(error.description)
        }
    }

    static func json(_ record: Record) -> [String: Any] {
        var result: [String: Any] = [
            "id": record.id, "state": record.state, "edge": record.edge, "file": record.file,
            "captured": record.captured, "filtered": record.filtered, "copy_dropped": record.copyDropped,
            "written": record.written,
        ]
        if let error = record.error { result["error"] = error }
        return result
    }

    private static func id(_ args: [String: Any]) throws -> Int? {
        guard let value = args["id"] else { return nil }
        guard let id = value as? Int else { throw CaptureError("id must be an integer") }
        return id
    }

    /// Checks the arguments of capture.start; every mistake is named.
    static func request(from args: [String: Any]) throws -> Request {
        let known: Set<String> = ["at", "rx", "tx", "filter", "count", "seconds", "snaplen", "output"]
        if let unknown = args.keys.sorted().first(where: { !known.contains($0) }) {
            throw CaptureError("unknown argument '\(unknown)' (capture.start takes \(known.sorted().joined(separator: ", ")))")
        }
        func string(_ key: String) throws -> String? {
            guard let value = args[key] else { return nil }
            guard let text = value as? String, !text.isEmpty else { throw CaptureError("\(key) must be a non-empty string") }
            return text
        }
        func number(_ key: String) throws -> Double? {
            guard let value = args[key] else { return nil }
            guard let number = value as? NSNumber else {
                throw CaptureError("\(key) must be a number")
            }
            return number.doubleValue
        }
        let edges = try [("at", string("at")), ("rx", string("rx")), ("tx", string("tx"))].filter { $0.1 != nil }
        guard edges.count == 1, let (kind, value) = edges.first.map({ ($0.0, $0.1!) }) else {
            throw CaptureError("give exactly one of at (STAGE[:DISPOSITION]), rx (PORT) or tx (PORT)")
        }
        let edge: Request.Edge
        switch kind {
        case "at":
            let parts = value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty else {
                throw CaptureError("at must be STAGE or STAGE:DISPOSITION, not '\(value)'")
            }
            edge = .stage(parts[0], disposition: parts.count == 2 ? parts[1] : nil)
        case "rx": edge = .rx(value)
        default: edge = .tx(value)
        }
        guard let output = try string("output") else { throw CaptureError("output (the pcapng file) is required") }
        guard output.hasPrefix("/") else { throw CaptureError("output must be an absolute path, not '\(output)'") }
        let count = try number("count")
        if let count, count < 1 || count != count.rounded() { throw CaptureError("count must be a whole number of at least 1") }
        let seconds = try number("seconds")
        if let seconds, !(seconds > 0) { throw CaptureError("seconds must be more than 0") }
        let snaplen = try number("snaplen") ?? Double(defaultSnaplen)
        guard snaplen >= 1, snaplen <= 65535, snaplen == snaplen.rounded() else {
            throw CaptureError("snaplen must be a whole number from 1 to 65535")
        }
        return Request(edge: edge, filter: try args["filter"].map { _ in try string("filter")! }, count: count.map { Int($0) },
                       seconds: seconds, snaplen: Int(snaplen), output: output)
    }
}
