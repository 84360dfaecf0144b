import Foundation
import SwitchyardCluster

/// What the node counts while it runs (written by the control thread under the node's lock).
struct Stats {
    var polls: UInt64 = 0
    var pollBudgetExhausted: UInt64 = 0
    var datagramsSent: UInt64 = 0
    var datagramsReceived: UInt64 = 0
    var bytesSent: UInt64 = 0
    var bytesReceived: UInt64 = 0
    var sendErrors: UInt64 = 0
    /// Datagrams sent to the multicast group, and read from the group's socket.
    var multicastSent: UInt64 = 0
    var multicastReceived: UInt64 = 0
    /// Messages sent and accepted, by kind (index = GossipKind raw value).
    var sent = [UInt64](repeating: 0, count: 8)
    var accepted = [UInt64](repeating: 0, count: 8)
    var ownMessages: UInt64 = 0
    var dropped: [GossipDrop: UInt64] = [:]
    var opensSent: UInt64 = 0
    var closesSent: UInt64 = 0
    /// `replicate: exceptions`: opens and closes not sent (the tables imply them), table rescans,
    /// and what the rescans announced and withdrew.
    var opensImplied: UInt64 = 0
    var closesImplied: UInt64 = 0
    var tableRescans: UInt64 = 0
    var exceptionsAnnounced: UInt64 = 0
    var exceptionsWithdrawn: UInt64 = 0
    var opensReceived: UInt64 = 0
    var opensApplied: UInt64 = 0
    var opensRefreshed: UInt64 = 0
    var closesReceived: UInt64 = 0
    var closesApplied: UInt64 = 0
    var closesIgnored: UInt64 = 0
    var conflicts: UInt64 = 0
    var yielded: UInt64 = 0
    var tableFull: UInt64 = 0
    var staleEvents: UInt64 = 0
    var ownedRebuilds: UInt64 = 0
    var unknownOwners: UInt64 = 0
    var digestMismatches: UInt64 = 0
    var repairsStarted: UInt64 = 0
    var repairsCompleted: UInt64 = 0
    var sweptEntries: UInt64 = 0
    var syncRequestsSent: UInt64 = 0
    var syncRequestsReceived: UInt64 = 0
    var syncRetries: UInt64 = 0
    var syncPagesSent: UInt64 = 0
    var syncPagesReceived: UInt64 = 0
    var syncPagesIgnored: UInt64 = 0
    var syncRecordsApplied: UInt64 = 0
    var syncResponsesCompleted: UInt64 = 0
    var fullSyncsCompleted: UInt64 = 0
    var restartsSeen: UInt64 = 0
    var peersDown: UInt64 = 0
    var peersRecovered: UInt64 = 0
    var forgottenFlows: UInt64 = 0
    var kernelDrops: UInt64 = 0
    var downDeferred: UInt64 = 0
    var challengesSent: UInt64 = 0
    var challengesAnswered: UInt64 = 0
    /// CHALLENGE messages that passed every check before the body (MAC included), answered or not:
    /// what counts a challenge from an incarnation not verified yet, which is answered, not accepted.
    var challengesReceived: UInt64 = 0
    var peersVerified: UInt64 = 0
    var syncPageGaps: UInt64 = 0
    var syncGaveUp: UInt64 = 0
    /// `replicate: exceptions`: live peers asked at start for this host's own flows in place of a
    /// silent one (`GossipNode.coverYours`).
    var yoursReassigned: UInt64 = 0
    var listenersApplied: UInt64 = 0
    var listenersStale: UInt64 = 0
    var synchronisedAfterMs: Int?
}

/// Propagation lag of flow batches (sender's timestamp to receipt) since the node started, in
/// buckets: what Prometheus exports as `switchyard_gossip_propagation_seconds`.
public struct LagHistogram: Sendable, Equatable {
    /// Upper bounds of the buckets, microseconds; a last bucket takes everything above.
    public static let boundsMicros: [UInt64] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
                                                100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000]
    /// Samples per bucket (not cumulative); `boundsMicros.count + 1` buckets.
    public var counts = [UInt64](repeating: 0, count: LagHistogram.boundsMicros.count + 1)
    public var sumMicros: UInt64 = 0
    public var count: UInt64 = 0

    public init() {}

    mutating func record(_ micros: UInt64) {
        let bucket = Self.boundsMicros.firstIndex { micros <= $0 } ?? Self.boundsMicros.count
        counts[bucket] += 1
        sumMicros &+= micros
        count += 1
    }
}

/// A snapshot of a node's counters, for `switchyard run`'s statistics and exporters.
public struct GossipCounters: Sendable {
    public struct PeerStatus: Sendable, Equatable {
        public var hostID: Int
        public var endpoint: String
        public var alive: Bool
        /// Milliseconds since the peer was last heard (nil: never).
        public var silenceMs: Int?
        public var incarnation: UInt64
        /// The peer said it holds its peers' state.
        public var synchronised: Bool
        /// Flows this host holds as owned by the peer.
        public var flows: Int
        /// Flows the peer says it owns (its last heartbeat).
        public var reportedFlows: Int
        public var lastDigestMatched: Bool
        public var messages: UInt64
        /// Propagation lag of its last flow batch, microseconds (its clock against ours).
        public var lastLagMicros: UInt64
        /// Its incarnation was proven live by a challenge (its messages are accepted).
        public var verified: Bool
        /// This host's full sync from the peer at start: records received and the peer's
        /// estimate of the total; done, or given up on (it then continues in the background).
        public var syncReceived: UInt64
        public var syncExpected: UInt64
        public var syncDone: Bool
        public var syncGaveUp: Bool
    }

    public var hostID: Int
    public var incarnation: UInt64
    public var synchronised: Bool
    public var synchronisedAfterMs: Int?
    public var peers: [PeerStatus]
    /// Entries in the connection table (local and remote).
    public var mapSize: Int
    /// Flows this host owns, as announced.
    public var ownedFlows: Int
    /// Flows held as owned by peers.
    public var remoteFlows: Int
    /// Propagation lag of flow batches (sender timestamp to receipt), over the last 1024.
    public var lagP50Micros: UInt64
    public var lagP99Micros: UInt64
    public var lagSamples: Int
    public var lagHistogram: LagHistogram
    /// Named counts: `sent-*`, `received-*`, `dropped-*` (one per `GossipDrop`), and the rest.
    public var values: [(name: String, value: UInt64)]

    public func value(_ name: String) -> UInt64 { values.first { $0.name == name }?.value ?? 0 }
    public func dropped(_ reason: GossipDrop) -> UInt64 { value("dropped-" + reason.rawValue) }
    public var droppedTotal: UInt64 { values.filter { $0.name.hasPrefix("dropped-") }.reduce(0) { $0 + $1.value } }

    /// A plain-text table: the node, its peers, then every count.
    public func table() -> String {
        var lines = ["gossip host \(hostID) incarnation \(incarnation) synchronised \(synchronised)"
            + (synchronisedAfterMs.map { " (after \($0) ms)" } ?? "")
            + "  map \(mapSize)  owned \(ownedFlows)  remote \(remoteFlows)"
            + "  lag p50 \(lagP50Micros) µs p99 \(lagP99Micros) µs (\(lagSamples) samples)"]
        lines.append("  peer  endpoint               state  silence_ms  flows  reported  digest  messages  lag_us")
        for p in peers {
            lines.append("  " + [pad(String(p.hostID), 4), pad(p.endpoint, 21), pad(p.alive ? "up" : "down", 5),
                                 pad(p.silenceMs.map(String.init) ?? "-", 10), pad(String(p.flows), 5),
                                 pad(String(p.reportedFlows), 8), pad(p.lastDigestMatched ? "match" : "differ", 6),
                                 pad(String(p.messages), 8), pad(String(p.lastLagMicros), 6)].joined(separator: "  "))
        }
        let width = values.map(\.name.count).max() ?? 0
        for (name, value) in values where value != 0 || name.hasPrefix("dropped-") {
            lines.append("  " + name + String(repeating: " ", count: width - name.count) + "  \(value)")
        }
        return lines.joined(separator: "\n")
    }

    /// The same as one JSON object.
    public var json: String {
        var object: [String: Any] = [
            "host": hostID, "incarnation": incarnation, "synchronised": synchronised, "map_size": mapSize,
            "owned_flows": ownedFlows, "remote_flows": remoteFlows, "lag_p50_us": lagP50Micros,
            "lag_p99_us": lagP99Micros, "lag_samples": lagSamples,
        ]
        if let synchronisedAfterMs { object["synchronised_after_ms"] = synchronisedAfterMs }
        object["peers"] = peers.map { p -> [String: Any] in
            var peer: [String: Any] = [
                "host": p.hostID, "endpoint": p.endpoint, "alive": p.alive, "incarnation": p.incarnation,
                "synchronised": p.synchronised, "flows": p.flows, "reported_flows": p.reportedFlows,
                "digest_matched": p.lastDigestMatched, "messages": p.messages, "last_lag_us": p.lastLagMicros,
            ]
            if let silence = p.silenceMs { peer["silence_ms"] = silence }
            return peer
        }
        object["counters"] = Dictionary(uniqueKeysWithValues: values.map { ($0.name, $0.value) })
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

extension GossipNode {
    /// A snapshot of the counters (any thread).
    public func counters(now: UInt64 = GossipClock.monotonicNanoseconds()) -> GossipCounters {
        lock.lock()
        defer { lock.unlock() }
        let s = stats
        let samples = Array(lagSamples.prefix(min(lagCount, lagSamples.count))).sorted()
        func percentile(_ p: Double) -> UInt64 {
            samples.isEmpty ? 0 : samples[min(samples.count - 1, Int(Double(samples.count) * p))]
        }
        let kinds: [(GossipKind, String)] = [(.heartbeat, "heartbeat"), (.flows, "flows"), (.digest, "digest"),
                                             (.syncRequest, "sync-request"), (.syncResponse, "sync-response"),
                                             (.challenge, "challenge"), (.listeners, "listeners")]
        var values: [(String, UInt64)] = [
            ("polls", s.polls), ("poll-budget-exhausted", s.pollBudgetExhausted),
            ("datagrams-sent", s.datagramsSent), ("datagrams-received", s.datagramsReceived),
            ("kernel-drops", kernelDropsSeen), ("receive-buffer-bytes", UInt64(socket.receiveBufferBytes)),
            ("bytes-sent", s.bytesSent), ("bytes-received", s.bytesReceived), ("send-errors", s.sendErrors),
            ("multicast-sent", s.multicastSent), ("multicast-received", s.multicastReceived),
        ]
        for (kind, name) in kinds { values.append(("sent-" + name, s.sent[Int(kind.rawValue)])) }
        for (kind, name) in kinds { values.append(("received-" + name, s.accepted[Int(kind.rawValue)])) }
        values.append(("own-messages", s.ownMessages))
        for reason in GossipDrop.allCases { values.append(("dropped-" + reason.rawValue, s.dropped[reason] ?? 0)) }
        values += [
            ("opens-sent", s.opensSent), ("closes-sent", s.closesSent),
            ("opens-received", s.opensReceived), ("opens-applied", s.opensApplied), ("opens-refreshed", s.opensRefreshed),
            ("closes-received", s.closesReceived), ("closes-applied", s.closesApplied), ("closes-ignored", s.closesIgnored),
            ("conflicts", s.conflicts), ("yielded", s.yielded), ("table-full", s.tableFull),
            ("stale-events", s.staleEvents), ("owned-rebuilds", s.ownedRebuilds), ("unknown-owners", s.unknownOwners),
            ("digest-mismatches", s.digestMismatches), ("repairs-started", s.repairsStarted),
            ("repairs-completed", s.repairsCompleted), ("swept-entries", s.sweptEntries),
            ("sync-requests-sent", s.syncRequestsSent), ("sync-requests-received", s.syncRequestsReceived),
            ("sync-retries", s.syncRetries), ("sync-pages-sent", s.syncPagesSent),
            ("sync-pages-received", s.syncPagesReceived), ("sync-pages-ignored", s.syncPagesIgnored),
            ("sync-records-applied", s.syncRecordsApplied), ("sync-responses-completed", s.syncResponsesCompleted),
            ("full-syncs-completed", s.fullSyncsCompleted), ("restarts-seen", s.restartsSeen),
            ("peers-down", s.peersDown), ("peers-recovered", s.peersRecovered), ("forgotten-flows", s.forgottenFlows),
            ("down-deferred", s.downDeferred), ("challenges-sent", s.challengesSent),
            ("challenges-received", s.challengesReceived), ("challenges-answered", s.challengesAnswered), ("peers-verified", s.peersVerified),
            ("sync-page-gaps", s.syncPageGaps), ("sync-gave-up", s.syncGaveUp),
            ("sync-yours-reassigned", s.yoursReassigned),
            ("listeners-applied", s.listenersApplied), ("listeners-stale", s.listenersStale),
            ("opens-implied", s.opensImplied), ("closes-implied", s.closesImplied), ("table-rescans", s.tableRescans),
            ("exceptions-announced", s.exceptionsAnnounced), ("exceptions-withdrawn", s.exceptionsWithdrawn),
        ]
        let peerStatus = peers.map { p in
            GossipCounters.PeerStatus(
                hostID: p.member.hostID, endpoint: p.endpoint.description, alive: p.alive,
                silenceMs: p.lastHeard == 0 ? nil : Int((now &- p.lastHeard) / 1_000_000), incarnation: p.incarnation,
                synchronised: p.synchronised, flows: p.flows, reportedFlows: Int(p.reportedFlows),
                lastDigestMatched: p.lastDigestMatched, messages: p.messages, lastLagMicros: p.lastLagMicros,
                verified: p.verified,
                syncReceived: p.sync?.scope.isFull == true ? p.sync!.received : (p.lastSync?.received ?? 0),
                syncExpected: p.sync?.scope.isFull == true ? p.sync!.expected : (p.lastSync?.expected ?? 0),
                syncDone: p.fullSyncDone, syncGaveUp: p.syncGaveUp)
        }
        return GossipCounters(hostID: Int(localHostID), incarnation: incarnation, synchronised: synchronisedFlag,
                              synchronisedAfterMs: s.synchronisedAfterMs, peers: peerStatus, mapSize: table.count,
                              ownedFlows: owned.count, remoteFlows: peerStatus.reduce(0) { $0 + $1.flows },
                              lagP50Micros: percentile(0.5), lagP99Micros: percentile(0.99), lagSamples: samples.count, lagHistogram: lagHistogram,
                              values: values.map { (name: $0.0, value: $0.1) })
    }
}
