import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// The gossip control plane of one host (seed 004): it tells the other hosts which connections
/// this host owns and writes what they own into the connection table, as `.remote` entries that
/// the data-plane lcores read without locks.
///
///     data-plane lcores ─opened/closed events─► ClusterRuntime.tick() ─► poll(events:)
///                                                                          │
///        own flows (set of key digests, 64 bucket sums) ◄──────────────────┤
///        FLOWS batches, HEARTBEAT, DIGEST ──► UDP (multicast or each member) ──► peers
///                                                                          │
///     peers ──► UDP ──► recvmmsg until the socket is empty (or the poll's budget) ──┤
///        size ► magic ► version ► kind/length ► sender address ► incarnation, replay window
///        (reads only) ► HMAC ► CHALLENGE, or: incarnation proven live ► body
///        └─► connection table: .remote entries owned by the sender (rte_hash, RCU-reclaimed)
///            per-peer bucket sums ◄─ compared with the peer's DIGEST ─► SYNC_REQUEST (repair)
///
/// Rules (docs/gossip.md): each host is the authority for the flows it owns; two claims on one
/// flow are settled by the lower host id; a restarted peer keeps its flows (it takes them back
/// by a full sync); a down peer's flows are kept for `down_retention_ms`, then deleted.
///
/// One thread (the control thread) calls `poll`; `counters()` may be called from any thread.
public final class GossipNode: @unchecked Sendable {
    public let settings: GossipSettings
    public let cluster: ClusterRuntime
    public let localHostID: UInt16
    /// This run of this host: wall-clock milliseconds at start (high 48 bits) and 16 random bits.
    public let incarnation: UInt64
    /// The address and port this node sends from and receives unicast on.
    public let localEndpoint: GossipEndpoint
    /// This host's member address and port (what peers expect as the source of its messages).
    let ownMember: GossipEndpoint
    /// Test hook: the share of received datagrams (0...1) thrown away before any processing, to
    /// simulate a lossy network. Counted as `injected-loss`. Never set outside tests.
    public var injectedReceiveLoss: Double = 0
    /// Listener registration (GossipNode+Listeners.swift): this host's set is sent from it, peers'
    /// sets are applied to it. Nil: LISTENERS are neither sent nor applied.
    public var listenerBook: ListenerBook?
    var listenersSentVersion: UInt64?
    var lastListeners: UInt64 = 0
    /// Test hook: received datagrams held back before processing (GossipNode+TestHooks.swift).
    var delayHook = DelayHook()

    let table: ConnectionTable
    let view: ConnectionView
    let authenticator: GossipAuthenticator
    let socket: GossipSocket
    let multicastSocket: GossipSocket?
    let multicastGroup: GossipEndpoint?
    var peers: [Peer]
    let lock = NSLock()

    // Time.
    let startedAt: UInt64
    var lastHeartbeat: UInt64 = 0
    var lastDigest: UInt64 = 0
    var sentAnything = false
    let heartbeatNs: UInt64, peerTimeoutNs: UInt64, digestNs: UInt64, retentionNs: UInt64, syncRetryNs: UInt64
    var sequence: UInt64 = 0

    // What this host owns, as announced: key digests and per-bucket sums.
    var owned = Set<UInt64>()
    var ownedCounts = [UInt32](repeating: 0, count: GossipWire.buckets)
    var ownedHashes = [UInt64](repeating: 0, count: GossipWire.buckets)
    var eventsRefusedSeen: UInt64 = 0
    // `replicate: exceptions` (GossipNode+Exceptions.swift): the tables the owned set follows.
    var currentTables: ServiceDirectory?
    var tablesSeen: ObjectIdentifier?
    var rescanCursor = 0
    var rescanLeft = 0

    /// Per table position: the generation of the repair that last confirmed the entry there.
    let marks: UnsafeMutablePointer<UInt32>
    var generation: UInt32 = 0
    var nextRequestID: UInt32 = 1

    internal(set) var synchronisedFlag = false
    var stats = Stats()
    var lagSamples = [UInt64](repeating: 0, count: 1024)
    var lagCount = 0
    var lagHistogram = LagHistogram()
    /// Flow records waiting for the next batch (flushed at the end of each poll).
    var outgoing: [FlowRecord] = []

    let sendBuffer: UnsafeMutableRawBufferPointer
    let receiveBatch = ReceiveBatch()
    /// When the receive path last saw the kernel drop datagrams or stopped at its budget with
    /// datagrams still waiting: until `peer_timeout_ms` after that, no peer is declared down.
    var lastOverflow: UInt64 = 0
    var overflowSeen = false
    var kernelDropsSeen: UInt64 = 0
    let receiveBudgetNs: UInt64
    var lastRebuild: UInt64 = 0
    var random: UInt64
    let qsbr: OpaquePointer?
    /// The lcore id the polling thread registered on `qsbr` with.
    var qsbrReader: UInt32?

    /// Positions scanned per poll for each sync response being sent.
    static let scanBudget = 65536
    /// CHALLENGE datagrams of an unverified incarnation whose MAC is checked per poll and peer.
    static let unverifiedChecksPerPoll = 8

    /// `qsbr`: the data-plane lcores' RCU variable, when the table has one. The thread that calls
    /// `poll` then registers on it as a reader and reports a quiescent state at the end of every
    /// poll, so the entries it reads (its own flows, sync scans) cannot be reused under it.
    public init(cluster: ClusterRuntime, settings: GossipSettings, qsbr: OpaquePointer? = nil,
                now: UInt64 = GossipClock.monotonicNanoseconds()) throws
    {
        self.cluster = cluster
        self.qsbr = qsbr
        self.settings = settings
        let local = cluster.configuration.localHostID
        localHostID = UInt16(local)
        table = cluster.connections
        view = table.view
        authenticator = GossipAuthenticator(key: settings.key)
        guard let member = settings.member(host: local) else { throw GossipError("host \(local) has no gossip member") }
        localEndpoint = GossipEndpoint(address: settings.bindAddress, port: settings.bindPort)
        ownMember = GossipEndpoint(address: member.address, port: member.port)
        socket = try GossipSocket(bind: localEndpoint, reuse: false)
        if let m = settings.multicast {
            let interface = GossipEndpoint(address: m.interface, port: 0)
            let group = GossipEndpoint(address: m.group, port: m.port)
            try socket.setMulticastSending(interface: interface, ttl: m.ttl, loop: m.loop)
            // An IPv6 group of link-local scope (ff02::/16) is bound with its interface as scope.
            let bytes = m.group.bytes
            let scope = m.group.isIPv4 || bytes[1] & 0x0f > 2 ? 0 : try GossipSocket.interfaceIndex(holding: m.interface)
            let receiver = try GossipSocket(bind: group, reuse: true, scope: scope)
            try receiver.join(group: group, interface: interface)
            multicastSocket = receiver
            multicastGroup = group
        } else {
            multicastSocket = nil
            multicastGroup = nil
        }
        peers = settings.members.filter { $0.hostID != local }.enumerated().map { Peer(member: $0.element, index: $0.offset, window: settings.replayWindow) }

        var seed = UInt64.random(in: 0...UInt64.max)
        if seed == 0 { seed = now ^ UInt64(getpid()) }
        random = seed
        incarnation = (GossipClock.wallMicroseconds() / 1000) << 16 | (seed & 0xffff)
        startedAt = now
        let ms: (Int) -> UInt64 = { UInt64($0) * 1_000_000 }
        heartbeatNs = ms(settings.heartbeatMilliseconds)
        peerTimeoutNs = ms(settings.peerTimeoutMilliseconds)
        digestNs = ms(settings.digestIntervalMilliseconds)
        retentionNs = ms(settings.downRetentionMilliseconds)
        syncRetryNs = max(ms(2 * settings.heartbeatMilliseconds), 100_000_000)

        marks = .allocate(capacity: table.positions)
        marks.initialize(repeating: 0, count: table.positions)
        sendBuffer = .allocate(byteCount: 2048, alignment: 16)
        receiveBudgetNs = UInt64(settings.receiveBudgetMilliseconds) * 1_000_000
        eventsRefusedSeen = table.eventsRefused
        injectedReceiveLoss = settings.testReceiveLoss
        // A host that starts asks every member for the whole ownership state before it claims.
        // With `replicate: exceptions`, each peer sends its own exceptions, and two of them
        // (`yoursPeers`) this host's own as well: every peer holds them, one copy is enough.
        let yours = settings.replicate == .exceptions ? Self.firstYoursPeers(local: local, count: peers.count) : []
        for peer in peers {
            let scope: SyncScope = settings.replicate != .exceptions ? .everything
                : yours.contains(peer.index) ? .ownedAndYours : .ownedAtStart
            peer.askedYours = scope == .ownedAndYours
            peer.sync = SyncState(requestID: takeRequestID(), scope: scope, buckets: ~0, generation: 0)
        }
        if peers.isEmpty { synchronisedFlag = true }
    }

    /// `replicate: exceptions`: how many peers a starting host asks for its own flows besides
    /// theirs (scope owned-and-yours). Two, so that one silent peer costs no waiting; a silent
    /// one is replaced by another live peer (`coverYours`).
    static let yoursPeers = 2

    /// The peers (by index) a starting host asks for its own flows first: `yoursPeers`
    /// consecutive ones from an index that depends on the host, so that restarts of different
    /// hosts do not all load the same peers.
    static func firstYoursPeers(local: Int, count: Int) -> Set<Int> {
        guard count > 0 else { return [] }
        return Set((0..<min(yoursPeers, count)).map { (local + $0) % count })
    }

    deinit {
        if let qsbr, let reader = qsbrReader { sy_qsbr_unregister(qsbr, reader) }
        marks.deallocate()
        sendBuffer.deallocate()
    }

    /// True once this host holds the ownership state of its peers: every member has answered a
    /// full sync, or has stayed silent for `peer_timeout_ms` since start. Until then the engine
    /// should not claim flows (docs/gossip.md, "Joining").
    public var isSynchronised: Bool {
        lock.lock()
        defer { lock.unlock() }
        return synchronisedFlag
    }

    // MARK: - The control thread's entry point

    /// One round of gossip: announce `events` (this host's opened/closed flows, from
    /// `ClusterRuntime.tick().events`), receive what is waiting (within the poll's budget), send
    /// heartbeats, digests, sync requests and sync response pages when due. Call every ~10 ms.
    public func poll(events: [sy_flow_event], now: UInt64 = GossipClock.monotonicNanoseconds()) {
        lock.lock()
        defer { lock.unlock() }
        _ = sy_thread_ensure_lcore() // rte_hash adds and deletes use per-lcore caches
        if let qsbr, qsbrReader == nil, sy_lcore_id() < sy_max_lcore() {
            qsbrReader = sy_lcore_id()
            _ = sy_qsbr_register(qsbr, qsbrReader!)
        }
        defer { if let qsbr, let reader = qsbrReader { sy_qsbr_quiescent(qsbr, reader) } }
        stats.polls += 1
        followTables()
        announce(events)
        refreshOwnedIfEventsWereLost(now: now)
        receive(now: now)
        flushOutgoing() // closes of flows this host yielded while receiving
        checkLiveness(now: now)
        if !sentAnything || now &- lastHeartbeat >= heartbeatNs { sendHeartbeat(now: now) }
        if synchronisedFlag && now &- lastDigest >= digestNs { sendDigest(now: now) }
        sendListenersIfDue(now: now)
        driveSyncRequests(now: now)
        sendSyncPages()
        sentAnything = true
    }

    /// Processes one datagram as if it had arrived from `source` (poll calls this for each one it
    /// reads; tests and tools may feed datagrams directly). Returns why it was dropped, or nil.
    @discardableResult
    public func handle(datagram: UnsafeRawBufferPointer, from source: GossipEndpoint,
                       now: UInt64 = GossipClock.monotonicNanoseconds()) -> GossipDrop?
    {
        lock.lock()
        defer { lock.unlock() }
        _ = sy_thread_ensure_lcore()
        return process(datagram, from: source, now: now)
    }


    /// The nonce this host asked `host` to answer, if it is waiting for one. For tests and tools
    /// that speak as a member (they answer it with a CHALLENGE whose `answer` is this nonce).
    public func pendingChallenge(host: Int) -> UInt64? {
        lock.lock()
        defer { lock.unlock() }
        guard let peer = peers.first(where: { $0.member.hostID == host }), peer.challengeNonce != 0 else { return nil }
        return peer.challengeNonce
    }

    // MARK: - Helpers

    func recordLag(_ micros: UInt64, peer: Peer) {
        lagSamples[lagCount % lagSamples.count] = micros
        lagCount += 1
        lagHistogram.record(micros)
        peer.lastLagMicros = micros
    }

    func nextRandomUnit() -> Double {
        random &+= 0x9e37_79b9_7f4a_7c15
        var z = random
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53)
    }
}

// MARK: - Per-peer state

/// Everything this host keeps about one peer; fixed size (bounded per-peer state).
final class Peer {
    let member: GossipMember
    let index: Int
    let endpoint: GossipEndpoint
    /// The incarnation proven live by a challenge (0: none yet); only its messages are accepted.
    var incarnation: UInt64 = 0
    var verified = false
    /// The nonce this host asked the peer to answer (0: none), and when it last asked.
    var challengeNonce: UInt64 = 0
    var challengeSentAt: UInt64 = 0
    /// The poll in which this host last answered the peer's challenge (one answer per poll).
    var answeredInPoll: UInt64 = 0
    /// MAC checks spent on CHALLENGEs of an unverified incarnation in poll `unverifiedPoll`.
    var unverifiedPoll: UInt64 = 0
    var unverifiedChecksInPoll = 0
    var window: ReplayWindow
    var lastHeard: UInt64 = 0
    /// A down decision is being held back because the socket overflowed (counted once).
    var downDeferred = false
    /// This host gave up waiting for the peer's full sync at start (it continues in the background).
    var syncGaveUp = false
    /// The full sync's records received and expected, once it completed.
    var lastSync: (received: UInt64, expected: UInt64)?
    /// `replicate: exceptions`: this host asked the peer for its own flows too (scope owned-and-yours).
    var askedYours = false
    var alive = false
    var downSince: UInt64?
    var forgotten = false
    var synchronised = false
    var reportedFlows: UInt32 = 0
    var messages: UInt64 = 0
    var lastLagMicros: UInt64 = 0
    var lastDigestMatched = false
    /// This host's copy of the peer's flows, per bucket (the peer's digest must match it).
    var counts = [UInt32](repeating: 0, count: GossipWire.buckets)
    var hashes = [UInt64](repeating: 0, count: GossipWire.buckets)
    /// A sync this host asked the peer for.
    var sync: SyncState?
    var fullSyncDone = false
    /// A sync response this host is sending to the peer.
    var job: SyncJob?
    /// Removed from `cluster.hosts` by a reload while it still owns flows: it stays a member
    /// (its closes and digests are applied) until a later reload finds it empty (`updateMembers`).
    var departing = false

    init(member: GossipMember, index: Int, window: Int) {
        self.member = member
        self.index = index
        endpoint = GossipEndpoint(address: member.address, port: member.port)
        self.window = ReplayWindow(size: window)
    }

    var flows: Int { counts.reduce(0) { $0 + Int($1) } }
}

/// The sequence numbers seen from one sender incarnation: the highest, and which of the
/// `size` before it (a bitmap, circular).
struct ReplayWindow {
    let size: Int
    var highest: UInt64 = 0
    var bits: [UInt64]

    init(size: Int) {
        self.size = size
        bits = [UInt64](repeating: 0, count: size / 64)
    }

    func isFresh(_ sequence: UInt64) -> Bool {
        if sequence > highest { return true }
        if highest - sequence >= UInt64(size) { return false }
        let index = Int(sequence % UInt64(size))
        return bits[index / 64] & (1 << UInt64(index % 64)) == 0
    }

    mutating func accept(_ sequence: UInt64) {
        if sequence > highest {
            if sequence - highest >= UInt64(size) {
                for i in bits.indices { bits[i] = 0 }
            } else {
                var s = highest + 1
                while s < sequence {
                    let index = Int(s % UInt64(size))
                    bits[index / 64] &= ~(1 << UInt64(index % 64))
                    s += 1
                }
            }
            highest = sequence
        }
        let index = Int(sequence % UInt64(size))
        bits[index / 64] |= 1 << UInt64(index % 64)
    }

    mutating func reset() {
        highest = 0
        for i in bits.indices { bits[i] = 0 }
    }

    /// After a challenge answered with sequence `sequence`: it and everything before it count as
    /// seen (they were sent before the answer, so they may be recordings).
    mutating func start(at sequence: UInt64) {
        highest = sequence
        for i in bits.indices { bits[i] = ~0 }
    }
}

/// A sync this host asked a peer for: a scan of the peer's table in position order, resumed at
/// `cursor` (where the last in-order page ended) by every new request, so each retry makes
/// progress.
struct SyncState {
    var requestID: UInt32
    var scope: SyncScope
    var buckets: UInt64
    var generation: UInt32
    var cursor: UInt32 = 0
    /// Pages asked for per request: halved after a gap (at least 8), doubled after a window
    /// that arrived in order (at most `GossipWire.syncWindowPages`).
    var window = GossipWire.syncWindowPages
    var sent = false
    /// When a request went out or a page moved the cursor (retry timer).
    var lastProgress: UInt64 = 0
    /// When a page last moved the cursor (0: never).
    var advancedAt: UInt64 = 0
    /// Records received and the responder's last estimate of the total.
    var received: UInt64 = 0
    var expected: UInt64 = 0

    init(requestID: UInt32, scope: SyncScope, buckets: UInt64, generation: UInt32) {
        self.requestID = requestID
        self.scope = scope
        self.buckets = buckets
        self.generation = generation
    }
}

/// A sync response this host is sending: a scan of the table from the request's cursor, one
/// page at a time, at most `window` pages (bounded: one page of records).
struct SyncJob {
    var requestID: UInt32
    var scope: SyncScope
    var buckets: UInt64
    var cursor: Int
    var pageStart: Int
    var windowLeft: Int
    var pending: [FlowRecord] = []
    var pendingBytes = 0

    init(requestID: UInt32, scope: SyncScope, buckets: UInt64, cursor: Int, window: Int) {
        self.requestID = requestID
        self.scope = scope
        self.buckets = buckets
        self.cursor = cursor
        pageStart = cursor
        windowLeft = window
    }
}

/// Clocks: monotonic for timers, wall clock for incarnations and message timestamps.
public enum GossipClock {
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public static func wallMicroseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
