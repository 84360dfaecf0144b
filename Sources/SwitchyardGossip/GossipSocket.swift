import Glibc
import SwitchyardCluster

/// An IPv4 address and UDP port: where a datagram came from or goes to.
public struct GossipEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The address as loaded from memory (network order), like `IPAddress.high` of an IPv4 address.
    public var address: UInt32
    /// Host order.
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = UInt32(truncatingIfNeeded: address.high)
        self.port = port
    }

    init(_ sin: sockaddr_in) {
        address = sin.sin_addr.s_addr
        port = UInt16(bigEndian: sin.sin_port)
    }

    var sockaddr: sockaddr_in {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = address
        return sin
    }

    public var description: String {
        "\(IPAddress(family: 4, high: UInt64(address), low: 0)):\(port)"
    }
}

public struct GossipError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
    static func system(_ what: String) -> GossipError {
        GossipError("\(what): \(String(cString: strerror(errno)))")
    }
}

/// A non-blocking UDP socket (Glibc), closed on deinit.
final class GossipSocket {
    let fd: Int32

    /// A socket bound to `endpoint`; `reuse` lets several sockets bind the same multicast group.
    init(bind endpoint: GossipEndpoint, reuse: Bool) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GossipError.system("cannot create the gossip socket") }
        do {
            if reuse { try option(SOL_SOCKET, SO_REUSEADDR, Int32(1), "SO_REUSEADDR") }
            // Room for a burst of sync pages; the kernel caps these at net.core.[rw]mem_max.
            try option(SOL_SOCKET, SO_RCVBUF, Int32(4 << 20), "SO_RCVBUF")
            try option(SOL_SOCKET, SO_SNDBUF, Int32(4 << 20), "SO_SNDBUF")
            var sin = endpoint.sockaddr
            let rc = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard rc == 0 else { throw GossipError.system("cannot bind the gossip socket to \(endpoint)") }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    func option(_ level: Int32, _ name: Int32, _ value: Int32, _ label: String) throws {
        var value = value
        guard setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw GossipError.system("setsockopt \(label)")
        }
    }

    /// Sends out of `interface`, with `ttl`, looped back to this machine or not.
    func setMulticastSending(interface: GossipEndpoint, ttl: Int, loop: Bool) throws {
        var address = in_addr(s_addr: interface.address)
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &address, socklen_t(MemoryLayout<in_addr>.size)) == 0 else {
            throw GossipError.system("IP_MULTICAST_IF \(interface)")
        }
        try option(Int32(IPPROTO_IP), IP_MULTICAST_TTL, Int32(ttl), "IP_MULTICAST_TTL")
        try option(Int32(IPPROTO_IP), IP_MULTICAST_LOOP, Int32(loop ? 1 : 0), "IP_MULTICAST_LOOP")
    }

    func join(group: GossipEndpoint, interface: GossipEndpoint) throws {
        var request = ip_mreq(imr_multiaddr: in_addr(s_addr: group.address), imr_interface: in_addr(s_addr: interface.address))
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ip_mreq>.size)) == 0 else {
            throw GossipError.system("IP_ADD_MEMBERSHIP \(group) on \(interface)")
        }
        // Only the joined group's datagrams, not every group some socket of this host joined.
        try option(Int32(IPPROTO_IP), IP_MULTICAST_ALL, Int32(0), "IP_MULTICAST_ALL")
    }

    /// Sends one datagram; false when the kernel did not take it (buffer full, no route).
    func send(_ bytes: UnsafeRawPointer, count: Int, to endpoint: GossipEndpoint) -> Bool {
        var sin = endpoint.sockaddr
        let sent = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return sent == count
    }

    /// Receives one datagram into `buffer`; returns its real length (longer than the buffer
    /// when truncated) and source, or nil when none is waiting.
    func receive(into buffer: UnsafeMutableRawBufferPointer) -> (length: Int, from: GossipEndpoint)? {
        var sin = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let received = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                recvfrom(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT | MSG_TRUNC), $0, &length)
            }
        }
        guard received >= 0 else { return nil }
        return (received, GossipEndpoint(sin))
    }
}
