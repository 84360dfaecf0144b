import CDPDK
import Foundation
import Glibc
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardGossip
import SwitchyardTesting

/// A gossip cluster on loopback for tests: every host's gossip member is 127.0.0.1 with its own
/// UDP port (found free at start); each node has its own ClusterRuntime (own DPDK objects).
final class GossipTestbed {
    static let keyHex = String(repeating: "5a17c0de", count: 8)
    let hostCount: Int
    let ports: [UInt16]
    let extra: String

    /// `extra`: more lines of the gossip section (timers), indented by the caller's choice of two spaces.
    /// The address of every member (127.0.0.1, or an address in a test's network namespace).
    let memberAddress: String

    init(hosts: Int = 3, extra: String = "heartbeat_ms: 20\npeer_timeout_ms: 400\ndigest_interval_ms: 100",
         memberAddress: String = "127.0.0.1", ports: [UInt16]? = nil) throws
    {
        TestEAL.start()
        hostCount = hosts
        self.ports = try ports ?? GossipTestbed.freePorts(hosts)
        self.extra = extra
        self.memberAddress = memberAddress
    }

    func endpoint(_ host: Int) -> GossipEndpoint { GossipEndpoint(address: IPAddress(memberAddress)!, port: ports[host - 1]) }

    /// The body of the `cluster:` section for `host`.
    func clusterYAML(host: Int, capacity: Int = 4096, key: String = GossipTestbed.keyHex) -> String {
        var lines = ["host: \(host)", "hosts:"]
        for id in 1...hostCount { lines.append("  - { id: \(id), address: 198.18.0.\(id) }") }
        lines += ["services:", "  - name: web", "    vip: 198.19.0.1", "    port: 80", "    backends:"]
        for id in 1...hostCount { lines.append("      - { host: \(id), address: 198.18.100.\(id), port: 8080 }") }
        lines += ["connections:", "  capacity: \(capacity)", "gossip:", "  key: \(key)", "  members:"]
        for id in 1...hostCount { lines.append("    - { host: \(id), address: \"\(memberAddress)\", port: \(ports[id - 1]) }") }
        lines += extra.split(separator: "\n").map { "  " + $0 }
        return lines.joined(separator: "\n")
    }

    func configuration(host: Int, capacity: Int = 4096) throws -> ClusterConfiguration {
        try GossipTestbed.parseCluster(clusterYAML(host: host, capacity: capacity))
    }

    static func parseCluster(_ yaml: String) throws -> ClusterConfiguration {
        try ClusterConfiguration.parse(sectionBody: yaml, file: "<gossip test>")
    }

    /// A fresh runtime (unique DPDK names) and node for `host`; with `qsbr`, the table defers
    /// frees on it and the thread that polls the node registers on it as a reader.
    func makeNode(host: Int, capacity: Int = 4096, qsbr: OpaquePointer? = nil) throws -> Host {
        let configuration = try self.configuration(host: host, capacity: capacity)
        let runtime = try ClusterRuntime(configuration: configuration, name: "sygossip\(TestEAL.nextSerial())", socket: 0, qsbr: qsbr)
        let node = try GossipNode(cluster: runtime, settings: configuration.gossip!, qsbr: qsbr)
        return Host(id: host, runtime: runtime, node: node)
    }

    /// UDP ports free on 127.0.0.1 right now (all bound at once, so they differ).
    static func freePorts(_ count: Int) throws -> [UInt16] {
        var sockets: [Int32] = []
        defer { sockets.forEach { close($0) } }
        var ports: [UInt16] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            sockets.append(fd)
            var sin = GossipTestbed.loopback(port: 0)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            guard ok else { throw TestbedError("cannot find a free UDP port") }
            ports.append(UInt16(bigEndian: sin.sin_port))
        }
        return ports
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        return sin
    }
}

struct TestbedError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One host of a testbed: its runtime (connection table) and gossip node.
final class Host {
    let id: Int
    let runtime: ClusterRuntime
    let node: GossipNode
    var view: ConnectionView { runtime.connections.view }

    init(id: Int, runtime: ClusterRuntime, node: GossipNode) {
        self.id = id
        self.runtime = runtime
        self.node = node
    }

    /// What the ownership-lookup stage does for a new local flow: entry + opened event.
    @discardableResult
    func open(_ flow: TestFlow) -> Bool {
        _ = sy_thread_ensure_lcore()
        var key = flow.key
        let backend = flow.backend(owner: id)
        let control = FlowEntry.makeControl(state: flow.key.protocol == 6 ? .established : .datagram, family: key.family,
                                            owner: UInt16(id), backendPortNetworkOrder: UInt16(8080).bigEndian)
        guard view.insert(key: &key, hash: sy_flow_hash(view.hash, &key), control: control, backendHigh: backend.high,
                          backendLow: backend.low, now: sy_rdtsc()) != nil
        else { return false }
        view.emit(kind: UInt8(SY_FLOW_OPENED), reason: 0, owner: UInt16(id), backendPort: UInt16(8080).bigEndian, key: &key)
        return true
    }

    /// What an RST does to a local flow: entry removed, closed event.
    func close(_ flow: TestFlow) {
        _ = sy_thread_ensure_lcore()
        var key = flow.key
        let hash = sy_flow_hash(view.hash, &key)
        let position = sy_flow_table_lookup(view.hash, &key, hash)
        guard position >= 0 else { return }
        let control = sy_atomic_load_u64(&view.entries[Int(position)].control)
        view.remove(key: &key, hash: hash, position: position, control: control, reason: 2)
    }

    /// One control-thread round: the runtime's tick, then gossip.
    func poll() {
        node.poll(events: runtime.tick().events)
    }

    /// Every valid entry: flow → (owner, local or remote state, backend).
    func snapshot() -> [TestFlow: TableEntry] {
        _ = sy_thread_ensure_lcore()
        var result: [TestFlow: TableEntry] = [:]
        for position in 0..<runtime.connections.positions {
            let entry = view.entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control) else { continue }
            var key = sy_flow_key()
            guard sy_flow_table_key_at(view.hash, Int32(position), &key) == 0 else { continue }
            result[TestFlow(key)] = TableEntry(owner: Int(FlowEntry.owner(control)),
                                               remote: FlowEntry.state(control) == FlowState.remote.rawValue,
                                               backendHigh: entry.pointee.backendHigh, backendLow: entry.pointee.backendLow)
        }
        return result
    }

    /// Whether the table holds exactly `expected` (flow → owner), remote exactly where the owner
    /// is another host, with the owner's backend.
    func holds(_ expected: [TestFlow: Int]) -> Bool {
        let table = snapshot()
        guard table.count == expected.count else { return false }
        for (flow, owner) in expected {
            guard let entry = table[flow], entry.owner == owner, entry.remote == (owner != id) else { return false }
            let backend = flow.backend(owner: owner)
            guard entry.backendHigh == backend.high, entry.backendLow == backend.low else { return false }
        }
        return true
    }
}

struct TableEntry: Equatable {
    var owner: Int
    var remote: Bool
    var backendHigh: UInt64
    var backendLow: UInt64
}

/// A flow key as a hashable value: client n of the VIP, IPv4 or IPv6, TCP or UDP.
struct TestFlow: Hashable, CustomStringConvertible {
    let bytes: [UInt8]

    init(_ key: sy_flow_key) {
        var key = key
        bytes = withUnsafeBytes(of: &key) { Array($0) }
    }

    init(client n: Int, family: UInt8 = 4, udp: Bool = false) {
        var key = sy_flow_key()
        key.family = family
        key.protocol = udp ? 17 : 6
        key.src_port = UInt16(1024 + n % 60000).bigEndian
        key.dst_port = UInt16(udp ? 53 : 80).bigEndian
        withUnsafeMutableBytes(of: &key.src) { p in
            if family == 4 {
                p[0] = 10; p[1] = UInt8(n >> 16 & 0xff); p[2] = UInt8(n >> 8 & 0xff); p[3] = UInt8(n & 0xff)
            } else {
                p[0] = 0xfd; p[13] = UInt8(n >> 16 & 0xff); p[14] = UInt8(n >> 8 & 0xff); p[15] = UInt8(n & 0xff)
            }
        }
        withUnsafeMutableBytes(of: &key.dst) { p in
            if family == 4 {
                p[0] = 198; p[1] = 19; p[2] = 0; p[3] = 1
            } else {
                p[0] = 0xfd; p[1] = 0x19; p[15] = 1
            }
        }
        self.init(key)
    }

    var key: sy_flow_key {
        var key = sy_flow_key()
        withUnsafeMutableBytes(of: &key) { $0.copyBytes(from: bytes) }
        return key
    }

    var family: UInt8 { bytes[37] }

    /// The backend an owner chose for this flow (a function of owner and flow, so tests can check it).
    func backend(owner: Int) -> IPAddress {
        let n = Int(bytes[family == 4 ? 3 : 15]) | Int(bytes[family == 4 ? 2 : 14]) << 8
        if family == 4 { return IPAddress(bytes: [198, 18, UInt8(truncatingIfNeeded: 100 + owner), UInt8(truncatingIfNeeded: n)]) }
        return IPAddress(bytes: [0xfd, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(truncatingIfNeeded: owner), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)])
    }

    var description: String {
        let key = self.key
        var src = key.src, dst = key.dst
        let s = IPAddress(bytes: withUnsafeBytes(of: &src) { Array($0.prefix(family == 4 ? 4 : 16)) })
        let d = IPAddress(bytes: withUnsafeBytes(of: &dst) { Array($0.prefix(family == 4 ? 4 : 16)) })
        return "\(s):\(UInt16(bigEndian: key.src_port))→\(d):\(UInt16(bigEndian: key.dst_port))/\(key.protocol)"
    }
}

/// Polls every host until `condition` holds or `timeout` seconds pass; returns the seconds it took.
@discardableResult
func pollUntil(_ hosts: [Host], timeout: Double, every interval: UInt32 = 2000, _ condition: () -> Bool) -> Double? {
    let start = Date()
    while true {
        for host in hosts { host.poll() }
        if condition() { return Date().timeIntervalSince(start) }
        if Date().timeIntervalSince(start) > timeout { return nil }
        usleep(interval)
    }
}

/// Polls every host for `seconds`.
func pollFor(_ hosts: [Host], seconds: Double) {
    _ = pollUntil(hosts, timeout: seconds) { false }
}

/// Encodes messages as a given member would (for injecting authentic or forged datagrams).
struct TestSender {
    var host: UInt16
    var incarnation: UInt64
    var sequence: UInt64 = 0
    var key: [UInt8]

    init(host: Int, incarnation: UInt64 = (GossipClock.wallMicroseconds() / 1000) << 16 | 7, key: [UInt8] = TestSender.sharedKey) {
        self.host = UInt16(host)
        self.incarnation = incarnation
        self.key = key
    }

    static var sharedKey: [UInt8] {
        var bytes: [UInt8] = []
        let hex = Array(GossipTestbed.keyHex.utf8)
        var i = 0
        while i < hex.count {
            bytes.append(UInt8(String(decoding: hex[i..<i + 2], as: UTF8.self), radix: 16)!)
            i += 2
        }
        return bytes
    }

    /// The next message (sequence + 1) as datagram bytes.
    mutating func datagram(_ body: GossipBody, sequence explicit: UInt64? = nil) -> [UInt8] {
        sequence += 1
        let header = GossipHeader(kind: body.kind.rawValue, sender: host, incarnation: incarnation,
                                  sequence: explicit ?? sequence, timestamp: GossipClock.wallMicroseconds())
        var buffer = [UInt8](repeating: 0, count: 2048)
        let length = buffer.withUnsafeMutableBytes {
            GossipCodec.encode(body, header: header, authenticator: GossipAuthenticator(key: key), into: $0)!
        }
        return Array(buffer.prefix(length))
    }
}

extension GossipCounters {
    /// Drops that belong to the start-up handshake: messages of an incarnation not yet proven
    /// live, and answers to a challenge already answered.
    var handshakeDrops: UInt64 { dropped(.unverified) + dropped(.staleAnswer) }
}

extension TestSender {
    /// Proves this sender's incarnation live to `node` (fed directly): a heartbeat that the node
    /// drops as unverified makes it ask; the answer carries its nonce back.
    mutating func verify(with node: GossipNode, from source: GossipEndpoint) {
        node.handle(datagram(.heartbeat(Heartbeat(synchronised: true, ownedFlows: 0, ownedHash: 0))), from: source)
        guard let nonce = node.pendingChallenge(host: Int(host)) else { return }
        node.handle(datagram(.challenge(Challenge(nonce: 0, answer: nonce))), from: source)
    }

    /// The same over UDP from `socket`, polling `hosts` meanwhile; true once `node` accepted it.
    mutating func verify(with node: Host, socket: TestSocket, hosts: [Host]) -> Bool {
        socket.send(datagram(.heartbeat(Heartbeat(synchronised: true, ownedFlows: 0, ownedHash: 0))), to: node.node.localEndpoint.port)
        var nonce: UInt64?
        _ = pollUntil(hosts, timeout: 2) {
            nonce = node.node.pendingChallenge(host: Int(host))
            return nonce != nil
        }
        guard let nonce else { return false }
        let before = node.node.counters().value("peers-verified")
        socket.send(datagram(.challenge(Challenge(nonce: 0, answer: nonce))), to: node.node.localEndpoint.port)
        return pollUntil(hosts, timeout: 2) { node.node.counters().value("peers-verified") > before } != nil
    }
}

/// Signs arbitrary header + payload bytes (for messages the encoder would never produce).
func signedDatagram(header: [UInt8], payload: [UInt8], key: [UInt8] = TestSender.sharedKey) -> [UInt8] {
    var bytes = header + payload
    bytes += [UInt8](repeating: 0, count: GossipWire.macSize)
    bytes.withUnsafeMutableBytes {
        GossipAuthenticator(key: key).sign($0.baseAddress!, length: header.count + payload.count)
    }
    return bytes
}

extension GossipNode {
    @discardableResult
    func handle(_ bytes: [UInt8], from source: GossipEndpoint) -> GossipDrop? {
        bytes.withUnsafeBytes { handle(datagram: $0, from: source) }
    }
}

/// A plain UDP socket on 127.0.0.1 for injecting datagrams (and capturing what nodes send it).
final class TestSocket {
    let fd: Int32
    let port: UInt16

    init(port: UInt16 = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        var sin = GossipTestbed.loopback(port: port)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else {
            close(fd)
            throw TestbedError("cannot bind a test socket to port \(port): \(String(cString: strerror(errno)))")
        }
        self.port = UInt16(bigEndian: sin.sin_port)
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8], to port: UInt16) {
        var sin = GossipTestbed.loopback(port: port)
        _ = bytes.withUnsafeBytes { b in
            withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    /// Every datagram waiting now.
    func drain() -> [[UInt8]] {
        var result: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 { break }
            result.append(Array(buffer.prefix(n)))
        }
        return result
    }
}
