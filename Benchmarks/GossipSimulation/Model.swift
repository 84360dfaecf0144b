import Foundation
import SwitchyardGossip

/// What one host sends and receives, from the wire format (docs/gossip.md) and the rates: the
/// model the simulation checks against its measurement and then uses to extrapolate.
///
///     per copy of a host's stream, per second:
///       FLOWS    polls × E[⌈X / 55⌉] datagrams of 68 B + 42 B headers,  X ~ Poisson(events / polls)
///                + events × 24 B (an IPv4 open or close record)
///       HEARTBEAT  1000 / heartbeat_ms × (80 + 42) B
///       DIGEST     1000 / digest_interval_ms × (836 + 42) B
///     unicast: sent = (H − 1) copies; multicast: sent = 1 copy; received = (H − 1) copies either way
struct GossipModel {
    var hosts: Int
    /// Opens and closes per second of one host.
    var eventsPerSecond: Double
    var pollsPerSecond: Double
    var heartbeatMs: Int
    var digestMs: Int
    var multicast: Bool

    /// Ethernet (14), IPv4 (20) and UDP (8) headers of a datagram.
    static let linkOverhead = 42.0
    static let recordBytes = 24.0
    static let flowsOverhead = Double(GossipWire.headerSize + GossipWire.flowsOverhead + GossipWire.macSize)
    static var recordsPerDatagram: Double { ((Double(GossipWire.maxDatagram) - flowsOverhead) / recordBytes).rounded(.down) }

    /// Expected datagrams for X ~ Poisson(λ) records, `k` per datagram: E[⌈X / k⌉].
    static func datagrams(lambda: Double, perDatagram k: Double) -> Double {
        guard lambda > 0 else { return 0 }
        if lambda > 200 { return lambda / k + 0.5 } // normal regime: the last datagram is half full on average
        var p = exp(-lambda), sum = 0.0, x = 0.0
        while x < lambda + 12 * lambda.squareRoot() + 30 {
            sum += p * (x / k).rounded(.up)
            x += 1
            p *= lambda / x
        }
        return sum
    }

    /// FLOWS datagrams per second in one copy of the stream.
    var flowsDatagramsPerSecond: Double {
        let lambda = pollsPerSecond > 0 ? eventsPerSecond / pollsPerSecond : 0
        return pollsPerSecond * Self.datagrams(lambda: lambda, perDatagram: Self.recordsPerDatagram)
    }

    /// One copy of this host's stream (what one peer receives from it), wire bytes per second.
    var perCopyBytesPerSecond: Double {
        let flows = flowsDatagramsPerSecond * (Self.flowsOverhead + Self.linkOverhead) + eventsPerSecond * Self.recordBytes
        let heartbeat = 1000 / Double(heartbeatMs) * (Double(GossipWire.headerSize + 16 + GossipWire.macSize) + Self.linkOverhead)
        let digest = 1000 / Double(digestMs) * (Double(GossipWire.headerSize + 4 + 12 * GossipWire.buckets + GossipWire.macSize) + Self.linkOverhead)
        return flows + heartbeat + digest
    }

    var sentBytesPerSecond: Double { (multicast ? 1 : Double(hosts - 1)) * perCopyBytesPerSecond }
    var receivedBytesPerSecond: Double { Double(hosts - 1) * perCopyBytesPerSecond }
    /// The busier direction of the host's link, Mbit/s.
    var mbps: Double { max(sentBytesPerSecond, receivedBytesPerSecond) * 8 / 1e6 }
}
