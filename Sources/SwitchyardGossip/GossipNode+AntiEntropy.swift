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
}
