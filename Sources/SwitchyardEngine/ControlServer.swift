import Foundation

/// The control socket: `switchyard ctl` talks to a running engine through it.
///
///     switchyard ctl ──connect──► /run/switchyard/NAME.sock (0600, owner only)
///                    ──{"command":"stats","args":{...}}\n──►  poll() on the control thread
///                    ◄──{"ok":true,"result":...}\n────────     (or {"ok":false,"error":"..."})
///                                                               then the server closes
///
/// One request per connection: a single line of JSON, at most `maximumRequest` bytes. Everything
/// is non-blocking and served from the engine's control thread by `poll()`, never from an lcore:
/// a client that sends garbage gets an error reply, one that sends too much or nothing within
/// `requestTimeout` is answered with an error and closed, one that stops reading (or disconnects
/// mid-answer) is dropped after `replyTimeout`. No client can make the control thread wait.
public final class ControlServer {
    /// Runs on the control thread; returns a JSONSerialization-compatible value, or throws
    /// `ControlError` for an error reply (any other error is replied with its description).
    public typealias Handler = (_ args: [String: Any]) throws -> Any

    public static let maximumRequest = 64 * 1024
    public static let maximumClients = 32
    public static let requestTimeout: TimeInterval = 5
    public static let replyTimeout: TimeInterval = 10

    private struct Command {
        var summary: String
        var handler: Handler
    }

    private final class Client {
        let fd: Int32
        let opened: Date
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var answered = false
        var answeredAt = Date.distantFuture

        init(fd: Int32) {
            self.fd = fd
            opened = Date()
        }
    }

    private var commands: [String: Command] = [:]
    private var listener: Int32 = -1
    private var clients: [Client] = []
    public private(set) var path: String?
    /// Requests answered, and requests refused (malformed, unknown, too long, timed out, too many clients).
    public private(set) var answered: UInt64 = 0
    public private(set) var refused: UInt64 = 0

    public init() {
        register("help", summary: "the commands this engine answers") { [unowned self] _ in
            commands.keys.sorted().map { ["command": $0, "summary": commands[$0]!.summary] }
        }
    }

    deinit { close() }

    /// Adds a command (`capture.start`, `stats`); a later registration of the same name replaces it.
    public func register(_ command: String, summary: String, handler: @escaping Handler) {
        commands[command] = Command(summary: summary, handler: handler)
    }

    /// Binds the socket at `path` (creating its directory, owner-only), or throws with a reason.
    /// A socket file left by an engine that is gone is replaced; one a running engine answers on is not.
    public func open(path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: directory) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        guard path.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else {
            throw ControlError("control socket path \(path) is too long for a Unix socket")
        }
        if FileManager.default.fileExists(atPath: path) {
            if ControlClient.isAnswering(socket: path) {
                throw ControlError("control socket \(path) is in use by a running engine (give this one another `name:` or --control-socket)")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlError("cannot create the control socket: \(String(cString: strerror(errno)))") }
        var address = ControlClient.address(path)
        // Owner-only from the start: no window in which another user could connect.
        let previousMask = umask(0o077)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(previousMask)
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            Foundation.close(fd)
            throw ControlError("cannot bind the control socket \(path): \(reason)")
        }
        chmod(path, 0o600)
        listener = fd
        self.path = path
    }

    /// Stops serving: closes every client and removes the socket file.
    public func close() {
        for client in clients { Foundation.close(client.fd) }
        clients.removeAll()
        if listener >= 0 {
            Foundation.close(listener)
            listener = -1
        }
        if let path {
            unlink(path)
            self.path = nil
        }
    }

    /// Accepts, reads, answers and writes what can be done without waiting. Control thread only.
    public func poll(now: Date = Date()) {
        guard listener >= 0 else { return }
        acceptClients()
        for client in clients {
            if !client.answered { read(client, now: now) }
            if client.answered { write(client) }
        }
        clients.removeAll { client in
            let finished = client.answered && client.written == client.output.count
            let stuck = client.answered && now.timeIntervalSince(client.answeredAt) > Self.replyTimeout
            if finished || stuck {
                Foundation.close(client.fd)
                return true
            }
            return false
        }
    }

    private func acceptClients() {
        while true {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let client = Client(fd: fd)
            clients.append(client)
            if clients.count > Self.maximumClients {
                answer(client, error: "too many control clients at once (at most \(Self.maximumClients))")
            }
        }
    }

    private func read(_ client: Client, now: Date) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !client.answered {
            let n = buffer.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                client.input += buffer[..<n]
                if let newline = client.input.firstIndex(of: UInt8(ascii: "\n")) {
                    handle(client, line: Array(client.input[..<newline]))
                } else if client.input.count > Self.maximumRequest {
                    answer(client, error: "request too long (more than \(Self.maximumRequest) bytes without a newline)")
                }
            } else if n == 0 {
                // The client closed its side: a request without its newline is still a request.
                if client.input.isEmpty { // connected and left: nothing to answer, closed by poll()
                    client.answered = true
                    client.answeredAt = now
                    return
                }
                handle(client, line: client.input)
            } else {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { break }
                answer(client, error: "cannot read the request: \(String(cString: strerror(errno)))")
            }
        }
        if !client.answered && now.timeIntervalSince(client.opened) > Self.requestTimeout {
            answer(client, error: "no complete request within \(Int(Self.requestTimeout)) s")
        }
    }

    private func handle(_ client: Client, line: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
            answer(client, error: "malformed request: expected one line of JSON {\"command\": NAME, \"args\": {...}}")
            return
        }
        guard let name = object["command"] as? String else {
            answer(client, error: "malformed request: no \"command\" string")
            return
        }
        guard let command = commands[name] else {
            answer(client, error: "unknown command '\(name)' (known: \(commands.keys.sorted().joined(separator: ", ")))")
            return
        }
        let args: [String: Any]
        switch object["args"] {
        case nil, is NSNull: args = [:]
        case let given as [String: Any]: args = given
        default:
            answer(client, error: "malformed request: \"args\" must be an object")
            return
        }
        do {
            let result = try command.handler(args)
            let reply: [String: Any] = ["ok": true, "result": result]
            guard JSONSerialization.isValidJSONObject(reply),
                  let data = try? JSONSerialization.data(withJSONObject: reply, options: [.sortedKeys])
            else {
                answer(client, error: "internal error: the answer to '\(name)' is not JSON")
                return
            }
            send(client, Array(data))
            answered += 1
        } catch let error as ControlError {
            answer(client, error: error.message)
        } catch {
            answer(client, error: "\(name): \(error)")
        }
    }

    private func answer(_ client: Client, error message: String) {
        refused += 1
        let data = (try? JSONSerialization.data(withJSONObject: ["ok": false, "error": message], options: [.sortedKeys]))
            ?? Data("{\"ok\":false}".utf8)
        send(client, Array(data))
    }

    private func send(_ client: Client, _ bytes: [UInt8]) {
        client.output = bytes + [UInt8(ascii: "\n")]
        client.answered = true
        client.answeredAt = Date()
        write(client)
    }

    private func write(_ client: Client) {
        while client.written < client.output.count {
            let n = client.output[client.written...].withUnsafeBytes {
                Foundation.send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if n > 0 {
                client.written += n
            } else {
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return }
                client.written = client.output.count // gone (EPIPE, ECONNRESET): drop the rest
            }
        }
    }
}

/// An error reply of the control socket: `{"ok": false, "error": message}`.
public struct ControlError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
