import CDPDK
import Foundation
import Glibc
import SwitchyardCluster

/// Announcing this host's flows and sending: batches, heartbeats, digests, unicast or multicast.
extension GossipNode {
    func announce(_ events: [sy_flow_event]) {
        for event in events {
            var key = event.key
            let digest = FlowDigest.of(&key)
            if event.kind == UInt8(SY_FLOW_OPENED) {
                guard event.owner == localHostID, let record = ownedRecord(key: &key) else {
                    stats.staleEvents += 1
                    continue
                }
                if exceptionsOnly && !isException(&key) {
                    stats.opensImplied += 1 // the tables send it here anyway
                    continue
                }
                insertOwned(digest)
                outgoing.append(record)
            } else {
                if exceptionsOnly && !owned.contains(digest) {
                    stats.closesImplied += 1 // never announced
                    continue
                }
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

    /// To every member: the multicast group, or by unicast each member whose incarnation this
    /// host has verified (the others would drop it as `unverified`; they get challenges until
    /// the handshake is done, and the digests repair what they missed).
    func broadcast(_ body: GossipBody) {
        guard let length = encode(body) else { return }
        if let group = multicastGroup {
            if transmit(length, to: group) { stats.multicastSent += 1 }
        } else {
            for peer in peers where peer.verified { transmit(length, to: peer.endpoint) }
        }
        stats.sent[Int(body.kind.rawValue)] += 1
    }

    func unicast(_ body: GossipBody, to peer: Peer) {
        guard let length = encode(body) else { return }
        transmit(length, to: peer.endpoint)
        stats.sent[Int(body.kind.rawValue)] += 1
    }

    @discardableResult
    func transmit(_ length: Int, to endpoint: GossipEndpoint) -> Bool {
        if socket.send(sendBuffer.baseAddress!, count: length, to: endpoint) {
            stats.datagramsSent += 1
            stats.bytesSent += UInt64(length)
            return true
        }
        stats.sendErrors += 1
        return false
    }

    func sendHeartbeat(now: UInt64) {
        lastHeartbeat = now
        for peer in peers where !peer.verified { challenge(peer, now: now) }
        var total: UInt64 = 0
        for hash in ownedHashes { total &+= hash }
        broadcast(.heartbeat(Heartbeat(synchronised: synchronisedFlag, ownedFlows: UInt32(truncatingIfNeeded: owned.count),
                                       ownedHash: total)))
    }

    func sendDigest(now: UInt64) {
        lastDigest = now
        broadcast(.digest(Digest(counts: ownedCounts, hashes: ownedHashes)))
    }
}
