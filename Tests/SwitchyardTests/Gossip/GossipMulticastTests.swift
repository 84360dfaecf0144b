import CDPDK
import Foundation
import Glibc
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// Multicast mode for real: a network namespace made by the test holds a veth pair; the three
/// nodes' sockets are created inside it (a thread that entered the namespace with setns), bound to
/// 198.18.5.1 with their own ports, and they join 239.7.7.7:7100 on that interface with loop on,
/// so each node receives the others' group datagrams. Skipped without root or `ip netns`.
@Suite("gossip multicast", .serialized)
struct GossipMulticastTests {
    @Test(.enabled(if: NetworkTopology.unavailableReason == nil))
    func flowsTravelThroughTheMulticastGroup() throws {
        let topology = try NetworkTopology()
        let namespace = try topology.addNamespace("gossip")
        try topology.addVethPair("mc0", in: "gossip", "mc1", in: "gossip")
        try topology.addAddress("198.18.5.1/24", to: "mc0", in: "gossip")
        let bed = try GossipTestbed(extra: """
            heartbeat_ms: 20
            peer_timeout_ms: 400
            digest_interval_ms: 100
            multicast: { group: 239.7.7.7, port: 7100, interface: 198.18.5.1, ttl: 1, loop: true }
            """, memberAddress: "198.18.5.1", ports: [7001, 7002, 7003])
        let hosts = try inNamespace(namespace) { try (1...3).map { try bed.makeNode(host: $0) } }
        defer { topology.tearDown() }

        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        var expected: [TestFlow: Int] = [:]
        for host in hosts {
            for n in 0..<40 {
                let flow = TestFlow(client: host.id * 1000 + n, family: n % 2 == 0 ? 4 : 6)
                host.open(flow)
                expected[flow] = host.id
            }
        }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil)
        for host in hosts {
            let c = host.node.counters()
            #expect(c.droppedTotal == c.handshakeDrops, "\(c.table())")
            // Heartbeats, batches and digests go out once, to the group; sync and challenge traffic is unicast.
            let broadcasts = c.value("sent-heartbeat") + c.value("sent-flows") + c.value("sent-digest")
            let unicasts = c.value("sent-sync-request") + c.value("sent-sync-response") + c.value("sent-challenge")
            #expect(c.value("datagrams-sent") == broadcasts + unicasts)
            #expect(c.value("multicast-sent") == broadcasts, "every broadcast went to the group once")
            #expect(c.value("multicast-received") > 0)
            #expect(c.value("received-flows") >= 2)
            #expect(c.value("own-messages") > 0, "loop is on: the node hears itself and ignores it")
        }
        print(hosts[0].node.counters().table())
    }

    /// The same over IPv6: the nodes bind fd00:5::1 (ports 7011-7013) and join `group` on mc0: a
    /// site-local group (ff05::/16), and a link-local one (ff02::/16), whose receiving socket is
    /// bound with the interface as scope.
    @Test(.enabled(if: NetworkTopology.unavailableReason == nil), arguments: ["ff05::7:7", "ff02::7:7"])
    func flowsTravelThroughAnIPv6MulticastGroup(group: String) throws {
        let topology = try NetworkTopology()
        let namespace = try topology.addNamespace("gossip6")
        defer { topology.tearDown() }
        try topology.addVethPair("mc0", in: "gossip6", "mc1", in: "gossip6")
        try topology.addAddress("fd00:5::1/64", to: "mc0", in: "gossip6")
        let bed = try GossipTestbed(extra: """
            heartbeat_ms: 20
            peer_timeout_ms: 400
            digest_interval_ms: 100
            multicast: { group: "\(group)", port: 7110, ttl: 1, loop: true }
            """, memberAddress: "fd00:5::1", ports: [7011, 7012, 7013])
        let hosts = try inNamespace(namespace) { try (1...3).map { try bed.makeNode(host: $0) } }

        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        var expected: [TestFlow: Int] = [:]
        for host in hosts {
            for n in 0..<40 {
                let flow = TestFlow(client: host.id * 1000 + n, family: n % 2 == 0 ? 4 : 6)
                host.open(flow)
                expected[flow] = host.id
            }
        }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil)
        for host in hosts {
            let c = host.node.counters()
            #expect(c.droppedTotal == c.handshakeDrops, "\(c.table())")
            let broadcasts = c.value("sent-heartbeat") + c.value("sent-flows") + c.value("sent-digest")
            let unicasts = c.value("sent-sync-request") + c.value("sent-sync-response") + c.value("sent-challenge")
            #expect(c.value("datagrams-sent") == broadcasts + unicasts)
            #expect(c.value("received-flows") >= 2)
            #expect(c.value("own-messages") > 0, "loop is on: the node hears itself and ignores it")
        }
    }

    /// glibc's setns(2), which the Glibc module does not export (it needs _GNU_SOURCE).
    static let setns: @convention(c) (Int32, Int32) -> Int32 = {
        let handle = dlopen(nil, RTLD_NOW)
        guard let symbol = dlsym(handle, "setns") else { fatalError("no setns in libc") }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
    }()

    /// Runs `body` on a thread that entered network namespace `name`: sockets it creates live there.
    func inNamespace<T>(_ name: String, _ body: @escaping () throws -> T) throws -> T {
        let fd = open("/var/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TestbedError("cannot open namespace \(name)") }
        defer { close(fd) }
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            if Self.setns(fd, 0x4000_0000 /* CLONE_NEWNET */) != 0 {
                box.result = .failure(TestbedError("setns: \(String(cString: strerror(errno)))"))
            } else {
                box.result = Result { try body() }
            }
            done.signal()
        }
        thread.start()
        done.wait()
        return try box.result!.get()
    }
}

/// A result handed from one thread to another (the semaphore orders the accesses).
final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
