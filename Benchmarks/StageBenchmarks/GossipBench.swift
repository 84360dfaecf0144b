import CDPDK
import Foundation
import Glibc
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardGossip
import SwitchyardTesting

/// Two gossip nodes (hosts 1 and 2) on 127.0.0.1, each with its own connection table: host 1
/// announces flows it opened, host 2 receives, authenticates and applies them. Measured from the
/// control thread's side, as the engine drives it: `poll` on the sender with the events, then
/// `poll` on the receiver until every flow is in its table (or out again, for closes).
///
///     events ─► node 1 poll (batch, HMAC, sendto) ─► loopback ─► node 2 poll (recv, verify, apply)
final class GossipBench {
    let sender: GossipNode
    let receiver: GossipNode
    let senderRuntime: ClusterRuntime
    let receiverRuntime: ClusterRuntime
    /// Pre-built events: `opened[i]` / `closed[i]` for flow i.
    let opened: [sy_flow_event]
    let closed: [sy_flow_event]

    init(flows: Int) throws {
        TestEAL.start()
        guard sy_thread_ensure_lcore() == 0 else { fatalError("no lcore id for the benchmark thread") }
        let ports = try Self.freePorts(2)
        func cluster(_ host: Int) throws -> ClusterConfiguration {
            let yaml = """
                cluster:
                  host: \(host)
                  hosts:
                    - { id: 1, address: 198.18.0.11 }
                    - { id: 2, address: 198.18.0.12 }
                  services:
                    - { name: web, vip: 198.19.0.1, port: 80, backends: [{ host: 1, address: 198.18.100.10, port: 8080 }] }
                  connections: { capacity: 65536 }
                  gossip:
                    key: "\(String(repeating: "b3", count: 32))"
                    bind: 127.0.0.1
                    heartbeat_ms: 1000
                    digest_interval_ms: 60000
                    max_messages_per_poll: 4096
                    members:
                      - { host: 1, address: 127.0.0.1, port: \(ports[0]) }
                      - { host: 2, address: 127.0.0.1, port: \(ports[1]) }
                """
            let document = try ConfigDocument.parse(yaml, file: "<gossip benchmark>")
            return try ClusterConfiguration.parse(try document.required("cluster"))
        }
        let one = try cluster(1), two = try cluster(2)
        senderRuntime = try ClusterRuntime(configuration: one, name: "sygb\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        receiverRuntime = try ClusterRuntime(configuration: two, name: "sygb\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        sender = try GossipNode(cluster: senderRuntime, settings: one.gossip!)
        receiver = try GossipNode(cluster: receiverRuntime, settings: two.gossip!)
        var opened: [sy_flow_event] = [], closed: [sy_flow_event] = []
        for flow in 0..<flows {
            var key = sy_flow_key()
            key.family = 4
            key.protocol = 6
            key.src_port = UInt16(10000 + flow % 50000).bigEndian
            key.dst_port = UInt16(80).bigEndian
            withUnsafeMutableBytes(of: &key.src) { $0.storeBytes(of: UInt32(0xc612_0000 + UInt32(flow)).bigEndian, as: UInt32.self) }
            withUnsafeMutableBytes(of: &key.dst) { $0.storeBytes(of: UInt32(0xc613_0001).bigEndian, as: UInt32.self) }
            let event = sy_flow_event(kind: UInt8(SY_FLOW_OPENED), reason: 0, owner: 1,
                                      backend_port: UInt16(8080).bigEndian, zero: 0, key: key)
            opened.append(event)
            var close = event
            close.kind = UInt8(SY_FLOW_CLOSED)
            close.reason = 1
            closed.append(close)
        }
        self.opened = opened
        self.closed = closed
        // Both sides synchronised (each answers the other's start-up sync) before anything is measured.
        let deadline = Date().addingTimeInterval(5)
        while !(sender.isSynchronised && receiver.isSynchronised) && Date() < deadline {
            sender.poll(events: [])
            receiver.poll(events: [])
            usleep(1000)
        }
    }

    /// Host 1's lcores open (or close) these flows: entries go into host 1's table with their events,
    /// as ownership-lookup does; the control thread takes the events (`tick`) and gossips them; host 2
    /// polls until its table holds `expected` flows.
    @inline(__always)
    func propagate(_ events: ArraySlice<sy_flow_event>, expected: Int) {
        let view = senderRuntime.connections.view
        let now = sy_rdtsc()
        for event in events {
            var key = event.key
            let hash = FlowKeys.hash(&key)
            if event.kind == UInt8(SY_FLOW_OPENED) {
                let control = FlowEntry.makeControl(state: .established, family: 4, owner: 1,
                                                    backendPortNetworkOrder: event.backend_port)
                _ = view.insert(key: &key, hash: hash, control: control, backendHigh: 0x0a64_12c6, backendLow: 0, now: now)
                view.emit(kind: event.kind, reason: 0, owner: 1, backendPort: event.backend_port, key: &key)
            } else {
                let position = sy_flow_table_lookup(view.hash, &key, hash)
                if position >= 0 {
                    let control = sy_atomic_load_u64(&(view.entries + Int(position)).pointee.control)
                    view.remove(key: &key, hash: hash, position: position, control: control, reason: 1)
                }
            }
        }
        sender.poll(events: senderRuntime.tick(budget: 0).events)
        var spins = 0
        while receiverRuntime.connections.count != expected {
            receiver.poll(events: [])
            spins += 1
            if spins > 1_000_000 { fatalError("gossip benchmark: the receiver never reached \(expected) flows") }
        }
    }

    static func freePorts(_ count: Int) throws -> [UInt16] {
        var sockets: [Int32] = []
        defer { sockets.forEach { close($0) } }
        var ports: [UInt16] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            sockets.append(fd)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
            }
            guard ok else { throw ClusterError("no free UDP port on 127.0.0.1") }
            ports.append(UInt16(bigEndian: address.sin_port))
        }
        return ports
    }
}
