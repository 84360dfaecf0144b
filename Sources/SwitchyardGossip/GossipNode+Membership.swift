import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// Membership: peer liveness, down peers and their flows, forgetting a peer.
extension GossipNode {
    /// Down rule, robust to loss: a peer is down when no message of it was accepted for
    /// `peer_timeout_ms` *and* this host's socket has not overflowed (kernel drops, or a poll
    /// that stopped with datagrams waiting) for `peer_timeout_ms` either: while the socket
    /// overflows, silence may be loss, and the decision waits (`down-deferred`).
    func checkLiveness(now: UInt64) {
        let overflowing = overflowSeen && now &- lastOverflow <= peerTimeoutNs
        for peer in peers {
            if peer.alive && now &- peer.lastHeard > peerTimeoutNs {
                if overflowing {
                    if !peer.downDeferred { stats.downDeferred += 1 }
                    peer.downDeferred = true
                } else {
                    peer.alive = false
                    peer.downSince = now
                    peer.downDeferred = false
                    stats.peersDown += 1
                }
            }
            if let since = peer.downSince, !peer.forgotten, now &- since >= retentionNs {
                forget(peer)
            }
        }
        if !synchronisedFlag {
            let waited = now &- startedAt
            if exceptionsOnly && waited >= peerTimeoutNs { coverYours() }
            synchronisedFlag = peers.allSatisfy { peer in
                if peer.fullSyncDone || peer.syncGaveUp { return true }
                if !peer.alive && waited >= peerTimeoutNs && (peer.sync?.received ?? 0) == 0 { return true } // silent
                // Alive (or it answered some pages): wait while its sync makes progress; give up
                // only after 10 × peer_timeout_ms without any (counted, logged by the engine).
                let progress = max(peer.sync?.advancedAt ?? 0, startedAt)
                if waited >= 10 * peerTimeoutNs && now &- progress >= 10 * peerTimeoutNs {
                    peer.syncGaveUp = true
                    stats.syncGaveUp += 1
                    return true
                }
                return false
            }
            if synchronisedFlag {
                // A silent peer's full sync stops; one given up on continues in the background.
                for peer in peers where peer.sync?.scope.isFull == true && !peer.syncGaveUp { peer.sync = nil }
                stats.synchronisedAfterMs = Int((now &- startedAt) / 1_000_000)
            }
        }
    }

    /// `replicate: exceptions`, at start, once `peer_timeout_ms` has passed: while fewer than
    /// `yoursPeers` of the peers asked for this host's own flows are live (or done), another live
    /// peer is asked for them too (its sync starts again with scope owned-and-yours), so that a
    /// silent or dead peer never keeps this host's own exceptions from it.
    func coverYours() {
        let wanted = min(Self.yoursPeers, peers.count)
        var covering = peers.filter { $0.askedYours && !$0.syncGaveUp && ($0.alive || $0.fullSyncDone) }.count
        for peer in peers where covering < wanted && !peer.askedYours && peer.alive && !peer.syncGaveUp {
            peer.askedYours = true
            peer.fullSyncDone = false
            peer.sync = SyncState(requestID: takeRequestID(), scope: .ownedAndYours, buckets: ~0, generation: 0)
            stats.yoursReassigned += 1
            covering += 1
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
        peer.verified = false // its next incarnation must be proven live again
        peer.challengeNonce = 0
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

    // MARK: - Members changed by a reload (docs/gossip.md, "Hosts join and leave")

    /// Applies the members of a reloaded configuration. `members` lists every host that stays a
    /// member, departing ones included; `departing` names those removed from `cluster.hosts` that
    /// still drain. A member that is new becomes a peer at once: its messages are accepted
    /// (after its incarnation answers a challenge), its SYNC_REQUEST is answered with the whole
    /// table, and this host asks it for nothing (a joining host owns no flows yet). A peer that is
    /// no longer a member is removed with its remote entries. Returns the host ids added and removed.
    @discardableResult
    public func updateMembers(_ members: [GossipMember], departing: Set<Int> = []) -> (added: [Int], removed: [Int]) {
        lock.lock()
        defer { lock.unlock() }
        _ = sy_thread_ensure_lcore()
        let wanted = members.filter { $0.hostID != Int(localHostID) }
        var added: [Int] = [], removed: [Int] = []
        for peer in peers where !wanted.contains(where: { $0.hostID == peer.member.hostID }) {
            let flows = removeEntries { owner, _ in owner == UInt16(peer.member.hostID) }
            stats.forgottenFlows += UInt64(flows)
            removed.append(peer.member.hostID)
        }
        peers.removeAll { peer in removed.contains(peer.member.hostID) }
        for member in wanted {
            if let peer = peers.first(where: { $0.member.hostID == member.hostID }) {
                peer.departing = departing.contains(member.hostID)
                continue
            }
            let peer = Peer(member: member, index: (peers.map(\.index).max() ?? -1) + 1, window: settings.replayWindow)
            peer.departing = departing.contains(member.hostID)
            peers.append(peer)
            added.append(member.hostID)
        }
        return (added, removed)
    }

    /// The hosts that `updateMembers` marked departing, with the flows this host holds for each
    /// and whether each is alive: a departing host is empty once it owns no flow here.
    public func departingPeers() -> [(hostID: Int, flows: Int, alive: Bool)] {
        lock.lock()
        defer { lock.unlock() }
        return peers.filter(\.departing).map { ($0.member.hostID, $0.flows, $0.alive) }
    }
}
