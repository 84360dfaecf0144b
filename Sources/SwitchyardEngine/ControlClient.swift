import Foundation

/// The client side of the control socket (see `ControlServer`): one request, one reply.
public enum ControlClient {
    /// Sends `command` with `args` and returns the reply's `result`; throws `ControlClientError`
    /// with a one-line description when no engine answers, the reply is an error, or it times out.
    public static func request(socket path: String, command: String, args: [String: Any] = [:],
                               timeout: Double = 10) throws -> Any
    {
        let fd = try connect(path)
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let request: [String: Any] = ["command": command, "args": args]
        guard JSONSerialization.isValidJSONObject(request) else {
            throw ControlClientError("the request's arguments are not JSON")
        }
        var bytes = Array(try JSONSerialization.data(withJSONObject: request))
        bytes.append(UInt8(ascii: "\n"))
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw ControlClientError("cannot send to \(path): \(String(cString: strerror(errno)))") }
            sent += n
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                reply += buffer[..<n]
                if reply.last == UInt8(ascii: "\n") { break }
            } else if n == 0 {
                break
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                throw ControlClientError("no answer from \(path) within \(timeout) s")
            } else {
                throw ControlClientError("cannot read from \(path): \(String(cString: strerror(errno)))")
            }
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else {
            throw ControlClientError("the engine at \(path) closed the connection without a valid answer")
        }
        if object["ok"] as? Bool == true { return object["result"] ?? NSNull() }
        throw ControlClientError(object["error"] as? String ?? "the engine refused the request")
    }

    /// True when an engine accepts connections on `path`.
    public static func isAnswering(socket path: String) -> Bool {
        guard let fd = try? connect(path) else { return false }
        close(fd)
        return true
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlClientError("cannot create a socket: \(String(cString: strerror(errno)))") }
        var address = address(path)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let reason = errno == ENOENT || errno == ECONNREFUSED
                ? "no engine is running there" : String(cString: strerror(errno))
            close(fd)
            throw ControlClientError("cannot reach the engine's control socket \(path): \(reason)")
        }
        return fd
    }

    static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }
}

public struct ControlClientError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
