import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// Applying peers' claims to the connection table (authority, conflicts, table full).
extension GossipNode {
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
}
