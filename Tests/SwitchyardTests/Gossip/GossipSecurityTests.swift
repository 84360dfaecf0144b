import CDPDK
import Foundation
import Glibc
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// Forged and replayed datagrams over real UDP: hosts 1 and 2 run nodes; host 3's gossip address
/// is a plain test socket (it can send as host 3 and capture what the nodes send host 3). A raw
/// IP socket replays a captured datagram with host 1's source address and port.
@Suite("gossip security", .serialized)
struct GossipSecurityTests {
    @Test func forgedAndReplayedDatagramsAreRejectedCountedAndChangeNothing() throws {
        let bed = try GossipTestbed(extra: "heartbeat_ms: 20\npeer_timeout_ms: 200\ndigest_interval_ms: 100")
        let hostThree = try TestSocket(port: bed.ports[2])
        let stranger = try TestSocket()
        let hosts = try [bed.makeNode(host: 1), bed.makeNode(host: 2)]
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        let one = hosts[0], two = hosts[1]
        // Host 3's socket proves an incarnation of host 3 live to both nodes, so they send it
        // what they send every verified member.
        var three = TestSender(host: 3)
        let verifiedByOne = three.verify(with: one, socket: hostThree, hosts: hosts)
        let verifiedByTwo = three.verify(with: two, socket: hostThree, hosts: hosts)
        #expect(verifiedByOne && verifiedByTwo)

        // Host 1 opens a flow; everyone (host 3's socket too) hears of it.
        let own = TestFlow(client: 1)
        one.open(own)
        #expect(pollUntil(hosts, timeout: 2) { two.snapshot()[own]?.owner == 1 } != nil)
        pollFor(hosts, seconds: 0.05)
        let captured = hostThree.drain().filter { $0.count > 3 && $0[3] == GossipKind.flows.rawValue }
        let capturedBatch = try #require(captured.first, "host 3's socket captured no flow batch of host 1")

        // An authentic batch from host 3 (its incarnation proven live by a challenge) is applied...
        let claimed = TestFlow(client: 30001)
        let authentic = three.datagram(.flows([FlowRecord(op: .open, key: claimed.key, owner: 3)]))
        hostThree.send(authentic, to: bed.ports[0])
        #expect(pollUntil(hosts, timeout: 2) { one.snapshot()[claimed]?.owner == 3 } != nil)
        let tables = hosts.map { $0.snapshot() }
        let before = hosts.map { $0.node.counters() }

        // ...and each of these is dropped.
        hostThree.send(authentic, to: bed.ports[0]) // replayed
        let forgedFlow = TestFlow(client: 30002)
        var forger = TestSender(host: 3, incarnation: three.incarnation, key: [UInt8](repeating: 0x42, count: 32))
        forger.sequence = three.sequence
        hostThree.send(forger.datagram(.flows([FlowRecord(op: .open, key: forgedFlow.key, owner: 3)])), to: bed.ports[0]) // bad MAC
        var asTwo = TestSender(host: 2)
        hostThree.send(asTwo.datagram(.flows([FlowRecord(op: .open, key: forgedFlow.key, owner: 2)])), to: bed.ports[0]) // host 2 from host 3's address
        var fromStranger = three
        stranger.send(fromStranger.datagram(.flows([FlowRecord(op: .open, key: forgedFlow.key, owner: 3)])), to: bed.ports[0])
        hostThree.send(three.datagram(.flows([FlowRecord(op: .close, key: claimed.key, owner: 3)]), sequence: 1), to: bed.ports[0]) // old sequence
        hostThree.send(capturedBatch, to: bed.ports[1]) // host 1's batch, replayed from host 3's address
        try RawSocket.sendUDP(capturedBatch, fromPort: bed.ports[0], toPort: bed.ports[1]) // host 1's batch, replayed as host 1
        hostThree.send([UInt8](repeating: 0x53, count: 3000), to: bed.ports[0]) // oversized (truncated by the kernel)
        hostThree.send(Array("hello".utf8), to: bed.ports[0])
        pollFor(hosts, seconds: 0.1)

        let after = hosts.map { $0.node.counters() }
        func grew(_ host: Int, _ reason: GossipDrop) -> UInt64 { after[host].dropped(reason) - before[host].dropped(reason) }
        #expect(grew(0, .replayed) == 2)
        #expect(grew(0, .badMAC) == 1)
        #expect(grew(0, .unknownSender) == 2)
        #expect(grew(0, .oversized) == 1)
        #expect(grew(0, .truncated) == 1)
        #expect(grew(1, .unknownSender) == 1, "host 1's batch from host 3's address")
        #expect(grew(1, .replayed) == 1, "host 1's batch replayed with host 1's address")
        for (index, host) in hosts.enumerated() {
            #expect(host.snapshot() == tables[index], "host \(host.id)'s table changed")
            #expect(after[index].value("opens-applied") == before[index].value("opens-applied"))
            #expect(after[index].value("closes-applied") == before[index].value("closes-applied"))
        }
        #expect(one.snapshot()[forgedFlow] == nil && two.snapshot()[forgedFlow] == nil)

        // Host 3's next authentic message still goes through (its window was not disturbed).
        hostThree.send(three.datagram(.flows([FlowRecord(op: .close, key: claimed.key, owner: 3)])), to: bed.ports[0])
        #expect(pollUntil(hosts, timeout: 2) { one.snapshot()[claimed] == nil } != nil)
        print(one.node.counters().table())
    }

    /// A flood cannot hold the control thread: one poll reads at most max_messages_per_poll.
    @Test func onePollReadsAtMostTheBudget() throws {
        let bed = try GossipTestbed(extra: "heartbeat_ms: 20\npeer_timeout_ms: 200\nmax_messages_per_poll: 16")
        let host = try bed.makeNode(host: 1)
        let flooder = try TestSocket(port: bed.ports[1])
        var sender = TestSender(host: 2)
        sender.verify(with: host.node, from: bed.endpoint(2))
        _ = flooder.drain()
        for n in 0..<100 {
            flooder.send(sender.datagram(.flows([FlowRecord(op: .open, key: TestFlow(client: n).key, owner: 2)])), to: bed.ports[0])
        }
        usleep(20000)
        host.poll()
        #expect(host.node.counters().value("datagrams-received") == 16)
        #expect(host.node.counters().value("poll-budget-exhausted") == 1)
        host.poll()
        #expect(host.node.counters().value("datagrams-received") == 32)
        for _ in 0..<10 { host.poll() }
        #expect(host.snapshot().count == 100, "the rest waited in the socket buffer and came in later polls")
    }
}

/// Sends UDP datagrams with a chosen source port on 127.0.0.1 through a raw IP socket (root).
enum RawSocket {
    static func sendUDP(_ payload: [UInt8], fromPort: UInt16, toPort: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_RAW))
        guard fd >= 0 else { throw TestbedError("raw socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var packet = [UInt8](repeating: 0, count: 28)
        let total = 28 + payload.count
        packet[0] = 0x45
        packet[2] = UInt8(total >> 8); packet[3] = UInt8(total & 0xff)
        packet[8] = 64
        packet[9] = 17
        packet[12] = 127; packet[15] = 1 // source 127.0.0.1 (the kernel fills in the checksum)
        packet[16] = 127; packet[19] = 1
        packet[20] = UInt8(fromPort >> 8); packet[21] = UInt8(fromPort & 0xff)
        packet[22] = UInt8(toPort >> 8); packet[23] = UInt8(toPort & 0xff)
        let udpLength = 8 + payload.count
        packet[24] = UInt8(udpLength >> 8); packet[25] = UInt8(udpLength & 0xff) // UDP checksum 0: none
        packet += payload
        var destination = GossipTestbed.loopback(port: 0)
        let sent = packet.withUnsafeBytes { bytes in
            withUnsafePointer(to: &destination) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard sent == packet.count else { throw TestbedError("raw send: \(String(cString: strerror(errno)))") }
    }
}
