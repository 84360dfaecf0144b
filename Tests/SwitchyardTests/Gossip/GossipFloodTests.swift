import CDPDK
import Foundation
import Glibc
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

@_silgen_name("sendmmsg")
private func sy_sendmmsg(_ fd: Int32, _ messages: UnsafeMutableRawPointer, _ count: UInt32, _ flags: Int32) -> Int32

/// Floods of bogus datagrams spoofed from a peer's address (issue 13, item 2), and replays of
/// recorded datagrams after the receiver restarted or forgot the peer (item 3).
@Suite("gossip flood and replay", .serialized)
struct GossipFloodTests {
    /// Three nodes on loopback. A thread floods host 1 through a raw socket with datagrams whose
    /// source is host 2's address and port, as fast as it can send: first junk, then datagrams
    /// with a valid-looking header (host 2's real incarnation, fresh sequence numbers, a wrong
    /// MAC), so every one of them costs host 1 a MAC check. Meanwhile hosts 2 and 3 open a flow
    /// every 10 ms; each must reach every other host within 50 ms at p99, and no peer may be
    /// declared down.
    @Test func aFloodSpoofedFromAPeerNeitherDelaysOpensNorDownsPeers() throws {
        let seconds = Double(ProcessInfo.processInfo.environment["SWITCHYARD_GOSSIP_FLOOD_SECONDS"] ?? "") ?? 3
        let bed = try GossipTestbed(extra: "heartbeat_ms: 50\npeer_timeout_ms: 300\ndigest_interval_ms: 500")
        let hosts = try (1...3).map { try bed.makeNode(host: $0) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        #expect(pollUntil(hosts, timeout: 2) { hosts.allSatisfy { $0.node.counters().peers.allSatisfy { $0.alive } } } != nil)

        var next = 0
        let only = ProcessInfo.processInfo.environment["SWITCHYARD_GOSSIP_FLOOD_KINDS"]?.split(separator: ",").map(String.init)
        for phase in FloodKind.allCases where only?.contains(String(describing: phase)) ?? true {
            let before = hosts.map { $0.node.counters() }
            // Host 2's next sequence number: every message it encoded so far counted one.
            let sent = before[1].values.filter { $0.name.hasPrefix("sent-") }.reduce(UInt64(0)) { $0 + $1.value }
            let flood = Flood(toPort: bed.ports[0], fromPort: bed.ports[1], kind: phase, incarnation: hosts[1].node.incarnation,
                              sequence: sent + 100_000)
            flood.start()
            var opened: [(flow: TestFlow, owner: Int, at: Double)] = []
            var lags: [Double] = []
            var missing = 0
            let start = Date()
            var lastOpen = -1.0
            while Date().timeIntervalSince(start) < seconds {
                let now = Date().timeIntervalSince(start)
                if now - lastOpen >= 0.01 {
                    lastOpen = now
                    let owner = next % 2 == 0 ? 2 : 3
                    let flow = TestFlow(client: 50_000 + next)
                    next += 1
                    hosts[owner - 1].open(flow)
                    opened.append((flow, owner, now))
                }
                for host in hosts { host.poll() }
                let seen = Date().timeIntervalSince(start)
                opened.removeAll { item in
                    let receivers = hosts.filter { $0.id != item.owner }
                    guard receivers.allSatisfy({ $0.owner(of: item.flow) == item.owner }) else { return false }
                    lags.append(seen - item.at)
                    return true
                }
                usleep(500)
            }
            flood.stop()
            // What is still on its way after the flood is measured too.
            let end = Date()
            while !opened.isEmpty && Date().timeIntervalSince(end) < 2 {
                for host in hosts { host.poll() }
                let seen = Date().timeIntervalSince(start)
                opened.removeAll { item in
                    guard hosts.filter({ $0.id != item.owner }).allSatisfy({ $0.owner(of: item.flow) == item.owner }) else { return false }
                    lags.append(seen - item.at)
                    return true
                }
                usleep(500)
            }
            missing = opened.count
            let after = hosts.map { $0.node.counters() }
            let sorted = lags.sorted()
            let p50 = sorted.isEmpty ? .infinity : sorted[sorted.count / 2]
            let p99 = sorted.isEmpty ? .infinity : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
            let rate = Double(flood.sent) / seconds
            let one = after[0], oneBefore = before[0]
            print(String(format: "gossip flood (%@): %.0f datagrams/s offered for %.0f s; %d opens, propagation p50 %.1f ms p99 %.1f ms max %.1f ms; host 1 read %llu, dropped %llu not-gossip, %llu implausible-sequence, %llu bad-mac; kernel drops %llu; budget stops %llu; down deferred %llu",
                         phase.rawValue, rate, seconds, lags.count + missing, p50 * 1000, p99 * 1000, (sorted.last ?? .infinity) * 1000,
                         one.value("datagrams-received") - oneBefore.value("datagrams-received"),
                         one.dropped(.notGossip) - oneBefore.dropped(.notGossip),
                         one.dropped(.implausibleSequence) - oneBefore.dropped(.implausibleSequence),
                         one.dropped(.badMAC) - oneBefore.dropped(.badMAC),
                         one.value("kernel-drops") - oneBefore.value("kernel-drops"),
                         one.value("poll-budget-exhausted") - oneBefore.value("poll-budget-exhausted"),
                         one.value("down-deferred") - oneBefore.value("down-deferred")))
            #expect(missing == 0, "\(missing) opens never reached every peer (\(phase))")
            // Propagation time is a measurement, not a pass/fail condition of the suite (it depends
            // on what else runs on the machine): it is printed above and asserted only in a
            // measurement run, SWITCHYARD_GOSSIP_FLOOD_P99_MS=50 (docs/gossip.md, "Floods").
            let bound = ProcessInfo.processInfo.environment["SWITCHYARD_GOSSIP_FLOOD_P99_MS"].flatMap(Double.init).map { $0 / 1000 }
            if let bound, phase == .sequenceInWindow {
                // Every datagram of this flood costs a MAC check. Past the rate at which this host
                // checks MACs, the kernel drops datagrams, bogus and genuine alike (counted), and
                // the digests repair what was lost; liveness holds (docs/gossip.md, "Floods").
                let checks = one.dropped(.badMAC) - oneBefore.dropped(.badMAC)
                let drops = one.value("kernel-drops") - oneBefore.value("kernel-drops")
                if drops > 0 {
                    print(String(format: "gossip flood: host 1 checked %.0f MACs/s; the rest overflowed its socket (%llu kernel drops), p99 %.0f ms",
                                 Double(checks) / seconds, drops, p99 * 1000))
                } else {
                    #expect(p99 <= bound, "propagation p99 \(p99 * 1000) ms with a flood (\(phase))")
                }
            } else if let bound {
                #expect(p99 <= bound, "propagation p99 \(p99 * 1000) ms with a flood (\(phase))")
            }
            // The offered rate depends on what else runs on this machine.
            if rate < 10_000 { print("gossip flood: only \(Int(rate)) datagrams/s offered (\(phase)): a busy machine") }
            for (index, host) in hosts.enumerated() {
                #expect(after[index].value("peers-down") == before[index].value("peers-down"), "host \(host.id) declared a peer down (\(phase))")
                #expect(after[index].peers.allSatisfy { $0.alive }, "host \(host.id): \(after[index].table())")
            }
            let reason: GossipDrop = switch phase {
            case .junk: .notGossip
            case .guessedSequence: .implausibleSequence
            case .sequenceInWindow: .badMAC
            }
            #expect(one.dropped(reason) - oneBefore.dropped(reason) > UInt64(rate * seconds / 4), "the flood did not reach host 1 (\(phase))")
        }
    }

    /// Datagrams recorded before a receiver restarted, replayed after it, change nothing: first
    /// they are of an incarnation not proven live (`unverified`), and once the challenge has
    /// been answered they lie behind the answer's sequence number (`replayed`). A forgotten peer
    /// is verified anew the same way.
    @Test func datagramsRecordedBeforeARestartAreRejectedAfterIt() throws {
        let bed = try GossipTestbed(extra: "heartbeat_ms: 20\npeer_timeout_ms: 200\ndigest_interval_ms: 100\ndown_retention_ms: 300")
        let recorder = try TestSocket(port: bed.ports[2]) // host 3's gossip address: receives host 1's messages too
        let one = try bed.makeNode(host: 1)
        var holder: Host? = try bed.makeNode(host: 2)
        var two = holder!
        #expect(pollUntil([one, two], timeout: 5) { one.node.isSynchronised && two.node.isSynchronised } != nil)
        #expect(pollUntil([one, two], timeout: 2) { two.node.counters().peers.first { $0.hostID == 1 }?.alive == true } != nil)

        // Host 1 opens flows, then closes them; host 3's socket (verified by host 1, so host 1
        // sends it what it sends every member) records the batches.
        var three = TestSender(host: 3)
        let verified = three.verify(with: one, socket: recorder, hosts: [one, two])
        #expect(verified)
        let flows = (0..<5).map { TestFlow(client: 70_000 + $0) }
        _ = recorder.drain()
        for flow in flows { one.open(flow) }
        #expect(pollUntil([one, two], timeout: 2) { flows.allSatisfy { two.owner(of: $0) == 1 } } != nil)
        let recorded = recorder.drain().filter { $0.count > 3 && $0[3] == GossipKind.flows.rawValue }
        #expect(!recorded.isEmpty)
        for flow in flows { one.close(flow) }
        #expect(pollUntil([one, two], timeout: 2) { flows.allSatisfy { two.owner(of: $0) == nil } } != nil)

        // Host 2 restarts: the recordings, replayed as host 1, are of an incarnation it has not verified.
        holder = nil
        two = one // drops the last reference to the old host 2 (its socket closes)
        holder = try bed.makeNode(host: 2)
        two = holder!
        for datagram in recorded { try RawSocket.sendUDP(datagram, fromPort: bed.ports[0], toPort: bed.ports[1]) }
        for _ in 0..<5 {
            two.poll()
            usleep(2000)
        }
        var c = two.node.counters()
        #expect(c.dropped(.unverified) >= UInt64(recorded.count), "\(c.table())")
        #expect(flows.allSatisfy { two.owner(of: $0) == nil }, "a replayed open was applied")

        // Once host 1 answered the challenge, the same recordings are behind its window.
        #expect(pollUntil([one, two], timeout: 5) { two.node.isSynchronised && two.node.counters().value("peers-verified") >= 1 } != nil)
        let replayedBefore = two.node.counters().dropped(.replayed)
        for datagram in recorded { try RawSocket.sendUDP(datagram, fromPort: bed.ports[0], toPort: bed.ports[1]) }
        pollFor([two], seconds: 0.02)
        c = two.node.counters()
        #expect(c.dropped(.replayed) - replayedBefore == UInt64(recorded.count), "\(c.table())")
        #expect(flows.allSatisfy { two.owner(of: $0) == nil }, "a replayed open was applied")
        #expect(c.value("opens-applied") == 0)

        // Host 1 goes silent: down, then forgotten; its recordings are unverified again.
        pollFor([two], seconds: 0.8)
        c = two.node.counters()
        #expect(c.value("peers-down") >= 1 && c.peers.first { $0.hostID == 1 }?.verified == false, "\(c.table())")
        let unverifiedBefore = c.dropped(.unverified)
        for datagram in recorded { try RawSocket.sendUDP(datagram, fromPort: bed.ports[0], toPort: bed.ports[1]) }
        pollFor([two], seconds: 0.02)
        c = two.node.counters()
        #expect(c.dropped(.unverified) - unverifiedBefore == UInt64(recorded.count), "\(c.table())")
        #expect(flows.allSatisfy { two.owner(of: $0) == nil })
        // And host 1 comes back through a challenge.
        #expect(pollUntil([one, two], timeout: 3) { two.node.counters().peers.first { $0.hostID == 1 }?.alive == true } != nil)
        print(two.node.counters().table())
    }
}

extension Host {
    /// The owner of `flow` in this host's table, nil when absent.
    func owner(of flow: TestFlow) -> Int? {
        _ = sy_thread_ensure_lcore()
        var key = flow.key
        let position = sy_flow_table_lookup(view.hash, &key, sy_flow_hash(view.hash, &key))
        guard position >= 0 else { return nil }
        let control = sy_atomic_load_u64(&view.entries[Int(position)].control)
        return FlowEntry.isValid(control) ? Int(FlowEntry.owner(control)) : nil
    }
}

/// What a flood sends.
enum FloodKind: String, CaseIterable {
    /// 200 bytes that are not gossip.
    case junk
    /// A HEARTBEAT of host 2 with its real incarnation, a wrong MAC and sequence numbers from
    /// 2⁴⁰ up (an attacker who saw the incarnation but guesses the sequence).
    case guessedSequence = "valid-looking header, guessed sequence"
    /// The same with sequence numbers just ahead of host 2's (an attacker who reads the gossip):
    /// every datagram costs a MAC check.
    case sequenceInWindow = "valid-looking header, sequence in the window"
}

/// A thread that sends UDP datagrams from 127.0.0.1:`fromPort` to `toPort` through a raw IP
/// socket, 64 per `sendmmsg`, until stopped.
final class Flood: @unchecked Sendable {
    let toPort: UInt16, fromPort: UInt16
    let incarnation: UInt64?
    let firstSequence: UInt64
    private let stopFlag = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let done = DispatchSemaphore(value: 0)
    private(set) var sent = 0

    init(toPort: UInt16, fromPort: UInt16, kind: FloodKind, incarnation: UInt64, sequence: UInt64) {
        self.toPort = toPort
        self.fromPort = fromPort
        self.incarnation = kind == .junk ? nil : incarnation
        firstSequence = kind == .guessedSequence ? 1 << 40 : sequence
        stopFlag.initialize(to: 0)
    }

    deinit { stopFlag.deallocate() }

    func start() {
        Thread { [self] in
            run()
            done.signal()
        }.start()
    }

    func stop() {
        sy_atomic_store_u64(stopFlag, 1)
        done.wait()
    }

    private func run() {
        let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_RAW))
        guard fd >= 0 else { return }
        defer { close(fd) }
        let batch = 64
        let payloadSize = incarnation == nil ? 200 : GossipWire.headerSize + 16 + GossipWire.macSize
        let packetSize = 28 + payloadSize
        let packets = UnsafeMutableRawPointer.allocate(byteCount: batch * packetSize, alignment: 16)
        let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: batch)
        let messages = UnsafeMutableRawPointer.allocate(byteCount: batch * 64, alignment: 16)
        var destination = GossipTestbed.loopback(port: 0)
        defer {
            packets.deallocate()
            iovecs.deallocate()
            messages.deallocate()
        }
        messages.initializeMemory(as: UInt8.self, repeating: 0, count: batch * 64)
        var sequence = firstSequence
        for i in 0..<batch {
            let p = (packets + i * packetSize).assumingMemoryBound(to: UInt8.self)
            p.initialize(repeating: 0x41, count: packetSize)
            p[0] = 0x45; p[1] = 0
            p[2] = UInt8(packetSize >> 8); p[3] = UInt8(packetSize & 0xff)
            p[4] = 0; p[5] = 0; p[6] = 0; p[7] = 0
            p[8] = 64; p[9] = 17; p[10] = 0; p[11] = 0
            p[12] = 127; p[13] = 0; p[14] = 0; p[15] = 1
            p[16] = 127; p[17] = 0; p[18] = 0; p[19] = 1
            p[20] = UInt8(fromPort >> 8); p[21] = UInt8(fromPort & 0xff)
            p[22] = UInt8(toPort >> 8); p[23] = UInt8(toPort & 0xff)
            let udpLength = 8 + payloadSize
            p[24] = UInt8(udpLength >> 8); p[25] = UInt8(udpLength & 0xff); p[26] = 0; p[27] = 0
            if let incarnation {
                let h = p + 28
                h[0] = 0x53; h[1] = 0x47; h[2] = GossipWire.version; h[3] = GossipKind.heartbeat.rawValue
                h[4] = 0; h[5] = 2; h[6] = 0; h[7] = 16
                for b in 0..<8 { h[8 + b] = UInt8(truncatingIfNeeded: incarnation >> (56 - 8 * UInt64(b))) }
                for b in 0..<16 { h[32 + b] = 0 }
            }
            iovecs[i] = iovec(iov_base: UnsafeMutableRawPointer(p), iov_len: packetSize)
            let header = (messages + i * 64).assumingMemoryBound(to: msghdr.self)
            withUnsafeMutablePointer(to: &destination) { header.pointee.msg_name = UnsafeMutableRawPointer($0) }
            header.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            header.pointee.msg_iov = iovecs + i
            header.pointee.msg_iovlen = 1
        }
        var total = 0
        while sy_atomic_load_u64(stopFlag) == 0 {
            if incarnation != nil {
                for i in 0..<batch {
                    let h = (packets + i * packetSize + 28).assumingMemoryBound(to: UInt8.self)
                    sequence += 1
                    if firstSequence < 1 << 40 && sequence >= firstSequence + 1000 { sequence = firstSequence } // stay in the window
                    for b in 0..<8 { h[16 + b] = UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64(b))) }
                }
            }
            let n = withUnsafeMutablePointer(to: &destination) { pointer -> Int32 in
                for i in 0..<batch { (messages + i * 64).assumingMemoryBound(to: msghdr.self).pointee.msg_name = UnsafeMutableRawPointer(pointer) }
                return sy_sendmmsg(fd, messages, UInt32(batch), 0)
            }
            if n > 0 { total += Int(n) }
        }
        sent = total
    }
}
