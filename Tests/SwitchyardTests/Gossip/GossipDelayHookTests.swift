import Foundation
import SwitchyardGossip
import Testing

/// The receive-delay test hook (`injectedReceiveDelayNs`, GossipNode+TestHooks.swift) that the
/// gossip simulation uses to model a network's latency: an open reaches the delayed peer no
/// earlier than the delay after it was sent, and still arrives; with the hook off again, the next
/// one arrives too (no upper time bound is asserted: a busy machine would fail it).
@Suite("gossip delay hook", .serialized)
struct GossipDelayHookTests {
    @Test func aDelayedPeerAppliesAnOpenNoEarlierThanTheDelay() throws {
        let bed = try GossipTestbed(hosts: 2)
        let hosts = try (1...2).map { try bed.makeNode(host: $0) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        // Let the handshake finish before delaying anything.
        pollFor(hosts, seconds: 0.2)
        hosts[1].node.injectedReceiveDelayNs = 150_000_000
        #expect(hosts[1].node.injectedReceiveDelayNs == 150_000_000)
        let flow = TestFlow(client: 4242)
        let start = Date()
        hosts[0].open(flow)
        let took = pollUntil(hosts, timeout: 5, every: 1000) { hosts[1].holds([flow: 1]) }
        try #require(took != nil, "the open never arrived: \(hosts[1].node.counters().table())")
        #expect(Date().timeIntervalSince(start) >= 0.15, "applied after \(took!) s, before the 150 ms delay")

        hosts[1].node.injectedReceiveDelayNs = 0
        let second = TestFlow(client: 4243)
        hosts[0].open(second)
        let fast = pollUntil(hosts, timeout: 5, every: 1000) { hosts[1].holds([flow: 1, second: 1]) }
        #expect(fast != nil, "the second open never arrived")
    }
}
