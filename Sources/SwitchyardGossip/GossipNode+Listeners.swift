import SwitchyardCluster

/// Listener registration over gossip: this host's listener set goes out as LISTENERS when it
/// changes and every `digest_interval_ms` (so a lost one is repaired, and a peer that restarted
/// learns it); a peer's set replaces the one held when it is newer (`ListenerBook`'s ordering rule).
///
///     ctl listen ─► book.own (version + 1) ─► poll: LISTENERS now ─► peers: book.apply(host, set)
///                                            └ again every digest_interval_ms
extension GossipNode {
    /// Sends this host's set when its version moved since the last send, or the interval passed.
    func sendListenersIfDue(now: UInt64) {
        guard let book = listenerBook else { return }
        let own = book.own
        guard listenersSentVersion != own.version || now &- lastListeners >= digestNs else { return }
        lastListeners = now
        listenersSentVersion = own.version
        broadcast(.listeners(ListenerAnnouncement(version: own.version, listeners: own.listeners)))
    }

    /// A peer's set (authenticated, of its verified incarnation), under the ordering rule.
    func receiveListeners(_ announcement: ListenerAnnouncement, header: GossipHeader, from peer: Peer) {
        guard let book = listenerBook else { return }
        let set = ListenerBook.ListenerSet(incarnation: header.incarnation, version: announcement.version,
                                           listeners: announcement.listeners)
        switch book.apply(host: UInt16(peer.member.hostID), set: set) {
        case .applied: stats.listenersApplied += 1
        case .stale: stats.listenersStale += 1
        }
    }

    /// Sends this host's listener set at the next poll (after `ctl listen` / `unlisten`).
    public func announceListenersSoon() {
        lock.lock()
        defer { lock.unlock() }
        listenersSentVersion = nil
    }
}
