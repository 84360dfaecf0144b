import CDPDK
import Foundation
import Glibc
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardGossip

/// One simulated host: its own ClusterRuntime (connection table, events ring) and the real
/// `GossipNode`, bound to 127.0.0.1 on a port of its own. Its flows are opened and closed the way
/// the ownership-lookup stage does it (table entry + opened/closed event), FIFO, so every flow
/// lives the same time.
final class SimHost {
    let id: Int
    /// Nil only while the host restarts (the old node must be gone before the new one binds).
    var runtime: ClusterRuntime!
    var node: GossipNode!
    /// Flow numbers of the open flows, oldest first (a ring: `live[head..<]`).
    var live: [Int] = []
    var head = 0
    var nextFlow = 0
    /// Fractional opens carried from one round to the next.
    var credit = 0.0
    /// `replicate: exceptions`: open only the flows the current Maglev table picks for this host
    /// (what ownership-lookup does); otherwise any flow, owned by this host.
    var pickOwn = false
    /// The table generation this host's runtime has (0: the file's, 1: one backend added).
    var tablesVersion = 0

    init(id: Int, runtime: ClusterRuntime, node: GossipNode) {
        self.id = id
        self.runtime = runtime
        self.node = node
    }

    var view: ConnectionView { runtime.connections.view }
    var liveCount: Int { live.count - head }

    /// Flow `n` of this host: client 10.h.x.y, port from n, to the VIP 198.19.0.1:80, TCP.
    func key(_ n: Int) -> sy_flow_key {
        var key = sy_flow_key()
        key.family = 4
        key.protocol = 6
        key.src_port = UInt16(1024 + (n >> 16) % 60000).bigEndian
        key.dst_port = UInt16(80).bigEndian
        withUnsafeMutableBytes(of: &key.src) { p in
            p[0] = 10; p[1] = UInt8(truncatingIfNeeded: id); p[2] = UInt8(truncatingIfNeeded: n >> 8); p[3] = UInt8(truncatingIfNeeded: n)
        }
        withUnsafeMutableBytes(of: &key.dst) { p in p[0] = 198; p[1] = 19; p[2] = 0; p[3] = 1 }
        return key
    }

    /// A new local flow: entry and opened event, as the ownership-lookup stage makes them.
    func open() {
        var key = key(nextFlow)
        if pickOwn, let tables = runtime.tables.current {
            while tables.pickedHost(key: &key) != UInt16(id) {
                nextFlow += 1
                key = self.key(nextFlow)
            }
        }
        let backend = IPAddress(bytes: [198, 18, 100, UInt8(truncatingIfNeeded: id)])
        let control = FlowEntry.makeControl(state: .established, family: 4, owner: UInt16(id),
                                            backendPortNetworkOrder: UInt16(8080).bigEndian)
        guard view.insert(key: &key, hash: sy_flow_hash(view.hash, &key), control: control, backendHigh: backend.high,
                          backendLow: backend.low, now: sy_rdtsc()) != nil
        else { return }
        view.emit(kind: UInt8(SY_FLOW_OPENED), reason: 0, owner: UInt16(id), backendPort: UInt16(8080).bigEndian, key: &key)
        live.append(nextFlow)
        nextFlow += 1
    }

    /// Closes the oldest flow: entry removed, closed event (what an RST or FIN does).
    func closeOldest() {
        guard head < live.count else { return }
        var key = key(live[head])
        head += 1
        if head > 4096 && head * 2 > live.count {
            live.removeFirst(head)
            head = 0
        }
        let hash = sy_flow_hash(view.hash, &key)
        let position = sy_flow_table_lookup(view.hash, &key, hash)
        guard position >= 0 else { return }
        let control = sy_atomic_load_u64(&view.entries[Int(position)].control)
        guard FlowEntry.isValid(control), FlowEntry.owner(control) == UInt16(id) else { return }
        view.remove(key: &key, hash: hash, position: position, control: control, reason: 2)
    }

    /// One control-thread round: the runtime's tick (events), then gossip.
    func poll() {
        node.poll(events: runtime.tick().events)
    }
}

/// The configuration of every simulated host: H hosts, one backend each, gossip members on
/// 127.0.0.1 with their own ports, the production timers unless the command line changes them.
struct SimConfig {
    static let keyHex = String(repeating: "c0ffee42", count: 8)
    var hosts: Int
    var capacity: Int
    var ports: [UInt16]
    var gossipExtra: [String]
    /// Multicast mode: the group's port (the group is 239.255.7.1 on 127.0.0.1, loop on: every
    /// node is on this machine). Needs a network namespace whose `lo` has multicast on.
    var multicastPort: UInt16?
    /// The table change of `replicate: exceptions` runs: one more backend, on host 1.
    var backendAdded = false
    static let addedBackend = "      - { host: 1, address: 198.18.101.1, port: 8080 }"

    func yaml(host: Int) -> String {
        var lines = ["host: \(host)", "hosts:"]
        for id in 1...hosts { lines.append("  - { id: \(id), address: 198.18.\(id >> 8).\(id & 255) }") }
        lines += ["services:", "  - name: web", "    vip: 198.19.0.1", "    port: 80", "    backends:"]
        for id in 1...hosts { lines.append("      - { host: \(id), address: 198.18.100.\(id), port: 8080 }") }
        if backendAdded { lines.append(Self.addedBackend) }
        lines += ["connections:", "  capacity: \(capacity)", "gossip:", "  key: \(Self.keyHex)", "  members:"]
        for id in 1...hosts { lines.append("    - { host: \(id), address: 127.0.0.1, port: \(ports[id - 1]) }") }
        if let multicastPort {
            lines.append("  multicast: { group: 239.255.7.1, port: \(multicastPort), interface: 127.0.0.1, loop: true }")
        }
        lines += gossipExtra.map { "  " + $0 }
        return lines.joined(separator: "\n")
    }

    func makeHost(_ id: Int, serial: Int) throws -> SimHost {
        let (runtime, node) = try makeParts(id, serial: serial)
        return SimHost(id: id, runtime: runtime, node: node)
    }

    /// A fresh runtime (own DPDK objects, named by `serial`) and node for host `id`.
    func makeParts(_ id: Int, serial: Int) throws -> (ClusterRuntime, GossipNode) {
        let configuration = try ClusterConfiguration.parse(sectionBody: yaml(host: id), file: "<gossip simulation>")
        let runtime = try ClusterRuntime(configuration: configuration, name: "sim\(serial)", socket: 0, qsbr: nil)
        let node = try GossipNode(cluster: runtime, settings: configuration.gossip!)
        return (runtime, node)
    }

    /// The runtime a reload makes of `runtime` for this configuration (the same connections,
    /// the new tables), as the engine's `ClusterRuntime(reloading:)`.
    func reloaded(_ runtime: ClusterRuntime, host id: Int) throws -> ClusterRuntime {
        ClusterRuntime(reloading: runtime,
                       configuration: try ClusterConfiguration.parse(sectionBody: yaml(host: id), file: "<gossip simulation>"))
    }

    /// The service directory of this configuration (its picks are every host's).
    func directory() throws -> ServiceDirectory {
        ServiceDirectory(try ClusterConfiguration.parse(sectionBody: yaml(host: 1), file: "<gossip simulation>"))
    }

    /// UDP ports free on 127.0.0.1 right now (all bound at once, so they differ).
    static func freePorts(_ count: Int) throws -> [UInt16] {
        var sockets: [Int32] = []
        defer { sockets.forEach { close($0) } }
        var ports: [UInt16] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            sockets.append(fd)
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
            }
            guard ok else { throw SimError("cannot find a free UDP port") }
            ports.append(UInt16(bigEndian: sin.sin_port))
        }
        return ports
    }
}

struct SimError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Resident memory of this process, bytes (/proc/self/statm).
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Bytes allocated on DPDK's heap (socket 0): the connection tables' rte_hash and events rings.
func dpdkHeapBytes() -> Int {
    var stats = rte_malloc_socket_stats()
    guard rte_malloc_get_socket_stats(0, &stats) == 0 else { return 0 }
    return Int(stats.heap_allocsz_bytes)
}
