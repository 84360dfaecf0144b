import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// Anti-entropy: digests compared with per-peer bucket sums, paged sync requests and responses,
/// sweeps of what a repair did not confirm.
extension GossipNode {
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

    /// Sends pending sync requests: a new one when the last window has arrived in order, and
    /// again when a sync has made no progress for a while. Every request asks from the sync's
    /// cursor, so a retry resumes where the last in-order page ended.
    func driveSyncRequests(now: UInt64) {
        for peer in peers {
            guard var sync = peer.sync else { continue }
            if sync.scope == .owned && !peer.alive {
                peer.sync = nil // a repair from a down peer waits for its next digest
                continue
            }
            if !peer.verified { continue } // it asks after the handshake (see receiveChallenge)
            if sync.sent && now &- sync.lastProgress < syncRetryNs { continue }
            if sync.sent { stats.syncRetries += 1 }
            sync.requestID = takeRequestID() // pages of an earlier request are ignored from now on
            sync.sent = true
            sync.lastProgress = now
            peer.sync = sync
            unicast(.syncRequest(SyncRequest(requestID: sync.requestID, scope: sync.scope, buckets: sync.buckets,
                                             cursor: sync.cursor, window: UInt16(sync.window))),
                    to: peer)
            stats.syncRequestsSent += 1
        }
    }

    /// One page of a sync: its records are applied (and, in a repair, marked) whatever its
    /// place; it moves the cursor only when it starts at or before it (in order). A page after a
    /// gap asks again from the cursor at once. The page that reaches the end of the table
    /// completes the sync; the last page of a window asks for the next one.
    func receivePage(_ page: SyncResponse, from peer: Peer, now: UInt64) {
        stats.syncPagesReceived += 1
        guard var sync = peer.sync, sync.requestID == page.requestID else {
            stats.syncPagesIgnored += 1
            // Pages of an earlier request still draining: the peer is answering, and the
            // current request's pages queue behind them, so the retry timer waits.
            if var sync = peer.sync {
                sync.lastProgress = now
                peer.sync = sync
            }
            return
        }
        for record in page.records {
            guard record.owner == localHostID || self.peer(record.owner) != nil else {
                stats.unknownOwners += 1
                continue
            }
            var key = record.key
            let digest = FlowDigest.of(&key)
            guard sync.buckets & (1 << UInt64(FlowDigest.bucket(digest))) != 0 else {
                continue
            }
            let flowHash = sy_flow_hash(view.hash, &key)
            let position = sy_flow_table_lookup(view.hash, &key, flowHash)
            let control = position >= 0 ? sy_atomic_load_u64(&view.entries[Int(position)].control) : 0
            claim(record, key: &key, flowHash: flowHash, digest: digest, position: position, control: control,
                  mark: sync.scope == .owned ? sync.generation : nil)
            stats.syncRecordsApplied += 1
        }
        sync.received += UInt64(page.records.count)
        sync.expected = UInt64(page.expected)
        let inOrder = page.from <= sync.cursor
        if inOrder {
            sync.cursor = max(sync.cursor, page.to)
            sync.lastProgress = now
            sync.advancedAt = now
        } else {
            // A page before this one was lost: ask again from the cursor now (pages of this
            // request still on their way are ignored; what they carried comes again).
            if sync.sent {
                stats.syncPageGaps += 1
                sync.window = max(8, sync.window / 2)
            }
            sync.sent = false
            peer.sync = sync
            return
        }
        if inOrder && page.last {
            if sync.scope == .owned {
                sweep(owner: UInt16(peer.member.hostID), buckets: sync.buckets, generation: sync.generation, peer: peer)
                stats.repairsCompleted += 1
            } else {
                peer.fullSyncDone = true
                stats.fullSyncsCompleted += 1
            }
            if sync.scope.isFull { peer.lastSync = (received: sync.received, expected: sync.expected) }
            peer.sync = nil
            return
        }
        if inOrder && page.windowEnd { // ask for the next window in this poll
            sync.sent = false
            sync.window = min(GossipWire.syncWindowPages, sync.window * 2)
        }
        peer.sync = sync
    }

    /// After a complete repair of `buckets`: remote entries of `owner` there that the owner did
    /// not confirm are stale (a lost close) and go; the buckets' sums are recounted from the
    /// table. One scan of the table for all buckets.
    func sweep(owner: UInt16, buckets: UInt64, generation: UInt32, peer: Peer) {
        var counts = [UInt32](repeating: 0, count: GossipWire.buckets)
        var hashes = [UInt64](repeating: 0, count: GossipWire.buckets)
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
            let bucket = FlowDigest.bucket(digest)
            guard buckets & (1 << UInt64(bucket)) != 0 else { continue }
            if marks[position] == generation {
                counts[bucket] &+= 1
                hashes[bucket] &+= digest
            } else {
                view.remove(key: &key, hash: sy_flow_hash(view.hash, &key), position: Int32(position), control: control, reason: 4)
                removed += 1
            }
        }
        for bucket in 0..<GossipWire.buckets where buckets & (1 << UInt64(bucket)) != 0 {
            peer.counts[bucket] = counts[bucket]
            peer.hashes[bucket] = hashes[bucket]
        }
        stats.sweptEntries += UInt64(removed)
    }

    /// Sends pages of the sync responses under way, `sync_pages_per_poll` at most in all. A
    /// response scans the table from the request's cursor (at most `scanBudget` positions per
    /// poll) and fills one page at a time; a full page goes out at once. The scan stops after
    /// the request's window of pages, or at the end of the table with a last page.
    func sendSyncPages() {
        var pages = settings.syncPagesPerPoll
        let room = GossipWire.maxPayload - GossipWire.syncResponseOverhead
        for peer in peers where pages > 0 {
            guard var job = peer.job else { continue }
            let expected = UInt32(truncatingIfNeeded: job.scope.ownedOnly ? owned.count
                : job.scope == .ownedAndYours ? owned.count + peer.flows
                : exceptionsOnly ? owned.count + peers.reduce(0) { $0 + $1.flows } : table.count)
            var scanned = 0
            var done = false
            while pages > 0 && scanned < Self.scanBudget {
                if job.cursor >= table.positions {
                    sendPage(&job, to: job.cursor, last: true, windowEnd: false, expected: expected, peer: peer)
                    pages -= 1
                    done = true
                    break
                }
                guard let record = heldRecord(at: job.cursor, buckets: job.buckets, scope: job.scope,
                                              requester: UInt16(peer.member.hostID)) else {
                    job.cursor += 1
                    scanned += 1
                    continue
                }
                if job.pendingBytes + record.encodedSize > room {
                    job.windowLeft -= 1
                    sendPage(&job, to: job.cursor, last: false, windowEnd: job.windowLeft == 0, expected: expected, peer: peer)
                    pages -= 1
                    if job.windowLeft == 0 {
                        done = true
                        break
                    }
                }
                job.pending.append(record)
                job.pendingBytes += record.encodedSize
                job.cursor += 1
                scanned += 1
            }
            if done {
                peer.job = nil
                stats.syncResponsesCompleted += 1
            } else {
                peer.job = job
            }
        }
    }

    /// Sends the pending records as the page `job.pageStart..<to`.
    func sendPage(_ job: inout SyncJob, to: Int, last: Bool, windowEnd: Bool, expected: UInt32, peer: Peer) {
        unicast(.syncResponse(SyncResponse(requestID: job.requestID, last: last, windowEnd: windowEnd,
                                           from: UInt32(job.pageStart), to: UInt32(to), expected: expected,
                                           records: job.pending)), to: peer)
        stats.syncPagesSent += 1
        job.pageStart = to
        job.pending.removeAll(keepingCapacity: true)
        job.pendingBytes = 0
    }

    /// The entry at `position` as a record, when valid, in `buckets`, and in scope (`requester`:
    /// the host the page goes to, for scope owned-and-yours).
    func heldRecord(at position: Int, buckets: UInt64, scope: SyncScope, requester: UInt16) -> FlowRecord? {
        let entry = view.entries + position
        let control = sy_atomic_load_u64(&entry.pointee.control)
        guard FlowEntry.isValid(control) else { return nil }
        let owner = FlowEntry.owner(control)
        if scope.ownedOnly && owner != localHostID { return nil }
        if scope == .ownedAndYours && owner != localHostID && owner != requester { return nil }
        var key = sy_flow_key()
        guard sy_flow_table_key_at(view.hash, Int32(position), &key) == 0 else { return nil }
        let digest = FlowDigest.of(&key)
        // replicate: exceptions: of this host's flows, only the announced ones (the owned set).
        if exceptionsOnly && owner == localHostID && !owned.contains(digest) { return nil }
        let bucket = FlowDigest.bucket(digest)
        guard buckets & (1 << UInt64(bucket)) != 0 else { return nil }
        let high = entry.pointee.backendHigh, low = entry.pointee.backendLow
        guard sy_atomic_load_u64(&entry.pointee.control) == control else { return nil }
        return FlowRecord(op: .open, key: key, owner: owner, backendHigh: high, backendLow: low,
                          backendPortNetworkOrder: FlowEntry.backendPort(control))
    }

    /// Events the ring refused never reach `poll`: the owned set is then rebuilt from the table
    /// (at most once per `digest_interval_ms`), and a digest goes out at once, so peers repair
    /// their copies right away.
    func refreshOwnedIfEventsWereLost(now: UInt64) {
        let refused = table.eventsRefused
        guard refused != eventsRefusedSeen else { return }
        guard lastRebuild == 0 || now &- lastRebuild >= digestNs else { return }
        eventsRefusedSeen = refused
        lastRebuild = now
        owned.removeAll(keepingCapacity: true)
        ownedCounts = [UInt32](repeating: 0, count: GossipWire.buckets)
        ownedHashes = [UInt64](repeating: 0, count: GossipWire.buckets)
        for position in 0..<table.positions {
            let control = sy_atomic_load_u64(&view.entries[position].control)
            guard FlowEntry.isValid(control), FlowEntry.owner(control) == localHostID else { continue }
            var key = sy_flow_key()
            guard sy_flow_table_key_at(view.hash, Int32(position), &key) == 0 else { continue }
            if exceptionsOnly && !isException(&key) { continue }
            insertOwned(FlowDigest.of(&key))
        }
        stats.ownedRebuilds += 1
        lastDigest = 0 // a digest in this poll
    }
}
