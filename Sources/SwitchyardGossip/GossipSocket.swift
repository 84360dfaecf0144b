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

@_silgen_name("recvmmsg")
private func sy_recvmmsg(_ fd: Int32, _ messages: UnsafeMutableRawPointer, _ count: UInt32, _ flags: Int32,
                         _ timeout: UnsafeMutableRawPointer?) -> Int32

/// A non-blocking UDP socket (Glibc), closed on deinit.
///
/// Receiving is in batches (`recvmmsg`, up to `ReceiveBatch.capacity` datagrams per system call),
/// with `SO_RXQ_OVFL`: each datagram carries the kernel's count of datagrams this socket dropped
/// because its buffer was full, which `kernelDrops` keeps.
final class GossipSocket {
    let fd: Int32
    /// Datagrams the kernel dropped on this socket (receive buffer full), as last reported.
    private(set) var kernelDrops: UInt32 = 0
    /// The receive buffer the kernel granted, bytes.
    private(set) var receiveBufferBytes = 0

    /// The receive buffer asked for: about 3,500 full-size datagrams (the kernel accounts about
    /// 2.3 KiB per 1400-byte datagram), so a sync window and a flood's burst fit.
    static let receiveBuffer: Int32 = 8 << 20

    /// A socket bound to `endpoint`; `reuse` lets several sockets bind the same multicast group.
    init(bind endpoint: GossipEndpoint, reuse: Bool) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GossipError.system("cannot create the gossip socket") }
        do {
            if reuse { try option(SOL_SOCKET, SO_REUSEADDR, Int32(1), "SO_REUSEADDR") }
            // Room for a burst of sync pages. SO_RCVBUFFORCE (root) passes net.core.rmem_max;
            // otherwise SO_RCVBUF, which the kernel caps at net.core.rmem_max.
            if (try? option(SOL_SOCKET, SO_RCVBUFFORCE, Self.receiveBuffer, "SO_RCVBUFFORCE")) == nil {
                try option(SOL_SOCKET, SO_RCVBUF, Self.receiveBuffer, "SO_RCVBUF")
            }
            try option(SOL_SOCKET, SO_SNDBUF, Int32(4 << 20), "SO_SNDBUF")
            try option(SOL_SOCKET, 40 /* SO_RXQ_OVFL */, Int32(1), "SO_RXQ_OVFL")
            var granted: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &size) == 0 { receiveBufferBytes = Int(granted) }
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

    /// Receives up to `max` (at most `ReceiveBatch.capacity`) waiting datagrams into `batch` (one
    /// system call); returns how many (0 when none is waiting). Updates `kernelDrops`.
    func receive(into batch: ReceiveBatch, max: Int) -> Int {
        batch.reset()
        let received = sy_recvmmsg(fd, batch.messages, UInt32(min(max, ReceiveBatch.capacity)), Int32(MSG_DONTWAIT), nil)
        guard received > 0 else { return 0 }
        for i in 0..<Int(received) {
            if let drops = batch.overflowCount(i), drops > kernelDrops { kernelDrops = drops }
        }
        return Int(received)
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

/// Buffers for one `recvmmsg`: per datagram a 2048-byte buffer (larger than any gossip datagram,
/// so an oversized one is seen as such), its source address and room for one control message.
///
///     messages[i] (struct mmsghdr, 64 bytes) ─► iovecs[i] ─► data + i × 2048
///                                             ─► names[i] (sockaddr_in)
///                                             ─► controls + i × 64 (SO_RXQ_OVFL: u32)
final class ReceiveBatch {
    static let capacity = 64
    static let bufferSize = 2048
    static let controlSize = 64
    static let messageStride = 64 // sizeof(struct mmsghdr) on 64-bit Linux: msghdr (56) + msg_len (4) + padding
    let messages: UnsafeMutableRawPointer
    let iovecs: UnsafeMutablePointer<iovec>
    let names: UnsafeMutablePointer<sockaddr_in>
    let controls: UnsafeMutableRawPointer
    let data: UnsafeMutableRawPointer

    init() {
        precondition(MemoryLayout<msghdr>.size == 56, "struct mmsghdr layout")
        messages = .allocate(byteCount: Self.capacity * Self.messageStride, alignment: 16)
        messages.initializeMemory(as: UInt8.self, repeating: 0, count: Self.capacity * Self.messageStride)
        iovecs = .allocate(capacity: Self.capacity)
        names = .allocate(capacity: Self.capacity)
        names.initialize(repeating: sockaddr_in(), count: Self.capacity)
        controls = .allocate(byteCount: Self.capacity * Self.controlSize, alignment: 16)
        data = .allocate(byteCount: Self.capacity * Self.bufferSize, alignment: 16)
        for i in 0..<Self.capacity {
            iovecs[i] = iovec(iov_base: data + i * Self.bufferSize, iov_len: Self.bufferSize)
        }
    }

    deinit {
        messages.deallocate()
        iovecs.deallocate()
        names.deallocate()
        controls.deallocate()
        data.deallocate()
    }

    private func header(_ i: Int) -> UnsafeMutablePointer<msghdr> {
        (messages + i * Self.messageStride).assumingMemoryBound(to: msghdr.self)
    }

    /// Resets the lengths the kernel overwrites.
    func reset() {
        for i in 0..<Self.capacity {
            let h = header(i)
            h.pointee.msg_name = UnsafeMutableRawPointer(names + i)
            h.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            h.pointee.msg_iov = iovecs + i
            h.pointee.msg_iovlen = 1
            h.pointee.msg_control = controls + i * Self.controlSize
            h.pointee.msg_controllen = Self.controlSize
            h.pointee.msg_flags = 0
        }
    }

    /// Datagram `i`: its bytes (nil when longer than the buffer: truncated by the kernel), its
    /// received length and its source.
    func datagram(_ i: Int) -> (bytes: UnsafeRawBufferPointer?, length: Int, from: GossipEndpoint) {
        let length = Int((messages + i * Self.messageStride + 56).load(as: UInt32.self))
        let truncated = header(i).pointee.msg_flags & Int32(MSG_TRUNC) != 0
        let bytes = truncated ? nil : UnsafeRawBufferPointer(start: data + i * Self.bufferSize, count: length)
        return (bytes, length, GossipEndpoint(names[i]))
    }

    /// The SO_RXQ_OVFL count attached to datagram `i`, if any (the kernel attaches it once the
    /// socket has dropped something).
    func overflowCount(_ i: Int) -> UInt32? {
        let h = header(i).pointee
        var offset = 0
        let base = UnsafeRawPointer(controls + i * Self.controlSize)
        // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then data (16-byte aligned header).
        while offset + 16 <= h.msg_controllen {
            let length = base.load(fromByteOffset: offset, as: Int.self)
            let level = base.load(fromByteOffset: offset + 8, as: Int32.self)
            let type = base.load(fromByteOffset: offset + 12, as: Int32.self)
            guard length >= 16 else { return nil }
            if level == SOL_SOCKET && type == 40 && length >= 20 {
                return base.load(fromByteOffset: offset + 16, as: UInt32.self)
            }
            offset += (length + 7) & ~7
        }
        return nil
    }
}
