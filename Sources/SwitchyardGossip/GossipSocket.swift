import Glibc
import SwitchyardCluster

/// An IPv4 or IPv6 address and UDP port: where a datagram came from or goes to.
public struct GossipEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    /// Host order.
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// From a socket address the kernel filled in (`sockaddr_in` or `sockaddr_in6`).
    init(_ storage: UnsafeRawPointer) {
        let family = storage.load(as: sa_family_t.self)
        if Int32(family) == AF_INET6 {
            let sin6 = storage.load(as: sockaddr_in6.self)
            var raw = sin6.sin6_addr
            address = IPAddress(bytes: withUnsafeBytes(of: &raw) { Array($0) })
            port = UInt16(bigEndian: sin6.sin6_port)
        } else {
            let sin = storage.load(as: sockaddr_in.self)
            address = IPAddress(family: 4, high: UInt64(sin.sin_addr.s_addr), low: 0)
            port = UInt16(bigEndian: sin.sin_port)
        }
    }

    /// Calls `body` with the endpoint as a socket address of its family and that address's length;
    /// `scope`: the IPv6 scope id (an interface index), for an address that needs one (fe80::/10, ff02::/16).
    func withSocketAddress<R>(scope: UInt32 = 0, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        if address.isIPv4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = UInt32(truncatingIfNeeded: address.high)
            return withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_scope_id = scope
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { address.store(to: $0.baseAddress!) }
        return withUnsafePointer(to: &sin6) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    }

    public var description: String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
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

/// A non-blocking UDP socket (Glibc), closed on deinit: AF_INET or AF_INET6 (IPV6_V6ONLY) by the
/// family of the address it binds; it sends to endpoints of that family only.
///
/// Receiving is in batches (`recvmmsg`, up to `ReceiveBatch.capacity` datagrams per system call),
/// with `SO_RXQ_OVFL`: each datagram carries the kernel's count of datagrams this socket dropped
/// because its buffer was full, which `kernelDrops` keeps.
final class GossipSocket {
    let fd: Int32
    /// 4 or 6: the family of the bound address.
    let family: UInt8
    /// Datagrams the kernel dropped on this socket (receive buffer full), as last reported.
    private(set) var kernelDrops: UInt32 = 0
    /// The receive buffer the kernel granted, bytes.
    private(set) var receiveBufferBytes = 0

    /// The receive buffer asked for: about 3,500 full-size datagrams (the kernel accounts about
    /// 2.3 KiB per 1400-byte datagram), so a sync window and a flood's burst fit.
    static let receiveBuffer: Int32 = 8 << 20

    /// A socket bound to `endpoint`; `reuse` lets several sockets bind the same multicast group;
    /// `scope`: the IPv6 scope id of the bound address (an interface index; a link-local group needs it).
    init(bind endpoint: GossipEndpoint, reuse: Bool, scope: UInt32 = 0) throws {
        family = endpoint.address.family
        fd = socket(endpoint.address.isIPv4 ? AF_INET : AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GossipError.system("cannot create the gossip socket") }
        do {
            if reuse { try option(SOL_SOCKET, SO_REUSEADDR, Int32(1), "SO_REUSEADDR") }
            if family == 6 { try option(Int32(IPPROTO_IPV6), IPV6_V6ONLY, Int32(1), "IPV6_V6ONLY") }
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
            let rc = endpoint.withSocketAddress(scope: scope) { Glibc.bind(fd, $0, $1) }
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

    /// The index of the interface that holds `address` (getifaddrs), for IPv6 multicast.
    static func interfaceIndex(holding address: IPAddress) throws -> UInt32 {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { throw GossipError.system("getifaddrs") }
        defer { freeifaddrs(list) }
        var item = list
        while let entry = item {
            if let raw = entry.pointee.ifa_addr, Int32(raw.pointee.sa_family) == AF_INET6 {
                let found = GossipEndpoint(UnsafeRawPointer(raw))
                if found.address == address, let name = entry.pointee.ifa_name {
                    let index = if_nametoindex(name)
                    if index != 0 { return index }
                }
            }
            item = entry.pointee.ifa_next
        }
        throw GossipError("no interface of this machine holds \(address) (the multicast interface)")
    }

    /// Sends out of `interface`, with `ttl` (IPv6: hop limit), looped back to this machine or not.
    /// IPv6: `interface` names the interface by one of its addresses.
    func setMulticastSending(interface: GossipEndpoint, ttl: Int, loop: Bool) throws {
        if family == 6 {
            try option(Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, Int32(bitPattern: try Self.interfaceIndex(holding: interface.address)),
                       "IPV6_MULTICAST_IF")
            try option(Int32(IPPROTO_IPV6), IPV6_MULTICAST_HOPS, Int32(ttl), "IPV6_MULTICAST_HOPS")
            try option(Int32(IPPROTO_IPV6), IPV6_MULTICAST_LOOP, Int32(loop ? 1 : 0), "IPV6_MULTICAST_LOOP")
            return
        }
        var address = in_addr(s_addr: UInt32(truncatingIfNeeded: interface.address.high))
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &address, socklen_t(MemoryLayout<in_addr>.size)) == 0 else {
            throw GossipError.system("IP_MULTICAST_IF \(interface)")
        }
        try option(Int32(IPPROTO_IP), IP_MULTICAST_TTL, Int32(ttl), "IP_MULTICAST_TTL")
        try option(Int32(IPPROTO_IP), IP_MULTICAST_LOOP, Int32(loop ? 1 : 0), "IP_MULTICAST_LOOP")
    }

    func join(group: GossipEndpoint, interface: GossipEndpoint) throws {
        if family == 6 {
            var request = ipv6_mreq()
            withUnsafeMutableBytes(of: &request.ipv6mr_multiaddr) { group.address.store(to: $0.baseAddress!) }
            request.ipv6mr_interface = try Self.interfaceIndex(holding: interface.address)
            guard setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ipv6_mreq>.size)) == 0 else {
                throw GossipError.system("IPV6_ADD_MEMBERSHIP \(group) on \(interface.address)")
            }
            // Only the joined group's datagrams (IPV6_MULTICAST_ALL, Linux 4.20).
            try option(Int32(IPPROTO_IPV6), 29 /* IPV6_MULTICAST_ALL */, Int32(0), "IPV6_MULTICAST_ALL")
            return
        }
        var request = ip_mreq(imr_multiaddr: in_addr(s_addr: UInt32(truncatingIfNeeded: group.address.high)),
                              imr_interface: in_addr(s_addr: UInt32(truncatingIfNeeded: interface.address.high)))
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ip_mreq>.size)) == 0 else {
            throw GossipError.system("IP_ADD_MEMBERSHIP \(group) on \(interface)")
        }
        // Only the joined group's datagrams, not every group some socket of this host joined.
        try option(Int32(IPPROTO_IP), IP_MULTICAST_ALL, Int32(0), "IP_MULTICAST_ALL")
    }

    /// Sends one datagram; false when the kernel did not take it (buffer full, no route, an
    /// endpoint of the other family).
    func send(_ bytes: UnsafeRawPointer, count: Int, to endpoint: GossipEndpoint) -> Bool {
        guard endpoint.address.family == family else { return false }
        let sent = endpoint.withSocketAddress { sendto(fd, bytes, count, Int32(MSG_DONTWAIT), $0, $1) }
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
        var name = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let received = withUnsafeMutablePointer(to: &name) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                recvfrom(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT | MSG_TRUNC), $0, &length)
            }
        }
        guard received >= 0 else { return nil }
        return (received, withUnsafeBytes(of: &name) { GossipEndpoint($0.baseAddress!) })
    }
}

/// Buffers for one `recvmmsg`: per datagram a 2048-byte buffer (larger than any gossip datagram,
/// so an oversized one is seen as such), its source address and room for one control message.
///
///     messages[i] (struct mmsghdr, 64 bytes) ─► iovecs[i] ─► data + i × 2048
///                                             ─► names[i] (sockaddr_in6: room for either family)
///                                             ─► controls + i × 64 (SO_RXQ_OVFL: u32)
final class ReceiveBatch {
    static let capacity = 64
    static let bufferSize = 2048
    static let controlSize = 64
    static let messageStride = 64 // sizeof(struct mmsghdr) on 64-bit Linux: msghdr (56) + msg_len (4) + padding
    let messages: UnsafeMutableRawPointer
    let iovecs: UnsafeMutablePointer<iovec>
    let names: UnsafeMutablePointer<sockaddr_in6>
    let controls: UnsafeMutableRawPointer
    let data: UnsafeMutableRawPointer

    init() {
        precondition(MemoryLayout<msghdr>.size == 56, "struct mmsghdr layout")
        messages = .allocate(byteCount: Self.capacity * Self.messageStride, alignment: 16)
        messages.initializeMemory(as: UInt8.self, repeating: 0, count: Self.capacity * Self.messageStride)
        iovecs = .allocate(capacity: Self.capacity)
        names = .allocate(capacity: Self.capacity)
        names.initialize(repeating: sockaddr_in6(), count: Self.capacity)
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
            h.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_in6>.size)
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
        return (bytes, length, GossipEndpoint(UnsafeRawPointer(names + i)))
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
