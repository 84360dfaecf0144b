import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// Membership: peer liveness, down peers and their flows, forgetting a peer.
extension GossipNode {
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
}
