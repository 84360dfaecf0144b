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
///     peers ──► UDP ──► at most max_messages_per_poll datagrams per poll ──┤
///        size ► magic ► version ► sender address ► HMAC ► incarnation ► replay window ► body
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

    /// Per table position: the generation of the repair that last confirmed the entry there.
    let marks: UnsafeMutablePointer<UInt32>
    var generation: UInt32 = 0
    var nextRequestID: UInt32 = 1

    private(set) var synchronisedFlag = false
    var stats = Stats()
    var lagSamples = [UInt64](repeating: 0, count: 1024)
    var lagCount = 0
    var lagHistogram = LagHistogram()

    let sendBuffer: UnsafeMutableRawBufferPointer
    let receiveBuffer: UnsafeMutableRawBufferPointer
    var random: UInt64
    let qsbr: OpaquePointer?
    /// The lcore id the polling thread registered on `qsbr` with.
    var qsbrReader: UInt32?

    /// Positions scanned per poll for each sync response being sent.
    static let scanBudget = 65536

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
            let receiver = try GossipSocket(bind: group, reuse: true)
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
        receiveBuffer = .allocate(byteCount: 2048, alignment: 16)
        eventsRefusedSeen = table.eventsRefused
        injectedReceiveLoss = settings.testReceiveLoss
        // A host that starts asks every member for the whole ownership state before it claims.
        for peer in peers { peer.sync = SyncState(requestID: takeRequestID(), scope: .everything, buckets: ~0, generation: 0) }
        if peers.isEmpty { synchronisedFlag = true }
    }

    deinit {
        if let qsbr, let reader = qsbrReader { sy_qsbr_unregister(qsbr, reader) }
        marks.deallocate()
        sendBuffer.deallocate()
        receiveBuffer.deallocate()
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
    /// `ClusterRuntime.tick().events`), receive at most `max_messages_per_poll` datagrams, send
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
        announce(events)
        refreshOwnedIfEventsWereLost()
        receive(now: now)
        flushOutgoing() // closes of flows this host yielded while receiving
        checkLiveness(now: now)
        if !sentAnything || now &- lastHeartbeat >= heartbeatNs { sendHeartbeat(now: now) }
        if synchronisedFlag && now &- lastDigest >= digestNs { sendDigest(now: now) }
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

    // MARK: - Receiving

    func receive(now: UInt64) {
        var budget = settings.maxMessagesPerPoll
        var sockets = [socket]
        if let multicastSocket { sockets.append(multicastSocket) }
        var idle = 0
        var turn = 0
        while budget > 0 && idle < sockets.count {
            let s = sockets[turn % sockets.count]
            turn += 1
            guard let (length, source) = s.receive(into: receiveBuffer) else {
                idle += 1
                continue
            }
            idle = 0
            budget -= 1
            stats.datagramsReceived += 1
            stats.bytesReceived += UInt64(length)
            if length > receiveBuffer.count {
                drop(.oversized)
                continue
            }
            process(UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<length]), from: source, now: now)
        }
        if budget == 0 { stats.pollBudgetExhausted += 1 }
    }

    @discardableResult
    func process(_ datagram: UnsafeRawBufferPointer, from source: GossipEndpoint, now: UInt64) -> GossipDrop? {
        if injectedReceiveLoss > 0 && nextRandomUnit() < injectedReceiveLoss { return drop(.injectedLoss) }
        let header: GossipHeader
        switch GossipCodec.parseHeader(datagram) {
        case .failure(let reason): return drop(reason)
        case .success(let h): header = h
        }
        if header.sender == localHostID && (source == localEndpoint || source == ownMember) {
            stats.ownMessages += 1 // multicast looped back to us
            return nil
        }
        guard let peer = peers.first(where: { $0.endpoint == source }), peer.member.hostID == Int(header.sender) else {
            return drop(.unknownSender)
        }
        guard GossipCodec.authenticate(datagram, header: header, authenticator: authenticator) else { return drop(.badMAC) }
        let newIncarnation = header.incarnation != peer.incarnation
        if peer.incarnation != 0 && header.incarnation < peer.incarnation { return drop(.staleIncarnation) }
        if newIncarnation && header.incarnation >> 16 > GossipClock.wallMicroseconds() / 1000 + UInt64(settings.maxClockSkewMilliseconds) {
            return drop(.futureIncarnation)
        }
        let fresh = newIncarnation || peer.window.isFresh(header.sequence)
        if !fresh || header.sequence == 0 { return drop(.replayed) }
        let body: GossipBody
        switch GossipCodec.decodeBody(datagram, header: header) {
        case .failure(let reason): return drop(reason)
        case .success(let b): body = b
        }
        if let reason = validate(body, from: peer) { return drop(reason) }

        // Accepted: from here on state changes.
        if newIncarnation { peerRestarted(peer, incarnation: header.incarnation) }
        peer.window.accept(header.sequence)
        peer.lastHeard = now
        peer.messages += 1
        if !peer.alive {
            peer.alive = true
            if peer.downSince != nil { stats.peersRecovered += 1 }
            peer.downSince = nil
            peer.forgotten = false
        }
        stats.accepted[Int(header.kind)] += 1
        switch body {
        case .heartbeat(let h):
            peer.synchronised = h.synchronised
            peer.reportedFlows = h.ownedFlows
        case .flows(let records):
            let lag = GossipClock.wallMicroseconds() &- header.timestamp
            recordLag(Int64(bitPattern: lag) < 0 ? 0 : lag, peer: peer)
            for record in records { apply(record, from: peer, mark: peer.sync?.scope == .owned ? peer.sync?.generation : nil) }
        case .digest(let digest):
            compare(digest, of: peer, now: now)
        case .syncRequest(let request):
            stats.syncRequestsReceived += 1
            peer.job = request.buckets == 0 ? nil : SyncJob(requestID: request.requestID, scope: request.scope, buckets: request.buckets)
        case .syncResponse(let response):
            receivePage(response, from: peer, now: now)
        }
        return nil
    }

    /// Rules that need this node's state; checked before anything is applied.
    func validate(_ body: GossipBody, from peer: Peer) -> GossipDrop? {
        let sender = UInt16(peer.member.hostID)
        switch body {
        case .flows(let records):
            if records.contains(where: { $0.owner != sender }) { return .malformed }
        case .syncResponse(let response):
            if let sync = peer.sync, sync.requestID == response.requestID, sync.scope == .owned,
               response.records.contains(where: { $0.owner != sender || $0.op != .open })
            {
                return .malformed
            }
            if response.records.contains(where: { $0.op != .open }) { return .malformed }
        default:
            break
        }
        return nil
    }

    @discardableResult
    func drop(_ reason: GossipDrop) -> GossipDrop {
        stats.dropped[reason, default: 0] += 1
        return reason
    }

    /// A peer with a new incarnation: its flows stay (its backends may well have kept their
    /// connections while its engine restarted); it takes them back by a full sync.
    func peerRestarted(_ peer: Peer, incarnation: UInt64) {
        if peer.incarnation != 0 { stats.restartsSeen += 1 }
        peer.incarnation = incarnation
        peer.window.reset()
        peer.synchronised = false
        peer.job = nil
        if let sync = peer.sync, sync.scope == .owned { peer.sync = nil } // it will answer a new request
    }

    // MARK: - Applying claims

    /// Applies one open or close of `record.owner`'s flow.
    func apply(_ record: FlowRecord, from peer: Peer, mark: UInt32?) {
        var key = record.key
        let flowHash = sy_flow_hash(view.hash, &key)
        let digest = FlowDigest.of(&key)
        let position = sy_flow_table_lookup(view.hash, &key, flowHash)
        let entry = position >= 0 ? view.entries + Int(position) : nil
        let control = entry.map { sy_atomic_load_u64(&$0.pointee.control) } ?? 0
        switch record.op {
        case .close:
            stats.closesReceived += 1
            guard position >= 0, FlowEntry.isValid(control), FlowEntry.state(control) == FlowState.remote.rawValue,
                  FlowEntry.owner(control) == record.owner
            else {
                stats.closesIgnored += 1
                return
            }
            view.remove(key: &key, hash: flowHash, position: position, control: control, reason: 4)
            account(owner: record.owner, digest: digest, sign: -1)
            stats.closesApplied += 1
        case .open:
            stats.opensReceived += 1
            claim(record, key: &key, flowHash: flowHash, digest: digest, position: position, control: control, mark: mark)
        }
    }

    /// `record.owner` holds the flow. Conflicts: the lower host id wins, on every host alike.
    func claim(_ record: FlowRecord, key: inout sy_flow_key, flowHash: UInt32, digest: UInt64, position: Int32,
               control: UInt64, mark: UInt32?)
    {
        let owner = record.owner
        if position >= 0 && FlowEntry.isValid(control) {
            let current = FlowEntry.owner(control)
            if current == owner {
                let entry = view.entries + Int(position)
                if current != localHostID
                    && (entry.pointee.backendHigh != record.backendHigh || entry.pointee.backendLow != record.backendLow
                        || FlowEntry.backendPort(control) != record.backendPortNetworkOrder)
                {
                    write(record, key: &key, flowHash: flowHash)
                }
                if let mark { marks[Int(position)] = mark }
                stats.opensRefreshed += 1
                return
            }
            stats.conflicts += 1
            if current < owner { return } // the standing claim wins
            if current == localHostID {
                // This host yields: its entry becomes the winner's, and it withdraws its claim.
                removeOwned(digest)
                queueYield(key: key, backendPort: FlowEntry.backendPort(control))
                stats.yielded += 1
            } else {
                account(owner: current, digest: digest, sign: -1)
            }
        }
        guard let written = write(record, key: &key, flowHash: flowHash) else { return }
        if owner == localHostID { insertOwned(digest) } else { account(owner: owner, digest: digest, sign: 1) }
        if let mark { marks[Int(written)] = mark }
        stats.opensApplied += 1
    }

    /// Writes (inserts or overwrites) the entry of a claim: remote for a peer, local (restored
    /// from a peer's copy after a restart) for this host.
    @discardableResult
    func write(_ record: FlowRecord, key: inout sy_flow_key, flowHash: UInt32) -> Int32? {
        let local = record.owner == localHostID
        let state: FlowState = local ? (key.protocol == 6 ? .established : .datagram) : .remote
        let control = FlowEntry.makeControl(state: state, family: key.family, owner: record.owner,
                                            backendPortNetworkOrder: record.backendPortNetworkOrder)
        guard let position = view.insert(key: &key, hash: flowHash, control: control, backendHigh: record.backendHigh,
                                         backendLow: record.backendLow, now: sy_rdtsc())
        else {
            stats.tableFull += 1
            return nil
        }
        return position
    }

    func account(owner: UInt16, digest: UInt64, sign: Int) {
        guard let peer = peer(owner) else { return }
        let bucket = FlowDigest.bucket(digest)
        if sign > 0 {
            peer.counts[bucket] &+= 1
            peer.hashes[bucket] &+= digest
        } else {
            peer.counts[bucket] &-= 1
            peer.hashes[bucket] &-= digest
        }
    }

    func peer(_ host: UInt16) -> Peer? { peers.first { $0.member.hostID == Int(host) } }

    func insertOwned(_ digest: UInt64) {
        guard owned.insert(digest).inserted else { return }
        let bucket = FlowDigest.bucket(digest)
        ownedCounts[bucket] &+= 1
        ownedHashes[bucket] &+= digest
    }

    func removeOwned(_ digest: UInt64) {
        guard owned.remove(digest) != nil else { return }
        let bucket = FlowDigest.bucket(digest)
        ownedCounts[bucket] &-= 1
        ownedHashes[bucket] &-= digest
    }

    // MARK: - Announcing this host's flows

    var outgoing: [FlowRecord] = []

    func announce(_ events: [sy_flow_event]) {
        for event in events {
            var key = event.key
            let digest = FlowDigest.of(&key)
            if event.kind == UInt8(SY_FLOW_OPENED) {
                guard event.owner == localHostID, let record = ownedRecord(key: &key) else {
                    stats.staleEvents += 1
                    continue
                }
                insertOwned(digest)
                outgoing.append(record)
            } else {
                removeOwned(digest)
                outgoing.append(FlowRecord(op: .close, key: key, owner: localHostID, backendPortNetworkOrder: event.backend_port))
            }
        }
        flushOutgoing()
    }

    /// The open record of a flow this host holds, read from the table (nil when gone or not ours).
    func ownedRecord(key: inout sy_flow_key) -> FlowRecord? {
        let position = sy_flow_table_lookup(view.hash, &key, sy_flow_hash(view.hash, &key))
        guard position >= 0 else { return nil }
        let entry = view.entries + Int(position)
        let control = sy_atomic_load_u64(&entry.pointee.control)
        guard FlowEntry.isValid(control), FlowEntry.owner(control) == localHostID else { return nil }
        let high = entry.pointee.backendHigh, low = entry.pointee.backendLow
        guard sy_atomic_load_u64(&entry.pointee.control) == control else { return nil }
        return FlowRecord(op: .open, key: key, owner: localHostID, backendHigh: high, backendLow: low,
                          backendPortNetworkOrder: FlowEntry.backendPort(control))
    }

    func queueYield(key: sy_flow_key, backendPort: UInt16) {
        outgoing.append(FlowRecord(op: .close, key: key, owner: localHostID, backendPortNetworkOrder: backendPort))
    }

    func flushOutgoing() {
        var rest = outgoing[...]
        while !rest.isEmpty {
            let count = GossipCodec.recordsThatFit(rest, overhead: GossipWire.flowsOverhead)
            let batch = Array(rest.prefix(count))
            rest = rest.dropFirst(count)
            broadcast(.flows(batch))
            for record in batch {
                if record.op == .open { stats.opensSent += 1 } else { stats.closesSent += 1 }
            }
        }
        outgoing.removeAll(keepingCapacity: true)
    }

    // MARK: - Sending

    func encode(_ body: GossipBody) -> Int? {
        sequence += 1
        let header = GossipHeader(kind: body.kind.rawValue, sender: localHostID, incarnation: incarnation,
                                  sequence: sequence, timestamp: GossipClock.wallMicroseconds())
        return GossipCodec.encode(body, header: header, authenticator: authenticator, into: sendBuffer)
    }

    /// To every member: the multicast group, or each member by unicast.
    func broadcast(_ body: GossipBody) {
        guard let length = encode(body) else { return }
        if let group = multicastGroup {
            transmit(length, to: group)
        } else {
            for peer in peers { transmit(length, to: peer.endpoint) }
        }
        stats.sent[Int(body.kind.rawValue)] += 1
    }

    func unicast(_ body: GossipBody, to peer: Peer) {
        guard let length = encode(body) else { return }
        transmit(length, to: peer.endpoint)
        stats.sent[Int(body.kind.rawValue)] += 1
    }

    func transmit(_ length: Int, to endpoint: GossipEndpoint) {
        if socket.send(sendBuffer.baseAddress!, count: length, to: endpoint) {
            stats.datagramsSent += 1
            stats.bytesSent += UInt64(length)
        } else {
            stats.sendErrors += 1
        }
    }

    func sendHeartbeat(now: UInt64) {
        lastHeartbeat = now
        var total: UInt64 = 0
        for hash in ownedHashes { total &+= hash }
        broadcast(.heartbeat(Heartbeat(synchronised: synchronisedFlag, ownedFlows: UInt32(truncatingIfNeeded: owned.count),
                                       ownedHash: total)))
    }

    func sendDigest(now: UInt64) {
        lastDigest = now
        broadcast(.digest(Digest(counts: ownedCounts, hashes: ownedHashes)))
    }

    // MARK: - Membership

    func checkLiveness(now: UInt64) {
        for peer in peers {
            if peer.alive && now &- peer.lastHeard > peerTimeoutNs {
                peer.alive = false
                peer.downSince = now
                stats.peersDown += 1
            }
            if let since = peer.downSince, !peer.forgotten, now &- since >= retentionNs {
                forget(peer)
            }
        }
        if !synchronisedFlag {
            let waited = now &- startedAt
            synchronisedFlag = peers.allSatisfy { peer in
                peer.fullSyncDone || (!peer.alive && waited >= peerTimeoutNs) || waited >= 10 * peerTimeoutNs
            }
            if synchronisedFlag {
                for peer in peers where peer.sync?.scope == .everything { peer.sync = nil }
                stats.synchronisedAfterMs = Int((now &- startedAt) / 1_000_000)
            }
        }
    }

    /// The down rule's second half: after `down_retention_ms` the peer's flows are deleted (the
    /// consistent hash takes them over) and its incarnation is forgotten.
    func forget(_ peer: Peer) {
        peer.forgotten = true
        let removed = removeEntries { owner, _ in owner == UInt16(peer.member.hostID) }
        stats.forgottenFlows += UInt64(removed)
        peer.counts = [UInt32](repeating: 0, count: GossipWire.buckets)
        peer.hashes = [UInt64](repeating: 0, count: GossipWire.buckets)
        peer.incarnation = 0
        peer.window.reset()
        peer.job = nil
        peer.sync = nil
    }

    /// Removes the remote entries for which `predicate(owner, digest)` holds; returns how many.
    func removeEntries(where predicate: (UInt16, UInt64) -> Bool) -> Int {
        var removed = 0
        for position in 0..<table.positions {
            let entry = view.entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control), FlowEntry.state(control) == FlowState.remote.rawValue else { continue }
            var key = sy_flow_key()
            guard sy_flow_table_key_at(view.hash, Int32(position), &key) == 0 else { continue }
            if predicate(FlowEntry.owner(control), FlowDigest.of(&key)) {
                view.remove(key: &key, hash: sy_flow_hash(view.hash, &key), position: Int32(position), control: control, reason: 4)
                removed += 1
            }
        }
        return removed
    }

    // MARK: - Anti-entropy

    /// A peer's digest of its own flows against what this host holds of them; buckets that
    /// differ are repaired by a sync of that peer's flows.
    func compare(_ digest: Digest, of peer: Peer, now: UInt64) {
        guard synchronisedFlag else { return }
        var mismatched: UInt64 = 0
        for bucket in 0..<GossipWire.buckets
        where digest.counts[bucket] != peer.counts[bucket] || digest.hashes[bucket] != peer.hashes[bucket] {
            mismatched |= 1 << UInt64(bucket)
        }
        peer.lastDigestMatched = mismatched == 0
        guard mismatched != 0 else { return }
        stats.digestMismatches += 1
        guard peer.sync == nil else { return }
        generation &+= 1
        if generation == 0 { generation = 1 }
        peer.sync = SyncState(requestID: takeRequestID(), scope: .owned, buckets: mismatched, generation: generation)
        stats.repairsStarted += 1
    }

    func takeRequestID() -> UInt32 {
        defer { nextRequestID &+= 1 }
        return nextRequestID
    }

    /// Sends pending sync requests, and again when a sync has made no progress for a while.
    func driveSyncRequests(now: UInt64) {
        for peer in peers {
            guard var sync = peer.sync else { continue }
            if sync.scope == .owned && !peer.alive {
                peer.sync = nil // a repair from a down peer waits for its next digest
                continue
            }
            if sync.sent && now &- sync.lastProgress < syncRetryNs { continue }
            if sync.sent {
                sync.requestID = takeRequestID() // pages of the old request are ignored from now on
                stats.syncRetries += 1
            }
            sync.sent = true
            sync.lastProgress = now
            peer.sync = sync
            unicast(.syncRequest(SyncRequest(requestID: sync.requestID, scope: sync.scope, buckets: sync.buckets & ~sync.complete)),
                    to: peer)
            stats.syncRequestsSent += 1
        }
    }

    func receivePage(_ page: SyncResponse, from peer: Peer, now: UInt64) {
        stats.syncPagesReceived += 1
        guard var sync = peer.sync, sync.requestID == page.requestID else {
            stats.syncPagesIgnored += 1
            return
        }
        let bit: UInt64 = 1 << UInt64(page.bucket)
        guard sync.buckets & bit != 0, sync.complete & bit == 0 else {
            stats.syncPagesIgnored += 1
            return
        }
        for record in page.records {
            guard record.owner == localHostID || self.peer(record.owner) != nil else {
                stats.unknownOwners += 1
                continue
            }
            var key = record.key
            let flowHash = sy_flow_hash(view.hash, &key)
            let position = sy_flow_table_lookup(view.hash, &key, flowHash)
            let control = position >= 0 ? sy_atomic_load_u64(&view.entries[Int(position)].control) : 0
            claim(record, key: &key, flowHash: flowHash, digest: FlowDigest.of(&key), position: position, control: control,
                  mark: sync.scope == .owned ? sync.generation : nil)
            stats.syncRecordsApplied += 1
        }
        sync.lastProgress = now
        sync.pages[page.bucket] += 1
        if page.last { sync.totals[page.bucket] = UInt32(page.page + 1) }
        if sync.totals[page.bucket] != 0 && sync.pages[page.bucket] >= sync.totals[page.bucket] {
            sync.complete |= bit
            if sync.scope == .owned { sweep(owner: UInt16(peer.member.hostID), bucket: page.bucket, generation: sync.generation, peer: peer) }
        }
        if sync.complete == sync.buckets {
            if sync.scope == .everything {
                peer.fullSyncDone = true
                stats.fullSyncsCompleted += 1
            } else {
                stats.repairsCompleted += 1
            }
            peer.sync = nil
        } else {
            peer.sync = sync
        }
    }

    /// After a complete repair of `bucket`: remote entries of `owner` there that the owner did not
    /// confirm are stale (a lost close) and go; the bucket's sums are recounted from the table.
    func sweep(owner: UInt16, bucket: Int, generation: UInt32, peer: Peer) {
        var count: UInt32 = 0, hash: UInt64 = 0
        var removed = 0
        for position in 0..<table.positions {
            let entry = view.entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control), FlowEntry.state(control) == FlowState.remote.rawValue,
                  FlowEntry.owner(control) == owner
            else { continue }
            var key = sy_flow_key()
            guard sy_flow_table_key_at(view.hash, Int32(position), &key) == 0 else { continue }
            let digest = FlowDigest.of(&key)
            guard FlowDigest.bucket(digest) == bucket else { continue }
            if marks[position] == generation {
                count &+= 1
                hash &+= digest
            } else {
                view.remove(key: &key, hash: sy_flow_hash(view.hash, &key), position: Int32(position), control: control, reason: 4)
                removed += 1
            }
        }
        peer.counts[bucket] = count
        peer.hashes[bucket] = hash
        stats.sweptEntries += UInt64(removed)
    }

    /// Sends pages of the sync responses under way, `sync_pages_per_poll` at most in all. A
    /// response is one scan of the table (at most `scanBudget` positions per poll) that fills one
    /// pending page per bucket; a full page goes out at once, and when the scan ends every
    /// requested bucket gets its last page (empty if need be).
    func sendSyncPages() {
        var pages = settings.syncPagesPerPoll
        let room = GossipWire.maxPayload - GossipWire.syncResponseOverhead
        for peer in peers where pages > 0 {
            guard var job = peer.job else { continue }
            var scanned = 0
            while pages > 0 && !job.scanDone && scanned < Self.scanBudget {
                if job.cursor >= table.positions {
                    job.scanDone = true
                    job.lastPagesDue = job.buckets
                    break
                }
                let position = job.cursor
                job.cursor += 1
                scanned += 1
                guard let (record, bucket) = heldRecord(at: position, buckets: job.buckets, scope: job.scope) else { continue }
                if job.pendingBytes[bucket] + record.encodedSize > room {
                    sendPage(&job, bucket: bucket, last: false, to: peer)
                    pages -= 1
                }
                job.pending[bucket].append(record)
                job.pendingBytes[bucket] += record.encodedSize
            }
            while pages > 0 && job.scanDone && job.lastPagesDue != 0 {
                let bucket = job.lastPagesDue.trailingZeroBitCount
                sendPage(&job, bucket: bucket, last: true, to: peer)
                pages -= 1
                job.lastPagesDue &= ~(1 << UInt64(bucket))
            }
            if job.scanDone && job.lastPagesDue == 0 {
                peer.job = nil
                stats.syncResponsesCompleted += 1
            } else {
                peer.job = job
            }
        }
    }

    func sendPage(_ job: inout SyncJob, bucket: Int, last: Bool, to peer: Peer) {
        unicast(.syncResponse(SyncResponse(requestID: job.requestID, bucket: bucket, page: job.pages[bucket], last: last,
                                           records: job.pending[bucket])), to: peer)
        stats.syncPagesSent += 1
        job.pages[bucket] += 1
        job.pending[bucket].removeAll(keepingCapacity: true)
        job.pendingBytes[bucket] = 0
    }

    /// The entry at `position` as a record and its bucket, when valid, in `buckets`, and in scope.
    func heldRecord(at position: Int, buckets: UInt64, scope: SyncScope) -> (FlowRecord, Int)? {
        let entry = view.entries + position
        let control = sy_atomic_load_u64(&entry.pointee.control)
        guard FlowEntry.isValid(control) else { return nil }
        let owner = FlowEntry.owner(control)
        if scope == .owned && owner != localHostID { return nil }
        var key = sy_flow_key()
        guard sy_flow_table_key_at(view.hash, Int32(position), &key) == 0 else { return nil }
        let bucket = FlowDigest.bucket(FlowDigest.of(&key))
        guard buckets & (1 << UInt64(bucket)) != 0 else { return nil }
        let high = entry.pointee.backendHigh, low = entry.pointee.backendLow
        guard sy_atomic_load_u64(&entry.pointee.control) == control else { return nil }
        return (FlowRecord(op: .open, key: key, owner: owner, backendHigh: high, backendLow: low,
                           backendPortNetworkOrder: FlowEntry.backendPort(control)), bucket)
    }

    /// Events the ring refused never reach `poll`: the owned set is then rebuilt from the table
    /// (peers repair their copies from the digests that follow).
    func refreshOwnedIfEventsWereLost() {
        let refused = table.eventsRefused
        guard refused != eventsRefusedSeen else { return }
        eventsRefusedSeen = refused
        owned.removeAll(keepingCapacity: true)
        ownedCounts = [UInt32](repeating: 0, count: GossipWire.buckets)
        ownedHashes = [UInt64](repeating: 0, count: GossipWire.buckets)
        for position in 0..<table.positions {
            let control = sy_atomic_load_u64(&view.entries[position].control)
            guard FlowEntry.isValid(control), FlowEntry.owner(control) == localHostID else { continue }
            var key = sy_flow_key()
            guard sy_flow_table_key_at(view.hash, Int32(position), &key) == 0 else { continue }
            insertOwned(FlowDigest.of(&key))
        }
        stats.ownedRebuilds += 1
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
    var incarnation: UInt64 = 0
    var window: ReplayWindow
    var lastHeard: UInt64 = 0
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
}

/// A sync this host asked a peer for.
struct SyncState {
    var requestID: UInt32
    var scope: SyncScope
    var buckets: UInt64
    var generation: UInt32
    var complete: UInt64 = 0
    var pages = [UInt32](repeating: 0, count: GossipWire.buckets)
    var totals = [UInt32](repeating: 0, count: GossipWire.buckets)
    var sent = false
    var lastProgress: UInt64 = 0

    init(requestID: UInt32, scope: SyncScope, buckets: UInt64, generation: UInt32) {
        self.requestID = requestID
        self.scope = scope
        self.buckets = buckets
        self.generation = generation
    }
}

/// A sync response this host is sending: one scan of the table, one pending page per bucket
/// (bounded: 64 pages of records at most).
struct SyncJob {
    var requestID: UInt32
    var scope: SyncScope
    var buckets: UInt64
    var cursor = 0
    var scanDone = false
    var lastPagesDue: UInt64 = 0
    var pending = [[FlowRecord]](repeating: [], count: GossipWire.buckets)
    var pendingBytes = [Int](repeating: 0, count: GossipWire.buckets)
    var pages = [Int](repeating: 0, count: GossipWire.buckets)

    init(requestID: UInt32, scope: SyncScope, buckets: UInt64) {
        self.requestID = requestID
        self.scope = scope
        self.buckets = buckets
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
