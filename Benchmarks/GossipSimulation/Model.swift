import Foundation
import SwitchyardCluster
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

/// The extrapolation of a `--replicate exceptions` run to the target (README, "Exceptions"):
///
///     E  = f × H × C             exceptions of one table change: f is the share of the Maglev
///                                table's slots (65,537) whose host changes when a backend on host 1
///                                is added to H equal ones (one per host), computed with
///                                Maglev.populate as the simulation's tables are; about
///                                (H − 1) / (H (H + 1)) plus Maglev's own disturbance; checked
///                                against the count at every size run
///     steady   heartbeats and digests, plus each exception opened and closed once per change,
///              one change per connection lifetime: 2 E / (H × lifetime) events/s per host (wire model)
///     burst    every host receives E records while the owners rescan their tables after the
///              change: positions / (65,536 per poll × 100 polls/s) seconds
///     memory   a table for C + E entries (fixed + bytes per slot × 1.25 × entries) + 24 B per own exception
///     sync     a restarted host receives every owner's exceptions once and its own from every
///              peer: E + (H − 1) E / H records, at the records/s measured (or the rate at which
///              GossipScaleTests' joining host takes records in its own polls)
///     p99      the rescan finds exceptions in table order: 0.99 × the burst, + the p50 measured
struct Exceptions {
    let hosts: Double, connections: Double, lifetime: Double
    let exceptions: Double
    let mbps: Double
    let burstSeconds: Double, burstMbps: Double
    let memoryBytes: Double
    let syncRecords: Double, syncRate: Double, syncSeconds: Double
    let p99Ms: Double
    let fixedBytes: Double, slotBytes: Double, fitted: Bool
    let checks: [String]
    let steadyModel: GossipModel

    /// Records a joining host takes per second in its own polls (receive, MAC, decode, apply),
    /// measured by GossipScaleTests (release build, 1,000,000 entries, the slowest of three runs:
    /// 1.88, 2.30 and 3.37 M/s; docs/gossip.md, "Joining"): the 63 peers answer from their own
    /// machines, so the joining host is the bottleneck. Used when this run's syncs were too small
    /// to measure a rate (the handshake, not the records, takes their time).
    static let scaleTestSyncRate = 1_880_000.0

    /// The share of the table's slots whose host changes when backend 198.18.101.1:8080 of host
    /// 1 joins the H backends 198.18.100.h:8080 (SimConfig's services).
    static func movedShare(hosts: Int) -> Double {
        func address(_ a: Int, _ b: Int, _ c: Int) -> [UInt8] { [198, 18, UInt8(a), UInt8(b & 255)] + [6, 0x1f, 0x90] }
        var keys = (1...hosts).map { address(100 + ($0 >> 8), $0, 0) }
        var owners = Array(1...hosts)
        let size = 65537
        let before = Maglev.populate(keys: keys, weights: owners.map { _ in 1 }, size: size)!
        keys.append(address(101, 1, 0))
        owners.append(1)
        let after = Maglev.populate(keys: keys, weights: owners.map { _ in 1 }, size: size)!
        var moved = 0
        for slot in 0..<size where owners[Int(before[slot])] != owners[Int(after[slot])] { moved += 1 }
        return Double(moved) / Double(size)
    }

    init(arguments: Arguments, results: [(Int, [String: Double])], fixedBytes: Double?, slotBytes: Double?) {
        hosts = Double(arguments.targetHosts)
        connections = Double(arguments.targetConnections)
        lifetime = arguments.targetLifetime
        exceptions = Self.movedShare(hosts: arguments.targetHosts) * hosts * connections
        checks = results.map { h, r in
            let model = Self.movedShare(hosts: h) * Double(h) * (r["connections"] ?? 0)
            return String(format: "  %3d hosts: %.0f exceptions after the change, the model says %.0f (%.3f%% of the slots change host); every one on every peer after %.3f s",
                          h, r["exceptions"] ?? 0, model, 100 * Self.movedShare(hosts: h), r["burst_s"] ?? 0)
        }
        let events = 2 * exceptions / (hosts * lifetime)
        steadyModel = GossipModel(hosts: Int(hosts), eventsPerSecond: events, pollsPerSecond: 100, heartbeatMs: 200,
                                  digestMs: 1000, multicast: arguments.options.multicast)
        mbps = steadyModel.mbps
        // The fit over the sizes run, or (when every size had the same table, as exceptions runs
        // do) the one measured by the unicast run of README "Results": 7.05 MB + 96.7 B per slot.
        fitted = fixedBytes != nil
        self.fixedBytes = fixedBytes ?? 7.05e6
        self.slotBytes = slotBytes ?? 96.7
        let positions = 1.25 * (connections + exceptions)
        burstSeconds = positions / (65_536 * 100)
        let records = exceptions * (GossipModel.recordBytes + (GossipModel.flowsOverhead + GossipModel.linkOverhead) / GossipModel.recordsPerDatagram)
        burstMbps = records * 8 / burstSeconds / 1e6
        memoryBytes = self.fixedBytes + self.slotBytes * positions + 24 * exceptions / hosts + Double(ReceiveBatchSize.bytes)
        // Every other owner's exceptions once, its own from `GossipNode.yoursPeers` (2) peers.
        syncRecords = exceptions * (hosts - 1) / hosts + min(2, hosts - 1) * exceptions / hosts
        let largest = results.last?.1 ?? [:]
        let measuredRecords = largest["sync_records"] ?? 0, measuredSeconds = largest["sync_s"] ?? -1
        syncRate = measuredRecords >= 100_000 && measuredSeconds > 0 ? measuredRecords / measuredSeconds : Self.scaleTestSyncRate
        syncSeconds = syncRecords / syncRate
        p99Ms = 0.99 * burstSeconds * 1000 + (largest["p50_ms"] ?? 0)
    }

    func report() {
        print("exceptions (replicate: exceptions; measured: the count after one backend was added, next to the model):")
        checks.forEach { print($0) }
        print(String(format: "  at the target: %.3g exceptions per table change (of %.3g flows); one change per %.0f s lifetime: %.0f events/s per host; %.3f Mbit/s per host in the busier direction (heartbeats, digests, exceptions)",
                     exceptions, hosts * connections, lifetime, steadyModel.eventsPerSecond, mbps))
        print(String(format: "  re-announce burst after a change: every host receives %.3g records in %.1f s (the owners' rescans: %.3g positions at 65,536 per poll, 100 polls/s): %.0f Mbit/s (%.2f%% of 10 Gbit/s) for that time",
                     exceptions, burstSeconds, 1.25 * (connections + exceptions), burstMbps, burstMbps / 100))
        print(String(format: "  memory per host: a table for its %.3g own flows and %.3g exceptions: %.0f B fixed + %.1f B per slot (%@), capacity 1.25 × entries, + 24 B per own exception",
                     connections, exceptions, fixedBytes, slotBytes, fitted ? "fitted over the sizes above" : "the fit of the unicast run in the README"))
        print(String(format: "  sync: a restarted host receives %.3g records (every other owner's exceptions once, its own from two peers) at %.0f records/s (%@); a new host only %.3g: %.1f s; with no change in the last lifetimes, only the handshake",
                     syncRecords, syncRate, syncRate == Self.scaleTestSyncRate ? "a joining host's own polls, GossipScaleTests, release" : "measured here",
                     exceptions, exceptions / syncRate))
        print(String(format: "  propagation p99 of the exceptions: 0.99 × the burst + the p50 measured at the largest size: %.0f ms (daisy chaining covers that time)", p99Ms))
    }
}
