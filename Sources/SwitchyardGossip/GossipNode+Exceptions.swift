import CDPDK
import Foundation
import SwitchyardCluster

/// `replicate: exceptions` (docs/gossip.md, "Scale"): this host announces only the flows whose
/// owner (this host) is not the host of the current Maglev pick. Every host computes the same
/// picks, so a peer without an entry sends any other flow to its pick's host, which owns it.
///
///     opened event ──► pick(key) under the current tables == this host?
///                        yes ─► not sent (opens-implied)        no ─► open, into the owned set
///     closed event ──► in the owned set (announced)? yes ─► close   no ─► not sent (closes-implied)
///
///     new table generation (cluster.tables.current changed: reload, listeners, health, a host left)
///       ─► rescan of the table, at most `rescanBudget` positions per poll, this host's entries only:
///            pick elsewhere, not announced ─► open  (exceptions-announced)
///            pick here again, announced    ─► close (exceptions-withdrawn)
///
/// The owned set (heartbeat, digest, repair, a joining host's sync) is then the exceptions only.
/// Until the announcements arrive, a peer on the new tables hands a packet without an entry to
/// the host the previous tables picked (daisy chaining in ownership-lookup): the owner.
extension GossipNode {
    /// Table positions the rescan after a table change reads per poll.
    static let rescanBudget = 65536

    var exceptionsOnly: Bool { settings.replicate == .exceptions }

    /// True when this host's flow `key` needs an entry on peers: the current tables pick another
    /// host for it (or none).
    func isException(_ key: UnsafeMutablePointer<sy_flow_key>) -> Bool {
        guard let directory = currentTables else { return true }
        return directory.pickedHost(key: key) != localHostID
    }

    /// Starts a rescan when the tables changed since the last poll; continues the one under way.
    func followTables() {
        guard exceptionsOnly else { return }
        let directory = cluster.tables.current
        currentTables = directory
        let id = directory.map(ObjectIdentifier.init)
        if id != tablesSeen {
            tablesSeen = id
            // A change during a rescan: one whole round again, from where it is.
            rescanLeft = table.positions
            stats.tableRescans += 1
        }
        guard rescanLeft > 0 else { return }
        var key = sy_flow_key()
        let budget = min(Self.rescanBudget, rescanLeft)
        for _ in 0..<budget {
            let position = rescanCursor
            rescanCursor = rescanCursor + 1 == table.positions ? 0 : rescanCursor + 1
            let entry = view.entries + position
            let control = sy_atomic_load_u64(&entry.pointee.control)
            guard FlowEntry.isValid(control), FlowEntry.owner(control) == localHostID,
                  FlowEntry.state(control) != FlowState.remote.rawValue,
                  sy_flow_table_key_at(view.hash, Int32(position), &key) == 0
            else { continue }
            let digest = FlowDigest.of(&key)
            let exception = isException(&key)
            let announced = owned.contains(digest)
            if exception && !announced {
                guard let record = ownedRecord(key: &key) else { continue }
                insertOwned(digest)
                outgoing.append(record)
                stats.exceptionsAnnounced += 1
            } else if !exception && announced {
                removeOwned(digest)
                outgoing.append(FlowRecord(op: .close, key: key, owner: localHostID,
                                           backendPortNetworkOrder: FlowEntry.backendPort(control)))
                stats.exceptionsWithdrawn += 1
            }
        }
        rescanLeft -= budget
        flushOutgoing()
    }
}
